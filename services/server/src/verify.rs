//! `accord verify`: recomputes the whole log from the stored bytes and reports the first place
//! where anything stored disagrees with what it should be.
//!
//! Checked, in position order: positions are gap-free; every leaf hash matches the event's fields
//! and body; stream versions run 0, 1, 2… per stream; every body decodes and matches its stored
//! columns; every signature verifies with a key that was registered to the author's agency and
//! not revoked at that position (keys are replayed from the registry events, and the key tables
//! must match them); every stored Merkle hash matches the recomputed tree; every stored checkpoint
//! has the recomputed root at its size and a valid signature by a log key recorded in the log.
//! With `against`, a checkpoint kept earlier must verify and match the recomputed root at its size:
//! the current log extends it.
//!
//! The access log is checked the same way, after the event log (whose registry gives the log
//! keys): gap-free positions, every leaf hash recomputed from the stored record bytes, every
//! record decodes and its indexed columns and subject/record index rows say exactly what the
//! record says (so no access can be hidden from an auditor's query by editing an index), every
//! stored Merkle hash, every checkpoint's root and signature (under the `<origin>/access` name).
//! A kept checkpoint is matched to its log by its origin line.

use std::collections::{BTreeMap, HashMap};

use accord_domain::checkpoint::{verifier_key_for, verify_checkpoint};
use accord_domain::merkle::{self, Frontier, Hash};
use accord_domain::payload::{Payload, RegistryEffect};
use accord_store::{SignedCheckpoint, Store, Visibility};

/// What a successful verification covered.
#[derive(Debug, Clone)]
pub struct Report {
    /// Events checked.
    pub events: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Root of the whole log.
    pub root: Hash,
    /// The size of the checkpoint given with `against`, proven to be a prefix (of the event
    /// log, or of the access log when the kept checkpoint is the access log's).
    pub extends: Option<u64>,
    /// Access records checked.
    pub accesses: u64,
    /// Access-log checkpoints checked.
    pub access_checkpoints: u64,
    /// Root of the whole access log.
    pub access_root: Hash,
}

/// One Merkle log recomputed leaf by leaf and compared with what is stored.
struct Tree {
    /// How positions of this log are named in messages (`position`, `access position`).
    what: &'static str,
    frontier: Frontier,
    checkpoints: BTreeMap<u64, SignedCheckpoint>,
    against_size: Option<u64>,
    roots: HashMap<u64, Hash>,
}

impl Tree {
    fn new(what: &'static str, checkpoints: BTreeMap<u64, SignedCheckpoint>, against_size: Option<u64>) -> Self {
        Tree { what, frontier: Frontier::empty(), checkpoints, against_size, roots: HashMap::new() }
    }

    /// Checks that `position` is the next one, then adds its leaf and compares the hashes it
    /// stores with `stored`.
    fn push(&mut self, position: u64, leaf: Hash, stored: &HashMap<u64, Hash>) -> Result<(), Failure> {
        let what = self.what;
        if position != self.frontier.size() {
            return Err(diverged(format!(
                "{what} {} is missing (next stored {what} is {position})",
                self.frontier.size()
            )));
        }
        let new = self.frontier.push(leaf);
        for (k, h) in new.hashes.iter().enumerate() {
            let idx = new.first + k as u64;
            match stored.get(&idx) {
                None => return Err(diverged(format!("{what} {position}: merkle hash {idx} is missing"))),
                Some(s) if s != h => {
                    return Err(diverged(format!(
                        "{what} {position}: stored merkle hash {idx} differs from the recomputed tree"
                    )));
                }
                Some(_) => {}
            }
        }
        let size = self.frontier.size();
        if self.checkpoints.contains_key(&size) || self.against_size == Some(size) {
            self.roots.insert(size, self.frontier.root());
        }
        Ok(())
    }

