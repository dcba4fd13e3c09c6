//! Typed event payloads and their domain validation. The service crates decode the wire payload
//! named by `EventBody.event_type` into one of these; [`Payload::validate`] then checks it against
//! its envelope. Registry payloads also say how they change the key registry
//! ([`Payload::registry_effect`]).

use crate::event::{EventBody, bounded_text};
use crate::ids::{AgencyId, KeyId};
use crate::{Error, Result, SYSTEM_AGENCY, SYSTEM_ROLE};

/// The kinds of agency (DOMAIN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AgencyKind {
    Police,
    Probation,
    Prison,
    School,
    ChildrensServices,
    Health,
    SupportService,
    LocalAuthority,
    Housing,
    YouthJustice,
    MappaUnit,
    System,
}

impl AgencyKind {
    /// The kind's name in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            AgencyKind::Police => "police",
            AgencyKind::Probation => "probation",
            AgencyKind::Prison => "prison",
            AgencyKind::School => "school",
            AgencyKind::ChildrensServices => "childrens_services",
            AgencyKind::Health => "health",
            AgencyKind::SupportService => "support_service",
            AgencyKind::LocalAuthority => "local_authority",
            AgencyKind::Housing => "housing",
            AgencyKind::YouthJustice => "youth_justice",
            AgencyKind::MappaUnit => "mappa_unit",
            AgencyKind::System => "system",
        }
    }

    /// Every kind.
    pub const ALL: [AgencyKind; 12] = [
        AgencyKind::Police,
        AgencyKind::Probation,
        AgencyKind::Prison,
        AgencyKind::School,
        AgencyKind::ChildrensServices,
        AgencyKind::Health,
        AgencyKind::SupportService,
        AgencyKind::LocalAuthority,
        AgencyKind::Housing,
        AgencyKind::YouthJustice,
        AgencyKind::MappaUnit,
        AgencyKind::System,
    ];

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
            Error::invalid("kind", format!("must be one of {}, found {s:?}", names.join(", ")))
        })
    }
}

/// `accord.v1.AgencyRegistered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyRegistered {
    /// The agency.
    pub agency_id: AgencyId,
    /// Name for people.
    pub name: String,
    /// Kind.
    pub kind: AgencyKind,
    /// Whether the agency's admins may adopt sharing policy.
    pub governs_policy: bool,
}

/// `accord.v1.SigningKeyRegistered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRegistered {
    /// The key id.
    pub key_id: KeyId,
    /// Owning agency.
    pub agency_id: AgencyId,
    /// Ed25519 public key (checked not weak).
    pub public_key: [u8; 32],
}

/// `accord.v1.SigningKeyRevoked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRevoked {
    /// The key.
    pub key_id: KeyId,
    /// Owning agency.
    pub agency_id: AgencyId,
    /// Why.
    pub reason: String,
}

/// `accord.v1.LogKeyRegistered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKeyRegistered {
    /// C2SP note verifier key.
    pub verifier_key: String,
}

/// A calendar date `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year.
    pub year: u16,
    /// Month 1-12.
    pub month: u8,
    /// Day 1-31.
    pub day: u8,
}

impl Date {
    /// Parses `YYYY-MM-DD`, checking the day exists.
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        let bad = || Error::invalid(field, format!("must be a date YYYY-MM-DD, found {s:?}"));
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let year: u16 = s[0..4].parse().map_err(|_| bad())?;
        let month: u8 = s[5..7].parse().map_err(|_| bad())?;
        let day: u8 = s[8..10].parse().map_err(|_| bad())?;
        let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(Error::invalid(field, format!("month must be 01 to 12, found {s:?}"))),
        };
        if day == 0 || day > days {
            return Err(Error::invalid(field, format!("day must be 01 to {days} in that month, found {s:?}")));
        }
        Ok(Date { year, month, day })
    }

    /// Days since 1970-01-01 (proleptic Gregorian).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

/// `accord.v1.NominalRegistered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NominalRegistered {
    /// Nominal id (UUID text).
    pub nominal_id: String,
    /// ViSOR reference.
    pub visor_ref: String,
    /// PNC reference.
    pub pnc_ref: String,
    /// Names; first is current.
    pub names: Vec<String>,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Date of birth.
    pub date_of_birth: String,
    /// MAPPA category 0 (none) to 4.
    pub mappa_category: u32,
    /// Lead agency id.
    pub lead_agency: String,
    /// Nominal manager user id.
    pub nominal_manager: String,
    /// Index offence.
    pub index_offence: String,
    /// The other agencies allocated to the case.
    pub co_managing_agencies: Vec<String>,
}

/// `accord.v1.MappaLevelSet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappaLevelSet {
    /// Nominal id.
    pub nominal_id: String,
    /// Level 1-3.
    pub level: u32,
    /// Decider.
    pub decided_by: String,
    /// Rationale.
    pub rationale: String,
}

/// A child in an Operation Encompass notification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct EncompassChild {
    pub child_id: String,
    pub name: String,
    pub date_of_birth: String,
    pub present: bool,
    pub whereabouts: String,
    pub voice_of_child: String,
}

/// `accord.v1.EncompassNotificationSent`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct EncompassNotificationSent {
    pub notification_id: String,
    pub incident_ref: String,
    pub child: Option<EncompassChild>,
    pub establishment_urn: String,
    pub local_authority: String,
    pub recipient_role: String,
    pub incident_summary: String,
    pub circumstances: String,
    /// Microseconds since the Unix epoch, when set.
    pub deadline: Option<crate::Timestamp>,
}

/// `accord.v1.EncompassNotificationAcknowledged`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct EncompassNotificationAcknowledged {
    pub notification_id: String,
    pub acknowledged_by: String,
}

/// `accord.v1.NotificationRequirementUpdated`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NotificationRequirementUpdated {
    pub nominal_id: String,
    pub kind: String,
    pub changed_fields: std::collections::BTreeMap<String, String>,
    pub notified_at: Option<crate::Timestamp>,
    pub due_by: Option<crate::Timestamp>,
    pub status: String,
}

/// `accord.v1.OrderRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OrderRecorded {
    pub nominal_id: String,
    pub order_id: String,
    pub order_type: String,
    pub prohibitions: Vec<String>,
    pub positive_requirements: Vec<String>,
    pub start_date: String,
    pub end_date: String,
    pub court: String,
}

/// `accord.v1.RiskAssessmentRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RiskAssessmentRecorded {
    pub nominal_id: String,
    pub tool: String,
    pub levels: std::collections::BTreeMap<String, String>,
    pub factors: Vec<String>,
    pub assessor: String,
    pub next_review: String,
    pub summary: String,
    pub victim_safety: String,
}

/// `accord.v1.MappaReferralMade`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MappaReferralMade {
    pub nominal_id: String,
    pub category: u32,
    pub level_requested: u32,
    pub referrer: String,
    pub reason: String,
}

/// `accord.v1.MappaMeetingHeld`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MappaMeetingHeld {
    pub nominal_id: String,
    pub meeting_id: String,
    pub meeting_type: String,
    pub level: u32,
    pub chair: String,
    /// (agency, role) of each attendee.
    pub attendees: Vec<(String, String)>,
    pub minutes: String,
    pub minutes_redacted: String,
    pub disclosure_decision: String,
    pub next_review: String,
}

/// `accord.v1.ActionAssigned`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ActionAssigned {
    pub nominal_id: String,
    pub action_id: String,
    pub meeting_id: String,
    pub owner_agency: String,
    pub owner_role: String,
    pub description: String,
    pub due: Option<crate::Timestamp>,
}

/// `accord.v1.ActionCompleted`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ActionCompleted {
    pub nominal_id: String,
    pub action_id: String,
    pub outcome: String,
}

/// `accord.v1.DisclosureRequested`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DisclosureRequested {
    pub application_id: String,
    pub scheme: String,
    pub applicant_id: String,
    pub applicant_name: String,
    pub applicant_relationship: String,
    pub subject_description: String,
    pub subject_nominal_id: String,
    pub persons_at_risk: Vec<String>,
    pub received_at: Option<crate::Timestamp>,
}

