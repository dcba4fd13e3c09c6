//! The Ledger gRPC service (`accord.v1.Ledger`): agencies append signed events, read them back,
//! follow the log live, and fetch signed checkpoints and Merkle proofs.
//!
//! This crate authenticates callers, decodes and validates what they send (`convert`), checks
//! signatures, authorship and append policy, hands accepted events to `accord-store`, and maps
//! every error to a `tonic::Status` in one place (`error`). It holds no business rule of its own:
//! those live in `accord-domain` and `accord-policy`. It is not the read-model or audit service.

pub mod access;
pub mod convert;
mod error;
pub mod sharing;

use std::pin::Pin;
use std::sync::Arc;

use access::{AccessLog, Call, Disclosed, Replayed};
use accord_auth::{Authenticator, Principal};
use accord_domain::payload::{Payload, RegistryEffect};
use accord_domain::{AgencyId, KeyId, SYSTEM_AGENCY, StreamId};
use accord_proto::v1 as pb;
use accord_store::{NewEvent, Store, Visibility};
use futures::Stream;
use tonic::{Request, Response, Status};

pub use error::{Error, Result};

/// The service name recorded in access records.
const SERVICE: &str = "accord.v1.Ledger";
pub use sharing::Sharing;

/// The most bytes one event body may have.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The most bytes of bodies one append request may carry.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The most events one append request may carry.
pub const MAX_EVENTS: usize = accord_store::MAX_BATCH_EVENTS;
/// The most events one read returns.
pub const MAX_READ: u32 = 1000;

/// Authenticates `req`'s caller by its bearer token (`authorization` metadata), on the client
/// certificate its connection presented over mutual TLS, if any: a token bound to a certificate
/// (RFC 8705) is accepted only with that one. Notes the caller in `call` (also when a valid
/// token is refused for its binding, so the refusal's record names whose token it was).
pub fn authenticate<T>(
    auth: &Authenticator,
    req: &Request<T>,
    call: Option<&mut access::Call>,
) -> std::result::Result<Principal, accord_auth::Error> {
    let header = req.metadata().get("authorization").map(|v| v.to_str().unwrap_or(""));
    // The call already holds the thumbprint, for its access record.
    let presented = match &call {
        Some(call) => call.client_certificate().map(str::to_owned),
        None => access::client_certificate(req),
    };
    let r = auth.authenticate_on(header, presented.as_deref());
    match (&r, call) {
        (Ok(who), Some(call)) => call.authenticated(who),
        (Err(accord_auth::Error::Unbound { principal, .. }), Some(call)) => call.authenticated(principal),
        _ => {}
    }
    r
}

/// Who is appending.
#[derive(Debug, Clone, Copy)]
pub enum Writer<'a> {
    /// An authenticated caller: authorship, key agency and append policy are checked against it.
    Caller(&'a Principal),
    /// The server itself, writing registry records (author agency `accord`).
    System,
}

/// Validates one signed event and turns it into a [`NewEvent`]. Every check of DESIGN.md §2 that
/// does not need the log's current state happens here; the sequencer checks the rest (expected
/// version, idempotency, revocation at recording time).
pub async fn prepare(sharing: &Sharing, writer: Writer<'_>, index: usize, signed: pb::SignedEvent) -> Result<NewEvent> {
    Ok(prepare_in(sharing, writer, index, signed, &[]).await?.0)
}

/// A request's events, validated, with the sharing policies that allowed them.
#[derive(Debug)]
pub struct Prepared {
    /// The events, in request order.
    pub events: Vec<NewEvent>,
    /// The deciding policies of every append decision made for them (and of a correction's
    /// check against the record it corrects), each once, sorted; empty for the server's own
    /// records, which no policy decides.
    pub policy_ids: Vec<String>,
}

/// The earlier events of the same request, decoded: what they record counts for the events
/// after them (a nominal registered and updated in one request).
type Earlier = [(accord_domain::EventBody, Payload)];

