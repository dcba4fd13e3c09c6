//! The projection: a deterministic fold of the log into every agency's read models (DESIGN.md
//! §4). [`State::apply`] takes one recorded event and the sharing policy in force at its position
//! and changes items; the same log prefix and policies always give the same items, byte for byte
//! ([`State::digest`]), which is what lets a read model be rebuilt from zero or computed as of any
//! past position.
//!
//! Who holds an item is decided when the event is applied, by the policy in force at the event's
//! position (`receive`), from the parties the event names: its author, its addressees and, for a
//! referral, the consent's recipients. Which field groups a user sees is decided when the item is
//! read (`view`, in the service). Besides items, the state keeps what later events need to know
//! (agencies, consents, who a notification or referral went to): the auxiliary rows, stored with
//! the items under model `_aux` so a restarted runner resumes from its checkpoint.

use std::collections::{BTreeMap, BTreeSet};

use accord_domain::payload::{self, AgencyKind, Payload};
use accord_domain::{EventBody, SensitivityTag};
use accord_policy::{AgencyFacts, Policy, RecordFacts, RecordKind, Relation};
use accord_store::{RecordedEvent, ViewRow};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The projection's name (its checkpoint). Bump the version when item shapes change: a new name
/// starts a rebuild from zero.
pub const PROJECTION: &str = "accord-views-v1";

/// The model name of auxiliary rows (never shown to anyone).
const AUX: &str = "_aux";

/// The read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// Encompass notifications addressed to a school or local authority.
    SchoolInbox,
    /// Notifications an agency sent.
    NotificationsSent,
    /// Referrals addressed to a support service.
    ReferralInbox,
    /// Referrals an agency made.
    ReferralsSent,
    /// Everything an agency authored.
    AgencyRecords,
}

impl Model {
    /// The name rows are stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::SchoolInbox => "school_inbox",
            Model::NotificationsSent => "notifications_sent",
            Model::ReferralInbox => "referral_inbox",
            Model::ReferralsSent => "referrals_sent",
            Model::AgencyRecords => "agency_records",
        }
    }

    /// Every model.
    pub const ALL: [Model; 5] = [
        Model::SchoolInbox,
        Model::NotificationsSent,
        Model::ReferralInbox,
        Model::ReferralsSent,
        Model::AgencyRecords,
    ];

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Model> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// How the holding agency stands to the record (the policy's [`Relation`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Rel {
    pub authored: bool,
    pub addressed: bool,
    pub consent_in_scope: bool,
}

impl Rel {
    /// As the policy engine takes it.
    pub fn relation(self) -> Relation {
        Relation {
            authored: self.authored,
            addressed: self.addressed,
            consent_in_scope: self.consent_in_scope,
            ..Relation::default()
        }
    }
}

/// A correction applied to an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Change {
    pub position: u64,
    pub event_id: String,
    pub fields: BTreeMap<String, String>,
    pub reason: String,
}

/// An Operation Encompass notification as the read models hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Notification {
    pub notification_id: String,
    pub addressee: String,
    pub sent_at: i64,
    pub deadline: i64,
    pub incident_ref: String,
    pub child_id: String,
    pub child_name: String,
    pub child_date_of_birth: String,
    pub child_present: bool,
    pub child_whereabouts: String,
    pub child_voice: String,
    pub establishment_urn: String,
    pub local_authority: String,
    pub recipient_role: String,
    pub incident_summary: String,
    pub circumstances: String,
    pub acknowledged: Option<Ack>,
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Ack {
    pub by: String,
    pub at: i64,
    pub position: u64,
}

/// A support referral as the read models hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Referral {
    pub referral_id: String,
    pub from_agency: String,
    pub addressee: String,
    pub referred_at: i64,
    pub status: String,
    pub subject_id: String,
    pub contact_name: String,
    pub needs: Vec<String>,
    pub allocated_to: String,
    pub decline_reason: String,
    pub safe_contact_method: String,
    pub safe_contact_details: String,
    pub consent_id: String,
    pub consent_withdrawn_at: Option<u64>,
}

/// A record an agency authored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Record {
    pub event_id: String,
    pub stream: String,
    pub occurred_at: i64,
    pub superseded_by: Vec<String>,
}

/// What an item shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Content {
    Notification(Notification),
    Referral(Referral),
    Record(Record),
}

