//! The sequencer: one task per process that records appends in batches (group commit).
//!
//! Each round takes every request waiting (up to `MAX_GROUP_EVENTS` events), opens one write
//! transaction holding the log lock, reads what the rules need (head, existing ids, stream
//! versions, key states), decides every request with [`plan`] (pure: no I/O), writes the accepted
//! events, their Merkle hashes, registry effects and a signed checkpoint, commits, and only then
//! answers. Requests refused by the rules change nothing and do not affect the others; if the
//! transaction fails, every request of the round gets the error and nothing is acknowledged.
//!
//! A request may carry the means to build its access record ([`AppendRecord`]): for each such
//! request accepted, the round writes that record into the access log in the same transaction
//! (taking, after the event log's lock, the access log's lock on PostgreSQL and then its tip), so the
//! append and its access record are durable together or not at all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use tracing::Instrument;

use accord_domain::checkpoint::LogSigner;
use accord_domain::merkle::{self, Frontier, Hash};
use accord_domain::payload::RegistryEffect;
use accord_domain::{EventId, Timestamp};
use tokio::sync::{mpsc, watch};

use crate::backend::{self, Head};
use crate::{AccessEntry, AccessTip, AppendRecord, access, group};
use crate::{
    AgencyRecord, Db, Error, KeyRecord, MAX_GROUP_EVENTS, NewEvent, Receipt, RecordedEvent, Result, SignedCheckpoint,
};

/// A request to the sequencer.
pub(crate) type Request = group::Request<NewEvent, Vec<Receipt>, Option<AppendRecord>>;

/// What the sequencer needs to write appends' access records: the access log's signer (set when
/// its writer starts), the tip it shares with that writer, and the access head to advance.
pub(crate) struct AccessWriter {
    pub(crate) signer: Arc<OnceLock<Arc<LogSigner>>>,
    pub(crate) tip: AccessTip,
    pub(crate) head: Arc<watch::Sender<u64>>,
}

/// A committed round: its plan, and the access log's new size if it wrote access records.
pub(crate) struct Round {
    pub(crate) plan: Plan,
    pub(crate) access_size: Option<u64>,
}

/// SQLite has one write lock, which the round's `BEGIN IMMEDIATE` holds.
async fn no_access_lock(_: &mut sqlx::SqliteConnection) -> Result<()> {
    Ok(())
}

/// What the database said under the lock.
pub(crate) struct Snapshot {
    pub(crate) head: Head,
    pub(crate) existing: HashMap<EventId, RecordedEvent>,
    pub(crate) stream_heads: HashMap<String, u64>,
    pub(crate) keys: HashMap<String, KeyRecord>,
    /// Of the agencies the round's requests register, those already registered.
    pub(crate) agencies: HashSet<String>,
}

/// What to write and what to answer.
pub(crate) struct Plan {
    pub(crate) outcomes: Vec<Result<Vec<Receipt>>>,
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) hashes: Vec<(u64, Hash)>,
    pub(crate) new_keys: Vec<KeyRecord>,
    pub(crate) revocations: Vec<(String, u64)>,
    pub(crate) new_agencies: Vec<AgencyRecord>,
    pub(crate) adoptions: Vec<u64>,
    pub(crate) frontier: Frontier,
}

/// What the round has decided so far.
struct State {
    size: u64,
    frontier: Frontier,
    stream_heads: HashMap<String, u64>,
    keys: HashMap<String, KeyRecord>,
    /// Events planned earlier in this round: id -> index in `events`.
    planned: HashMap<EventId, usize>,
    events: Vec<RecordedEvent>,
    hashes: Vec<(u64, Hash)>,
    new_keys: Vec<KeyRecord>,
    revocations: Vec<(String, u64)>,
    new_agencies: Vec<AgencyRecord>,
    adoptions: Vec<u64>,
    policy_version: Option<u64>,
}

