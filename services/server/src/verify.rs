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

use std::collections::{BTreeMap, HashMap};

use accord_domain::checkpoint::verify_checkpoint;
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
    /// The size of the checkpoint given with `against`, proven to be a prefix.
    pub extends: Option<u64>,
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
    let mut checkpoints: BTreeMap<u64, SignedCheckpoint> = BTreeMap::new();
    loop {
        let from = checkpoints.keys().next_back().map_or(0, |s| s + 1);
        let page = store.checkpoints(from, PAGE).await?;
        let done = page.len() < PAGE as usize;
        checkpoints.extend(page.into_iter().map(|c| (c.tree_size, c)));
        if done {
            break;
        }
    }

    let mut keys: HashMap<String, LogKey> = HashMap::new();
    let mut verifier_keys: Vec<String> = Vec::new();
    let mut adoptions: Vec<u64> = Vec::new();
    let mut agencies: HashMap<String, (accord_domain::payload::AgencyKind, bool, u64)> = HashMap::new();
    let mut streams: HashMap<String, u64> = HashMap::new();
    let mut roots: HashMap<u64, Hash> = HashMap::new();
    let against_size = match against {
        Some(note) => Some(note_size(note).map_err(|m| diverged(format!("the kept checkpoint: {m}")))?),
        None => None,
    };
    let mut frontier = Frontier::empty();
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
                if p != frontier.size() {
                    return Err(diverged(format!(
                        "position {} is missing (next stored position is {p})",
                        frontier.size()
                    )));
                }
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

                let new = frontier.push(leaf);
                for (k, h) in new.hashes.iter().enumerate() {
                    let idx = new.first + k as u64;
                    match stored.get(&idx) {
                        None => return Err(diverged(format!("position {p}: merkle hash {idx} is missing"))),
                        Some(s) if s != h => {
                            return Err(diverged(format!(
                                "position {p}: stored merkle hash {idx} differs from the recomputed tree"
                            )));
                        }
                        Some(_) => {}
                    }
                }
                let size = frontier.size();
                if checkpoints.contains_key(&size) || against_size == Some(size) {
                    roots.insert(size, frontier.root());
                }
            }
            progress(frontier.size());
        }
        if page.next >= page.log_size {
            break;
        }
        next = page.next;
    }
    let n = frontier.size();
    if let Some((idx, _)) = store.hash_range(merkle::stored_hash_count(n), i64::MAX as u64).await?.first() {
        return Err(diverged(format!("merkle hash {idx} is stored beyond the tree of size {n}")));
    }

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

    for (size, cp) in &checkpoints {
        let root =
            roots.get(size).ok_or_else(|| diverged(format!("checkpoint of size {size} is beyond the log size {n}")))?;
        if &cp.root != root {
            return Err(diverged(format!("checkpoint of size {size}: stored root differs from the recomputed tree")));
        }
        let v = verify_checkpoint(&cp.note, &verifier_keys)
            .map_err(|e| diverged(format!("checkpoint of size {size}: {e}")))?;
        if v.size != *size || v.root != *root {
            return Err(diverged(format!(
                "checkpoint of size {size}: the signed note says size {} and another root",
                v.size
            )));
        }
    }

    let extends = match against {
        Some(note) => {
            let v =
                verify_checkpoint(note, &verifier_keys).map_err(|e| diverged(format!("the kept checkpoint: {e}")))?;
            let root = roots.get(&v.size).ok_or_else(|| {
                diverged(format!(
                    "the kept checkpoint has size {}, but the log now holds only {n} events: the log was truncated",
                    v.size
                ))
            })?;
            if &v.root != root {
                return Err(diverged(format!(
                    "the log does not extend the kept checkpoint: at size {} its root differs (history was rewritten)",
                    v.size
                )));
            }
            Some(v.size)
        }
        None => None,
    };
    Ok(Report { events: n, checkpoints: checkpoints.len() as u64, root: frontier.root(), extends })
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
