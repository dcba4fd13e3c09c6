//! Which column of the sharing matrix (DOMAIN.md §5) each event type of the catalogue falls in.

/// The kind of a record, as the sharing matrix groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum RecordKind {
    /// Nominal, notification requirements, orders.
    Nominal,
    /// Risk assessments and risk management plans.
    Risk,
    /// MAPPA referrals, levels, meetings, minutes, actions.
    Mappa,
    /// Disclosure-scheme applications, decisions, disclosures.
    Disclosure,
    /// Operation Encompass notifications, acknowledgements, school support.
    Encompass,
    /// A victim's address and contact details.
    VictimContact,
    /// Consent and support referrals.
    Support,
    /// Police incidents and intelligence.
    Intelligence,
    /// Access investigations, retention and erasure.
    Governance,
    /// Agencies, keys, log keys, policies: not personal data.
    Registry,
    /// Anything else (no policy names it, so nothing is shared).
    Other,
}

impl RecordKind {
    /// The name policies and views use.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Nominal => "nominal",
            RecordKind::Risk => "risk",
            RecordKind::Mappa => "mappa",
            RecordKind::Disclosure => "disclosure",
            RecordKind::Encompass => "encompass",
            RecordKind::VictimContact => "victim_contact",
            RecordKind::Support => "support",
            RecordKind::Intelligence => "intelligence",
            RecordKind::Governance => "governance",
            RecordKind::Registry => "registry",
            RecordKind::Other => "other",
        }
    }

    /// Every kind.
    pub const ALL: [RecordKind; 11] = [
        RecordKind::Nominal,
        RecordKind::Risk,
        RecordKind::Mappa,
        RecordKind::Disclosure,
        RecordKind::Encompass,
        RecordKind::VictimContact,
        RecordKind::Support,
        RecordKind::Intelligence,
        RecordKind::Governance,
        RecordKind::Registry,
        RecordKind::Other,
    ];

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The kind of an event type of the catalogue (DOMAIN.md §4). A `RecordCorrected` takes the kind
/// of the record it corrects, which only the caller knows; on its own it is [`RecordKind::Other`].
pub fn record_kind(event_type: &str) -> RecordKind {
    let name = event_type.strip_prefix("accord.v1.").unwrap_or("");
    match name {
        "NominalRegistered" | "NotificationRequirementUpdated" | "OrderRecorded" => RecordKind::Nominal,
        "RiskAssessmentRecorded" | "RiskManagementPlanUpdated" => RecordKind::Risk,
        "MappaReferralMade" | "MappaLevelSet" | "MappaMeetingHeld" | "ActionAssigned" | "ActionCompleted"
        | "MinutesDistributed" => RecordKind::Mappa,
        "DisclosureRequested"
        | "DisclosureChecksCompleted"
        | "ApplicantVerified"
        | "DisclosureDecided"
        | "DisclosureMade"
        | "DisclosureApplicationClosed" => RecordKind::Disclosure,
        "EncompassNotificationSent" | "EncompassNotificationAcknowledged" | "SchoolSupportRecorded" => {
            RecordKind::Encompass
        }
        "VictimContactDetailsRecorded" => RecordKind::VictimContact,
        "ConsentRecorded"
        | "ConsentWithdrawn"
        | "SupportReferralMade"
        | "SupportReferralAccepted"
        | "SupportReferralDeclined" => RecordKind::Support,
        "IntelligenceShared" | "IncidentRecorded" | "DomesticAbuseIncidentRecorded" => RecordKind::Intelligence,
        "AccessInvestigationOpened" | "AccessInvestigationClosed" | "RetentionReviewed" | "RecordErased" => {
            RecordKind::Governance
        }
        "AgencyRegistered" | "SigningKeyRegistered" | "SigningKeyRevoked" | "LogKeyRegistered" | "PolicyAdopted" => {
            RecordKind::Registry
        }
        _ => RecordKind::Other,
    }
}