async fn prepare_in(
    sharing: &Sharing,
    writer: Writer<'_>,
    index: usize,
    signed: pb::SignedEvent,
    earlier: &Earlier,
) -> Result<(NewEvent, accord_domain::EventBody, Payload, Vec<String>)> {
    let store = sharing.store();
    let p = format!("events[{index}]");
    if signed.body.len() > MAX_BODY_BYTES {
        return Err(Error::TooLarge(format!(
            "{p}.body: must be at most {MAX_BODY_BYTES} bytes, found {}",
            signed.body.len()
        )));
    }
    let key_id = KeyId::parse_field(&format!("{p}.key_id"), signed.key_id)?;
    let body = convert::event_body(&format!("{p}.body"), &signed.body)?;

    match writer {
        Writer::Caller(who) => {
            if body.author.agency.as_str() == SYSTEM_AGENCY {
                return Err(Error::Denied(format!(
                    "{p}.body.author.agency: {SYSTEM_AGENCY:?} is reserved for the server's own records"
                )));
            }
            if body.author.agency != who.agency {
                return Err(Error::Denied(format!(
                    "{p}.body.author.agency: your token is for agency {}, the event is authored by {}",
                    who.agency, body.author.agency
                )));
            }
            if body.author.user != who.user {
                return Err(Error::Denied(format!(
                    "{p}.body.author.user: your token is for user {}, the event is authored by {}",
                    who.user, body.author.user
                )));
            }
            if !who.has_role(&body.author.role) {
                return Err(Error::Denied(format!(
                    "{p}.body.author.role: your token does not grant role {}",
                    body.author.role
                )));
            }
        }
        Writer::System => {
            if body.author.agency.as_str() != SYSTEM_AGENCY || body.regime != accord_domain::Regime::System {
                return Err(Error::Invalid(format!(
                    "{p}: system records are authored by {SYSTEM_AGENCY:?} under REGIME_SYSTEM"
                )));
            }
        }
    }

    let payload = convert::payload(&format!("{p}.body"), &body)?;
    payload.validate(&body).map_err(|e| convert::in_field(&format!("{p}.body"), e))?;
    let effect = payload.registry_effect();

    // The server's own key registers itself: it is checked against the key in the payload.
    let self_registration = matches!(
        &effect,
        accord_domain::payload::RegistryEffect::RegisterKey { key_id: k, .. } if *k == key_id && matches!(writer, Writer::System)
    );
    let public_key = match (&effect, self_registration) {
        (accord_domain::payload::RegistryEffect::RegisterKey { public_key, .. }, true) => {
            accord_domain::signing::parse_public_key(&format!("{p}.body.payload.public_key"), public_key)?
        }
        _ => {
            let key = store
                .key(key_id.as_str())
                .await?
                .ok_or_else(|| Error::Denied(format!("{p}.key_id: signing key {key_id} is not registered")))?;
            if key.agency != body.author.agency.as_str() {
                return Err(Error::Denied(format!(
                    "{p}.key_id: signing key {key_id} belongs to agency {}, not {}",
                    key.agency, body.author.agency
                )));
            }
            if let Some(at) = key.revoked_at {
                return Err(Error::Denied(format!("{p}.key_id: signing key {key_id} was revoked at position {at}")));
            }
            key.public_key
        }
    };
    accord_domain::signing::verify_body(&public_key, &signed.body, &signed.signature)
        .map_err(|e| Error::Invalid(format!("{p}.{e} {key_id}")))?;

    let mut policy_ids = Vec::new();
    let policy_version = match writer {
        Writer::Caller(_) => {
            let (version, ids) = check_append_policy(sharing, &p, &body).await?;
            policy_ids = ids;
            Some(version)
        }
        Writer::System => None,
    };
    check_references(store, &p, &body, &payload, earlier).await?;
    if let (Payload::RecordCorrected(_), Writer::Caller(_), Some(target)) = (&payload, writer, &body.supersedes) {
        let corrected = match earlier.iter().find(|(b, _)| b.event_id == *target) {
            Some((b, _)) => Some(b.clone()),
            None => match store.event_by_id(target).await? {
                Some(e) => Some(convert::event_body("corrected", &e.body)?),
                None => None,
            },
        };
        if let Some(c) = corrected {
            let (_, ids) = check_append_as(sharing, &p, &body, c.event_type.as_str(), &c.addressees).await?;
            policy_ids.extend(ids);
        }
    }
    if let Payload::PolicyAdopted(adopted) = &payload {
        // Only once the author may adopt policy: a policy that does not validate is refused
        // before anything is written.
        sharing::compile(&format!("{p}.body"), 0, adopted)?;
    }

    let new = NewEvent {
        event_id: body.event_id,
        stream: body.stream.clone(),
        expected: body.expected_version,
        event_type: body.event_type.clone(),
        author_agency: body.author.agency.clone(),
        key_id,
        body: signed.body,
        signature: signed.signature,
        effect,
        policy_version,
    };
    Ok((new, body, payload, policy_ids))
}

/// The recorded events of `stream`, decoded (at most the first 1000).
async fn stream_payloads(
    store: &Store,
    stream: &str,
    earlier: &Earlier,
) -> Result<Vec<(accord_domain::EventBody, Payload)>> {
    let in_request = earlier.iter().filter(|(b, _)| b.stream.as_str() == stream).cloned();
    let Ok(id) = accord_domain::StreamId::parse_field("stream", stream.to_owned()) else {
        return Ok(in_request.collect());
    };
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read_stream(&id, from, 1000, &accord_store::Visibility::All).await?;
        let n = page.events.len();
        for e in page.events {
            let body = convert::event_body("recorded", &e.body)?;
            let payload = convert::payload("recorded", &body)?;
            out.push((body, payload));
        }
        if n < 1000 {
            break;
        }
        from = page.next;
    }
    out.extend(in_request);
    Ok(out)
}