/// One request's tentative changes on top of the round's [`State`]. Applied only when the whole
/// request is accepted, so a refused request leaves no trace; its cost is the request's own size,
/// not the round's.
struct Delta {
    size: u64,
    frontier: Frontier,
    stream_heads: HashMap<String, u64>,
    keys: HashMap<String, KeyRecord>,
    events: Vec<RecordedEvent>,
    hashes: Vec<(u64, Hash)>,
    new_keys: Vec<KeyRecord>,
    revocations: Vec<(String, u64)>,
    new_agencies: Vec<AgencyRecord>,
    adoptions: Vec<u64>,
    policy_version: Option<u64>,
}

impl Delta {
    fn new(s: &State) -> Self {
        Delta {
            size: s.size,
            frontier: s.frontier.clone(),
            stream_heads: HashMap::new(),
            keys: HashMap::new(),
            events: Vec::new(),
            hashes: Vec::new(),
            new_keys: Vec::new(),
            revocations: Vec::new(),
            new_agencies: Vec::new(),
            adoptions: Vec::new(),
            policy_version: s.policy_version,
        }
    }

    fn key<'a>(&'a self, s: &'a State, key_id: &str) -> Option<&'a KeyRecord> {
        self.keys.get(key_id).or_else(|| s.keys.get(key_id))
    }

    fn stream_head(&self, s: &State, stream: &str) -> Option<u64> {
        self.stream_heads.get(stream).or_else(|| s.stream_heads.get(stream)).copied()
    }

    fn register_key(&mut self, s: &State, e: &NewEvent, position: u64) -> Result<()> {
        let RegistryEffect::RegisterKey { key_id, agency, public_key } = &e.effect else {
            return Ok(());
        };
        if let Some(k) = self.key(s, key_id.as_str()) {
            return Err(Error::Duplicate(format!(
                "signing key {key_id} is already registered (at position {})",
                k.registered_at
            )));
        }
        let public_key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .map_err(|_| Error::Invalid(format!("signing key {key_id}: not a valid Ed25519 point")))?;
        let k = KeyRecord {
            key_id: key_id.to_string(),
            agency: agency.to_string(),
            public_key,
            registered_at: position,
            revoked_at: None,
        };
        self.keys.insert(k.key_id.clone(), k.clone());
        self.new_keys.push(k);
        Ok(())
    }

    fn apply(self, s: &mut State) {
        s.size = self.size;
        s.frontier = self.frontier;
        s.stream_heads.extend(self.stream_heads);
        s.keys.extend(self.keys);
        for e in self.events {
            s.planned.insert(e.event_id, s.events.len());
            s.events.push(e);
        }
        s.hashes.extend(self.hashes);
        s.new_keys.extend(self.new_keys);
        s.revocations.extend(self.revocations);
        s.new_agencies.extend(self.new_agencies);
        s.adoptions.extend(self.adoptions);
        s.policy_version = self.policy_version;
    }
}

fn same_bytes(e: &NewEvent, r: &RecordedEvent) -> bool {
    e.body == r.body && e.key_id.as_str() == r.key_id && e.signature == r.signature
}