    /// Checks what is stored beyond the tree, every checkpoint, and the kept one.
    fn finish(
        &self,
        beyond: Option<u64>,
        verifier_keys: &[String],
        against: Option<&str>,
    ) -> Result<Option<u64>, Failure> {
        let (what, n) = (self.what, self.frontier.size());
        if let Some(idx) = beyond {
            return Err(diverged(format!("{what}s: merkle hash {idx} is stored beyond the tree of size {n}")));
        }
        // Every committed round ends with a checkpoint signed over the whole log, so a tail no
        // checkpoint covers was written around the server (forged) or its checkpoint removed.
        if n > 0 && !self.checkpoints.contains_key(&n) {
            return Err(diverged(format!(
                "{what}s: no signed checkpoint covers the log's {n} entries (the latest is of size {}): entries were added without the server",
                self.checkpoints.keys().next_back().copied().unwrap_or(0)
            )));
        }
        for (size, cp) in &self.checkpoints {
            let root = self
                .roots
                .get(size)
                .ok_or_else(|| diverged(format!("{what}s: checkpoint of size {size} is beyond the log size {n}")))?;
            if &cp.root != root {
                return Err(diverged(format!(
                    "{what}s: checkpoint of size {size}: stored root differs from the recomputed tree"
                )));
            }
            let v = verify_checkpoint(&cp.note, verifier_keys)
                .map_err(|e| diverged(format!("{what}s: checkpoint of size {size}: {e}")))?;
            if v.size != *size || v.root != *root {
                return Err(diverged(format!(
                    "{what}s: checkpoint of size {size}: the signed note says size {} and another root",
                    v.size
                )));
            }
        }
        let Some(note) = against else { return Ok(None) };
        let v = verify_checkpoint(note, verifier_keys).map_err(|e| diverged(format!("the kept checkpoint: {e}")))?;
        let root = self.roots.get(&v.size).ok_or_else(|| {
            diverged(format!(
                "the kept checkpoint has size {}, but the log now holds only {n} entries: the log was truncated",
                v.size
            ))
        })?;
        if &v.root != root {
            return Err(diverged(format!(
                "the log does not extend the kept checkpoint: at size {} its root differs (history was rewritten)",
                v.size
            )));
        }
        Ok(Some(v.size))
    }
}

/// Every stored checkpoint of one log, by size.
async fn all_checkpoints(store: &Store, access: bool) -> Result<BTreeMap<u64, SignedCheckpoint>, Failure> {
    let mut out: BTreeMap<u64, SignedCheckpoint> = BTreeMap::new();
    loop {
        let from = out.keys().next_back().map_or(0, |s| s + 1);
        let page =
            if access { store.access_checkpoints(from, PAGE).await? } else { store.checkpoints(from, PAGE).await? };
        let done = page.len() < PAGE as usize;
        out.extend(page.into_iter().map(|c| (c.tree_size, c)));
        if done {
            return Ok(out);
        }
    }
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Stored data disagrees with itself: the log was altered or corrupted.
    #[error("log diverges: {0}")]
    Diverged(String),
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] accord_store::Error),
}

#[derive(Debug, Clone)]
struct LogKey {
    agency: String,
    public_key: ed25519_dalek::VerifyingKey,
    registered_at: u64,
    revoked_at: Option<u64>,
}

fn diverged(m: String) -> Failure {
    Failure::Diverged(m)
}

const PAGE: u32 = 1000;