/// `accord.v1.DisclosureChecksCompleted`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DisclosureChecksCompleted {
    pub application_id: String,
    pub completed_at: Option<crate::Timestamp>,
    pub immediate_risk: bool,
    pub findings: String,
}

/// `accord.v1.ApplicantVerified`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ApplicantVerified {
    pub application_id: String,
    pub verified_at: Option<crate::Timestamp>,
    pub method: String,
    pub notes: String,
}

/// `accord.v1.DisclosureDecided`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DisclosureDecided {
    pub application_id: String,
    pub decision: String,
    pub decision_maker: String,
    pub rationale: String,
    pub recipient: String,
    pub content_sha256: String,
}

/// `accord.v1.DisclosureMade`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DisclosureMade {
    pub application_id: String,
    pub recipient: String,
    pub discloser: String,
    pub content_sha256: String,
    pub undertaking_signed: bool,
}

/// `accord.v1.DisclosureApplicationClosed`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DisclosureApplicationClosed {
    pub application_id: String,
    pub outcome_told_to_applicant: String,
}

/// `accord.v1.RiskManagementPlanUpdated`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RiskManagementPlanUpdated {
    pub nominal_id: String,
    pub plan_id: String,
    pub version: u32,
    pub supervision: String,
    pub monitoring_and_control: String,
    pub interventions: String,
    pub victim_safety: String,
    pub actions: Vec<String>,
}

/// `accord.v1.MinutesDistributed`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MinutesDistributed {
    pub nominal_id: String,
    pub meeting_id: String,
    pub redaction_profile: String,
}

/// A child at a domestic abuse incident.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct IncidentChild {
    pub child_id: String,
    pub name: String,
    pub date_of_birth: String,
    pub present: bool,
    pub whereabouts: String,
    pub voice_of_child: String,
}

/// `accord.v1.DomesticAbuseIncidentRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DomesticAbuseIncidentRecorded {
    pub incident_id: String,
    pub incident_ref: String,
    pub occurred: Option<crate::Timestamp>,
    pub location: String,
    pub children: Vec<IncidentChild>,
}

/// `accord.v1.SchoolSupportRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SchoolSupportRecorded {
    pub notification_id: String,
    pub support_type: String,
    pub support_given: String,
    pub shared_with: Vec<String>,
}

/// `accord.v1.IntelligenceShared`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct IntelligenceShared {
    pub intelligence_id: String,
    pub source_agency: String,
    pub offender_descriptors: Vec<String>,
    pub reporter_anonymised: bool,
    pub reporter_id: String,
}

/// `accord.v1.IncidentRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct IncidentRecorded {
    pub incident_id: String,
    pub incident_ref: String,
    pub victim_id: String,
    pub offence_type: String,
    pub officer: String,
}

/// `accord.v1.VictimContactDetailsRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VictimContactDetailsRecorded {
    pub victim_id: String,
    pub address: String,
    pub safe_contact_method: String,
}

/// `accord.v1.AccessInvestigationOpened`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AccessInvestigationOpened {
    pub investigation_id: String,
    pub user_investigated: String,
    pub purpose: String,
}

/// `accord.v1.AccessInvestigationClosed`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AccessInvestigationClosed {
    pub investigation_id: String,
    pub findings: String,
}

/// `accord.v1.RetentionReviewed`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RetentionReviewed {
    pub review_id: String,
    pub retention_group: String,
    pub decision: String,
    pub next_review: String,
    pub event_ids: Vec<String>,
}

/// `accord.v1.RecordErased`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RecordErased {
    pub review_id: String,
    pub event_id: String,
    pub reason: String,
}

/// `accord.v1.ConsentRecorded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConsentRecorded {
    pub consent_id: String,
    pub subject_id: String,
    pub data: Vec<String>,
    pub recipients: Vec<String>,
    pub purposes: Vec<String>,
    pub given_by: String,
    pub method: String,
    pub expires_at: Option<crate::Timestamp>,
}

/// `accord.v1.ConsentWithdrawn`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConsentWithdrawn {
    pub consent_id: String,
    pub withdrawn_by: String,
    pub reason: String,
}

/// `accord.v1.SupportReferralMade`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SupportReferralMade {
    pub referral_id: String,
    pub consent_id: String,
    pub subject_id: String,
    pub contact_name: String,
    pub needs: Vec<String>,
    pub safe_contact_method: String,
    pub safe_contact_details: String,
}

/// `accord.v1.SupportReferralAccepted`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SupportReferralAccepted {
    pub referral_id: String,
    pub allocated_to: String,
}

/// `accord.v1.SupportReferralDeclined`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SupportReferralDeclined {
    pub referral_id: String,
    pub reason: String,
}

/// `accord.v1.RecordCorrected`: new values for fields of the event named by the envelope's
/// `supersedes`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RecordCorrected {
    pub fields: std::collections::BTreeMap<String, String>,
    pub reason: String,
}

/// The text fields of each event type a `RecordCorrected` may change, by payload field path.
pub fn correctable_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        types::NOMINAL_REGISTERED => &["visor_ref", "pnc_ref", "nominal_manager", "index_offence"],
        types::MAPPA_LEVEL_SET => &["rationale"],
        types::ENCOMPASS_NOTIFICATION_SENT => &[
            "incident_ref",
            "recipient_role",
            "incident_summary",
            "circumstances",
            "child.name",
            "child.whereabouts",
            "child.voice_of_child",
        ],
        types::CONSENT_RECORDED => &["given_by", "method"],
        types::SUPPORT_REFERRAL_MADE => &["contact_name", "safe_contact_method", "safe_contact_details"],
        types::SUPPORT_REFERRAL_DECLINED => &["reason"],
        types::NOTIFICATION_REQUIREMENT_UPDATED => &["changed_fields.*"],
        types::ORDER_RECORDED => &["court"],
        types::RISK_ASSESSMENT_RECORDED => &["summary", "victim_safety"],
        types::MAPPA_MEETING_HELD => &["minutes", "minutes_redacted", "disclosure_decision"],
        types::ACTION_ASSIGNED => &["description"],
        types::ACTION_COMPLETED => &["outcome"],
        types::DOMESTIC_ABUSE_INCIDENT_RECORDED => &["location", "incident_ref"],
        types::SCHOOL_SUPPORT_RECORDED => &["support_given"],
        types::VICTIM_CONTACT_DETAILS_RECORDED => &["address", "safe_contact_method"],
        types::INCIDENT_RECORDED => &["offence_type", "officer"],
        _ => &[],
    }
}