/// Checks what an event refers to against the log: a correction names an event of the same
/// agency and stream and changes only correctable fields; a referral is made under a consent in
/// force that names its addressee; an acknowledgement, acceptance or decline answers something
/// addressed to the author's agency. (The projections check consent again at the referral's
/// position, so a withdrawal recorded concurrently still stops delivery.)
async fn check_references(
    store: &Store,
    p: &str,
    body: &accord_domain::EventBody,
    payload: &Payload,
    earlier: &Earlier,
) -> Result<()> {
    if let Some(target) = &body.supersedes {
        let corrected = match earlier.iter().find(|(b, _)| b.event_id == *target) {
            Some((b, _)) => (b.author.agency.to_string(), b.stream.to_string(), b.event_type.to_string()),
            None => store
                .event_by_id(target)
                .await?
                .map(|e| (e.author_agency, e.stream, e.event_type))
                .ok_or_else(|| Error::Invalid(format!("{p}.body.supersedes: no event {target} is recorded")))?,
        };
        let (corrected_author, corrected_stream, corrected_type) = corrected;
        if let Payload::RecordCorrected(c) = payload {
            if corrected_author != body.author.agency.as_str() {
                return Err(Error::Denied(format!(
                    "{p}.body.supersedes: an agency corrects only its own records; event {target} was recorded by {corrected_author}"
                )));
            }
            if corrected_stream != body.stream.as_str() {
                return Err(Error::Invalid(format!(
                    "{p}.body.stream: a correction belongs to the corrected event's stream {corrected_stream:?}"
                )));
            }
            accord_domain::payload::check_correction(&corrected_type, c)
                .map_err(|e| convert::in_field(&format!("{p}.body"), e))?;
        }
    } else if matches!(payload, Payload::RecordCorrected(_)) {
        return Err(Error::Invalid(format!("{p}.body.supersedes: a RecordCorrected must name the corrected event")));
    }
    let author = body.author.agency.as_str();
    match payload {
        Payload::NominalRegistered(n) => {
            for (i, a) in n.co_managing_agencies.iter().enumerate() {
                if store.agency(a).await?.is_none() {
                    return Err(Error::Invalid(format!(
                        "{p}.body.payload.co_managing_agencies[{i}]: agency {a} is not registered"
                    )));
                }
            }
        }
        Payload::SupportReferralMade(r) => {
            let consent = stream_payloads(store, &format!("consent-{}", r.consent_id), earlier).await?;
            let recorded = consent.iter().find_map(|(_, pl)| match pl {
                Payload::ConsentRecorded(c) => Some(c),
                _ => None,
            });
            let c = recorded.ok_or_else(|| {
                Error::Precondition(format!("{p}.body.payload.consent_id: no consent {} is recorded", r.consent_id))
            })?;
            if consent.iter().any(|(_, pl)| matches!(pl, Payload::ConsentWithdrawn(_))) {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.consent_id: consent {} has been withdrawn; nothing more may be shared under it",
                    r.consent_id
                )));
            }
            let recorder = consent.first().map(|(b, _)| b.author.agency.as_str()).unwrap_or_default();
            if recorder != author {
                return Err(Error::Denied(format!(
                    "{p}.body.payload.consent_id: consent {} was recorded by {recorder}; an agency refers only under consents it recorded",
                    r.consent_id
                )));
            }
            if c.subject_id != r.subject_id {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.subject_id: consent {} is about another person",
                    r.consent_id
                )));
            }
            if let Some(to) = body.addressees.first()
                && !c.recipients.iter().any(|x| x == to.as_str())
            {
                return Err(Error::Precondition(format!(
                    "{p}.body.addressees[0]: consent {} does not name {to} as a recipient (it names {})",
                    r.consent_id,
                    c.recipients.join(", ")
                )));
            }
            // Against the server's clock, not the author's occurred_at (which a client sets).
            if let Some(exp) = c.expires_at
                && exp.micros() <= accord_domain::Timestamp::now().micros()
            {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.consent_id: consent {} has expired",
                    r.consent_id
                )));
            }
        }
        Payload::ConsentWithdrawn(w) => {
            let consent = stream_payloads(store, &format!("consent-{}", w.consent_id), earlier).await?;
            let recorded = consent.iter().find_map(|(_, pl)| match pl {
                Payload::ConsentRecorded(c) => Some(c),
                _ => None,
            });
            let Some(c) = recorded else {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.consent_id: no consent {} is recorded",
                    w.consent_id
                )));
            };
            let recorder = consent.first().map(|(b, _)| b.author.agency.as_str()).unwrap_or_default();
            if recorder != author && !c.recipients.iter().any(|x| x == author) {
                return Err(Error::Denied(format!(
                    "{p}.body.payload.consent_id: only the agency that recorded consent {} or one of its recipients may record its withdrawal",
                    w.consent_id
                )));
            }
            if consent.iter().any(|(_, pl)| matches!(pl, Payload::ConsentWithdrawn(_))) {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.consent_id: consent {} is already withdrawn",
                    w.consent_id
                )));
            }
        }
        Payload::SupportReferralAccepted(accord_domain::payload::SupportReferralAccepted { referral_id, .. })
        | Payload::SupportReferralDeclined(accord_domain::payload::SupportReferralDeclined { referral_id, .. }) => {
            answers_addressed(store, p, &format!("referral-{referral_id}"), "referral", author, earlier).await?;
        }
        Payload::NotificationRequirementUpdated(accord_domain::payload::NotificationRequirementUpdated {
            nominal_id,
            ..
        })
        | Payload::OrderRecorded(accord_domain::payload::OrderRecorded { nominal_id, .. })
        | Payload::RiskAssessmentRecorded(accord_domain::payload::RiskAssessmentRecorded { nominal_id, .. })
        | Payload::MappaReferralMade(accord_domain::payload::MappaReferralMade { nominal_id, .. })
        | Payload::MappaLevelSet(accord_domain::payload::MappaLevelSet { nominal_id, .. })
        | Payload::RiskManagementPlanUpdated(accord_domain::payload::RiskManagementPlanUpdated {
            nominal_id, ..
        }) => {
            on_the_case(store, p, nominal_id, author, earlier).await?;
        }
        Payload::MappaMeetingHeld(m) => {
            on_the_case(store, p, &m.nominal_id, author, earlier).await?;
            for (i, (agency, _)) in m.attendees.iter().enumerate() {
                if store.agency(agency).await?.is_none() {
                    return Err(Error::Invalid(format!(
                        "{p}.body.payload.attendees[{i}].agency: agency {agency} is not registered"
                    )));
                }
            }
        }
        Payload::ActionAssigned(a) => {
            on_the_case(store, p, &a.nominal_id, author, earlier).await?;
            if store.agency(&a.owner_agency).await?.is_none() {
                return Err(Error::Invalid(format!(
                    "{p}.body.payload.owner_agency: agency {} is not registered",
                    a.owner_agency
                )));
            }
        }
        Payload::ActionCompleted(c) => {
            on_the_case(store, p, &c.nominal_id, author, earlier).await?;
            let events = stream_payloads(store, &format!("nominal-{}", c.nominal_id), earlier).await?;
            let assigned = events.iter().find_map(|(_, pl)| match pl {
                Payload::ActionAssigned(a) if a.action_id == c.action_id => Some(a),
                _ => None,
            });
            let Some(a) = assigned else {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.action_id: no action {} is assigned on nominal {}",
                    c.action_id, c.nominal_id
                )));
            };
            if a.owner_agency != author {
                return Err(Error::Denied(format!(
                    "{p}.body.payload.action_id: action {} is owned by {}, not {author}",
                    c.action_id, a.owner_agency
                )));
            }
        }
        Payload::DisclosureRequested(r) if !r.subject_nominal_id.is_empty() => {
            nominal_registered(store, p, &r.subject_nominal_id, earlier).await.map_err(|_| {
                Error::Precondition(format!(
                    "{p}.body.payload.subject_nominal_id: nominal {} is not registered",
                    r.subject_nominal_id
                ))
            })?;
        }
        Payload::DisclosureChecksCompleted(accord_domain::payload::DisclosureChecksCompleted {
            application_id,
            ..
        })
        | Payload::ApplicantVerified(accord_domain::payload::ApplicantVerified { application_id, .. })
        | Payload::DisclosureDecided(accord_domain::payload::DisclosureDecided { application_id, .. })
        | Payload::DisclosureMade(accord_domain::payload::DisclosureMade { application_id, .. })
        | Payload::DisclosureApplicationClosed(accord_domain::payload::DisclosureApplicationClosed {
            application_id,
            ..
        }) => {
            let events = stream_payloads(store, &format!("disclosure-{application_id}"), earlier).await?;
            let Some((opened, _)) = events.iter().find(|(_, pl)| matches!(pl, Payload::DisclosureRequested(_))) else {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.application_id: no disclosure application {application_id} is recorded"
                )));
            };
            if opened.author.agency.as_str() != author {
                return Err(Error::Denied(format!(
                    "{p}.body.payload.application_id: application {application_id} is handled by {}",
                    opened.author.agency
                )));
            }
            if events.iter().any(|(_, pl)| matches!(pl, Payload::DisclosureApplicationClosed(_))) {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.application_id: application {application_id} is closed"
                )));
            }
            if let Payload::DisclosureMade(m) = payload {
                let decided = events.iter().rev().find_map(|(_, pl)| match pl {
                    Payload::DisclosureDecided(d) => Some(d),
                    _ => None,
                });
                match decided {
                    Some(d) if d.decision == "disclose" && d.content_sha256 == m.content_sha256 => {}
                    Some(d) if d.decision == "disclose" => {
                        return Err(Error::Precondition(format!(
                            "{p}.body.payload.content_sha256: differs from the content the decision agreed ({})",
                            d.content_sha256
                        )));
                    }
                    _ => {
                        return Err(Error::Precondition(format!(
                            "{p}.body.payload.application_id: no decision to disclose is recorded for application {application_id}"
                        )));
                    }
                }
            }
        }
        Payload::MinutesDistributed(m) => {
            on_the_case(store, p, &m.nominal_id, author, earlier).await?;
            let events = stream_payloads(store, &format!("nominal-{}", m.nominal_id), earlier).await?;
            if !events.iter().any(|(_, pl)| matches!(pl, Payload::MappaMeetingHeld(h) if h.meeting_id == m.meeting_id))
            {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.meeting_id: no meeting {} is recorded for nominal {}",
                    m.meeting_id, m.nominal_id
                )));
            }
        }
        Payload::SchoolSupportRecorded(x) => {
            answers_addressed(store, p, &format!("encompass-{}", x.notification_id), "notification", author, earlier)
                .await?;
        }
        Payload::AccessInvestigationClosed(x) => {
            let events = stream_payloads(store, &format!("investigation-{}", x.investigation_id), earlier).await?;
            if !events.iter().any(|(_, pl)| matches!(pl, Payload::AccessInvestigationOpened(_))) {
                return Err(Error::Precondition(format!(
                    "{p}.body.payload.investigation_id: no investigation {} is open",
                    x.investigation_id
                )));
            }
        }
        Payload::RecordErased(x) => {
            let id = accord_domain::EventId::parse_field("event_id", &x.event_id)?;
            let owner = match earlier.iter().find(|(b, _)| b.event_id == id) {
                Some((b, _)) => Some(b.author.agency.to_string()),
                None => store.event_by_id(&id).await?.map(|e| e.author_agency),
            };
            match owner {
                None => {
                    return Err(Error::Invalid(format!("{p}.body.payload.event_id: no event {id} is recorded")));
                }
                Some(o) if o != author => {
                    return Err(Error::Denied(format!(
                        "{p}.body.payload.event_id: an agency erases only its own records; event {id} was recorded by {o}"
                    )));
                }
                Some(_) => {}
            }
        }
        Payload::EncompassNotificationAcknowledged(a) => {
            answers_addressed(store, p, &format!("encompass-{}", a.notification_id), "notification", author, earlier)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// The nominal must have been registered.
async fn nominal_registered(store: &Store, p: &str, nominal_id: &str, earlier: &Earlier) -> Result<()> {
    nominal_case(store, p, nominal_id, earlier).await.map(drop)
}

/// Who may record about a nominal: (lead and co-managing agencies, MAPPA panel agencies).
/// Fails when the nominal is not registered.
async fn nominal_case(
    store: &Store,
    p: &str,
    nominal_id: &str,
    earlier: &Earlier,
) -> Result<(Vec<String>, Vec<String>)> {
    let events = stream_payloads(store, &format!("nominal-{nominal_id}"), earlier).await?;
    let Some(reg) = events.iter().find_map(|(_, pl)| match pl {
        Payload::NominalRegistered(n) => Some(n),
        _ => None,
    }) else {
        return Err(Error::Precondition(format!(
            "{p}.body.payload.nominal_id: nominal {nominal_id} is not registered (record a NominalRegistered first)"
        )));
    };
    let mut case = vec![reg.lead_agency.clone()];
    case.extend(reg.co_managing_agencies.iter().cloned());
    let mut panel = Vec::new();
    for (b, pl) in &events {
        match pl {
            Payload::MappaLevelSet(_) => panel.push(b.author.agency.to_string()),
            Payload::MappaMeetingHeld(m) => {
                panel.push(b.author.agency.to_string());
                panel.extend(m.attendees.iter().map(|(a, _)| a.clone()));
            }
            _ => {}
        }
    }
    Ok((case, panel))
}

/// Only the nominal's case, its MAPPA panel and a MAPPA unit may record about a nominal: recording
/// is not a way onto a case.
async fn on_the_case(store: &Store, p: &str, nominal_id: &str, author: &str, earlier: &Earlier) -> Result<()> {
    let (case, panel) = nominal_case(store, p, nominal_id, earlier).await?;
    if case.iter().chain(&panel).any(|a| a == author) {
        return Ok(());
    }
    let mappa_unit =
        store.agency(author).await?.is_some_and(|a| a.kind == accord_domain::payload::AgencyKind::MappaUnit);
    if mappa_unit {
        return Ok(());
    }
    Err(Error::Denied(format!(
        "{p}.body.author.agency: {author} is not on nominal {nominal_id}'s case (lead and co-managing agencies: {}) or its MAPPA panel",
        case.join(", ")
    )))
}

/// The first event of `stream` must exist and be addressed to `author`.
async fn answers_addressed(
    store: &Store,
    p: &str,
    stream: &str,
    what: &str,
    author: &str,
    earlier: &Earlier,
) -> Result<()> {
    let events = stream_payloads(store, stream, earlier).await?;
    let Some((first, _)) = events.first() else {
        return Err(Error::Precondition(format!("{p}.body.stream: no {what} is recorded in {stream}")));
    };
    if !first.addressees.iter().any(|a| a.as_str() == author) {
        return Err(Error::Denied(format!(
            "{p}.body.stream: the {what} in {stream} is not addressed to agency {author}"
        )));
    }
    Ok(())
}

async fn agency_facts(store: &Store, field: &str, agency: &AgencyId) -> Result<accord_store::AgencyRecord> {
    store
        .agency(agency.as_str())
        .await?
        .ok_or_else(|| Error::Denied(format!("{field}: agency {agency} is not registered")))
}

/// Asks the sharing policy in force whether the author may append this event; returns the
/// policy's version and the deciding policies. Deny by default: no policy in force means nothing
/// is allowed.
async fn check_append_policy(
    sharing: &Sharing,
    p: &str,
    body: &accord_domain::EventBody,
) -> Result<(u64, Vec<String>)> {
    check_append_as(sharing, p, body, body.event_type.as_str(), &body.addressees).await
}

/// The append decision for `body` as if it were of `event_type` (a correction is allowed only to
/// a role that may write what it corrects).
async fn check_append_as(
    sharing: &Sharing,
    p: &str,
    body: &accord_domain::EventBody,
    event_type: &str,
    addressees: &[AgencyId],
) -> Result<(u64, Vec<String>)> {
    let store = sharing.store();
    let policy = sharing.current().ok_or_else(|| Error::PolicyDenied {
        reason: format!("{p}: no sharing policy is in force, so nothing may be appended"),
        policy_version: 0,
        policy_ids: vec!["default-deny".to_owned()],
    })?;
    let author = agency_facts(store, &format!("{p}.body.author.agency"), &body.author.agency).await?;
    let mut addressee_kinds = Vec::with_capacity(addressees.len());
    for (i, a) in addressees.iter().enumerate() {
        let rec = store
            .agency(a.as_str())
            .await?
            .ok_or_else(|| Error::Invalid(format!("{p}.body.addressees[{i}]: agency {a} is not registered")))?;
        addressee_kinds.push(rec.kind);
    }
    let facts =
        accord_policy::AgencyFacts { id: &author.agency_id, kind: author.kind, governs_policy: author.governs_policy };
    let roles = [body.author.role.clone()];
    let actor = accord_policy::Actor { agency: facts, user: body.author.user.as_str(), roles: &roles };
    let record = accord_policy::RecordFacts {
        event_type,
        kind: accord_policy::record_kind(event_type),
        author: facts,
        tags: &body.sensitivity,
    };
    let d = policy.append(&actor, &record, &addressee_kinds);
    if !d.allowed {
        return Err(Error::PolicyDenied {
            reason: format!(
                "{p}: role {} of agency {} ({}) may not append {} under sharing policy version {} (decided by {})",
                body.author.role,
                body.author.agency,
                author.kind.as_str(),
                event_type,
                d.policy_version,
                d.policy_ids.join(", ")
            ),
            policy_version: d.policy_version,
            policy_ids: d.policy_ids.clone(),
        });
    }
    Ok((policy.version(), d.policy_ids.clone()))
}

/// Validates a whole append request (limits, then each event).
pub async fn prepare_batch(sharing: &Sharing, writer: Writer<'_>, events: Vec<pb::SignedEvent>) -> Result<Prepared> {
    if events.is_empty() {
        return Err(Error::Invalid("events: must hold at least one event".into()));
    }
    if events.len() > MAX_EVENTS {
        return Err(Error::TooLarge(format!(
            "events: at most {MAX_EVENTS} events per request, found {}",
            events.len()
        )));
    }
    let total: usize = events.iter().map(|e| e.body.len()).sum();
    if total > MAX_REQUEST_BYTES {
        return Err(Error::TooLarge(format!(
            "events: at most {MAX_REQUEST_BYTES} bytes of bodies per request, found {total}"
        )));
    }
    let n = events.len();
    let mut out = Vec::with_capacity(n);
    let mut policy_ids = std::collections::BTreeSet::new();
    let mut earlier = Vec::new();
    for (i, e) in events.into_iter().enumerate() {
        let (prepared, body, payload, ids) = prepare_in(sharing, writer, i, e, &earlier).await?;
        policy_ids.extend(ids);
        earlier.push((body, payload));
        if matches!(prepared.effect, RegistryEffect::AdoptPolicy) && i + 1 < n {
            return Err(Error::Invalid(format!(
                "events[{i}]: a PolicyAdopted must be the last event of its request; the events after it would be checked under the policy it replaces"
            )));
        }
        out.push(prepared);
    }
    Ok(Prepared { events: out, policy_ids: policy_ids.into_iter().collect() })
}

/// The Ledger service.
#[derive(Clone)]
pub struct Ledger {
    store: Store,
    access: AccessLog,
    sharing: Arc<Sharing>,
    auth: Arc<Authenticator>,
    origin: String,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Ledger {
    /// A Ledger over `store`, authenticating with `auth`; `origin` is the checkpoint origin. When
    /// `stopping` turns true, open subscriptions end with UNAVAILABLE so a graceful shutdown is
    /// not held open by clients that follow the log.
    pub fn new(
        sharing: Arc<Sharing>,
        auth: Arc<Authenticator>,
        origin: String,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let store = sharing.store().clone();
        Self { access: AccessLog::new(store.clone()), store, sharing, auth, origin, stopping }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::ledger_server::LedgerServer<Self> {
        pb::ledger_server::LedgerServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES + 1024 * 1024)
    }

    fn authenticate<T>(&self, req: &Request<T>, call: Option<&mut Call>) -> Result<Principal> {
        Ok(authenticate(&self.auth, req, call)?)
    }

    /// Authenticates a read's caller and checks its stated purpose, noting the caller in `call`.
    fn reader<T>(&self, req: &Request<T>, call: &mut Call) -> std::result::Result<Principal, Status> {
        let who = self.authenticate(req, Some(&mut *call))?;
        call.require_purpose()?;
        Ok(who)
    }

    async fn latest_checkpoint(&self, log: i32) -> Result<accord_store::SignedCheckpoint> {
        let cp = if access_log(log)? {
            self.store.access_latest_checkpoint().await?
        } else {
            self.store.latest_checkpoint().await?
        };
        Ok(cp.ok_or_else(|| accord_store::Error::NotFound("the log is empty".into()))?)
    }

    fn origin_of(&self, log: i32) -> String {
        if log == pb::Log::Access as i32 { access_origin(&self.origin) } else { self.origin.clone() }
    }

    /// Appends `request` as `who`, with its access record `record` in the same transaction when
    /// given.
    async fn append_as(
        &self,
        who: &Principal,
        request: Vec<pb::SignedEvent>,
        access: (&Call, &Disclosed),
    ) -> Result<Vec<accord_store::Receipt>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Prepared { events, policy_ids } =
                match prepare_batch(&self.sharing, Writer::Caller(who), request.clone()).await {
                    // A refusal under a policy another instance has since replaced is stale:
                    // reload and check again under the policy actually in force.
                    Err(Error::Denied(_) | Error::PolicyDenied { .. })
                        if attempt < 3 && self.sharing.refresh().await? =>
                    {
                        continue;
                    }
                    r => r?,
                };
            let adopts = events.iter().any(|e| matches!(e.effect, RegistryEffect::AdoptPolicy));
            // The access record names the sharing policy the events were checked under (the
            // sequencer refuses new events if another is in force when they are recorded) and
            // the policies that allowed them.
            let (call, written) = access;
            let written = Disclosed {
                policy_version: events.iter().find_map(|e| e.policy_version).unwrap_or(0),
                policy_ids,
                ..written.clone()
            };
            let record = self.access.for_append(call, written);
            let appended = match &record {
                Some(record) => self.store.append_recorded(events, record.clone()).await,
                None => self.store.append(events).await,
            };
            match appended {
                // Another policy was adopted (by another request or server process) between the
                // check and the recording: check again under it.
                Err(accord_store::Error::PolicyChanged(_)) if attempt < 3 => {
                    self.sharing.refresh().await?;
                }
                Err(e) => return Err(Error::from(e)),
                Ok(r) => {
                    // The adoption is recorded whatever happens next: report the receipts. A
                    // failed reload only delays this process's use of the new policy (the
                    // sequencer refuses anything checked under the old one meanwhile).
                    if adopts && let Err(e) = self.sharing.refresh().await {
                        tracing::warn!(error = %e, "reloading the sharing policy after an adoption failed");
                    }
                    return Ok(r);
                }
            }
        }
    }
}