/// Decides one request against `s`, updating it only when the whole request is accepted.
fn decide(s: &mut State, snap: &Snapshot, recorded_at: Timestamp, events: &[NewEvent]) -> Result<Vec<Receipt>> {
    let mut seen = HashSet::new();
    for e in events {
        if !seen.insert(e.event_id) {
            return Err(Error::Invalid(format!("event id {} appears twice in the batch", e.event_id)));
        }
    }
    // Idempotency: a request is either a resend of recorded events or wholly new.
    let prior: Vec<Option<&RecordedEvent>> = events
        .iter()
        .map(|e| snap.existing.get(&e.event_id).or_else(|| s.planned.get(&e.event_id).map(|i| &s.events[*i])))
        .collect();
    if let Some((e, r)) = events.iter().zip(&prior).find_map(|(e, r)| r.map(|r| (e, r))) {
        if let Some((e, r)) =
            events.iter().zip(&prior).find_map(|(e, r)| r.filter(|r| !same_bytes(e, r)).map(|r| (e, r)))
        {
            return Err(Error::Duplicate(format!(
                "event id {} is already recorded at position {} with other bytes",
                e.event_id, r.position
            )));
        }
        if prior.iter().any(Option::is_none) {
            return Err(Error::Duplicate(format!(
                "event id {} is already recorded at position {} by an earlier batch; resend a batch exactly as before, or give new events new ids",
                e.event_id, r.position
            )));
        }
        return Ok(prior.into_iter().flatten().map(RecordedEvent::receipt).collect());
    }

    let mut d = Delta::new(s);
    let mut receipts = Vec::with_capacity(events.len());
    for e in events {
        let position = d.size;
        // Bootstrap: the server's own key registers itself (the very first event of a log, and
        // after the server's key is rotated). Only the server authors `accord` events.
        let self_registration = matches!(&e.effect, RegistryEffect::RegisterKey { key_id, agency, .. }
            if key_id == &e.key_id && agency == &e.author_agency && agency.as_str() == accord_domain::SYSTEM_AGENCY);
        if self_registration {
            d.register_key(s, e, position)?;
        }
        let key = d
            .key(s, e.key_id.as_str())
            .ok_or_else(|| Error::KeyRefused(format!("signing key {} is not registered", e.key_id)))?;
        if key.agency != e.author_agency.as_str() {
            return Err(Error::KeyRefused(format!(
                "signing key {} belongs to agency {}, not {}",
                e.key_id, key.agency, e.author_agency
            )));
        }
        if let Some(at) = key.revoked_at {
            return Err(Error::KeyRefused(format!("signing key {} was revoked at position {at}", e.key_id)));
        }
        if e.policy_version.is_none()
            && d.policy_version.is_some()
            && e.author_agency.as_str() != accord_domain::SYSTEM_AGENCY
        {
            return Err(Error::Invalid(format!(
                "event {} by agency {} was not checked against the sharing policy in force",
                e.event_id, e.author_agency
            )));
        }
        if e.policy_version.is_some() && e.policy_version != d.policy_version {
            return Err(Error::PolicyChanged(format!(
                "event {} was checked under the sharing policy adopted at position {}, but the policy adopted at position {} is now in force",
                e.event_id,
                e.policy_version.map_or_else(|| "-".into(), |v| v.to_string()),
                d.policy_version.map_or_else(|| "-".into(), |v| v.to_string()),
            )));
        }
        let current = d.stream_head(s, e.stream.as_str());
        e.expected.check(current).map_err(|m| Error::Conflict(format!("stream {}: {m}", e.stream)))?;
        match &e.effect {
            RegistryEffect::None => {}
            RegistryEffect::AdoptPolicy => {
                d.policy_version = Some(position);
                d.adoptions.push(position);
            }
            RegistryEffect::RegisterAgency { agency, kind, governs_policy } => {
                let known = snap.agencies.contains(agency.as_str())
                    || s.new_agencies.iter().chain(&d.new_agencies).any(|a| a.agency_id == agency.as_str());
                if known {
                    return Err(Error::Duplicate(format!("agency {agency} is already registered")));
                }
                d.new_agencies.push(AgencyRecord {
                    agency_id: agency.to_string(),
                    kind: *kind,
                    governs_policy: *governs_policy,
                    registered_at: position,
                });
            }
            RegistryEffect::RegisterKey { .. } => {
                if !self_registration {
                    d.register_key(s, e, position)?;
                }
            }
            RegistryEffect::RevokeKey { key_id, agency } => {
                let mut k = d
                    .key(s, key_id.as_str())
                    .cloned()
                    .ok_or_else(|| Error::NotFound(format!("signing key {key_id} is not registered")))?;
                if k.agency != agency.as_str() {
                    return Err(Error::Invalid(format!(
                        "signing key {key_id} belongs to agency {}, not {agency}",
                        k.agency
                    )));
                }
                if let Some(at) = k.revoked_at {
                    return Err(Error::Duplicate(format!("signing key {key_id} was already revoked at position {at}")));
                }
                k.revoked_at = Some(position);
                d.keys.insert(k.key_id.clone(), k);
                d.revocations.push((key_id.to_string(), position));
            }
        }
        let stream_version = current.map_or(0, |v| v + 1);
        let mut r = RecordedEvent {
            position,
            event_id: e.event_id,
            stream: e.stream.to_string(),
            stream_version,
            event_type: e.event_type.to_string(),
            author_agency: e.author_agency.to_string(),
            key_id: e.key_id.to_string(),
            recorded_at,
            body: e.body.clone(),
            signature: e.signature.clone(),
            leaf_hash: Hash([0; 32]),
        };
        r.leaf_hash = r.leaf().hash();
        let stored = d.frontier.push(r.leaf_hash);
        d.hashes.extend(stored.hashes.iter().enumerate().map(|(k, h)| (stored.first + k as u64, *h)));
        d.stream_heads.insert(r.stream.clone(), stream_version);
        d.size += 1;
        receipts.push(r.receipt());
        d.events.push(r);
    }
    d.apply(s);
    Ok(receipts)
}