/// Checks a correction's field paths against the type of the event it corrects.
pub fn check_correction(corrected_type: &str, p: &RecordCorrected) -> Result<()> {
    let allowed = correctable_fields(corrected_type);
    if allowed.is_empty() {
        return Err(Error::invalid("supersedes", format!("{corrected_type} has no correctable fields")));
    }
    for path in p.fields.keys() {
        let by_prefix = allowed
            .iter()
            .any(|a| a.strip_suffix('*').is_some_and(|prefix| path.len() > prefix.len() && path.starts_with(prefix)));
        if !allowed.contains(&path.as_str()) && !by_prefix {
            return Err(Error::invalid(
                format!("payload.fields[{path:?}]"),
                format!("is not a correctable field of {corrected_type}; correctable: {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// One view of a [`PolicyAdopted`]: a field allowlist over one kind of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    /// The view id, ending in its version (`nominal.full.v1`).
    pub id: String,
    /// The kind of record it applies to.
    pub record_kind: String,
    /// The field groups it shows.
    pub field_groups: Vec<String>,
}

/// `accord.v1.PolicyAdopted`: the sharing policy in force for every event recorded after it.
/// Whether the policy text validates is the policy engine's question (`accord-policy`), asked
/// before the event is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAdopted {
    /// Cedar policy text.
    pub policies: String,
    /// The views the policies name.
    pub views: Vec<PolicyView>,
    /// The Cedar schema version the policies were written against.
    pub schema_version: u32,
    /// What changed and why, for people.
    pub description: String,
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Payload {
    AgencyRegistered(AgencyRegistered),
    SigningKeyRegistered(SigningKeyRegistered),
    SigningKeyRevoked(SigningKeyRevoked),
    LogKeyRegistered(LogKeyRegistered),
    NominalRegistered(NominalRegistered),
    MappaLevelSet(MappaLevelSet),
    PolicyAdopted(PolicyAdopted),
    EncompassNotificationSent(EncompassNotificationSent),
    EncompassNotificationAcknowledged(EncompassNotificationAcknowledged),
    ConsentRecorded(ConsentRecorded),
    ConsentWithdrawn(ConsentWithdrawn),
    SupportReferralMade(SupportReferralMade),
    SupportReferralAccepted(SupportReferralAccepted),
    SupportReferralDeclined(SupportReferralDeclined),
    RecordCorrected(RecordCorrected),
    NotificationRequirementUpdated(NotificationRequirementUpdated),
    OrderRecorded(OrderRecorded),
    RiskAssessmentRecorded(RiskAssessmentRecorded),
    MappaReferralMade(MappaReferralMade),
    MappaMeetingHeld(MappaMeetingHeld),
    ActionAssigned(ActionAssigned),
    ActionCompleted(ActionCompleted),
    DisclosureRequested(DisclosureRequested),
    DisclosureChecksCompleted(DisclosureChecksCompleted),
    ApplicantVerified(ApplicantVerified),
    DisclosureDecided(DisclosureDecided),
    DisclosureMade(DisclosureMade),
    DisclosureApplicationClosed(DisclosureApplicationClosed),
    RiskManagementPlanUpdated(RiskManagementPlanUpdated),
    MinutesDistributed(MinutesDistributed),
    DomesticAbuseIncidentRecorded(DomesticAbuseIncidentRecorded),
    SchoolSupportRecorded(SchoolSupportRecorded),
    IntelligenceShared(IntelligenceShared),
    IncidentRecorded(IncidentRecorded),
    VictimContactDetailsRecorded(VictimContactDetailsRecorded),
    AccessInvestigationOpened(AccessInvestigationOpened),
    AccessInvestigationClosed(AccessInvestigationClosed),
    RetentionReviewed(RetentionReviewed),
    RecordErased(RecordErased),
}

/// How recording an event changes the key registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEffect {
    /// Nothing.
    None,
    /// A new key may sign for `agency` from this event on.
    RegisterKey {
        /// Key id.
        key_id: KeyId,
        /// Owning agency.
        agency: AgencyId,
        /// Ed25519 public key.
        public_key: [u8; 32],
    },
    /// The agency takes part from this event on.
    RegisterAgency {
        /// The agency.
        agency: AgencyId,
        /// Its kind.
        kind: AgencyKind,
        /// Whether its admins may adopt sharing policy.
        governs_policy: bool,
    },
    /// The policy this event carries governs every event recorded after it.
    AdoptPolicy,
    /// The key may sign nothing recorded after this event.
    RevokeKey {
        /// Key id.
        key_id: KeyId,
        /// Owning agency.
        agency: AgencyId,
    },
}

/// Registry event type names.
pub mod types {
    /// `AgencyRegistered`.
    pub const AGENCY_REGISTERED: &str = "accord.v1.AgencyRegistered";
    /// `SigningKeyRegistered`.
    pub const SIGNING_KEY_REGISTERED: &str = "accord.v1.SigningKeyRegistered";
    /// `SigningKeyRevoked`.
    pub const SIGNING_KEY_REVOKED: &str = "accord.v1.SigningKeyRevoked";
    /// `LogKeyRegistered`.
    pub const LOG_KEY_REGISTERED: &str = "accord.v1.LogKeyRegistered";
    /// `NominalRegistered`.
    pub const NOMINAL_REGISTERED: &str = "accord.v1.NominalRegistered";
    /// `MappaLevelSet`.
    pub const MAPPA_LEVEL_SET: &str = "accord.v1.MappaLevelSet";
    /// `PolicyAdopted`.
    pub const POLICY_ADOPTED: &str = "accord.v1.PolicyAdopted";
    /// `EncompassNotificationSent`.
    pub const ENCOMPASS_NOTIFICATION_SENT: &str = "accord.v1.EncompassNotificationSent";
    /// `EncompassNotificationAcknowledged`.
    pub const ENCOMPASS_NOTIFICATION_ACKNOWLEDGED: &str = "accord.v1.EncompassNotificationAcknowledged";
    /// `ConsentRecorded`.
    pub const CONSENT_RECORDED: &str = "accord.v1.ConsentRecorded";
    /// `ConsentWithdrawn`.
    pub const CONSENT_WITHDRAWN: &str = "accord.v1.ConsentWithdrawn";
    /// `SupportReferralMade`.
    pub const SUPPORT_REFERRAL_MADE: &str = "accord.v1.SupportReferralMade";
    /// `SupportReferralAccepted`.
    pub const SUPPORT_REFERRAL_ACCEPTED: &str = "accord.v1.SupportReferralAccepted";
    /// `SupportReferralDeclined`.
    pub const SUPPORT_REFERRAL_DECLINED: &str = "accord.v1.SupportReferralDeclined";
    /// `RecordCorrected`.
    pub const RECORD_CORRECTED: &str = "accord.v1.RecordCorrected";
    /// `NotificationRequirementUpdated`.
    pub const NOTIFICATION_REQUIREMENT_UPDATED: &str = "accord.v1.NotificationRequirementUpdated";
    /// `OrderRecorded`.
    pub const ORDER_RECORDED: &str = "accord.v1.OrderRecorded";
    /// `RiskAssessmentRecorded`.
    pub const RISK_ASSESSMENT_RECORDED: &str = "accord.v1.RiskAssessmentRecorded";
    /// `MappaReferralMade`.
    pub const MAPPA_REFERRAL_MADE: &str = "accord.v1.MappaReferralMade";
    /// `MappaMeetingHeld`.
    pub const MAPPA_MEETING_HELD: &str = "accord.v1.MappaMeetingHeld";
    /// `ActionAssigned`.
    pub const ACTION_ASSIGNED: &str = "accord.v1.ActionAssigned";
    /// `ActionCompleted`.
    pub const ACTION_COMPLETED: &str = "accord.v1.ActionCompleted";
    /// `DisclosureRequested`.
    pub const DISCLOSURE_REQUESTED: &str = "accord.v1.DisclosureRequested";
    /// `DisclosureChecksCompleted`.
    pub const DISCLOSURE_CHECKS_COMPLETED: &str = "accord.v1.DisclosureChecksCompleted";
    /// `ApplicantVerified`.
    pub const APPLICANT_VERIFIED: &str = "accord.v1.ApplicantVerified";
    /// `DisclosureDecided`.
    pub const DISCLOSURE_DECIDED: &str = "accord.v1.DisclosureDecided";
    /// `DisclosureMade`.
    pub const DISCLOSURE_MADE: &str = "accord.v1.DisclosureMade";
    /// `DisclosureApplicationClosed`.
    pub const DISCLOSURE_APPLICATION_CLOSED: &str = "accord.v1.DisclosureApplicationClosed";
    /// `RiskManagementPlanUpdated`.
    pub const RISK_MANAGEMENT_PLAN_UPDATED: &str = "accord.v1.RiskManagementPlanUpdated";
    /// `MinutesDistributed`.
    pub const MINUTES_DISTRIBUTED: &str = "accord.v1.MinutesDistributed";
    /// `DomesticAbuseIncidentRecorded`.
    pub const DOMESTIC_ABUSE_INCIDENT_RECORDED: &str = "accord.v1.DomesticAbuseIncidentRecorded";
    /// `SchoolSupportRecorded`.
    pub const SCHOOL_SUPPORT_RECORDED: &str = "accord.v1.SchoolSupportRecorded";
    /// `IntelligenceShared`.
    pub const INTELLIGENCE_SHARED: &str = "accord.v1.IntelligenceShared";
    /// `IncidentRecorded`.
    pub const INCIDENT_RECORDED: &str = "accord.v1.IncidentRecorded";
    /// `VictimContactDetailsRecorded`.
    pub const VICTIM_CONTACT_DETAILS_RECORDED: &str = "accord.v1.VictimContactDetailsRecorded";
    /// `AccessInvestigationOpened`.
    pub const ACCESS_INVESTIGATION_OPENED: &str = "accord.v1.AccessInvestigationOpened";
    /// `AccessInvestigationClosed`.
    pub const ACCESS_INVESTIGATION_CLOSED: &str = "accord.v1.AccessInvestigationClosed";
    /// `RetentionReviewed`.
    pub const RETENTION_REVIEWED: &str = "accord.v1.RetentionReviewed";
    /// `RecordErased`.
    pub const RECORD_ERASED: &str = "accord.v1.RecordErased";
}

/// The stream registry events about `agency` belong to.
pub fn agency_stream(agency: &AgencyId) -> String {
    format!("agency-{agency}")
}

/// The stream of sharing-policy adoptions.
pub const POLICY_STREAM: &str = "accord-policy";

/// The stream of the server's log-key records.
pub const LOG_STREAM: &str = "accord-log";

fn expect_stream(body: &EventBody, want: &str) -> Result<()> {
    if body.stream.as_str() != want {
        return Err(Error::invalid(
            "stream",
            format!("must be {want:?} for {}, found {:?}", body.event_type, body.stream.as_str()),
        ));
    }
    Ok(())
}

fn expect_system(body: &EventBody) -> Result<()> {
    if body.author.agency.as_str() != SYSTEM_AGENCY || body.author.role.as_str() != SYSTEM_ROLE {
        return Err(Error::invalid(
            "author",
            format!(
                "{} is written only by the server itself, found agency {:?}",
                body.event_type,
                body.author.agency.as_str()
            ),
        ));
    }
    Ok(())
}

fn nominal_uuid(field: &str, id: &str) -> Result<()> {
    uuid::Uuid::try_parse(id).map(drop).map_err(|_| Error::invalid(field, format!("must be a UUID, found {id:?}")))
}

fn expect_subject(body: &EventBody, kind: &str, id: &str) -> Result<()> {
    if !body.subjects.iter().any(|s| s.kind == kind && s.id == id) {
        return Err(Error::invalid("subjects", format!("must include the {kind} {id:?}")));
    }
    Ok(())
}

fn validate_encompass(body: &EventBody, p: &EncompassNotificationSent) -> Result<()> {
    nominal_uuid("payload.notification_id", &p.notification_id)?;
    expect_stream(body, &format!("encompass-{}", p.notification_id))?;
    bounded_text("payload.incident_ref", &p.incident_ref, 64)?;
    let child = p.child.as_ref().ok_or_else(|| Error::invalid("payload.child", "must describe the child"))?;
    nominal_uuid("payload.child.child_id", &child.child_id)?;
    expect_subject(body, "child", &child.child_id)?;
    bounded_text("payload.child.name", &child.name, 200)?;
    let dob = Date::parse("payload.child.date_of_birth", &child.date_of_birth)?;
    let occurred_day = body.occurred_at.micros().div_euclid(86_400_000_000);
    if dob.days_since_epoch() > occurred_day {
        return Err(Error::invalid(
            "payload.child.date_of_birth",
            format!("must not be after the incident, found {}", child.date_of_birth),
        ));
    }
    if !child.whereabouts.is_empty() {
        bounded_text("payload.child.whereabouts", &child.whereabouts, 400)?;
    }
    if !child.voice_of_child.is_empty() {
        bounded_text("payload.child.voice_of_child", &child.voice_of_child, 4000)?;
    }
    match (p.establishment_urn.is_empty(), p.local_authority.is_empty()) {
        (true, true) => {
            return Err(Error::invalid(
                "payload.establishment_urn",
                "an Encompass notification needs the receiving establishment's URN or, for a home-educated child, the local authority",
            ));
        }
        (false, false) => {
            return Err(Error::invalid(
                "payload.local_authority",
                "set either establishment_urn or local_authority, not both",
            ));
        }
        (false, true) => {
            let ok =
                (6..=7).contains(&p.establishment_urn.len()) && p.establishment_urn.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(Error::invalid(
                    "payload.establishment_urn",
                    format!("must be a 6 or 7 digit URN, found {:?}", p.establishment_urn),
                ));
            }
        }
        (true, false) => bounded_text("payload.local_authority", &p.local_authority, 200)?,
    }
    if body.addressees.len() != 1 {
        return Err(Error::invalid(
            "addressees",
            format!(
                "an Encompass notification goes to exactly one school or local authority, found {}",
                body.addressees.len()
            ),
        ));
    }
    bounded_text("payload.recipient_role", &p.recipient_role, 64)?;
    bounded_text("payload.incident_summary", &p.incident_summary, 1000)?;
    bounded_text("payload.circumstances", &p.circumstances, 4000)?;
    let deadline = p
        .deadline
        .ok_or_else(|| Error::invalid("payload.deadline", "must be set: before the start of the next school day"))?;
    if deadline.micros() <= body.occurred_at.micros() {
        return Err(Error::invalid("payload.deadline", "must be after the event's occurred_at"));
    }
    Ok(())
}

/// A nominal event: a UUID nominal id, the nominal's stream, the nominal among the subjects.
fn on_nominal(body: &EventBody, nominal_id: &str) -> Result<()> {
    nominal_uuid("payload.nominal_id", nominal_id)?;
    expect_stream(body, &format!("nominal-{nominal_id}"))?;
    expect_subject(body, "nominal", nominal_id)
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(Error::invalid(field, format!("must be one of {}, found {value:?}", allowed.join(", "))))
}

fn validate_notification_requirement(body: &EventBody, p: &NotificationRequirementUpdated) -> Result<()> {
    on_nominal(body, &p.nominal_id)?;
    one_of(
        "payload.kind",
        &p.kind,
        &["initial", "change", "annual", "weekly_nfa", "foreign_travel", "child_household", "bank_card", "id_document"],
    )?;
    if p.changed_fields.len() > 50 {
        return Err(Error::invalid(
            "payload.changed_fields",
            format!("at most 50 fields, found {}", p.changed_fields.len()),
        ));
    }
    for (k, v) in &p.changed_fields {
        bounded_text("payload.changed_fields", k, 64)?;
        bounded_text(&format!("payload.changed_fields[{k:?}]"), v, 1000)?;
    }
    let notified = p.notified_at.ok_or_else(|| Error::invalid("payload.notified_at", "is required"))?;
    let due = p.due_by.ok_or_else(|| Error::invalid("payload.due_by", "is required"))?;
    one_of("payload.status", &p.status, &["on_time", "late", "breach"])?;
    if notified.micros() > due.micros() && p.status == "on_time" {
        return Err(Error::invalid(
            "payload.status",
            "a notification made after its due_by is late or a breach, not on_time",
        ));
    }
    if notified.micros() > body.occurred_at.micros() {
        return Err(Error::invalid("payload.notified_at", "must not be after the event's occurred_at"));
    }
    Ok(())
}

fn validate_order(body: &EventBody, p: &OrderRecorded) -> Result<()> {
    on_nominal(body, &p.nominal_id)?;
    nominal_uuid("payload.order_id", &p.order_id)?;
    one_of(
        "payload.order_type",
        &p.order_type,
        &["shpo", "sopo", "licence", "community_order", "notification_order", "other"],
    )?;
    for (i, x) in p.prohibitions.iter().chain(&p.positive_requirements).enumerate() {
        bounded_text(&format!("payload.terms[{i}]"), x, 1000)?;
    }
    if p.prohibitions.is_empty() && p.positive_requirements.is_empty() {
        return Err(Error::invalid("payload.prohibitions", "an order has at least one prohibition or requirement"));
    }
    let start = Date::parse("payload.start_date", &p.start_date)?;
    if !p.end_date.is_empty() && Date::parse("payload.end_date", &p.end_date)? < start {
        return Err(Error::invalid("payload.end_date", "must not be before start_date"));
    }
    bounded_text("payload.court", &p.court, 200)
}

fn validate_risk(body: &EventBody, p: &RiskAssessmentRecorded) -> Result<()> {
    on_nominal(body, &p.nominal_id)?;
    one_of("payload.tool", &p.tool, &["arms", "rm2000", "oasys_rosh", "dash"])?;
    if p.levels.is_empty() {
        return Err(Error::invalid("payload.levels", "must give a level for at least one risk group"));
    }
    for (group, level) in &p.levels {
        one_of("payload.levels", group, &["children", "public", "known_adult", "staff", "self", "overall"])?;
        one_of(&format!("payload.levels[{group:?}]"), level, &["low", "medium", "high", "very_high"])?;
    }
    for (i, f) in p.factors.iter().enumerate() {
        bounded_text(&format!("payload.factors[{i}]"), f, 1000)?;
    }
    bounded_text("payload.assessor", &p.assessor, 128)?;
    Date::parse("payload.next_review", &p.next_review)?;
    if !p.summary.is_empty() {
        bounded_text("payload.summary", &p.summary, 4000)?;
    }
    if !p.victim_safety.is_empty() {
        bounded_text("payload.victim_safety", &p.victim_safety, 4000)?;
    }
    Ok(())
}

fn validate_meeting(body: &EventBody, p: &MappaMeetingHeld) -> Result<()> {
    on_nominal(body, &p.nominal_id)?;
    nominal_uuid("payload.meeting_id", &p.meeting_id)?;
    one_of("payload.meeting_type", &p.meeting_type, &["initial", "review"])?;
    if !(2..=3).contains(&p.level) {
        return Err(Error::invalid(
            "payload.level",
            format!("MAPPA meetings are held at level 2 or 3, found {}", p.level),
        ));
    }
    bounded_text("payload.chair", &p.chair, 128)?;
    if p.attendees.is_empty() || p.attendees.len() > 50 {
        return Err(Error::invalid(
            "payload.attendees",
            format!("a meeting has 1 to 50 attendees, found {}", p.attendees.len()),
        ));
    }
    for (i, (agency, role)) in p.attendees.iter().enumerate() {
        AgencyId::parse_field(&format!("payload.attendees[{i}].agency"), agency.clone())?;
        bounded_text(&format!("payload.attendees[{i}].role"), role, 64)?;
    }
    bounded_text("payload.minutes", &p.minutes, 20_000)?;
    bounded_text("payload.minutes_redacted", &p.minutes_redacted, 20_000)?;
    if !p.disclosure_decision.is_empty() {
        bounded_text("payload.disclosure_decision", &p.disclosure_decision, 4000)?;
    }
    Date::parse("payload.next_review", &p.next_review)?;
    Ok(())
}

fn on_application(body: &EventBody, application_id: &str) -> Result<()> {
    nominal_uuid("payload.application_id", application_id)?;
    expect_stream(body, &format!("disclosure-{application_id}"))
}

fn not_after_event(body: &EventBody, field: &str, t: Option<crate::Timestamp>) -> Result<()> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    if t.micros() > body.occurred_at.micros() {
        return Err(Error::invalid(field, "must not be after the event's occurred_at"));
    }
    Ok(())
}

fn sha256_hex(field: &str, s: &str) -> Result<()> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Ok(());
    }
    Err(Error::invalid(field, format!("must be a SHA-256 in lower-case hex (64 characters), found {s:?}")))
}

