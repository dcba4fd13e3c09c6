//! Wire <-> domain conversions: the only code that knows both `accord_proto` and `accord_domain`.
//! Every conversion from the wire validates, naming the offending field.

use accord_domain::payload::{self, AgencyKind, Payload, types};
use accord_domain::{
    AgencyId, Author, Classification, Error, EventBody, EventId, EventType, ExpectedVersion, KeyId, LegalBasis, Regime,
    Result, Role, SensitivityTag, StreamId, Subject, Timestamp, UserId,
};
use accord_proto::v1 as pb;
use prost::Message;

fn at(prefix: &str, field: &str) -> String {
    if prefix.is_empty() { field.to_owned() } else { format!("{prefix}.{field}") }
}

/// Prefixes the field name of a domain error.
pub fn in_field(prefix: &str, e: Error) -> Error {
    match e {
        Error::Invalid { field, message } => Error::Invalid { field: at(prefix, &field), message },
        other => other,
    }
}

/// A wire timestamp as a domain timestamp.
pub fn timestamp(field: &str, t: Option<prost_types::Timestamp>) -> Result<Timestamp> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    Timestamp::from_parts(field, t.seconds, t.nanos)
}

/// A domain timestamp on the wire.
pub fn timestamp_pb(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.parts();
    prost_types::Timestamp { seconds, nanos }
}

fn optional_uuid(field: &str, s: &str) -> Result<Option<uuid::Uuid>> {
    if s.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::try_parse(s).map(Some).map_err(|_| Error::invalid(field, format!("must be a UUID, found {s:?}")))
}

fn optional_event_id(field: &str, s: &str) -> Result<Option<EventId>> {
    if s.is_empty() { Ok(None) } else { EventId::parse_field(field, s).map(Some) }
}

/// Decodes and validates an encoded `EventBody` (the envelope only; see [`payload`]).
pub fn event_body(p: &str, bytes: &[u8]) -> Result<EventBody> {
    let b = pb::EventBody::decode(bytes)
        .map_err(|e| Error::invalid(p, format!("is not a protobuf accord.v1.EventBody: {e}")))?;
    let author = b.author.ok_or_else(|| Error::invalid(at(p, "author"), "is required"))?;
    let basis = b.legal_basis.ok_or_else(|| Error::invalid(at(p, "legal_basis"), "is required"))?;
    let expected = match b.expected_version.and_then(|v| v.kind) {
        None => return Err(Error::invalid(at(p, "expected_version"), "is required: set any, no_stream or exact")),
        Some(pb::expected_version::Kind::Any(_)) => ExpectedVersion::Any,
        Some(pb::expected_version::Kind::NoStream(_)) => ExpectedVersion::NoStream,
        Some(pb::expected_version::Kind::Exact(n)) => ExpectedVersion::Exact(n),
    };
    let regime = match pb::Regime::try_from(b.regime) {
        Ok(pb::Regime::Part3) => Regime::Part3,
        Ok(pb::Regime::UkGdpr) => Regime::UkGdpr,
        Ok(pb::Regime::System) => Regime::System,
        _ => {
            return Err(Error::invalid(
                at(p, "regime"),
                format!("must be REGIME_PART3 or REGIME_UK_GDPR, found {}", b.regime),
            ));
        }
    };
    let classification = match pb::Classification::try_from(b.classification) {
        Ok(pb::Classification::Official) => Classification::Official,
        Ok(pb::Classification::OfficialSensitive) => Classification::OfficialSensitive,
        _ => {
            return Err(Error::invalid(
                at(p, "classification"),
                format!(
                    "must be CLASSIFICATION_OFFICIAL or CLASSIFICATION_OFFICIAL_SENSITIVE, found {}",
                    b.classification
                ),
            ));
        }
    };
    let sensitivity = b
        .sensitivity
        .iter()
        .enumerate()
        .map(|(i, t)| match pb::SensitivityTag::try_from(*t) {
            Ok(pb::SensitivityTag::VictimLocation) => Ok(SensitivityTag::VictimLocation),
            Ok(pb::SensitivityTag::Health) => Ok(SensitivityTag::Health),
            Ok(pb::SensitivityTag::SexLife) => Ok(SensitivityTag::SexLife),
            Ok(pb::SensitivityTag::Child) => Ok(SensitivityTag::Child),
            Ok(pb::SensitivityTag::Intelligence) => Ok(SensitivityTag::Intelligence),
            _ => Err(Error::invalid(at(p, &format!("sensitivity[{i}]")), format!("unknown tag {t}"))),
        })
        .collect::<Result<_>>()?;
    let body = EventBody {
        event_id: EventId::parse_field(&at(p, "event_id"), &b.event_id)?,
        stream: StreamId::parse_field(&at(p, "stream"), b.stream)?,
        expected_version: expected,
        event_type: EventType::parse_field(&at(p, "event_type"), b.event_type)?,
        schema_version: b.schema_version,
        payload: b.payload,
        author: Author {
            agency: AgencyId::parse_field(&at(p, "author.agency"), author.agency)?,
            user: UserId::parse_field(&at(p, "author.user"), author.user)?,
            role: Role::parse_field(&at(p, "author.role"), author.role)?,
        },
        occurred_at: timestamp(&at(p, "occurred_at"), b.occurred_at)?,
        legal_basis: LegalBasis::parse(basis.statute, basis.purpose).map_err(|e| in_field(p, e))?,
        subjects: b
            .subjects
            .into_iter()
            .enumerate()
            .map(|(i, s)| Subject::parse(&at(p, &format!("subjects[{i}]")), s.kind, s.id))
            .collect::<Result<_>>()?,
        addressees: b
            .addressees
            .into_iter()
            .enumerate()
            .map(|(i, a)| AgencyId::parse_field(&at(p, &format!("addressees[{i}]")), a))
            .collect::<Result<_>>()?,
        correlation_id: optional_uuid(&at(p, "correlation_id"), &b.correlation_id)?,
        causation_id: optional_event_id(&at(p, "causation_id"), &b.causation_id)?,
        regime,
        classification,
        sensitivity,
        supersedes: optional_event_id(&at(p, "supersedes"), &b.supersedes)?,
    };
    body.check_envelope().map_err(|e| in_field(p, e))?;
    Ok(body)
}