/// Decides a round of requests. Pure: the same snapshot and requests give the same plan.
pub(crate) fn plan(snap: &Snapshot, frontier: Frontier, now: Timestamp, requests: &[&[NewEvent]]) -> Plan {
    // Recording times never go backwards, even if the clock does.
    let recorded_at = Timestamp(now.micros().max(snap.head.last_recorded_at));
    let mut s = State {
        size: snap.head.size,
        frontier,
        stream_heads: snap.stream_heads.clone(),
        keys: snap.keys.clone(),
        planned: HashMap::new(),
        events: Vec::new(),
        hashes: Vec::new(),
        new_keys: Vec::new(),
        revocations: Vec::new(),
        new_agencies: Vec::new(),
        adoptions: Vec::new(),
        policy_version: snap.head.policy_version,
    };
    let outcomes = requests.iter().map(|events| decide(&mut s, snap, recorded_at, events)).collect();
    Plan {
        outcomes,
        events: s.events,
        hashes: s.hashes,
        new_keys: s.new_keys,
        revocations: s.revocations,
        new_agencies: s.new_agencies,
        adoptions: s.adoptions,
        frontier: s.frontier,
    }
}

/// One round against one backend. Generated for both, like the queries.
macro_rules! round {
    ($name:ident, $q:ident, $begin:path, $Pool:ty, $lock_access:path, $write_access:path) => {
        async fn $name(
            pool: &$Pool,
            cached: &mut Option<Frontier>,
            signer: &LogSigner,
            requests: &[&[NewEvent]],
            records: &[Option<AppendRecord>],
            access: &AccessWriter,
        ) -> Result<Round> {
            use backend::$q as q;
            let mut tx = $begin(pool).await?;
            let head = q::head(&mut *tx).await?;
            let frontier = match cached.take() {
                Some(f) if f.size() == head.size => f,
                // First round, or another process appended since our last round.
                _ => {
                    let idx = merkle::tree_hash_indexes(head.size);
                    let h = q::hashes(&mut *tx, &idx).await?;
                    Frontier::from_hashes(head.size, h)?
                }
            };
            let ids: Vec<EventId> = requests.iter().flat_map(|r| r.iter().map(|e| e.event_id)).collect();
            let mut streams: Vec<&str> = requests.iter().flat_map(|r| r.iter().map(|e| e.stream.as_str())).collect();
            streams.sort_unstable();
            streams.dedup();
            let mut key_ids: Vec<&str> = requests.iter().flat_map(|r| r.iter().map(|e| e.key_id.as_str())).collect();
            for r in requests.iter().flat_map(|r| r.iter()) {
                if let RegistryEffect::RegisterKey { key_id, .. } | RegistryEffect::RevokeKey { key_id, .. } = &r.effect
                {
                    key_ids.push(key_id.as_str());
                }
            }
            key_ids.sort_unstable();
            key_ids.dedup();
            let snap = Snapshot {
                head,
                existing: q::existing_events(&mut *tx, &ids).await?.into_iter().map(|e| (e.event_id, e)).collect(),
                stream_heads: q::stream_heads(&mut *tx, &streams).await?,
                keys: q::key_states(&mut *tx, &key_ids).await?,
                agencies: {
                    let new: Vec<&str> = requests
                        .iter()
                        .flat_map(|r| r.iter())
                        .filter_map(|e| match &e.effect {
                            RegistryEffect::RegisterAgency { agency, .. } => Some(agency.as_str()),
                            _ => None,
                        })
                        .collect();
                    if new.is_empty() { HashSet::new() } else { q::known_agencies(&mut *tx, &new).await? }
                },
            };
            let plan = plan(&snap, frontier.clone(), Timestamp::now(), requests);
            // The access records of the accepted requests that asked for one (a resend too).
            let entries: Vec<AccessEntry> = plan
                .outcomes
                .iter()
                .zip(records)
                .filter_map(|(outcome, record)| match (outcome, record) {
                    // A panicking builder fails the round, not the sequencer task.
                    (Ok(receipts), Some(record)) => Some(
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| record(receipts))).map_err(|_| {
                            Error::Invalid(
                                "building an append's access record failed (a panic); nothing was recorded".into(),
                            )
                        }),
                    ),
                    _ => None,
                })
                .collect::<Result<_>>()?;
            if plan.events.is_empty() && entries.is_empty() {
                tx.rollback().await.map_err(crate::error::db("ending a read-only round"))?;
                *cached = Some(frontier);
                return Ok(Round { plan, access_size: None });
            }
            if !plan.events.is_empty() {
                let size = plan.frontier.size();
                let root = plan.frontier.root();
                let cp = SignedCheckpoint {
                    tree_size: size,
                    root,
                    note: signer.sign(size, root)?,
                    signed_at: Timestamp::now(),
                };
                q::insert(&mut *tx, &plan, &cp).await?;
            }
            // After the event log's lock, (PostgreSQL) the access log's lock, then its tip: the
            // order the access writer takes them in too.
            let mut access_tip = None;
            if !entries.is_empty() {
                let access_signer = access.signer.get().ok_or_else(|| {
                    Error::Unavailable("the access log is not accepting records (not started)".into())
                })?;
                $lock_access(&mut *tx).await?;
                let mut tip = access.tip.lock().await;
                let written = $write_access(&mut *tx, &mut tip, access_signer, &entries).await?;
                access_tip = Some((tip, written));
            }
            tx.commit().await.map_err(crate::error::db("committing appended events"))?;
            *cached = Some(plan.frontier.clone());
            let access_size = access_tip.map(|(mut tip, written)| {
                let size = written.size();
                *tip = Some(written);
                size
            });
            Ok(Round { plan, access_size })
        }
    };
}