fn validate_disclosure_request(body: &EventBody, p: &DisclosureRequested) -> Result<()> {
    on_application(body, &p.application_id)?;
    one_of("payload.scheme", &p.scheme, &["csods", "dvds_right_to_ask", "dvds_right_to_know", "mappa_third_party"])?;
    let police_initiated = matches!(p.scheme.as_str(), "dvds_right_to_know" | "mappa_third_party");
    if !police_initiated {
        nominal_uuid("payload.applicant_id", &p.applicant_id)?;
        expect_subject(body, "applicant", &p.applicant_id)?;
        bounded_text("payload.applicant_name", &p.applicant_name, 200)?;
        bounded_text("payload.applicant_relationship", &p.applicant_relationship, 200)?;
    }
    bounded_text("payload.subject_description", &p.subject_description, 1000)?;
    if !p.subject_nominal_id.is_empty() {
        nominal_uuid("payload.subject_nominal_id", &p.subject_nominal_id)?;
    }
    non_empty_list("payload.persons_at_risk", &p.persons_at_risk, 400)?;
    not_after_event(body, "payload.received_at", p.received_at)
}

fn non_empty_list(field: &str, items: &[String], max_len: usize) -> Result<()> {
    if items.is_empty() || items.len() > 50 {
        return Err(Error::invalid(field, format!("must hold 1 to 50 entries, found {}", items.len())));
    }
    for (i, item) in items.iter().enumerate() {
        bounded_text(&format!("{field}[{i}]"), item, max_len)?;
    }
    Ok(())
}

