//! Sharing policy: versioned [Cedar](https://www.cedarpolicy.com) policies that answer the three
//! questions of DESIGN.md §5, deny by default, each answer naming the policies that decided it:
//!
//! - **append** — may this user, acting in these roles, write this event type (to these
//!   addressees)?
//! - **receive** — may this agency hold this record in its read models?
//! - **view** — which field groups of a received record may this user see? Each agreement's field
//!   allowlist is a versioned *view* ([`ViewDef`]); Cedar decides which views a user may use on a
//!   record and the answer is the union of their field groups.
//!
//! Policies are data in the log: a `PolicyAdopted` event carries the policy text and the views,
//! [`Policy::compile`] refuses any that do not validate against [`SCHEMA`], and [`History`] says
//! which policy was in force at any log position. The default agreements for DOMAIN.md's sharing
//! matrix ([`DEFAULT_POLICIES`], [`DEFAULT_VIEWS`]) ship in `deploy/policies/`.
//!
//! What callers must supply is the *relationship* of a principal to a record ([`Relation`]): who
//! wrote it, whom it is addressed to, case and panel membership, consent. The read models know
//! those facts; this crate decides on them. No I/O here.

mod engine;
mod history;
mod kinds;

pub use engine::{Actor, AgencyFacts, Decision, Parties, Policy, RecordFacts, Relation, ViewDecision};
pub use history::History;
pub use kinds::{RecordKind, record_kind};

use std::collections::BTreeSet;

/// The Cedar schema policies are validated against.
pub const SCHEMA: &str = include_str!("accord.cedarschema");
/// The version of [`SCHEMA`] a `PolicyAdopted` event must name.
pub const SCHEMA_VERSION: u32 = 1;
/// The default sharing agreements (Cedar), adopted on a server's first start.
pub const DEFAULT_POLICIES: &str = include_str!("../../../deploy/policies/sharing.cedar");
/// The default views (TOML), adopted with [`DEFAULT_POLICIES`].
pub const DEFAULT_VIEWS: &str = include_str!("../../../deploy/policies/views.toml");

/// Why a policy cannot be adopted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy text, its views or its schema version are not acceptable; the message says
    /// what was expected and what was found (for a failed validation, the validator's messages).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field allowlist: the field groups of one kind of record that a view shows. Its id ends in
/// its version (`nominal.full.v1`); an adopted id never changes meaning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewDef {
    /// `<kind>.<name>.v<n>`: lowercase letters, digits, `_` and `.`.
    pub id: String,
    /// The kind of record it applies to ([`RecordKind`]).
    pub record_kind: String,
    /// The field groups it shows.
    pub field_groups: BTreeSet<String>,
}

/// Parses a views file (`[[views]]` tables of [`ViewDef`]).
pub fn parse_views(toml_text: &str) -> Result<Vec<ViewDef>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        views: Vec<ViewDef>,
    }
    toml::from_str::<File>(toml_text).map(|f| f.views).map_err(|e| Error::Invalid(format!("views: {e}")))
}

/// The default agreements as a compiled policy in force from `position`.
pub fn default_policy(position: u64) -> Policy {
    let views = parse_views(DEFAULT_VIEWS).expect("the default views parse");
    Policy::compile(position, SCHEMA_VERSION, DEFAULT_POLICIES, views).expect("the default policy validates")
}