round!(round_sqlite, sqlite, backend::begin_sqlite, sqlx::SqlitePool, no_access_lock, access::write_in_sqlite);
round!(
    round_postgres,
    postgres,
    backend::begin_postgres,
    sqlx::PgPool,
    backend::lock_postgres_access,
    access::write_in_postgres
);

pub(crate) async fn run(
    db: Db,
    signer: LogSigner,
    mut rx: mpsc::Receiver<Request>,
    head: watch::Sender<u64>,
    writes: crate::WriteGate,
    access: AccessWriter,
) {
    let mut cached: Option<Frontier> = None;
    while let Some(round) = group::Group::next(&mut rx, MAX_GROUP_EVENTS).await {
        let result = {
            let requests = round.items();
            let records: Vec<Option<AppendRecord>> = round.attached().into_iter().cloned().collect();
            let span = tracing::debug_span!("events_round", requests = requests.len());
            let _gate = writes.enter(&db).await;
            match &db {
                Db::Sqlite(p) => {
                    round_sqlite(p, &mut cached, &signer, &requests, &records, &access).instrument(span).await
                }
                Db::Postgres(p) => {
                    round_postgres(p, &mut cached, &signer, &requests, &records, &access).instrument(span).await
                }
            }
        };
        let committed = result.as_ref().map(|r| r.plan.events.len()).unwrap_or(0);
        let outcomes = match result {
            Ok(Round { plan, access_size }) => {
                if !plan.events.is_empty() {
                    head.send_replace(plan.frontier.size());
                }
                if let Some(size) = access_size {
                    crate::advance(&access.head, size);
                }
                Ok(plan.outcomes)
            }
            Err(e) => {
                cached = None;
                Err(e)
            }
        };
        round.answer("events", outcomes, committed);
    }
}