fn validate_consent(body: &EventBody, p: &ConsentRecorded) -> Result<()> {
    nominal_uuid("payload.consent_id", &p.consent_id)?;
    expect_stream(body, &format!("consent-{}", p.consent_id))?;
    nominal_uuid("payload.subject_id", &p.subject_id)?;
    expect_subject(body, "person", &p.subject_id)?;
    non_empty_list("payload.data", &p.data, 64)?;
    non_empty_list("payload.purposes", &p.purposes, 200)?;
    if p.recipients.is_empty() || p.recipients.len() > 50 {
        return Err(Error::invalid(
            "payload.recipients",
            format!("a consent names 1 to 50 recipient agencies, found {}", p.recipients.len()),
        ));
    }
    for (i, r) in p.recipients.iter().enumerate() {
        AgencyId::parse_field(&format!("payload.recipients[{i}]"), r.clone())?;
    }
    bounded_text("payload.given_by", &p.given_by, 200)?;
    if !["verbal", "written", "electronic"].contains(&p.method.as_str()) {
        return Err(Error::invalid(
            "payload.method",
            format!("must be verbal, written or electronic, found {:?}", p.method),
        ));
    }
    if let Some(t) = p.expires_at
        && t.micros() <= body.occurred_at.micros()
    {
        return Err(Error::invalid("payload.expires_at", "must be after the event's occurred_at"));
    }
    Ok(())
}

fn validate_referral(body: &EventBody, p: &SupportReferralMade) -> Result<()> {
    nominal_uuid("payload.referral_id", &p.referral_id)?;
    expect_stream(body, &format!("referral-{}", p.referral_id))?;
    if p.consent_id.is_empty() {
        return Err(Error::invalid(
            "payload.consent_id",
            "a support referral needs the consent it is made under (record a ConsentRecorded first)",
        ));
    }
    nominal_uuid("payload.consent_id", &p.consent_id)?;
    nominal_uuid("payload.subject_id", &p.subject_id)?;
    expect_subject(body, "person", &p.subject_id)?;
    if body.addressees.len() != 1 {
        return Err(Error::invalid(
            "addressees",
            format!("a support referral goes to exactly one support service, found {}", body.addressees.len()),
        ));
    }
    bounded_text("payload.contact_name", &p.contact_name, 200)?;
    non_empty_list("payload.needs", &p.needs, 400)?;
    bounded_text("payload.safe_contact_method", &p.safe_contact_method, 400)?;
    if !p.safe_contact_details.is_empty() {
        bounded_text("payload.safe_contact_details", &p.safe_contact_details, 400)?;
    }
    Ok(())
}