/// An audit replay of a recorded Ledger read: the same request, by the same caller, answered
/// from the log as it stood at the recorded size (the log is immutable, so nothing but tampering
/// can change the answer). For a subscription, the run of events the record covers.
pub async fn replay(
    store: &Store,
    who: &Principal,
    record: &pb::AccessRecord,
) -> std::result::Result<Replayed, Status> {
    use prost::Message as _;
    let vis = visibility(who);
    let bad = |e: prost::DecodeError| Status::data_loss(format!("the recorded request does not decode: {e}"));
    let events = |page: accord_store::Page| {
        page.events.into_iter().map(convert::recorded_event).collect::<Vec<pb::RecordedEvent>>()
    };
    let size = record.log_size;
    Ok(match record.method.as_str() {
        "ReadAll" => {
            let r = pb::ReadAllRequest::decode(record.request.as_slice()).map_err(bad)?;
            let page = store.read_all_as_of(r.from_position, limit(r.limit)?, &vis, size).await.map_err(Error::from)?;
            let answer = pb::ReadResponse { log_size: page.log_size, next: page.next, events: events(page) };
            Replayed::Unary("accord.v1.ReadResponse", answer.encode_to_vec())
        }
        "ReadStream" => {
            let r = pb::ReadStreamRequest::decode(record.request.as_slice()).map_err(bad)?;
            let stream = StreamId::parse_field("stream", r.stream).map_err(Error::from)?;
            let page = store
                .read_stream_as_of(&stream, r.from_version, limit(r.limit)?, &vis, size)
                .await
                .map_err(Error::from)?;
            let answer = pb::ReadResponse { log_size: page.log_size, next: page.next, events: events(page) };
            Replayed::Unary("accord.v1.ReadResponse", answer.encode_to_vec())
        }
        "Subscribe" => {
            let r = pb::SubscribeRequest::decode(record.request.as_slice()).map_err(bad)?;
            let page = store.read_all_as_of(r.from_position, MAX_READ, &vis, size).await.map_err(Error::from)?;
            Replayed::Stream("accord.v1.RecordedEvent", events(page).iter().map(|e| e.encode_to_vec()).collect())
        }
        m => {
            return Err(Status::unimplemented(format!(
                "replay of accord.v1.Ledger/{m} is not supported: it is a write"
            )));
        }
    })
}