/// One item of one read model held by one agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The log position of the item's latest change.
    pub position: u64,
    /// The log position of the record shown.
    pub record_position: u64,
    /// The authoring agency.
    pub source_agency: String,
    /// Its kind (`police`, ...).
    pub source_kind: String,
    /// The record's event type.
    pub event_type: String,
    /// The record's sensitivity tags.
    pub tags: Vec<String>,
    /// How the holder stands to the record.
    pub rel: Rel,
    /// The policy version and ids that let the holder receive it.
    pub receive_policy_version: u64,
    /// See above.
    pub receive_policy_ids: Vec<String>,
    /// Corrections applied, oldest first.
    pub corrections: Vec<Change>,
    /// The content.
    pub content: Content,
}

impl Item {
    /// The record's sensitivity tags, typed.
    pub fn sensitivity(&self) -> Vec<SensitivityTag> {
        self.tags.iter().filter_map(|t| SensitivityTag::parse(t)).collect()
    }

    /// The record's sharing-matrix kind.
    pub fn record_kind(&self) -> RecordKind {
        accord_policy::record_kind(&self.event_type)
    }
}

/// Auxiliary facts later events need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Aux {
    Agency {
        kind: String,
        governs_policy: bool,
    },
    Consent {
        recorded_by: String,
        subject_id: String,
        recipients: Vec<String>,
        expires_at: Option<i64>,
        withdrawn_at: Option<u64>,
        referrals: Vec<String>,
    },
    Routed {
        author: String,
        addressee: String,
        delivered: bool,
    },
}

/// Item keys: (model, holding agency, item id).
pub type Key = (Model, String, String);

/// The projection's state: every item and auxiliary fact, and what changed since the last
/// [`State::take_changes`].
#[derive(Debug, Default, Clone)]
pub struct State {
    items: BTreeMap<Key, Item>,
    /// (model, agency, latest change, item id) of every item: queries and subscriptions scan it.
    by_position: BTreeSet<(Model, String, u64, String)>,
    aux: BTreeMap<String, Aux>,
    dirty_items: BTreeSet<Key>,
    dirty_aux: BTreeSet<String>,
    /// The first position not applied.
    pub next_position: u64,
}

/// Why an event could not be applied (the log holds something the Ledger would not accept).
#[derive(Debug, thiserror::Error)]
#[error("projecting position {position}: {message}")]
pub struct ApplyError {
    /// The position.
    pub position: u64,
    /// What is wrong.
    pub message: String,
}

fn kind_of(s: &str) -> Option<AgencyKind> {
    AgencyKind::parse(s).ok()
}

fn stream_id<'a>(stream: &'a str, prefix: &str) -> Option<&'a str> {
    stream.strip_prefix(prefix)
}

impl State {
    /// Restores a state from stored rows and the checkpoint.
    pub fn from_rows(rows: Vec<ViewRow>, next_position: u64) -> Result<State, String> {
        let mut s = State { next_position, ..State::default() };
        for r in rows {
            if r.model == AUX {
                let aux: Aux = serde_json::from_slice(&r.doc).map_err(|e| format!("aux row {}: {e}", r.item_id))?;
                s.aux.insert(r.item_id, aux);
            } else {
                let model = Model::parse(&r.model).ok_or_else(|| format!("unknown read model {:?}", r.model))?;
                let item: Item = serde_json::from_slice(&r.doc)
                    .map_err(|e| format!("{} row {}/{}: {e}", r.model, r.agency, r.item_id))?;
                s.by_position.insert((model, r.agency.clone(), item.position, r.item_id.clone()));
                s.items.insert((model, r.agency, r.item_id), item);
            }
        }
        Ok(s)
    }

    /// The rows changed since the last call, ready to store.
    pub fn take_changes(&mut self) -> Vec<ViewRow> {
        let mut rows = Vec::with_capacity(self.dirty_items.len() + self.dirty_aux.len());
        for key in std::mem::take(&mut self.dirty_aux) {
            let doc = serde_json::to_vec(&self.aux[&key]).expect("aux serialises");
            rows.push(ViewRow { model: AUX.into(), agency: String::new(), item_id: key, position: 0, doc });
        }
        for key in std::mem::take(&mut self.dirty_items) {
            let item = &self.items[&key];
            let doc = serde_json::to_vec(item).expect("items serialise");
            rows.push(ViewRow {
                model: key.0.as_str().into(),
                agency: key.1.clone(),
                item_id: key.2.clone(),
                position: item.position,
                doc,
            });
        }
        rows
    }