impl Payload {
    /// The event type this payload is recorded as.
    pub fn event_type(&self) -> &'static str {
        match self {
            Payload::AgencyRegistered(_) => types::AGENCY_REGISTERED,
            Payload::SigningKeyRegistered(_) => types::SIGNING_KEY_REGISTERED,
            Payload::SigningKeyRevoked(_) => types::SIGNING_KEY_REVOKED,
            Payload::LogKeyRegistered(_) => types::LOG_KEY_REGISTERED,
            Payload::NominalRegistered(_) => types::NOMINAL_REGISTERED,
            Payload::MappaLevelSet(_) => types::MAPPA_LEVEL_SET,
            Payload::PolicyAdopted(_) => types::POLICY_ADOPTED,
            Payload::EncompassNotificationSent(_) => types::ENCOMPASS_NOTIFICATION_SENT,
            Payload::EncompassNotificationAcknowledged(_) => types::ENCOMPASS_NOTIFICATION_ACKNOWLEDGED,
            Payload::ConsentRecorded(_) => types::CONSENT_RECORDED,
            Payload::ConsentWithdrawn(_) => types::CONSENT_WITHDRAWN,
            Payload::SupportReferralMade(_) => types::SUPPORT_REFERRAL_MADE,
            Payload::SupportReferralAccepted(_) => types::SUPPORT_REFERRAL_ACCEPTED,
            Payload::SupportReferralDeclined(_) => types::SUPPORT_REFERRAL_DECLINED,
            Payload::RecordCorrected(_) => types::RECORD_CORRECTED,
            Payload::NotificationRequirementUpdated(_) => types::NOTIFICATION_REQUIREMENT_UPDATED,
            Payload::OrderRecorded(_) => types::ORDER_RECORDED,
            Payload::RiskAssessmentRecorded(_) => types::RISK_ASSESSMENT_RECORDED,
            Payload::MappaReferralMade(_) => types::MAPPA_REFERRAL_MADE,
            Payload::MappaMeetingHeld(_) => types::MAPPA_MEETING_HELD,
            Payload::ActionAssigned(_) => types::ACTION_ASSIGNED,
            Payload::ActionCompleted(_) => types::ACTION_COMPLETED,
            Payload::DisclosureRequested(_) => types::DISCLOSURE_REQUESTED,
            Payload::DisclosureChecksCompleted(_) => types::DISCLOSURE_CHECKS_COMPLETED,
            Payload::ApplicantVerified(_) => types::APPLICANT_VERIFIED,
            Payload::DisclosureDecided(_) => types::DISCLOSURE_DECIDED,
            Payload::DisclosureMade(_) => types::DISCLOSURE_MADE,
            Payload::DisclosureApplicationClosed(_) => types::DISCLOSURE_APPLICATION_CLOSED,
            Payload::RiskManagementPlanUpdated(_) => types::RISK_MANAGEMENT_PLAN_UPDATED,
            Payload::MinutesDistributed(_) => types::MINUTES_DISTRIBUTED,
            Payload::DomesticAbuseIncidentRecorded(_) => types::DOMESTIC_ABUSE_INCIDENT_RECORDED,
            Payload::SchoolSupportRecorded(_) => types::SCHOOL_SUPPORT_RECORDED,
            Payload::IntelligenceShared(_) => types::INTELLIGENCE_SHARED,
            Payload::IncidentRecorded(_) => types::INCIDENT_RECORDED,
            Payload::VictimContactDetailsRecorded(_) => types::VICTIM_CONTACT_DETAILS_RECORDED,
            Payload::AccessInvestigationOpened(_) => types::ACCESS_INVESTIGATION_OPENED,
            Payload::AccessInvestigationClosed(_) => types::ACCESS_INVESTIGATION_CLOSED,
            Payload::RetentionReviewed(_) => types::RETENTION_REVIEWED,
            Payload::RecordErased(_) => types::RECORD_ERASED,
        }
    }

    /// Whether the event creates its stream (a nominal, a notification, a consent, ...): it must
    /// then be the stream's first event, so nothing can be created twice or taken over.
    pub fn creates_stream(&self) -> bool {
        matches!(
            self,
            Payload::NominalRegistered(_)
                | Payload::EncompassNotificationSent(_)
                | Payload::ConsentRecorded(_)
                | Payload::SupportReferralMade(_)
                | Payload::DisclosureRequested(_)
                | Payload::DomesticAbuseIncidentRecorded(_)
                | Payload::IncidentRecorded(_)
                | Payload::IntelligenceShared(_)
                | Payload::AccessInvestigationOpened(_)
                | Payload::RetentionReviewed(_)
        )
    }

    /// Checks the payload against its envelope. Field names in errors start at `payload.`.
    pub fn validate(&self, body: &EventBody) -> Result<()> {
        if body.schema_version != 1 {
            return Err(Error::invalid(
                "schema_version",
                format!("{} has schema version 1 only, found {}", body.event_type, body.schema_version),
            ));
        }
        if self.creates_stream() && body.expected_version != crate::ExpectedVersion::NoStream {
            return Err(Error::invalid(
                "expected_version",
                format!("{} opens its stream: set expected_version no_stream", body.event_type),
            ));
        }
        match self {
            Payload::AgencyRegistered(p) => {
                expect_system(body)?;
                expect_stream(body, &agency_stream(&p.agency_id))?;
                bounded_text("payload.name", &p.name, 200)
            }
            Payload::SigningKeyRegistered(p) => {
                expect_system(body)?;
                expect_stream(body, &agency_stream(&p.agency_id))
            }
            Payload::SigningKeyRevoked(p) => {
                let by_system = body.author.agency.as_str() == SYSTEM_AGENCY;
                if !by_system && body.author.agency != p.agency_id {
                    return Err(Error::invalid(
                        "payload.agency_id",
                        format!(
                            "an agency may revoke only its own keys: author is {}, key belongs to {}",
                            body.author.agency, p.agency_id
                        ),
                    ));
                }
                expect_stream(body, &agency_stream(&p.agency_id))?;
                bounded_text("payload.reason", &p.reason, 1000)
            }
            Payload::LogKeyRegistered(p) => {
                expect_system(body)?;
                expect_stream(body, LOG_STREAM)?;
                bounded_text("payload.verifier_key", &p.verifier_key, 400)
            }
            Payload::NominalRegistered(p) => {
                nominal_uuid("payload.nominal_id", &p.nominal_id)?;
                expect_stream(body, &format!("nominal-{}", p.nominal_id))?;
                expect_subject(body, "nominal", &p.nominal_id)?;
                if p.names.is_empty() {
                    return Err(Error::invalid("payload.names", "must hold at least one name"));
                }
                for (i, n) in p.names.iter().chain(&p.aliases).enumerate() {
                    bounded_text(&format!("payload.names[{i}]"), n, 200)?;
                }
                let dob = Date::parse("payload.date_of_birth", &p.date_of_birth)?;
                let occurred_day = body.occurred_at.micros().div_euclid(86_400_000_000);
                if dob.days_since_epoch() > occurred_day {
                    return Err(Error::invalid(
                        "payload.date_of_birth",
                        format!("must not be after the event, found {}", p.date_of_birth),
                    ));
                }
                if p.mappa_category > 4 {
                    return Err(Error::invalid(
                        "payload.mappa_category",
                        format!("must be 0 (none) or 1 to 4, found {}", p.mappa_category),
                    ));
                }
                AgencyId::parse_field("payload.lead_agency", p.lead_agency.clone())?;
                if p.co_managing_agencies.len() > 20 {
                    return Err(Error::invalid("payload.co_managing_agencies", "at most 20 agencies"));
                }
                for (i, a) in p.co_managing_agencies.iter().enumerate() {
                    AgencyId::parse_field(&format!("payload.co_managing_agencies[{i}]"), a.clone())?;
                }
                bounded_text("payload.nominal_manager", &p.nominal_manager, 128)?;
                bounded_text("payload.index_offence", &p.index_offence, 1000)
            }
            Payload::MappaLevelSet(p) => {
                nominal_uuid("payload.nominal_id", &p.nominal_id)?;
                expect_stream(body, &format!("nominal-{}", p.nominal_id))?;
                expect_subject(body, "nominal", &p.nominal_id)?;
                if !(1..=3).contains(&p.level) {
                    return Err(Error::invalid(
                        "payload.level",
                        format!("MAPPA level must be 1 to 3, found {}", p.level),
                    ));
                }
                bounded_text("payload.decided_by", &p.decided_by, 128)?;
                bounded_text("payload.rationale", &p.rationale, 4000)
            }
            Payload::PolicyAdopted(p) => {
                expect_stream(body, POLICY_STREAM)?;
                if p.policies.trim().is_empty() {
                    return Err(Error::invalid("payload.policies", "must hold the Cedar policy text"));
                }
                if p.schema_version == 0 {
                    return Err(Error::invalid("payload.schema_version", "must name the schema version, found 0"));
                }
                if p.views.len() > 1000 {
                    return Err(Error::invalid(
                        "payload.views",
                        format!("at most 1000 views, found {}", p.views.len()),
                    ));
                }
                for (i, v) in p.views.iter().enumerate() {
                    bounded_text(&format!("payload.views[{i}].id"), &v.id, 128)?;
                    bounded_text(&format!("payload.views[{i}].record_kind"), &v.record_kind, 64)?;
                }
                if !p.description.is_empty() {
                    bounded_text("payload.description", &p.description, 4000)?;
                }
                Ok(())
            }
            Payload::EncompassNotificationSent(p) => validate_encompass(body, p),
            Payload::EncompassNotificationAcknowledged(p) => {
                nominal_uuid("payload.notification_id", &p.notification_id)?;
                expect_stream(body, &format!("encompass-{}", p.notification_id))?;
                bounded_text("payload.acknowledged_by", &p.acknowledged_by, 128)
            }
            Payload::ConsentRecorded(p) => validate_consent(body, p),
            Payload::ConsentWithdrawn(p) => {
                nominal_uuid("payload.consent_id", &p.consent_id)?;
                expect_stream(body, &format!("consent-{}", p.consent_id))?;
                bounded_text("payload.withdrawn_by", &p.withdrawn_by, 200)?;
                if !p.reason.is_empty() {
                    bounded_text("payload.reason", &p.reason, 2000)?;
                }
                Ok(())
            }
            Payload::SupportReferralMade(p) => validate_referral(body, p),
            Payload::SupportReferralAccepted(p) => {
                nominal_uuid("payload.referral_id", &p.referral_id)?;
                expect_stream(body, &format!("referral-{}", p.referral_id))?;
                bounded_text("payload.allocated_to", &p.allocated_to, 128)
            }
            Payload::SupportReferralDeclined(p) => {
                nominal_uuid("payload.referral_id", &p.referral_id)?;
                expect_stream(body, &format!("referral-{}", p.referral_id))?;
                bounded_text("payload.reason", &p.reason, 2000)
            }
            Payload::RecordCorrected(p) => {
                if body.supersedes.is_none() {
                    return Err(Error::invalid(
                        "supersedes",
                        "a RecordCorrected must name the corrected event's event_id in supersedes",
                    ));
                }
                if p.fields.is_empty() || p.fields.len() > 50 {
                    return Err(Error::invalid(
                        "payload.fields",
                        format!("must correct 1 to 50 fields, found {}", p.fields.len()),
                    ));
                }
                for (path, value) in &p.fields {
                    bounded_text("payload.fields", path, 64)?;
                    bounded_text(&format!("payload.fields[{path:?}]"), value, 4000)?;
                }
                bounded_text("payload.reason", &p.reason, 2000)
            }
            Payload::NotificationRequirementUpdated(p) => validate_notification_requirement(body, p),
            Payload::OrderRecorded(p) => validate_order(body, p),
            Payload::RiskAssessmentRecorded(p) => validate_risk(body, p),
            Payload::MappaReferralMade(p) => {
                on_nominal(body, &p.nominal_id)?;
                if !(1..=4).contains(&p.category) {
                    return Err(Error::invalid(
                        "payload.category",
                        format!("MAPPA category must be 1 to 4, found {}", p.category),
                    ));
                }
                if !(2..=3).contains(&p.level_requested) {
                    return Err(Error::invalid(
                        "payload.level_requested",
                        format!("a MAPPA referral asks for level 2 or 3, found {}", p.level_requested),
                    ));
                }
                bounded_text("payload.referrer", &p.referrer, 128)?;
                bounded_text("payload.reason", &p.reason, 4000)
            }
            Payload::MappaMeetingHeld(p) => validate_meeting(body, p),
            Payload::ActionAssigned(p) => {
                on_nominal(body, &p.nominal_id)?;
                nominal_uuid("payload.action_id", &p.action_id)?;
                nominal_uuid("payload.meeting_id", &p.meeting_id)?;
                AgencyId::parse_field("payload.owner_agency", p.owner_agency.clone())?;
                bounded_text("payload.owner_role", &p.owner_role, 64)?;
                bounded_text("payload.description", &p.description, 2000)?;
                let due = p.due.ok_or_else(|| Error::invalid("payload.due", "an action needs a due date"))?;
                if due.micros() <= body.occurred_at.micros() {
                    return Err(Error::invalid("payload.due", "must be after the event's occurred_at"));
                }
                Ok(())
            }
            Payload::ActionCompleted(p) => {
                on_nominal(body, &p.nominal_id)?;
                nominal_uuid("payload.action_id", &p.action_id)?;
                bounded_text("payload.outcome", &p.outcome, 2000)
            }
            Payload::DisclosureRequested(p) => validate_disclosure_request(body, p),
            Payload::DisclosureChecksCompleted(p) => {
                on_application(body, &p.application_id)?;
                not_after_event(body, "payload.completed_at", p.completed_at)?;
                bounded_text("payload.findings", &p.findings, 4000)
            }
            Payload::ApplicantVerified(p) => {
                on_application(body, &p.application_id)?;
                not_after_event(body, "payload.verified_at", p.verified_at)?;
                one_of("payload.method", &p.method, &["face_to_face", "other"])?;
                if p.method == "other" {
                    bounded_text("payload.notes", &p.notes, 2000)?;
                }
                Ok(())
            }
            Payload::DisclosureDecided(p) => {
                on_application(body, &p.application_id)?;
                one_of("payload.decision", &p.decision, &["disclose", "no_disclosure"])?;
                bounded_text("payload.decision_maker", &p.decision_maker, 200)?;
                bounded_text("payload.rationale", &p.rationale, 4000)?;
                if p.decision == "disclose" {
                    bounded_text("payload.recipient", &p.recipient, 200)?;
                    sha256_hex("payload.content_sha256", &p.content_sha256)?;
                } else if !p.recipient.is_empty() || !p.content_sha256.is_empty() {
                    return Err(Error::invalid(
                        "payload.recipient",
                        "a no_disclosure decision names no recipient and no content",
                    ));
                }
                Ok(())
            }
            Payload::DisclosureMade(p) => {
                on_application(body, &p.application_id)?;
                bounded_text("payload.recipient", &p.recipient, 200)?;
                bounded_text("payload.discloser", &p.discloser, 128)?;
                sha256_hex("payload.content_sha256", &p.content_sha256)
            }
            Payload::DisclosureApplicationClosed(p) => {
                on_application(body, &p.application_id)?;
                bounded_text("payload.outcome_told_to_applicant", &p.outcome_told_to_applicant, 2000)
            }
            Payload::RiskManagementPlanUpdated(p) => {
                on_nominal(body, &p.nominal_id)?;
                nominal_uuid("payload.plan_id", &p.plan_id)?;
                if p.version == 0 {
                    return Err(Error::invalid("payload.version", "plan versions count from 1"));
                }
                let sections = [&p.supervision, &p.monitoring_and_control, &p.interventions, &p.victim_safety];
                if sections.iter().all(|x| x.is_empty()) {
                    return Err(Error::invalid("payload.supervision", "a plan sets at least one of its four sections"));
                }
                for (name, x) in
                    ["supervision", "monitoring_and_control", "interventions", "victim_safety"].iter().zip(sections)
                {
                    if !x.is_empty() {
                        bounded_text(&format!("payload.{name}"), x, 8000)?;
                    }
                }
                for (i, a) in p.actions.iter().enumerate() {
                    bounded_text(&format!("payload.actions[{i}]"), a, 1000)?;
                }
                Ok(())
            }
            Payload::MinutesDistributed(p) => {
                on_nominal(body, &p.nominal_id)?;
                nominal_uuid("payload.meeting_id", &p.meeting_id)?;
                one_of("payload.redaction_profile", &p.redaction_profile, &["full", "duty_to_cooperate"])?;
                if body.addressees.is_empty() {
                    return Err(Error::invalid("addressees", "minutes go to at least one agency"));
                }
                Ok(())
            }
            Payload::DomesticAbuseIncidentRecorded(p) => {
                nominal_uuid("payload.incident_id", &p.incident_id)?;
                expect_stream(body, &format!("incident-{}", p.incident_id))?;
                bounded_text("payload.incident_ref", &p.incident_ref, 64)?;
                not_after_event(body, "payload.occurred", p.occurred)?;
                bounded_text("payload.location", &p.location, 400)?;
                for (i, c) in p.children.iter().enumerate() {
                    let f = |x: &str| format!("payload.children[{i}].{x}");
                    nominal_uuid(&f("child_id"), &c.child_id)?;
                    expect_subject(body, "child", &c.child_id)?;
                    bounded_text(&f("name"), &c.name, 200)?;
                    Date::parse(&f("date_of_birth"), &c.date_of_birth)?;
                }
                Ok(())
            }
            Payload::SchoolSupportRecorded(p) => {
                nominal_uuid("payload.notification_id", &p.notification_id)?;
                expect_stream(body, &format!("encompass-{}", p.notification_id))?;
                one_of("payload.support_type", &p.support_type, &["overt", "silent"])?;
                bounded_text("payload.support_given", &p.support_given, 4000)?;
                for (i, w) in p.shared_with.iter().enumerate() {
                    bounded_text(&format!("payload.shared_with[{i}]"), w, 200)?;
                }
                Ok(())
            }
            Payload::IntelligenceShared(p) => {
                nominal_uuid("payload.intelligence_id", &p.intelligence_id)?;
                expect_stream(body, &format!("intelligence-{}", p.intelligence_id))?;
                AgencyId::parse_field("payload.source_agency", p.source_agency.clone())?;
                non_empty_list("payload.offender_descriptors", &p.offender_descriptors, 1000)?;
                match (p.reporter_anonymised, p.reporter_id.is_empty()) {
                    (true, false) => {
                        Err(Error::invalid("payload.reporter_id", "an anonymised report names no reporter"))
                    }
                    (false, true) => {
                        Err(Error::invalid("payload.reporter_id", "is required when the reporter agreed to be named"))
                    }
                    (false, false) => nominal_uuid("payload.reporter_id", &p.reporter_id),
                    (true, true) => Ok(()),
                }
            }
            Payload::IncidentRecorded(p) => {
                nominal_uuid("payload.incident_id", &p.incident_id)?;
                expect_stream(body, &format!("incident-{}", p.incident_id))?;
                bounded_text("payload.incident_ref", &p.incident_ref, 64)?;
                nominal_uuid("payload.victim_id", &p.victim_id)?;
                expect_subject(body, "victim", &p.victim_id)?;
                bounded_text("payload.offence_type", &p.offence_type, 100)?;
                bounded_text("payload.officer", &p.officer, 128)
            }
            Payload::VictimContactDetailsRecorded(p) => {
                nominal_uuid("payload.victim_id", &p.victim_id)?;
                expect_stream(body, &format!("victim-{}", p.victim_id))?;
                expect_subject(body, "victim", &p.victim_id)?;
                if !body.sensitivity.contains(&crate::SensitivityTag::VictimLocation) {
                    return Err(Error::invalid(
                        "sensitivity",
                        "a victim's contact details must be tagged SENSITIVITY_TAG_VICTIM_LOCATION",
                    ));
                }
                bounded_text("payload.address", &p.address, 1000)?;
                bounded_text("payload.safe_contact_method", &p.safe_contact_method, 400)
            }
            Payload::AccessInvestigationOpened(p) => {
                nominal_uuid("payload.investigation_id", &p.investigation_id)?;
                expect_stream(body, &format!("investigation-{}", p.investigation_id))?;
                bounded_text("payload.user_investigated", &p.user_investigated, 200)?;
                bounded_text("payload.purpose", &p.purpose, 2000)
            }
            Payload::AccessInvestigationClosed(p) => {
                nominal_uuid("payload.investigation_id", &p.investigation_id)?;
                expect_stream(body, &format!("investigation-{}", p.investigation_id))?;
                bounded_text("payload.findings", &p.findings, 8000)
            }
            Payload::RetentionReviewed(p) => {
                nominal_uuid("payload.review_id", &p.review_id)?;
                expect_stream(body, &format!("retention-{}", p.review_id))?;
                bounded_text("payload.retention_group", &p.retention_group, 64)?;
                one_of("payload.decision", &p.decision, &["retain", "erase"])?;
                if p.decision == "retain" {
                    Date::parse("payload.next_review", &p.next_review)?;
                }
                if p.event_ids.is_empty() || p.event_ids.len() > 1000 {
                    return Err(Error::invalid(
                        "payload.event_ids",
                        format!("a review covers 1 to 1000 events, found {}", p.event_ids.len()),
                    ));
                }
                for (i, id) in p.event_ids.iter().enumerate() {
                    crate::EventId::parse_field(&format!("payload.event_ids[{i}]"), id)?;
                }
                Ok(())
            }
            Payload::RecordErased(p) => {
                nominal_uuid("payload.review_id", &p.review_id)?;
                expect_stream(body, &format!("retention-{}", p.review_id))?;
                crate::EventId::parse_field("payload.event_id", &p.event_id)?;
                bounded_text("payload.reason", &p.reason, 2000)
            }
        }
    }

    /// How recording this payload changes the key registry.
    pub fn registry_effect(&self) -> RegistryEffect {
        match self {
            Payload::SigningKeyRegistered(p) => RegistryEffect::RegisterKey {
                key_id: p.key_id.clone(),
                agency: p.agency_id.clone(),
                public_key: p.public_key,
            },
            Payload::SigningKeyRevoked(p) => {
                RegistryEffect::RevokeKey { key_id: p.key_id.clone(), agency: p.agency_id.clone() }
            }
            Payload::AgencyRegistered(p) => RegistryEffect::RegisterAgency {
                agency: p.agency_id.clone(),
                kind: p.kind,
                governs_policy: p.governs_policy,
            },
            Payload::PolicyAdopted(_) => RegistryEffect::AdoptPolicy,
            _ => RegistryEffect::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_for_existence() {
        assert!(Date::parse("d", "2024-02-29").is_ok());
        assert!(Date::parse("d", "2023-02-29").is_err());
        assert!(Date::parse("d", "2023-13-01").is_err());
        assert!(Date::parse("d", "2023-1-01").is_err());
        assert_eq!(Date::parse("d", "1970-01-02").unwrap().days_since_epoch(), 1);
        assert_eq!(Date::parse("d", "2000-03-01").unwrap().days_since_epoch(), 11_017);
    }

    #[test]
    fn agency_kinds_round_trip() {
        for k in AgencyKind::ALL {
            assert_eq!(AgencyKind::parse(k.as_str()).unwrap(), k);
        }
        assert!(AgencyKind::parse("bank").is_err());
    }
}