/// Whether a request's `log` names the access log (`false`: the event log).
fn access_log(log: i32) -> Result<bool> {
    match pb::Log::try_from(log) {
        Ok(pb::Log::Events) => Ok(false),
        Ok(pb::Log::Access) => Ok(true),
        Err(_) => Err(Error::Invalid(format!("log: must be LOG_EVENTS or LOG_ACCESS, found {log}"))),
    }
}

/// The access log's checkpoint origin: the event log's with `/access` appended.
pub fn access_origin(origin: &str) -> String {
    format!("{origin}/access")
}

/// What an append records, for its access record: collection, alteration (a correction),
/// erasure, and disclosure to the events' addressees. Gathered before appending; the records
/// written are added from the receipts ([`access::AccessLog::for_append`]).
fn written(events: &[pb::SignedEvent], who: &Principal) -> Disclosed {
    use prost::Message as _;
    let mut d = Disclosed::default();
    let (mut purposes, mut bases): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for e in events {
        let Ok(body) = pb::EventBody::decode(e.body.as_slice()) else { continue };
        d.action(match body.event_type.as_str() {
            "RecordCorrected" => pb::AccessAction::Alteration,
            "RecordErased" => pb::AccessAction::Erasure,
            _ => pb::AccessAction::Collection,
        });
        for a in body.addressees.iter().filter(|a| a.as_str() != who.agency.as_str()) {
            d.action(pb::AccessAction::Disclosure);
            d.recipient(a);
        }
        for s in &body.subjects {
            d.subject(&s.kind, &s.id);
        }
        if let Some(lb) = body.legal_basis {
            if !purposes.contains(&lb.purpose) {
                purposes.push(lb.purpose);
            }
            if !bases.contains(&lb.statute) {
                bases.push(lb.statute);
            }
        }
    }
    d.stated = Some((purposes.join("; "), bases.join("; ")));
    d
}