fn decode<M: Message + Default>(p: &str, body: &EventBody) -> Result<M> {
    M::decode(body.payload.as_slice())
        .map_err(|e| Error::invalid(at(p, "payload"), format!("is not a protobuf {}: {e}", body.event_type)))
}

fn agency_kind(field: &str, k: i32) -> Result<AgencyKind> {
    use pb::AgencyKind as K;
    Ok(match K::try_from(k) {
        Ok(K::Police) => AgencyKind::Police,
        Ok(K::Probation) => AgencyKind::Probation,
        Ok(K::Prison) => AgencyKind::Prison,
        Ok(K::School) => AgencyKind::School,
        Ok(K::ChildrensServices) => AgencyKind::ChildrensServices,
        Ok(K::Health) => AgencyKind::Health,
        Ok(K::SupportService) => AgencyKind::SupportService,
        Ok(K::LocalAuthority) => AgencyKind::LocalAuthority,
        Ok(K::Housing) => AgencyKind::Housing,
        Ok(K::YouthJustice) => AgencyKind::YouthJustice,
        Ok(K::MappaUnit) => AgencyKind::MappaUnit,
        Ok(K::System) => AgencyKind::System,
        _ => return Err(Error::invalid(field, format!("unknown agency kind {k}"))),
    })
}

/// The wire value of an agency kind.
pub fn agency_kind_pb(k: AgencyKind) -> pb::AgencyKind {
    use pb::AgencyKind as K;
    match k {
        AgencyKind::Police => K::Police,
        AgencyKind::Probation => K::Probation,
        AgencyKind::Prison => K::Prison,
        AgencyKind::School => K::School,
        AgencyKind::ChildrensServices => K::ChildrensServices,
        AgencyKind::Health => K::Health,
        AgencyKind::SupportService => K::SupportService,
        AgencyKind::LocalAuthority => K::LocalAuthority,
        AgencyKind::Housing => K::Housing,
        AgencyKind::YouthJustice => K::YouthJustice,
        AgencyKind::MappaUnit => K::MappaUnit,
        AgencyKind::System => K::System,
    }
}