    /// The items one agency holds in one model changed after `after`, in the order of their
    /// latest change.
    pub fn items<'s>(
        &'s self,
        model: Model,
        agency: &str,
        after: Option<u64>,
    ) -> impl Iterator<Item = (&'s str, &'s Item)> + 's {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let agency = agency.to_owned();
        self.by_position
            .range((model, agency.clone(), from, String::new())..)
            .take_while(move |(m, a, _, _)| *m == model && *a == agency)
            .map(move |(m, a, _, id)| {
                let (key, item) = self.items.get_key_value(&(*m, a.clone(), id.clone())).expect("indexed items exist");
                (key.2.as_str(), item)
            })
    }

    /// SHA-256 over every item and auxiliary fact in key order: equal digests, equal read models.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for ((m, a, id), item) in &self.items {
            for part in [
                m.as_str().as_bytes(),
                a.as_bytes(),
                id.as_bytes(),
                &serde_json::to_vec(item).expect("items serialise"),
            ] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        for (k, aux) in &self.aux {
            for part in [k.as_bytes(), &serde_json::to_vec(aux).expect("aux serialises")] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        h.finalize().into()
    }

    /// Number of items across every model.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn agency<'a>(&self, id: &'a str) -> Option<AgencyFacts<'a>> {
        match self.aux.get(&format!("agency/{id}")) {
            Some(Aux::Agency { kind, governs_policy }) => {
                Some(AgencyFacts { id, kind: kind_of(kind)?, governs_policy: *governs_policy })
            }
            _ => None,
        }
    }

    /// The kind of a registered agency, as of the state.
    pub fn agency_kind(&self, id: &str) -> Option<AgencyKind> {
        self.agency(id).map(|f| f.kind)
    }

    fn put_aux(&mut self, key: String, aux: Aux) {
        self.aux.insert(key.clone(), aux);
        self.dirty_aux.insert(key);
    }

    fn put_item(&mut self, key: Key, item: Item) {
        let position = item.position;
        if let Some(old) = self.items.insert(key.clone(), item) {
            self.by_position.remove(&(key.0, key.1.clone(), old.position, key.2.clone()));
        }
        self.by_position.insert((key.0, key.1.clone(), position, key.2.clone()));
        self.dirty_items.insert(key);
    }

    fn update_item(&mut self, key: &Key, position: u64, f: impl FnOnce(&mut Item)) -> bool {
        match self.items.get_mut(key) {
            Some(item) => {
                let before = item.position;
                f(item);
                item.position = position;
                if before != position {
                    self.by_position.remove(&(key.0, key.1.clone(), before, key.2.clone()));
                    self.by_position.insert((key.0, key.1.clone(), position, key.2.clone()));
                }
                self.dirty_items.insert(key.clone());
                true
            }
            None => false,
        }
    }

    /// Whether `agency` may hold the record, by the policy in force; with the deciding policies.
    fn receive(
        &self,
        policy: Option<&Policy>,
        agency: &str,
        record: &RecordFacts<'_>,
        rel: Rel,
    ) -> Option<(u64, Vec<String>)> {
        let policy = policy?;
        let facts = self.agency(agency)?;
        let d = policy.receive(&facts, record, rel.relation());
        d.allowed.then(|| (d.policy_version, d.policy_ids.clone()))
    }

    /// Applies one recorded event (already decoded) under `policy`, the policy in force at its
    /// position. Events must come in position order, each exactly once.
    pub fn apply(
        &mut self,
        e: &RecordedEvent,
        body: &EventBody,
        payload: &Payload,
        policy: Option<&Policy>,
    ) -> Result<(), ApplyError> {
        if e.position != self.next_position {
            return Err(ApplyError {
                position: e.position,
                message: format!("expected position {}, the projection applies the log in order", self.next_position),
            });
        }
        self.next_position = e.position + 1;
        let position = e.position;
        let author = e.author_agency.as_str();
        let author_kind = match self.agency(author) {
            Some(f) => f.kind.as_str().to_owned(),
            None => String::new(),
        };
        let tags: Vec<String> = body.sensitivity.iter().map(|t| t.as_str().to_owned()).collect();
        let base = |rel: Rel, decided: (u64, Vec<String>), content: Content| Item {
            position,
            record_position: position,
            source_agency: author.to_owned(),
            source_kind: author_kind.clone(),
            event_type: e.event_type.clone(),
            tags: tags.clone(),
            rel,
            receive_policy_version: decided.0,
            receive_policy_ids: decided.1,
            corrections: Vec::new(),
            content,
        };
        let author_facts = self.agency(author);
        let fallback = AgencyFacts { id: author, kind: AgencyKind::System, governs_policy: false };
        let record = RecordFacts {
            event_type: &e.event_type,
            kind: accord_policy::record_kind(&e.event_type),
            author: author_facts.unwrap_or(fallback),
            tags: &body.sensitivity,
        };
        let authored = Rel { authored: true, ..Rel::default() };

        // Agency records: everything an agency authored (not the server's own registry records).
        if author != accord_domain::SYSTEM_AGENCY
            && let Some(decided) = self.receive(policy, author, &record, authored)
        {
            let content = Content::Record(Record {
                event_id: body.event_id.to_string(),
                stream: e.stream.clone(),
                occurred_at: body.occurred_at.micros(),
                superseded_by: Vec::new(),
            });
            self.put_item(
                (Model::AgencyRecords, author.to_owned(), body.event_id.to_string()),
                base(authored, decided, content),
            );
        }

        match payload {
            Payload::AgencyRegistered(p) => {
                let key = format!("agency/{}", p.agency_id);
                self.put_aux(key, Aux::Agency { kind: p.kind.as_str().into(), governs_policy: p.governs_policy });
            }
            Payload::EncompassNotificationSent(p) => {
                let child = p.child.clone().unwrap_or_else(|| payload::EncompassChild {
                    child_id: String::new(),
                    name: String::new(),
                    date_of_birth: String::new(),
                    present: false,
                    whereabouts: String::new(),
                    voice_of_child: String::new(),
                });
                let addressee = body.addressees.first().map(|a| a.to_string()).unwrap_or_default();
                let n = Notification {
                    notification_id: p.notification_id.clone(),
                    addressee: addressee.clone(),
                    sent_at: body.occurred_at.micros(),
                    deadline: p.deadline.map_or(0, |d| d.micros()),
                    incident_ref: p.incident_ref.clone(),
                    child_id: child.child_id,
                    child_name: child.name,
                    child_date_of_birth: child.date_of_birth,
                    child_present: child.present,
                    child_whereabouts: child.whereabouts,
                    child_voice: child.voice_of_child,
                    establishment_urn: p.establishment_urn.clone(),
                    local_authority: p.local_authority.clone(),
                    recipient_role: p.recipient_role.clone(),
                    incident_summary: p.incident_summary.clone(),
                    circumstances: p.circumstances.clone(),
                    acknowledged: None,
                };
                let id = p.notification_id.clone();
                if let Some(decided) = self.receive(policy, author, &record, authored) {
                    let item = base(authored, decided, Content::Notification(n.clone()));
                    self.put_item((Model::NotificationsSent, author.to_owned(), id.clone()), item);
                }
                let to = Rel { addressed: true, ..Rel::default() };
                let delivered = match self.receive(policy, &addressee, &record, to) {
                    Some(decided) => {
                        let item = base(to, decided, Content::Notification(n));
                        self.put_item((Model::SchoolInbox, addressee.clone(), id.clone()), item);
                        true
                    }
                    None => false,
                };
                self.put_aux(
                    format!("notification/{id}"),
                    Aux::Routed { author: author.to_owned(), addressee, delivered },
                );
            }
            Payload::EncompassNotificationAcknowledged(p) => {
                let id = &p.notification_id;
                if let Some(Aux::Routed { author: sender, addressee, .. }) =
                    self.aux.get(&format!("notification/{id}")).cloned()
                    && addressee == author
                {
                    let ack = Ack { by: p.acknowledged_by.clone(), at: body.occurred_at.micros(), position };
                    for key in
                        [(Model::SchoolInbox, addressee, id.clone()), (Model::NotificationsSent, sender, id.clone())]
                    {
                        self.update_item(&key, position, |item| {
                            if let Content::Notification(n) = &mut item.content
                                && n.acknowledged.is_none()
                            {
                                n.acknowledged = Some(ack.clone());
                            }
                        });
                    }
                }
            }
            Payload::ConsentRecorded(p) => {
                self.put_aux(
                    format!("consent/{}", p.consent_id),
                    Aux::Consent {
                        recorded_by: author.to_owned(),
                        subject_id: p.subject_id.clone(),
                        recipients: p.recipients.clone(),
                        expires_at: p.expires_at.map(|t| t.micros()),
                        withdrawn_at: None,
                        referrals: Vec::new(),
                    },
                );
            }
            Payload::ConsentWithdrawn(p) => {
                let key = format!("consent/{}", p.consent_id);
                let referrals = match self.aux.get_mut(&key) {
                    Some(Aux::Consent { withdrawn_at: w @ None, referrals, .. }) => {
                        *w = Some(position);
                        referrals.clone()
                    }
                    _ => Vec::new(),
                };
                self.dirty_aux.insert(key);
                // Every agency holding a referral under the consent is told.
                for rid in referrals {
                    if let Some(Aux::Routed { author: from, addressee, .. }) =
                        self.aux.get(&format!("referral/{rid}")).cloned()
                    {
                        for key in
                            [(Model::ReferralInbox, addressee, rid.clone()), (Model::ReferralsSent, from, rid.clone())]
                        {
                            // What was shared under the consent stays with its holders (it
                            // was lawfully received); they are told, and nothing more flows.
                            self.update_item(&key, position, |item| {
                                if let Content::Referral(r) = &mut item.content {
                                    r.consent_withdrawn_at = Some(position);
                                }
                            });
                        }
                    }
                }
            }
            Payload::SupportReferralMade(p) => {
                let addressee = body.addressees.first().map(|a| a.to_string()).unwrap_or_default();
                let consent_key = format!("consent/{}", p.consent_id);
                let in_scope = match self.aux.get(&consent_key) {
                    Some(Aux::Consent { subject_id, recipients, expires_at, withdrawn_at, .. }) => {
                        withdrawn_at.is_none()
                            && *subject_id == p.subject_id
                            && recipients.contains(&addressee)
                            && expires_at.is_none_or(|x| x > body.occurred_at.micros())
                    }
                    _ => false,
                };
                let r = Referral {
                    referral_id: p.referral_id.clone(),
                    from_agency: author.to_owned(),
                    addressee: addressee.clone(),
                    referred_at: body.occurred_at.micros(),
                    status: "open".into(),
                    subject_id: p.subject_id.clone(),
                    contact_name: p.contact_name.clone(),
                    needs: p.needs.clone(),
                    allocated_to: String::new(),
                    decline_reason: String::new(),
                    safe_contact_method: p.safe_contact_method.clone(),
                    safe_contact_details: p.safe_contact_details.clone(),
                    consent_id: p.consent_id.clone(),
                    consent_withdrawn_at: None,
                };
                let id = p.referral_id.clone();
                let mine = Rel { authored: true, consent_in_scope: in_scope, ..Rel::default() };
                if let Some(decided) = self.receive(policy, author, &record, mine) {
                    self.put_item(
                        (Model::ReferralsSent, author.to_owned(), id.clone()),
                        base(mine, decided, Content::Referral(r.clone())),
                    );
                }
                let to = Rel { addressed: true, consent_in_scope: in_scope, ..Rel::default() };
                let delivered = match self.receive(policy, &addressee, &record, to) {
                    Some(decided) => {
                        self.put_item(
                            (Model::ReferralInbox, addressee.clone(), id.clone()),
                            base(to, decided, Content::Referral(r)),
                        );
                        true
                    }
                    None => false,
                };
                if let Some(Aux::Consent { referrals, .. }) = self.aux.get_mut(&consent_key) {
                    referrals.push(id.clone());
                    self.dirty_aux.insert(consent_key);
                }
                self.put_aux(format!("referral/{id}"), Aux::Routed { author: author.to_owned(), addressee, delivered });
            }
            Payload::SupportReferralAccepted(payload::SupportReferralAccepted { referral_id, .. })
            | Payload::SupportReferralDeclined(payload::SupportReferralDeclined { referral_id, .. }) => {
                if let Some(Aux::Routed { author: from, addressee, delivered: true }) =
                    self.aux.get(&format!("referral/{referral_id}")).cloned()
                    && addressee == author
                {
                    let apply = |item: &mut Item| {
                        if let Content::Referral(r) = &mut item.content {
                            match payload {
                                Payload::SupportReferralAccepted(a) => {
                                    r.status = "accepted".into();
                                    r.allocated_to = a.allocated_to.clone();
                                }
                                Payload::SupportReferralDeclined(d) => {
                                    r.status = "declined".into();
                                    r.decline_reason = d.reason.clone();
                                }
                                _ => {}
                            }
                        }
                    };
                    self.update_item(&(Model::ReferralInbox, addressee, referral_id.clone()), position, apply);
                    self.update_item(&(Model::ReferralsSent, from, referral_id.clone()), position, apply);
                }
            }
            Payload::RecordCorrected(c) => self.apply_correction(e, body, c),
            _ => {}
        }
        Ok(())
    }

    /// A correction reaches every item showing the corrected record, except where a consent it
    /// was shared under has since been withdrawn.
    fn apply_correction(&mut self, e: &RecordedEvent, body: &EventBody, c: &payload::RecordCorrected) {
        let position = e.position;
        let Some(target) = &body.supersedes else { return };
        let change = Change {
            position,
            event_id: body.event_id.to_string(),
            fields: c.fields.clone(),
            reason: c.reason.clone(),
        };
        let author = e.author_agency.clone();
        let record_key = (Model::AgencyRecords, author.clone(), target.to_string());
        self.update_item(&record_key, position, |item| {
            if let Content::Record(r) = &mut item.content {
                r.superseded_by.push(body.event_id.to_string());
            }
            item.corrections.push(change.clone());
        });
        let mut keys = Vec::new();
        if let Some(nid) = stream_id(&e.stream, "encompass-")
            && let Some(Aux::Routed { author: from, addressee, .. }) = self.aux.get(&format!("notification/{nid}"))
            && *from == author
        {
            keys.push((Model::NotificationsSent, from.clone(), nid.to_owned()));
            keys.push((Model::SchoolInbox, addressee.clone(), nid.to_owned()));
        }
        if let Some(rid) = stream_id(&e.stream, "referral-")
            && let Some(Aux::Routed { author: from, addressee, .. }) = self.aux.get(&format!("referral/{rid}"))
            && *from == author
        {
            keys.push((Model::ReferralsSent, from.clone(), rid.to_owned()));
            keys.push((Model::ReferralInbox, addressee.clone(), rid.to_owned()));
        }
        for key in keys {
            // Only a correction of the item's own record (not of a later event in its stream).
            let Some(item) = self.items.get(&key) else { continue };
            if item.corrections.iter().any(|c| c.event_id == change.event_id) {
                continue;
            }
            let corrects_record = self
                .items
                .get(&(Model::AgencyRecords, author.clone(), target.to_string()))
                .is_some_and(|r| r.record_position == item.record_position);
            let withdrawn = matches!(&item.content, Content::Referral(r) if r.consent_withdrawn_at.is_some());
            if !corrects_record || (withdrawn && !item.rel.authored) {
                continue;
            }
            self.update_item(&key, position, |item| {
                for (field, value) in &change.fields {
                    set_field(&mut item.content, field, value);
                }
                item.corrections.push(change.clone());
            });
        }
    }
}

/// Sets a correctable field (see `payload::correctable_fields`) on an item's content.
fn set_field(content: &mut Content, field: &str, value: &str) {
    let v = value.to_owned();
    match content {
        Content::Notification(n) => match field {
            "incident_ref" => n.incident_ref = v,
            "recipient_role" => n.recipient_role = v,
            "incident_summary" => n.incident_summary = v,
            "circumstances" => n.circumstances = v,
            "child.name" => n.child_name = v,
            "child.whereabouts" => n.child_whereabouts = v,
            "child.voice_of_child" => n.child_voice = v,
            _ => {}
        },
        Content::Referral(r) => match field {
            "contact_name" => r.contact_name = v,
            "safe_contact_method" => r.safe_contact_method = v,
            "safe_contact_details" => r.safe_contact_details = v,
            _ => {}
        },
        Content::Record(_) => {}
    }
}