#[cfg(test)]
mod tests {
    use accord_domain::{AgencyId, EventType, ExpectedVersion, KeyId, StreamId};

    use super::*;

    fn key() -> KeyRecord {
        KeyRecord {
            key_id: "k1".into(),
            agency: "met-police".into(),
            public_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(),
            registered_at: 0,
            revoked_at: None,
        }
    }

    fn snapshot(size: u64) -> Snapshot {
        Snapshot {
            head: Head { size, last_recorded_at: 5, policy_version: Some(0) },
            existing: HashMap::new(),
            stream_heads: HashMap::from([("nominal-a".to_owned(), 0)]),
            keys: HashMap::from([("k1".to_owned(), key())]),
            agencies: HashSet::from(["met-police".to_owned()]),
        }
    }

    fn ev(stream: &str, expected: ExpectedVersion) -> NewEvent {
        NewEvent {
            event_id: EventId::new(),
            stream: StreamId::parse(stream).unwrap(),
            expected,
            event_type: EventType::parse("accord.v1.Test").unwrap(),
            author_agency: AgencyId::parse("met-police").unwrap(),
            key_id: KeyId::parse("k1").unwrap(),
            body: b"body".to_vec(),
            signature: vec![1; 64],
            effect: RegistryEffect::None,
            policy_version: Some(0),
        }
    }

    fn frontier(size: u64) -> Frontier {
        let mut f = Frontier::empty();
        for i in 0..size {
            f.push(
                merkle::Leaf {
                    position: i,
                    recorded_at: Timestamp(0),
                    stream: "s",
                    stream_version: i,
                    key_id: "k",
                    signature: &[],
                    body_sha256: [0; 32],
                }
                .hash(),
            );
        }
        f
    }