/// Decodes the payload named by `body.event_type`. `p` prefixes field names (e.g. `events[0].body`).
pub fn payload(p: &str, body: &EventBody) -> Result<Payload> {
    let pf = |f: &str| at(p, &format!("payload.{f}"));
    Ok(match body.event_type.as_str() {
        types::AGENCY_REGISTERED => {
            let m: pb::AgencyRegistered = decode(p, body)?;
            Payload::AgencyRegistered(payload::AgencyRegistered {
                agency_id: AgencyId::parse_field(&pf("agency_id"), m.agency_id)?,
                name: m.name,
                kind: agency_kind(&pf("kind"), m.kind)?,
                governs_policy: m.governs_policy,
            })
        }
        types::SIGNING_KEY_REGISTERED => {
            let m: pb::SigningKeyRegistered = decode(p, body)?;
            let key = accord_domain::signing::parse_public_key(&pf("public_key"), &m.public_key)?;
            Payload::SigningKeyRegistered(payload::SigningKeyRegistered {
                key_id: KeyId::parse_field(&pf("key_id"), m.key_id)?,
                agency_id: AgencyId::parse_field(&pf("agency_id"), m.agency_id)?,
                public_key: key.to_bytes(),
            })
        }
        types::SIGNING_KEY_REVOKED => {
            let m: pb::SigningKeyRevoked = decode(p, body)?;
            Payload::SigningKeyRevoked(payload::SigningKeyRevoked {
                key_id: KeyId::parse_field(&pf("key_id"), m.key_id)?,
                agency_id: AgencyId::parse_field(&pf("agency_id"), m.agency_id)?,
                reason: m.reason,
            })
        }
        types::LOG_KEY_REGISTERED => {
            let m: pb::LogKeyRegistered = decode(p, body)?;
            Payload::LogKeyRegistered(payload::LogKeyRegistered { verifier_key: m.verifier_key })
        }
        types::NOMINAL_REGISTERED => {
            let m: pb::NominalRegistered = decode(p, body)?;
            Payload::NominalRegistered(payload::NominalRegistered {
                nominal_id: m.nominal_id,
                visor_ref: m.visor_ref,
                pnc_ref: m.pnc_ref,
                names: m.names,
                aliases: m.aliases,
                date_of_birth: m.date_of_birth,
                mappa_category: m.mappa_category,
                lead_agency: m.lead_agency,
                nominal_manager: m.nominal_manager,
                index_offence: m.index_offence,
                co_managing_agencies: m.co_managing_agencies,
            })
        }
        types::MAPPA_LEVEL_SET => {
            let m: pb::MappaLevelSet = decode(p, body)?;
            Payload::MappaLevelSet(payload::MappaLevelSet {
                nominal_id: m.nominal_id,
                level: m.level,
                decided_by: m.decided_by,
                rationale: m.rationale,
            })
        }
        types::POLICY_ADOPTED => {
            let m: pb::PolicyAdopted = decode(p, body)?;
            Payload::PolicyAdopted(payload::PolicyAdopted {
                policies: m.policies,
                views: m
                    .views
                    .into_iter()
                    .map(|v| payload::PolicyView { id: v.id, record_kind: v.record_kind, field_groups: v.field_groups })
                    .collect(),
                schema_version: m.schema_version,
                description: m.description,
            })
        }
        types::ENCOMPASS_NOTIFICATION_SENT => {
            let m: pb::EncompassNotificationSent = decode(p, body)?;
            Payload::EncompassNotificationSent(payload::EncompassNotificationSent {
                notification_id: m.notification_id,
                incident_ref: m.incident_ref,
                child: m.child.map(|c| payload::EncompassChild {
                    child_id: c.child_id,
                    name: c.name,
                    date_of_birth: c.date_of_birth,
                    present: c.present,
                    whereabouts: c.whereabouts,
                    voice_of_child: c.voice_of_child,
                }),
                establishment_urn: m.establishment_urn,
                local_authority: m.local_authority,
                recipient_role: m.recipient_role,
                incident_summary: m.incident_summary,
                circumstances: m.circumstances,
                deadline: m.deadline.map(|t| timestamp(&pf("deadline"), Some(t))).transpose()?,
            })
        }
        types::ENCOMPASS_NOTIFICATION_ACKNOWLEDGED => {
            let m: pb::EncompassNotificationAcknowledged = decode(p, body)?;
            Payload::EncompassNotificationAcknowledged(payload::EncompassNotificationAcknowledged {
                notification_id: m.notification_id,
                acknowledged_by: m.acknowledged_by,
            })
        }
        types::CONSENT_RECORDED => {
            let m: pb::ConsentRecorded = decode(p, body)?;
            Payload::ConsentRecorded(payload::ConsentRecorded {
                consent_id: m.consent_id,
                subject_id: m.subject_id,
                data: m.data,
                recipients: m.recipients,
                purposes: m.purposes,
                given_by: m.given_by,
                method: m.method,
                expires_at: m.expires_at.map(|t| timestamp(&pf("expires_at"), Some(t))).transpose()?,
            })
        }
        types::CONSENT_WITHDRAWN => {
            let m: pb::ConsentWithdrawn = decode(p, body)?;
            Payload::ConsentWithdrawn(payload::ConsentWithdrawn {
                consent_id: m.consent_id,
                withdrawn_by: m.withdrawn_by,
                reason: m.reason,
            })
        }
        types::SUPPORT_REFERRAL_MADE => {
            let m: pb::SupportReferralMade = decode(p, body)?;
            Payload::SupportReferralMade(payload::SupportReferralMade {
                referral_id: m.referral_id,
                consent_id: m.consent_id,
                subject_id: m.subject_id,
                contact_name: m.contact_name,
                needs: m.needs,
                safe_contact_method: m.safe_contact_method,
                safe_contact_details: m.safe_contact_details,
            })
        }
        types::SUPPORT_REFERRAL_ACCEPTED => {
            let m: pb::SupportReferralAccepted = decode(p, body)?;
            Payload::SupportReferralAccepted(payload::SupportReferralAccepted {
                referral_id: m.referral_id,
                allocated_to: m.allocated_to,
            })
        }
        types::SUPPORT_REFERRAL_DECLINED => {
            let m: pb::SupportReferralDeclined = decode(p, body)?;
            Payload::SupportReferralDeclined(payload::SupportReferralDeclined {
                referral_id: m.referral_id,
                reason: m.reason,
            })
        }
        types::RECORD_CORRECTED => {
            let m: pb::RecordCorrected = decode(p, body)?;
            Payload::RecordCorrected(payload::RecordCorrected {
                fields: m.fields.into_iter().collect(),
                reason: m.reason,
            })
        }
        types::NOTIFICATION_REQUIREMENT_UPDATED => {
            let m: pb::NotificationRequirementUpdated = decode(p, body)?;
            Payload::NotificationRequirementUpdated(payload::NotificationRequirementUpdated {
                nominal_id: m.nominal_id,
                kind: m.kind,
                changed_fields: m.changed_fields.into_iter().collect(),
                notified_at: m.notified_at.map(|t| timestamp(&pf("notified_at"), Some(t))).transpose()?,
                due_by: m.due_by.map(|t| timestamp(&pf("due_by"), Some(t))).transpose()?,
                status: m.status,
            })
        }
        types::ORDER_RECORDED => {
            let m: pb::OrderRecorded = decode(p, body)?;
            Payload::OrderRecorded(payload::OrderRecorded {
                nominal_id: m.nominal_id,
                order_id: m.order_id,
                order_type: m.order_type,
                prohibitions: m.prohibitions,
                positive_requirements: m.positive_requirements,
                start_date: m.start_date,
                end_date: m.end_date,
                court: m.court,
            })
        }
        types::RISK_ASSESSMENT_RECORDED => {
            let m: pb::RiskAssessmentRecorded = decode(p, body)?;
            Payload::RiskAssessmentRecorded(payload::RiskAssessmentRecorded {
                nominal_id: m.nominal_id,
                tool: m.tool,
                levels: m.levels.into_iter().collect(),
                factors: m.factors,
                assessor: m.assessor,
                next_review: m.next_review,
                summary: m.summary,
                victim_safety: m.victim_safety,
            })
        }
        types::MAPPA_REFERRAL_MADE => {
            let m: pb::MappaReferralMade = decode(p, body)?;
            Payload::MappaReferralMade(payload::MappaReferralMade {
                nominal_id: m.nominal_id,
                category: m.category,
                level_requested: m.level_requested,
                referrer: m.referrer,
                reason: m.reason,
            })
        }
        types::MAPPA_MEETING_HELD => {
            let m: pb::MappaMeetingHeld = decode(p, body)?;
            Payload::MappaMeetingHeld(payload::MappaMeetingHeld {
                nominal_id: m.nominal_id,
                meeting_id: m.meeting_id,
                meeting_type: m.meeting_type,
                level: m.level,
                chair: m.chair,
                attendees: m.attendees.into_iter().map(|a| (a.agency, a.role)).collect(),
                minutes: m.minutes,
                minutes_redacted: m.minutes_redacted,
                disclosure_decision: m.disclosure_decision,
                next_review: m.next_review,
            })
        }
        types::ACTION_ASSIGNED => {
            let m: pb::ActionAssigned = decode(p, body)?;
            Payload::ActionAssigned(payload::ActionAssigned {
                nominal_id: m.nominal_id,
                action_id: m.action_id,
                meeting_id: m.meeting_id,
                owner_agency: m.owner_agency,
                owner_role: m.owner_role,
                description: m.description,
                due: m.due.map(|t| timestamp(&pf("due"), Some(t))).transpose()?,
            })
        }
        types::ACTION_COMPLETED => {
            let m: pb::ActionCompleted = decode(p, body)?;
            Payload::ActionCompleted(payload::ActionCompleted {
                nominal_id: m.nominal_id,
                action_id: m.action_id,
                outcome: m.outcome,
            })
        }
        types::DISCLOSURE_REQUESTED => {
            let m: pb::DisclosureRequested = decode(p, body)?;
            Payload::DisclosureRequested(payload::DisclosureRequested {
                application_id: m.application_id,
                scheme: m.scheme,
                applicant_id: m.applicant_id,
                applicant_name: m.applicant_name,
                applicant_relationship: m.applicant_relationship,
                subject_description: m.subject_description,
                subject_nominal_id: m.subject_nominal_id,
                persons_at_risk: m.persons_at_risk,
                received_at: m.received_at.map(|t| timestamp(&pf("received_at"), Some(t))).transpose()?,
            })
        }
        types::DISCLOSURE_CHECKS_COMPLETED => {
            let m: pb::DisclosureChecksCompleted = decode(p, body)?;
            Payload::DisclosureChecksCompleted(payload::DisclosureChecksCompleted {
                application_id: m.application_id,
                completed_at: m.completed_at.map(|t| timestamp(&pf("completed_at"), Some(t))).transpose()?,
                immediate_risk: m.immediate_risk,
                findings: m.findings,
            })
        }
        types::APPLICANT_VERIFIED => {
            let m: pb::ApplicantVerified = decode(p, body)?;
            Payload::ApplicantVerified(payload::ApplicantVerified {
                application_id: m.application_id,
                verified_at: m.verified_at.map(|t| timestamp(&pf("verified_at"), Some(t))).transpose()?,
                method: m.method,
                notes: m.notes,
            })
        }
        types::DISCLOSURE_DECIDED => {
            let m: pb::DisclosureDecided = decode(p, body)?;
            Payload::DisclosureDecided(payload::DisclosureDecided {
                application_id: m.application_id,
                decision: m.decision,
                decision_maker: m.decision_maker,
                rationale: m.rationale,
                recipient: m.recipient,
                content_sha256: m.content_sha256,
            })
        }
        types::DISCLOSURE_MADE => {
            let m: pb::DisclosureMade = decode(p, body)?;
            Payload::DisclosureMade(payload::DisclosureMade {
                application_id: m.application_id,
                recipient: m.recipient,
                discloser: m.discloser,
                content_sha256: m.content_sha256,
                undertaking_signed: m.undertaking_signed,
            })
        }
        types::DISCLOSURE_APPLICATION_CLOSED => {
            let m: pb::DisclosureApplicationClosed = decode(p, body)?;
            Payload::DisclosureApplicationClosed(payload::DisclosureApplicationClosed {
                application_id: m.application_id,
                outcome_told_to_applicant: m.outcome_told_to_applicant,
            })
        }
        types::RISK_MANAGEMENT_PLAN_UPDATED => {
            let m: pb::RiskManagementPlanUpdated = decode(p, body)?;
            Payload::RiskManagementPlanUpdated(payload::RiskManagementPlanUpdated {
                nominal_id: m.nominal_id,
                plan_id: m.plan_id,
                version: m.version,
                supervision: m.supervision,
                monitoring_and_control: m.monitoring_and_control,
                interventions: m.interventions,
                victim_safety: m.victim_safety,
                actions: m.actions,
            })
        }
        types::MINUTES_DISTRIBUTED => {
            let m: pb::MinutesDistributed = decode(p, body)?;
            Payload::MinutesDistributed(payload::MinutesDistributed {
                nominal_id: m.nominal_id,
                meeting_id: m.meeting_id,
                redaction_profile: m.redaction_profile,
            })
        }
        types::DOMESTIC_ABUSE_INCIDENT_RECORDED => {
            let m: pb::DomesticAbuseIncidentRecorded = decode(p, body)?;
            Payload::DomesticAbuseIncidentRecorded(payload::DomesticAbuseIncidentRecorded {
                incident_id: m.incident_id,
                incident_ref: m.incident_ref,
                occurred: m.occurred.map(|t| timestamp(&pf("occurred"), Some(t))).transpose()?,
                location: m.location,
                children: m
                    .children
                    .into_iter()
                    .map(|c| payload::IncidentChild {
                        child_id: c.child_id,
                        name: c.name,
                        date_of_birth: c.date_of_birth,
                        present: c.present,
                        whereabouts: c.whereabouts,
                        voice_of_child: c.voice_of_child,
                    })
                    .collect(),
            })
        }
        types::SCHOOL_SUPPORT_RECORDED => {
            let m: pb::SchoolSupportRecorded = decode(p, body)?;
            Payload::SchoolSupportRecorded(payload::SchoolSupportRecorded {
                notification_id: m.notification_id,
                support_type: m.support_type,
                support_given: m.support_given,
                shared_with: m.shared_with,
            })
        }
        types::INTELLIGENCE_SHARED => {
            let m: pb::IntelligenceShared = decode(p, body)?;
            Payload::IntelligenceShared(payload::IntelligenceShared {
                intelligence_id: m.intelligence_id,
                source_agency: m.source_agency,
                offender_descriptors: m.offender_descriptors,
                reporter_anonymised: m.reporter_anonymised,
                reporter_id: m.reporter_id,
            })
        }
        types::INCIDENT_RECORDED => {
            let m: pb::IncidentRecorded = decode(p, body)?;
            Payload::IncidentRecorded(payload::IncidentRecorded {
                incident_id: m.incident_id,
                incident_ref: m.incident_ref,
                victim_id: m.victim_id,
                offence_type: m.offence_type,
                officer: m.officer,
            })
        }
        types::VICTIM_CONTACT_DETAILS_RECORDED => {
            let m: pb::VictimContactDetailsRecorded = decode(p, body)?;
            Payload::VictimContactDetailsRecorded(payload::VictimContactDetailsRecorded {
                victim_id: m.victim_id,
                address: m.address,
                safe_contact_method: m.safe_contact_method,
            })
        }
        types::ACCESS_INVESTIGATION_OPENED => {
            let m: pb::AccessInvestigationOpened = decode(p, body)?;
            Payload::AccessInvestigationOpened(payload::AccessInvestigationOpened {
                investigation_id: m.investigation_id,
                user_investigated: m.user_investigated,
                purpose: m.purpose,
            })
        }
        types::ACCESS_INVESTIGATION_CLOSED => {
            let m: pb::AccessInvestigationClosed = decode(p, body)?;
            Payload::AccessInvestigationClosed(payload::AccessInvestigationClosed {
                investigation_id: m.investigation_id,
                findings: m.findings,
            })
        }
        types::RETENTION_REVIEWED => {
            let m: pb::RetentionReviewed = decode(p, body)?;
            Payload::RetentionReviewed(payload::RetentionReviewed {
                review_id: m.review_id,
                retention_group: m.retention_group,
                decision: m.decision,
                next_review: m.next_review,
                event_ids: m.event_ids,
            })
        }
        types::RECORD_ERASED => {
            let m: pb::RecordErased = decode(p, body)?;
            Payload::RecordErased(payload::RecordErased {
                review_id: m.review_id,
                event_id: m.event_id,
                reason: m.reason,
            })
        }
        other => {
            return Err(Error::invalid(
                at(p, "event_type"),
                format!("unknown event type {other:?}; see proto/accord/v1/catalogue.proto for the catalogue"),
            ));
        }
    })
}

/// A stored event on the wire.
pub fn recorded_event(e: accord_store::RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        position: e.position,
        stream_version: e.stream_version,
        recorded_at: Some(timestamp_pb(e.recorded_at)),
        event_id: e.event_id.to_string(),
        stream: e.stream,
        event_type: e.event_type,
        leaf_hash: e.leaf_hash.0.to_vec(),
        event: Some(pb::SignedEvent { body: e.body, key_id: e.key_id, signature: e.signature }),
    }
}

/// A receipt on the wire.
pub fn receipt(r: accord_store::Receipt) -> pb::Receipt {
    pb::Receipt {
        event_id: r.event_id.to_string(),
        position: r.position,
        stream_version: r.stream_version,
        recorded_at: Some(timestamp_pb(r.recorded_at)),
        leaf_hash: r.leaf_hash.0.to_vec(),
    }
}

/// A checkpoint on the wire.
pub fn checkpoint(c: accord_store::SignedCheckpoint, origin: &str) -> pb::Checkpoint {
    pb::Checkpoint {
        note: c.note,
        origin: origin.to_owned(),
        tree_size: c.tree_size,
        root_hash: c.root.0.to_vec(),
        signed_at: Some(timestamp_pb(c.signed_at)),
    }
}