/// Verifies the whole log. `progress` is called after each page with the events checked so far.
pub async fn verify(store: &Store, against: Option<&str>, mut progress: impl FnMut(u64)) -> Result<Report, Failure> {
    // A kept checkpoint is the access log's when its origin line is an access origin.
    let kept_access = against.is_some_and(|n| n.lines().next().is_some_and(|o| o.ends_with("/access")));
    let (against, against_access) = if kept_access { (None, against) } else { (against, None) };

    let mut keys: HashMap<String, LogKey> = HashMap::new();
    let mut verifier_keys: Vec<String> = Vec::new();
    let mut adoptions: Vec<u64> = Vec::new();
    let mut agencies: HashMap<String, (accord_domain::payload::AgencyKind, bool, u64)> = HashMap::new();
    let mut streams: HashMap<String, u64> = HashMap::new();
    let against_size = match against {
        Some(note) => Some(note_size(note).map_err(|m| diverged(format!("the kept checkpoint: {m}")))?),
        None => None,
    };
    let mut tree = Tree::new("position", all_checkpoints(store, false).await?, against_size);
    let mut next = 0u64;
    loop {
        let page = store.read_all(next, PAGE, &Visibility::All).await?;
        if let (Some(first), Some(last)) = (page.events.first(), page.events.last()) {
            let stored = store
                .hash_range(
                    merkle::stored_hash_index(0, first.position),
                    merkle::stored_hash_index(0, last.position + 1),
                )
                .await?;
            let stored: HashMap<u64, Hash> = stored.into_iter().collect();
            for e in &page.events {
                let p = e.position;
                let leaf = e.leaf().hash();
                if leaf != e.leaf_hash {
                    return Err(diverged(format!(
                        "position {p}: the stored leaf hash does not match the event's fields and body"
                    )));
                }
                let want = streams.get(&e.stream).map_or(0, |v| v + 1);
                if e.stream_version != want {
                    return Err(diverged(format!(
                        "position {p}: stream {} has version {}, expected {want}",
                        e.stream, e.stream_version
                    )));
                }
                streams.insert(e.stream.clone(), e.stream_version);

                let body = accord_ledger::convert::event_body("body", &e.body)
                    .map_err(|x| diverged(format!("position {p}: the body does not decode: {x}")))?;
                if body.event_id != e.event_id
                    || body.stream.as_str() != e.stream
                    || body.event_type.as_str() != e.event_type
                    || body.author.agency.as_str() != e.author_agency
                {
                    return Err(diverged(format!("position {p}: the stored columns differ from the signed body")));
                }
                let payload = match body.event_type.as_str() {
                    t if t.starts_with("accord.v1.") && is_registry(t) => Some(
                        accord_ledger::convert::payload("body", &body)
                            .map_err(|x| diverged(format!("position {p}: {x}")))?,
                    ),
                    _ => None,
                };
                let effect = payload.as_ref().map_or(RegistryEffect::None, Payload::registry_effect);
                if let RegistryEffect::RegisterKey { key_id, agency, public_key } = &effect {
                    if keys.contains_key(key_id.as_str()) {
                        return Err(diverged(format!("position {p}: key {key_id} registered twice")));
                    }
                    let public_key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
                        .map_err(|_| diverged(format!("position {p}: key {key_id} is not a valid point")))?;
                    keys.insert(
                        key_id.to_string(),
                        LogKey { agency: agency.to_string(), public_key, registered_at: p, revoked_at: None },
                    );
                }
                let key = keys.get(&e.key_id).ok_or_else(|| {
                    diverged(format!("position {p}: signed by key {} which the log never registered", e.key_id))
                })?;
                if key.agency != e.author_agency || key.revoked_at.is_some() {
                    return Err(diverged(format!(
                        "position {p}: key {} could not sign for {} at this position",
                        e.key_id, e.author_agency
                    )));
                }
                accord_domain::signing::verify_body(&key.public_key, &e.body, &e.signature)
                    .map_err(|x| diverged(format!("position {p}: {x}")))?;
                if let RegistryEffect::RevokeKey { key_id, .. } = &effect {
                    let k = keys
                        .get_mut(key_id.as_str())
                        .ok_or_else(|| diverged(format!("position {p}: revokes unknown key {key_id}")))?;
                    k.revoked_at = Some(p);
                }
                match &payload {
                    Some(Payload::LogKeyRegistered(l)) => verifier_keys.push(l.verifier_key.clone()),
                    Some(Payload::PolicyAdopted(a)) => {
                        accord_ledger::sharing::compile("body", p, a)
                            .map_err(|x| diverged(format!("position {p}: the adopted policy does not compile: {x}")))?;
                        adoptions.push(p);
                    }
                    Some(Payload::AgencyRegistered(a))
                        if agencies.insert(a.agency_id.to_string(), (a.kind, a.governs_policy, p)).is_some() =>
                    {
                        return Err(diverged(format!("position {p}: agency {} registered twice", a.agency_id)));
                    }
                    _ => {}
                }

                tree.push(p, leaf, &stored)?;
            }
            progress(tree.frontier.size());
        }
        if page.next >= page.log_size {
            break;
        }
        next = page.next;
    }
    let n = tree.frontier.size();
    let beyond = store.hash_range(merkle::stored_hash_count(n), i64::MAX as u64).await?.first().map(|(i, _)| *i);

    // The key tables must say exactly what the registry events say.
    let table = store.keys().await?;
    if table.len() != keys.len() {
        return Err(diverged(format!("the key table holds {} keys, the log registers {}", table.len(), keys.len())));
    }
    for k in table {
        let ok = keys.get(&k.key_id).is_some_and(|l| {
            l.agency == k.agency
                && l.public_key == k.public_key
                && l.registered_at == k.registered_at
                && l.revoked_at == k.revoked_at
        });
        if !ok {
            return Err(diverged(format!("the key table's row for {} differs from the registry events", k.key_id)));
        }
    }

    // So must the agency and policy-adoption tables.
    let table = store.agencies().await?;
    if table.len() != agencies.len() {
        return Err(diverged(format!(
            "the agency table holds {} agencies, the log registers {}",
            table.len(),
            agencies.len()
        )));
    }
    for a in table {
        if agencies.get(&a.agency_id) != Some(&(a.kind, a.governs_policy, a.registered_at)) {
            return Err(diverged(format!(
                "the agency table's row for {} differs from the registry events",
                a.agency_id
            )));
        }
    }
    let table: Vec<u64> = store.policy_adoptions(None).await?.iter().map(|e| e.position).collect();
    if table != adoptions {
        return Err(diverged(format!(
            "the policy-adoption table lists positions {table:?}, the log adopts policy at {adoptions:?}"
        )));
    }

    let extends = tree.finish(beyond, &verifier_keys, against)?;
    let access_keys = verifier_keys
        .iter()
        .map(|k| {
            let name = k.split('+').next().unwrap_or_default();
            verifier_key_for(k, &accord_ledger::access_origin(name))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| diverged(format!("a log key recorded in the log: {e}")))?;
    let access = verify_access(store, &access_keys, against_access).await?;
    Ok(Report {
        events: n,
        checkpoints: tree.checkpoints.len() as u64,
        root: tree.frontier.root(),
        extends: extends.or(access.extends),
        accesses: access.size,
        access_checkpoints: access.checkpoints,
        access_root: access.root,
    })
}

struct AccessReport {
    size: u64,
    checkpoints: u64,
    root: Hash,
    extends: Option<u64>,
}

/// Recomputes the access log (see the module documentation).
async fn verify_access(
    store: &Store,
    verifier_keys: &[String],
    against: Option<&str>,
) -> Result<AccessReport, Failure> {
    use prost::Message as _;
    let against_size = match against {
        Some(note) => Some(note_size(note).map_err(|m| diverged(format!("the kept checkpoint: {m}")))?),
        None => None,
    };
    // The access log grows with every read, also while this runs: verify the log as it stood at
    // the start (a committed size, so a checkpoint of exactly that size must exist).
    let size = store.access_log_size().await?;
    let mut checkpoints = all_checkpoints(store, true).await?;
    checkpoints.retain(|s, _| *s <= size);
    let mut tree = Tree::new("access position", checkpoints, against_size);
    // The query index's own structure (SQLite's full-text index) says what its rows say; the
    // rows are checked against the records below.
    if let Err(e) = store.access_index_integrity().await {
        return Err(diverged(e.to_string()));
    }
    loop {
        let mut page = store.access_range(tree.frontier.size(), PAGE).await?;
        let full = page.len() == PAGE as usize;
        page.retain(|a| a.position < size);
        let (Some(first), Some(last)) = (page.first(), page.last()) else { break };
        let (from, to) = (first.position, last.position + 1);
        let stored: HashMap<u64, Hash> = store
            .access_hash_range(merkle::stored_hash_index(0, from), merkle::stored_hash_index(0, to))
            .await?
            .into_iter()
            .collect();
        let mut index: HashMap<u64, Vec<(String, String)>> = HashMap::new();
        for (p, kind, value) in store.access_index_rows(from, to).await? {
            index.entry(p).or_default().push((kind, value));
        }
        for a in &page {
            let p = a.position;
            let leaf = a.leaf().hash();
            if leaf != a.leaf_hash {
                return Err(diverged(format!(
                    "access position {p}: the stored leaf hash does not match the record's bytes and time"
                )));
            }
            let record = accord_proto::v1::AccessRecord::decode(a.record.as_slice())
                .map_err(|e| diverged(format!("access position {p}: the record does not decode: {e}")))?;
            let want = accord_ledger::access::entry(&record);
            if want.access_id != a.access_id
                || want.at != a.at
                || want.agency != a.agency
                || want.user != a.user
                || want.granted != a.granted
            {
                return Err(diverged(format!("access position {p}: the stored columns differ from the record")));
            }
            let mut expected: Vec<(String, String)> = want
                .subjects
                .into_iter()
                .map(|v| ("subject".to_owned(), v))
                .chain(want.items.into_iter().map(|v| ("item".to_owned(), v)))
                .collect();
            expected.sort();
            expected.dedup();
            let mut found = index.remove(&p).unwrap_or_default();
            found.sort();
            if found != expected {
                return Err(diverged(format!(
                    "access position {p}: the subject and record index rows differ from the record (an access hidden from or added to auditors' queries)"
                )));
            }
            tree.push(p, leaf, &stored)?;
        }
        if let Some(p) = index.keys().min() {
            return Err(diverged(format!("access position {p}: index rows for a record that is not there")));
        }
        if !full || tree.frontier.size() >= size {
            break;
        }
    }
    let n = tree.frontier.size();
    // Rows beyond `size` may be newer records (the log is live), so what lies beyond is not
    // judged here; the next run covers it.
    let extends = tree.finish(None, verifier_keys, against)?;
    Ok(AccessReport { size: n, checkpoints: tree.checkpoints.len() as u64, root: tree.frontier.root(), extends })
}

fn is_registry(t: &str) -> bool {
    use accord_domain::payload::types::*;
    [AGENCY_REGISTERED, SIGNING_KEY_REGISTERED, SIGNING_KEY_REVOKED, LOG_KEY_REGISTERED, POLICY_ADOPTED].contains(&t)
}

/// Reads the size of a checkpoint note without checking its signature (checked at the end, once
/// the log's keys are known).
fn note_size(note: &str) -> Result<u64, String> {
    let size = note.lines().nth(1).ok_or("no size line")?;
    size.parse::<u64>().map_err(|e| format!("size line {size:?}: {e}"))
}