/// What a read of recorded events disclosed: the caller's own agency's records (consultation).
fn consulted(events: &[pb::RecordedEvent], log_size: u64) -> Disclosed {
    let mut d = Disclosed { log_size, ..Default::default() };
    d.action(pb::AccessAction::Consultation);
    for e in events {
        let body = e.event.as_ref().and_then(|s| <pb::EventBody as prost::Message>::decode(s.body.as_slice()).ok());
        let author = body.as_ref().and_then(|b| b.author.as_ref()).map(|a| a.agency.clone()).unwrap_or_default();
        for s in body.iter().flat_map(|b| &b.subjects) {
            d.subject(&s.kind, &s.id);
        }
        d.records.push(pb::RecordRef { position: e.position, source_agency: author, ..Default::default() });
    }
    d
}

fn limit(l: u32) -> Result<u32> {
    match l {
        0 => Ok(100),
        1..=MAX_READ => Ok(l),
        _ => Err(Error::Invalid(format!("limit: must be 0 to {MAX_READ}, found {l}"))),
    }
}

fn visibility(who: &Principal) -> Visibility {
    Visibility::AuthoredBy(AgencyId::clone(&who.agency))
}

type EventStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::RecordedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ledger_server::Ledger for Ledger {
    #[tracing::instrument(skip_all, fields(events = req.get_ref().events.len(), agency, first_position))]
    async fn append(
        &self,
        req: Request<pb::AppendRequest>,
    ) -> std::result::Result<Response<pb::AppendResponse>, Status> {
        let mut call = Call::start(&req, SERVICE, "Append", Vec::new());
        // A refusal by the sharing policy: its version and deciding policies, for the record.
        let mut refused = Disclosed::default();
        let outcome = async {
            let who = self.authenticate(&req, Some(&mut call))?;
            tracing::Span::current().record("agency", who.agency.as_str());
            let request = req.into_inner().events;
            // The access record is written in the append's own transaction: the events and
            // their record are durable together, or neither is.
            let written = written(&request, &who);
            let receipts = match self.append_as(&who, request, (&call, &written)).await {
                Ok(r) => r,
                Err(e) => {
                    if let Error::PolicyDenied { policy_version, policy_ids, .. } = &e {
                        refused.policy_version = *policy_version;
                        refused.policies(policy_ids);
                    }
                    return Err(e.into());
                }
            };
            if let Some(r) = receipts.first() {
                tracing::Span::current().record("first_position", r.position);
            }
            Ok::<_, Status>(access::append_response(&receipts))
        }
        .await;
        match outcome {
            Ok(answer) => Ok(Response::new(answer)),
            Err(s) => Err(self.access.denied_under(&call, refused, s).await),
        }
    }

    #[tracing::instrument(skip_all, fields(stream = %req.get_ref().stream))]
    async fn read_stream(
        &self,
        req: Request<pb::ReadStreamRequest>,
    ) -> std::result::Result<Response<pb::ReadResponse>, Status> {
        let mut call = Call::start(&req, SERVICE, "ReadStream", prost::Message::encode_to_vec(req.get_ref()));
        let outcome = async {
            let who = self.reader(&req, &mut call)?;
            let r = req.into_inner();
            let stream = StreamId::parse_field("stream", r.stream).map_err(Error::from)?;
            let page = self
                .store
                .read_stream(&stream, r.from_version, limit(r.limit)?, &visibility(&who))
                .await
                .map_err(Error::from)?;
            let events: Vec<_> = page.events.into_iter().map(convert::recorded_event).collect();
            let d = consulted(&events, page.log_size);
            Ok((pb::ReadResponse { log_size: page.log_size, next: page.next, events }, d))
        }
        .await;
        self.access.finish(&call, outcome).await
    }

    #[tracing::instrument(skip_all, fields(from = req.get_ref().from_position))]
    async fn read_all(
        &self,
        req: Request<pb::ReadAllRequest>,
    ) -> std::result::Result<Response<pb::ReadResponse>, Status> {
        let mut call = Call::start(&req, SERVICE, "ReadAll", prost::Message::encode_to_vec(req.get_ref()));
        let outcome = async {
            let who = self.reader(&req, &mut call)?;
            let r = req.into_inner();
            let page =
                self.store.read_all(r.from_position, limit(r.limit)?, &visibility(&who)).await.map_err(Error::from)?;
            let events: Vec<_> = page.events.into_iter().map(convert::recorded_event).collect();
            let d = consulted(&events, page.log_size);
            Ok((pb::ReadResponse { log_size: page.log_size, next: page.next, events }, d))
        }
        .await;
        self.access.finish(&call, outcome).await
    }

    type SubscribeStream = EventStream;

    #[tracing::instrument(skip_all, fields(from = req.get_ref().from_position))]
    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> std::result::Result<Response<Self::SubscribeStream>, Status> {
        let mut call = Call::start(&req, SERVICE, "Subscribe", prost::Message::encode_to_vec(req.get_ref()));
        let who = match self.reader(&req, &mut call) {
            Ok(w) => w,
            Err(s) => return Err(self.access.denied(&call, s).await),
        };
        let vis = visibility(&who);
        let store = self.store.clone();
        let access = self.access.clone();
        let mut next = req.into_inner().from_position;
        let mut sent = 0u64;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut head = store.watch_head();
            loop {
                if *stopping.borrow() {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the server is shutting down; resubscribe from the next position",
                        )))
                        .await;
                    return;
                }
                let page = match store.read_all(next, MAX_READ, &vis).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(Error::from(e)))).await;
                        return;
                    }
                };
                let events: Vec<_> = page.events.into_iter().map(convert::recorded_event).collect();
                if !events.is_empty() {
                    // One access record per run of events sent together, written before the
                    // run leaves the server (fail closed).
                    let run =
                        call.with_request(prost::Message::encode_to_vec(&pb::SubscribeRequest { from_position: next }));
                    let mut d = consulted(&events, page.log_size);
                    d.stream_index = sent;
                    if let Err(s) = access.granted(&run, d, access::stream_digest(&events)).await {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                    sent += events.len() as u64;
                }
                for e in events {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                next = page.next;
                if next < page.log_size {
                    continue;
                }
                // Caught up: wait for this process's next commit, a poll tick (for other
                // processes' commits) or the client going away.
                tokio::select! {
                    r = head.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(store.poll_interval()) => {}
                    _ = tx.closed() => return,
                    _ = stopping.changed() => {}
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> std::result::Result<Response<pb::Checkpoint>, Status> {
        self.authenticate(&req, None)?;
        let log = req.get_ref().log;
        let cp = self.latest_checkpoint(log).await?;
        Ok(Response::new(convert::checkpoint(cp, &self.origin_of(log))))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::GetInclusionProofRequest>,
    ) -> std::result::Result<Response<pb::InclusionProof>, Status> {
        self.authenticate(&req, None)?;
        let r = req.into_inner();
        let size = if r.tree_size == 0 { self.latest_checkpoint(r.log).await?.tree_size } else { r.tree_size };
        let (leaf, proof, root) = if access_log(r.log)? {
            self.store.access_inclusion_proof(r.position, size).await
        } else {
            self.store.inclusion_proof(r.position, size).await
        }
        .map_err(Error::from)?;
        Ok(Response::new(pb::InclusionProof {
            position: r.position,
            tree_size: size,
            leaf_hash: leaf.0.to_vec(),
            hashes: proof.into_iter().map(|h| h.0.to_vec()).collect(),
            root_hash: root.0.to_vec(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::GetConsistencyProofRequest>,
    ) -> std::result::Result<Response<pb::ConsistencyProof>, Status> {
        self.authenticate(&req, None)?;
        let r = req.into_inner();
        let to = if r.to_size == 0 { self.latest_checkpoint(r.log).await?.tree_size } else { r.to_size };
        let (proof, from_root, to_root) = if access_log(r.log)? {
            self.store.access_consistency_proof(r.from_size, to).await
        } else {
            self.store.consistency_proof(r.from_size, to).await
        }
        .map_err(Error::from)?;
        Ok(Response::new(pb::ConsistencyProof {
            from_size: r.from_size,
            to_size: to,
            hashes: proof.into_iter().map(|h| h.0.to_vec()).collect(),
            from_root: from_root.0.to_vec(),
            to_root: to_root.0.to_vec(),
        }))
    }
}