    #[test]
    fn a_refused_request_in_a_round_leaves_no_trace() {
        let ok1 = vec![ev("nominal-a", ExpectedVersion::Exact(0)), ev("nominal-b", ExpectedVersion::NoStream)];
        // Its first event would be fine; its second conflicts, so neither is planned.
        let bad = vec![ev("nominal-c", ExpectedVersion::NoStream), ev("nominal-a", ExpectedVersion::Exact(0))];
        let ok2 = vec![ev("nominal-c", ExpectedVersion::NoStream)];
        let resend = ok1.clone();
        let requests: Vec<&[NewEvent]> = vec![&ok1, &bad, &ok2, &resend];
        let p = plan(&snapshot(3), frontier(3), Timestamp(1), &requests);

        let first = p.outcomes[0].as_ref().unwrap();
        assert_eq!(first.iter().map(|r| (r.position, r.stream_version)).collect::<Vec<_>>(), vec![(3, 1), (4, 0)]);
        assert!(
            matches!(&p.outcomes[1], Err(Error::Conflict(m)) if m == "stream nominal-a: expected stream version 0, stream is at 1")
        );
        assert_eq!(p.outcomes[2].as_ref().unwrap()[0].position, 5, "the refused request took no position");
        assert_eq!(p.outcomes[3].as_ref().unwrap(), first, "a resend in the same round gets the same receipts");
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.frontier.size(), 6);
        // Recording time never goes backwards (the snapshot's last time was 5, the clock says 1).
        assert!(p.events.iter().all(|e| e.recorded_at == Timestamp(5)));
        // The stored hashes are exactly those of the three new leaves.
        let mut f = frontier(3);
        let mut want = Vec::new();
        for e in &p.events {
            let s = f.push(e.leaf_hash);
            want.extend(s.hashes.iter().enumerate().map(|(k, h)| (s.first + k as u64, *h)));
        }
        assert_eq!(p.hashes.len(), want.len());
        assert!(p.hashes.iter().zip(&want).all(|(a, b)| a.0 == b.0 && a.1 == b.1));
        assert_eq!(p.frontier.root(), f.root());
    }

    #[test]
    fn a_revocation_takes_effect_for_the_rest_of_the_round() {
        let mut revoke = ev("agency-met-police", ExpectedVersion::Any);
        revoke.effect = RegistryEffect::RevokeKey {
            key_id: KeyId::parse("k1").unwrap(),
            agency: AgencyId::parse("met-police").unwrap(),
        };
        let revoke = vec![revoke];
        let after = vec![ev("nominal-z", ExpectedVersion::Any)];
        let p = plan(&snapshot(1), frontier(1), Timestamp(9), &[&revoke, &after]);
        assert_eq!(p.revocations, vec![("k1".to_owned(), 1)]);
        assert!(matches!(&p.outcomes[1], Err(Error::KeyRefused(m)) if m == "signing key k1 was revoked at position 1"));
    }

    #[test]
    fn a_policy_adoption_takes_effect_for_the_rest_of_the_round() {
        let mut adopt = ev("accord-policy", ExpectedVersion::Any);
        adopt.effect = RegistryEffect::AdoptPolicy;
        let adopt = vec![adopt];
        let checked_before = vec![ev("nominal-z", ExpectedVersion::Any)];
        let mut checked_after = ev("nominal-y", ExpectedVersion::Any);
        checked_after.policy_version = Some(2);
        let checked_after = vec![checked_after];
        let before_adoption = vec![ev("nominal-x", ExpectedVersion::Any)];
        let p =
            plan(&snapshot(2), frontier(2), Timestamp(9), &[&before_adoption, &adopt, &checked_before, &checked_after]);
        assert_eq!(p.outcomes[0].as_ref().unwrap()[0].position, 2, "checked under the policy then in force");
        assert_eq!(p.outcomes[1].as_ref().unwrap()[0].position, 3);
        assert_eq!(p.adoptions, vec![3]);
        assert!(
            matches!(&p.outcomes[2], Err(Error::PolicyChanged(m)) if m.contains("adopted at position 0") && m.contains("position 3 is now in force")),
            "{:?}",
            p.outcomes[2]
        );
        assert!(matches!(&p.outcomes[3], Err(Error::PolicyChanged(_))), "checked under a policy that is not in force");
        assert_eq!(p.events.len(), 2);

        let mut unchecked = ev("nominal-w", ExpectedVersion::Any);
        unchecked.policy_version = None;
        let p = plan(&snapshot(2), frontier(2), Timestamp(9), &[&[unchecked]]);
        assert!(
            matches!(&p.outcomes[0], Err(Error::Invalid(m)) if m.contains("not checked against the sharing policy"))
        );
    }

    #[test]
    fn an_agency_is_registered_once() {
        let register = |id: &str| {
            let mut e = ev(&format!("agency-{id}"), ExpectedVersion::Any);
            e.effect = RegistryEffect::RegisterAgency {
                agency: AgencyId::parse(id).unwrap(),
                kind: accord_domain::payload::AgencyKind::School,
                governs_policy: false,
            };
            vec![e]
        };
        let (known, new, again) = (register("met-police"), register("st-marys"), register("st-marys"));
        let p = plan(&snapshot(1), frontier(1), Timestamp(9), &[&known, &new, &again]);
        assert!(matches!(&p.outcomes[0], Err(Error::Duplicate(m)) if m == "agency met-police is already registered"));
        assert!(p.outcomes[1].is_ok());
        assert!(matches!(&p.outcomes[2], Err(Error::Duplicate(_))));
        assert_eq!(p.new_agencies.len(), 1);
        assert_eq!(p.new_agencies[0].registered_at, 1);
    }
}
