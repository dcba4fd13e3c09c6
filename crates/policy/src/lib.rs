//! Sharing policy: the rules that decide who may append which event type.
//!
//! This first cut answers one question, **append**, from a fixed table that follows DOMAIN.md's
//! roles; it is deny-by-default and names the rule behind every decision so the decision can be
//! audited. Versioned Cedar policies adopted through the log (DESIGN.md §5) will replace the table
//! behind the same API, and add the `receive` and `view` questions. No I/O here.

use accord_domain::payload::types;
use accord_domain::{EventType, Role, SYSTEM_ROLE};

/// A policy decision and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// The id of the deciding rule (`default-deny` when no rule allowed it).
    pub rule: &'static str,
}

/// One row of the append table: a role may append these event types.
struct Rule {
    id: &'static str,
    role: &'static str,
    event_types: &'static [&'static str],
}

const APPEND_RULES: &[Rule] = &[
    Rule {
        id: "append.system.registry",
        role: SYSTEM_ROLE,
        event_types: &[
            types::AGENCY_REGISTERED,
            types::SIGNING_KEY_REGISTERED,
            types::SIGNING_KEY_REVOKED,
            types::LOG_KEY_REGISTERED,
        ],
    },
    Rule { id: "append.agency_admin.revoke_key", role: "agency_admin", event_types: &[types::SIGNING_KEY_REVOKED] },
    Rule { id: "append.offender_manager.nominal", role: "offender_manager", event_types: &[types::NOMINAL_REGISTERED] },
    Rule { id: "append.ppro.nominal", role: "ppro", event_types: &[types::NOMINAL_REGISTERED] },
    Rule { id: "append.mappa_coordinator.level", role: "mappa_coordinator", event_types: &[types::MAPPA_LEVEL_SET] },
];

/// May a user acting in `role` append an event of `event_type`? Deny by default.
pub fn may_append(role: &Role, event_type: &EventType) -> Decision {
    APPEND_RULES
        .iter()
        .find(|r| r.role == role.as_str() && r.event_types.contains(&event_type.as_str()))
        .map(|r| Decision { allowed: true, rule: r.id })
        .unwrap_or(Decision { allowed: false, rule: "default-deny" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(role: &str, ty: &str) -> Decision {
        may_append(&Role::parse(role).unwrap(), &EventType::parse(ty).unwrap())
    }

    #[test]
    fn each_allowed_row_has_a_denied_neighbour() {
        let table = [
            ("offender_manager", types::NOMINAL_REGISTERED, true),
            ("offender_manager", types::MAPPA_LEVEL_SET, false),
            ("ppro", types::NOMINAL_REGISTERED, true),
            ("mappa_coordinator", types::MAPPA_LEVEL_SET, true),
            ("mappa_coordinator", types::NOMINAL_REGISTERED, false),
            ("agency_admin", types::SIGNING_KEY_REVOKED, true),
            ("agency_admin", types::SIGNING_KEY_REGISTERED, false),
            ("system", types::SIGNING_KEY_REGISTERED, true),
            ("dsl", types::NOMINAL_REGISTERED, false),
            ("isva", types::MAPPA_LEVEL_SET, false),
            ("unknown_role", types::NOMINAL_REGISTERED, false),
            ("offender_manager", "accord.v1.NotAType", false),
        ];
        for (role, ty, allowed) in table {
            let d = decide(role, ty);
            assert_eq!(d.allowed, allowed, "{role} {ty}");
            assert_eq!(d.rule == "default-deny", !allowed, "{role} {ty}: {}", d.rule);
        }
    }
}
