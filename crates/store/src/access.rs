//! The access log (DESIGN.md: "two logs share one implementation: the event log and the access
//! log"): a second append-only Merkle log in the same database, recording who asked for what and
//! whether it was granted. Same guarantees as the event log: tables refused UPDATE and DELETE by
//! trigger, RFC 6962 hashes stored by tlog stored-hash index, a checkpoint signed per committed
//! batch, inclusion and consistency proofs (the proof code is the event log's, parametrised by
//! [`Log`](crate::backend::Log)).
//!
//! Writes go through one writer task per process, like the sequencer but with a single rule (an
//! access id is recorded once): each round takes every request waiting, opens one transaction
//! holding the access log's lock (`BEGIN IMMEDIATE` in SQLite; in PostgreSQL an advisory lock of
//! its own, so access writes do not wait on appends that record no access), reads the head, assigns gap-free
//! positions, writes rows, index rows, hashes and a signed checkpoint, commits, and only then
//! answers. A round costs few trips to the database: on SQLite, on the
//! writer's own connection, one (`BEGIN IMMEDIATE`, every insert and `COMMIT` in one call,
//! planned on the tip this process last committed and checked against the head under the lock),
//! or two when that tip is unknown or was overtaken by another process (`BEGIN IMMEDIATE` with
//! the head read, then the rest); on PostgreSQL likewise one (a call to migration 0007's
//! function, which takes the lock, checks the head and writes, in its own transaction), or five
//! when the tip is unknown or overtaken. A refused request (duplicate id) writes nothing and does not disturb the
//! others: ids are minted by the server, so a round does not look them up first; when the UNIQUE
//! constraint refuses one, the round is decided again with the lookup. If the transaction fails,
//! every request of the round gets the error and nothing is acknowledged.
//!
//! The sequencer writes the access record of an append in the append's own transaction, with
//! the same [`plan`] and insert (`write_in_*`); the two writers share the log's tip
//! ([`AccessTip`](crate::AccessTip)), held until the round commits: taken after the access log's
//! database lock, except by the SQLite writer's round at its tip, which takes it first (both
//! writers hold the process's SQLite write gate before either, so they never wait on each other). So an access round also waits for an append round that records an access
//! (on PostgreSQL the sequencer holds the event log's lock and then takes the access log's).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use tracing::Instrument;

use accord_domain::Timestamp;
use accord_domain::checkpoint::LogSigner;
use accord_domain::merkle::{self, Frontier, Hash};
use tokio::sync::{mpsc, watch};

use crate::{Db, Error, Result, SignedCheckpoint};
use crate::{backend, group};

/// The most entries the writer commits in one transaction (several requests).
const MAX_GROUP_ENTRIES: usize = 4000;

/// One access record to write. `record` is opaque to the store (the server's encoded protobuf
/// `AccessRecord`); the index fields are copies of some of its fields, for queries.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessEntry {
    /// UUIDv7 bytes, unique in the access log.
    pub access_id: [u8; 16],
    /// When the call was answered (µs), from the caller.
    pub at: Timestamp,
    /// The caller's agency (`""` when unauthenticated).
    pub agency: String,
    /// The caller's user id (`""` when unauthenticated).
    pub user: String,
    /// Whether the call was granted.
    pub granted: bool,
    /// Subjects the call concerned, e.g. `child:c-123` (stored distinct).
    pub subjects: Vec<String>,
    /// Items the call concerned, e.g. `pos:42` (stored distinct).
    pub items: Vec<String>,
    /// The encoded access record, verbatim.
    pub record: Vec<u8>,
}

/// An access record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedAccess {
    /// Position in the access log (= leaf index).
    pub position: u64,
    /// The access id.
    pub access_id: [u8; 16],
    /// When the call was answered.
    pub at: Timestamp,
    /// The caller's agency.
    pub agency: String,
    /// The caller's user id.
    pub user: String,
    /// Whether the call was granted.
    pub granted: bool,
    /// The encoded access record, verbatim.
    pub record: Vec<u8>,
    /// Stored leaf hash.
    pub leaf_hash: Hash,
}

impl RecordedAccess {
    /// The leaf this record's stored fields commit to (recomputed from the record bytes).
    pub fn leaf(&self) -> merkle::AccessLeaf {
        merkle::AccessLeaf { position: self.position, at: self.at, record_sha256: merkle::sha256(&self.record) }
    }
}

/// Which access records [`Store::accesses`](crate::Store::accesses) returns. Every condition set
/// must hold.
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    /// The caller's agency.
    pub agency: Option<String>,
    /// The caller's user id (combine with `agency` for one precise user).
    pub user: Option<String>,
    /// A subject in the subject index (exact).
    pub subject: Option<String>,
    /// An item in the item index (exact).
    pub item: Option<String>,
    /// Another item the record must also have (exact): the service scopes an auditor's queries
    /// with it (`party:<agency>`), whatever `item` the auditor asks for.
    pub party: Option<String>,
    /// Only refused calls.
    pub denied_only: bool,
    /// `at >= from`.
    pub from: Option<Timestamp>,
    /// `at < to`.
    pub to: Option<Timestamp>,
    /// Keyset paging: `position > after_position`.
    pub after_position: Option<u64>,
    /// At most this many (clamped to 1..=1000; 0 means 100).
    pub limit: u32,
}

impl AccessFilter {
    pub(crate) fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => 100,
            n => n.min(1000),
        }
    }
}

/// A request to the access-log writer.
pub(crate) type Request = group::Request<AccessEntry, Vec<u64>>;

/// What a round writes and answers.
pub(crate) struct Plan {
    pub(crate) outcomes: Vec<Result<Vec<u64>>>,
    pub(crate) rows: Vec<RecordedAccess>,
    /// (position, its index tokens: distinct and sorted) for each record that has any.
    pub(crate) keys: Vec<(u64, Vec<String>)>,
    pub(crate) hashes: Vec<(u64, Hash)>,
    pub(crate) frontier: Frontier,
}

/// The index tokens of an entry: the upper-case hex of `s:<subject>` and `i:<item>`, distinct
/// and sorted (as migration 0005 builds them from the tables it replaced). Hex keeps any
/// character of a key out of the full-text tokenizer's way and makes a token match exactly.
pub(crate) fn tokens(e: &AccessEntry) -> Vec<String> {
    let mut t: BTreeSet<String> = BTreeSet::new();
    t.extend(e.subjects.iter().map(|s| token("s", s)));
    t.extend(e.items.iter().map(|i| token("i", i)));
    t.into_iter().collect()
}

/// The token of one key of `kind` (`s` for a subject, `i` for an item).
pub(crate) fn token(kind: &str, key: &str) -> String {
    // On the read path (every key of every access record): a table, not `fmt` per byte (which
    // was ~3 % of a recorded read's CPU in a profile).
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(2 * (kind.len() + 1 + key.len()));
    for b in kind.bytes().chain([b':']).chain(key.bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A token back as ("subject" or "item", key); ("malformed", token) when it is not one.
pub(crate) fn untoken(t: &str) -> (String, String) {
    let bytes: Option<Vec<u8>> = t
        .len()
        .is_multiple_of(2)
        .then(|| (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).ok()).collect())
        .flatten();
    match bytes.and_then(|b| String::from_utf8(b).ok()) {
        Some(k) if k.starts_with("s:") => ("subject".to_owned(), k[2..].to_owned()),
        Some(k) if k.starts_with("i:") => ("item".to_owned(), k[2..].to_owned()),
        _ => ("malformed".to_owned(), t.to_owned()),
    }
}

/// Decides a round. Pure: `existing` holds the round's ids already recorded.
pub(crate) fn plan(frontier: Frontier, existing: &HashSet<[u8; 16]>, requests: &[&[AccessEntry]]) -> Plan {
    let mut p = Plan {
        outcomes: Vec::with_capacity(requests.len()),
        rows: Vec::new(),
        keys: Vec::new(),
        hashes: Vec::new(),
        frontier,
    };
    let mut planned: HashSet<[u8; 16]> = HashSet::new();
    for entries in requests {
        let mut seen = HashSet::new();
        if let Some(e) = entries.iter().find(|e| !seen.insert(e.access_id)) {
            p.outcomes
                .push(Err(Error::Invalid(format!("access id {} appears twice in the request", hex(&e.access_id)))));
            continue;
        }
        if let Some(e) = entries.iter().find(|e| existing.contains(&e.access_id) || planned.contains(&e.access_id)) {
            p.outcomes.push(Err(Error::Duplicate(format!("access id {} is already recorded", hex(&e.access_id)))));
            continue;
        }
        let mut positions = Vec::with_capacity(entries.len());
        for e in entries.iter() {
            let position = p.frontier.size();
            let mut r = RecordedAccess {
                position,
                access_id: e.access_id,
                at: e.at,
                agency: e.agency.clone(),
                user: e.user.clone(),
                granted: e.granted,
                record: e.record.clone(),
                leaf_hash: Hash([0; 32]),
            };
            r.leaf_hash = r.leaf().hash();
            let stored = p.frontier.push(r.leaf_hash);
            p.hashes.extend(stored.hashes.iter().enumerate().map(|(k, h)| (stored.first + k as u64, *h)));
            let tokens = tokens(e);
            if !tokens.is_empty() {
                p.keys.push((position, tokens));
            }
            planned.insert(e.access_id);
            positions.push(position);
            p.rows.push(r);
        }
        p.outcomes.push(Ok(positions));
    }
    p
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A round on PostgreSQL: a transaction under the access log's advisory lock, the head read,
/// then rows, index rows, hashes and checkpoint in one statement
/// ([`backend::postgres::insert_access`]) and `COMMIT`: five round trips. As on SQLite, the
/// duplicate-id query runs only when `check`, after the UNIQUE constraint refused a round.
async fn round_postgres(
    pool: &sqlx::PgPool,
    tip: &crate::AccessTip,
    signer: &LogSigner,
    requests: &[&[AccessEntry]],
    check: bool,
) -> Result<Plan> {
    let mut tx = backend::begin_postgres_access(pool).await?;
    // The database's lock first, then the tip (as the sequencer): the tip is only ever waited
    // for by a writer that already holds the access log's lock, so never long.
    let mut cached = tip.lock().await;
    let frontier = tip_postgres(&mut tx, &mut cached).await?;
    let existing = if check {
        recorded_ids(backend::postgres::existing_access_ids(&mut tx, &ids(requests)).await?)?
    } else {
        HashSet::new()
    };
    let plan = plan(frontier.clone(), &existing, requests);
    if plan.rows.is_empty() {
        tx.rollback().await.map_err(crate::error::db("ending a read-only access round"))?;
        *cached = Some(frontier);
        return Ok(plan);
    }
    let cp = checkpoint(signer, &plan.frontier)?;
    backend::postgres::insert_access(&mut tx, &plan, &cp).await?;
    tx.commit().await.map_err(crate::error::db("committing access records"))?;
    *cached = Some(plan.frontier.clone());
    Ok(plan)
}

/// A round on PostgreSQL in one round trip, planned on the tip this process last committed
/// (`None` when it has none, or when the head has moved since: another process, or this
/// process's sequencer, wrote; the round is then [`round_postgres`]'s). The call
/// ([`backend::postgres::write_access_at`]) takes the access log's lock, checks the head
/// against the planned tip and writes, in a transaction of its own that commits when it
/// returns. The shared tip is only read and then updated, never held across the call: the
/// sequencer holds it while it waits for the access log's lock, so holding it here while
/// waiting for that lock could deadlock. That is safe because the tip is only ever used
/// after checking its size against the head under the lock.
///
/// When the head has moved because this process's sequencer recorded an append's access in
/// between (it stores the tip it committed), the round is planned once more on that tip.
async fn round_postgres_at_tip(
    pool: &sqlx::PgPool,
    tip: &crate::AccessTip,
    signer: &LogSigner,
    requests: &[&[AccessEntry]],
) -> Result<Option<Plan>> {
    let mut tried: Option<u64> = None;
    let plan = loop {
        let Some(frontier) = tip.lock().await.clone() else { return Ok(None) };
        let expected = frontier.size();
        if tried.is_some_and(|t| t >= expected) {
            // Moved by another process: only the head can tell.
            return Ok(None);
        }
        let plan = plan(frontier, &HashSet::new(), requests);
        if plan.rows.is_empty() {
            return Ok(Some(plan));
        }
        let cp = checkpoint(signer, &plan.frontier)?;
        if backend::postgres::write_access_at(pool, expected, &plan, &cp).await? {
            break plan;
        }
        if tried.is_some() {
            return Ok(None);
        }
        tried = Some(expected);
    };
    let mut cached = tip.lock().await;
    // A writer that committed after this round may have stored a longer tip already.
    if cached.as_ref().is_none_or(|c| c.size() < plan.frontier.size()) {
        *cached = Some(plan.frontier.clone());
    }
    Ok(Some(plan))
}

/// A PostgreSQL round: at the tip in one trip when it can, else (or if the head has moved)
/// from the head in five. A failure of the one-trip call rolled all of it back; it is decided
/// again from the head unless the database is unreachable (the outcome is then unknown and the
/// callers are told so) or an id was refused (the caller decides it again with the lookup).
async fn postgres_round(
    pool: &sqlx::PgPool,
    tip: &crate::AccessTip,
    signer: &LogSigner,
    requests: &[&[AccessEntry]],
    check: bool,
) -> Result<Plan> {
    if !check {
        match round_postgres_at_tip(pool, tip, signer, requests).await {
            Ok(Some(plan)) => return Ok(plan),
            Ok(None) => {}
            Err(e @ (Error::Unavailable(_) | Error::Duplicate(_))) => return Err(e),
            Err(e) => tracing::debug!(error = %e, "access round at the cached tip failed; reading the head"),
        }
    }
    round_postgres(pool, tip, signer, requests, check).await
}

/// The outcome of a round decided with the duplicate-id query. A UNIQUE constraint refusing it
/// then is not a recorded id (the query found none) but a position, hash or checkpoint already
/// stored beyond the head: the log contradicts itself. It must not reach callers as
/// [`Error::Duplicate`], which says "already recorded".
fn recheck_outcome(outcome: Result<Plan>) -> Result<Plan> {
    match outcome {
        Err(Error::Duplicate(m)) => Err(Error::Corrupt(format!("the access log refused new rows at its head: {m}"))),
        other => other,
    }
}

/// Every access id of a round's requests.
fn ids(requests: &[&[AccessEntry]]) -> Vec<Vec<u8>> {
    requests.iter().flat_map(|r| r.iter().map(|e| e.access_id.to_vec())).collect()
}

/// The access ids the duplicate-id query found.
fn recorded_ids(found: Vec<Vec<u8>>) -> Result<HashSet<[u8; 16]>> {
    found
        .into_iter()
        .map(|id| id.try_into().map_err(|_| Error::Corrupt("an access_id is not 16 bytes".into())))
        .collect()
}

/// The signed checkpoint of the access log's tree `frontier`.
fn checkpoint(signer: &LogSigner, frontier: &Frontier) -> Result<SignedCheckpoint> {
    let (size, root) = (frontier.size(), frontier.root());
    Ok(SignedCheckpoint { tree_size: size, root, note: signer.sign(size, root)?, signed_at: Timestamp::now() })
}

/// The access log's committed tip, read in a transaction that holds its lock: `cached` when it
/// is still the committed size (taken: a failed round leaves `None`), else from the database.
macro_rules! tip {
    ($name:ident, $at:ident, $q:ident) => {
        pub(crate) async fn $name(conn: &mut backend::$q::Conn, cached: &mut Option<Frontier>) -> Result<Frontier> {
            let size = backend::$q::access_size(&mut *conn).await?;
            $at(conn, cached, size).await
        }

        /// The tip when the committed size, read under the lock, is `size` (the SQLite writer
        /// reads it in the same call as its `BEGIN`; unused on PostgreSQL).
        #[allow(dead_code)]
        async fn $at(conn: &mut backend::$q::Conn, cached: &mut Option<Frontier>, size: u64) -> Result<Frontier> {
            use backend::$q as q;
            Ok(match cached.take() {
                Some(f) if f.size() == size => f,
                // First round, or another process wrote since our last round.
                _ => {
                    let idx = merkle::tree_hash_indexes(size);
                    let h = q::log_hashes(conn, backend::Log::Access, &idx).await?;
                    Frontier::from_hashes(size, h)?
                }
            })
        }
    };
}

tip!(tip_sqlite, tip_at_sqlite, sqlite);
tip!(tip_postgres, tip_at_postgres, postgres);

/// Writes `entries` (one request) into the access log within the caller's transaction, which
/// must hold the access log's lock; `cached` is the shared tip (held by the caller). Returns the
/// new tip: the caller stores it in `cached` once its transaction commits. The entries' ids are
/// new (UUIDv7 made for them), so the database's UNIQUE constraint is their only duplicate check:
/// a clash fails the caller's whole transaction.
macro_rules! write_in {
    ($name:ident, $q:ident, $tip:ident) => {
        pub(crate) async fn $name(
            conn: &mut backend::$q::Conn,
            cached: &mut Option<Frontier>,
            signer: &LogSigner,
            entries: &[AccessEntry],
        ) -> Result<Frontier> {
            let frontier = $tip(&mut *conn, cached).await?;
            let plan = plan(frontier, &HashSet::new(), &[entries]);
            if let Some(Err(e)) = plan.outcomes.into_iter().find(Result::is_err) {
                return Err(e);
            }
            let plan = Plan { outcomes: Vec::new(), ..plan };
            let cp = checkpoint(signer, &plan.frontier)?;
            backend::$q::insert_access(conn, &plan, &cp).await?;
            Ok(plan.frontier)
        }
    };
}

write_in!(write_in_sqlite, sqlite, tip_sqlite);
write_in!(write_in_postgres, postgres, tip_postgres);

/// A round on SQLite from the head read under the lock (when the writer knows no tip, or the
/// round at its tip, [`round_sqlite_at_tip`], was refused), on the writer's own connection, in
/// two trips to SQLite's worker thread (one more for the tip when another process wrote since,
/// one more for the duplicate-id query): `BEGIN IMMEDIATE` with the head read, then rows, index
/// rows, hashes, checkpoint and `COMMIT` in one call
/// ([`backend::sqlite::write_access`]). The access ids are minted by the server, so the
/// duplicate-id query runs only when `check` (after the UNIQUE constraint refused a round): the
/// round is then decided again with it, so each request still gets its own refusal.
async fn round_sqlite(
    conn: &mut sqlx::SqliteConnection,
    tip: &crate::AccessTip,
    signer: &LogSigner,
    requests: &[&[AccessEntry]],
    check: bool,
) -> Result<Plan> {
    let last: Option<i64> =
        sqlx::query_scalar("BEGIN IMMEDIATE; SELECT position FROM access_log ORDER BY position DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(crate::error::db("starting an access round"))?;
    let size = last.map_or(Ok(0), |p| backend::to_u64(p, "position").map(|p| p + 1))?;
    // The database's lock first, then the tip (as the sequencer).
    let mut cached = tip.lock().await;
    let frontier = tip_at_sqlite(&mut *conn, &mut cached, size).await?;
    let existing = if check {
        recorded_ids(backend::sqlite::existing_access_ids(&mut *conn, &ids(requests)).await?)?
    } else {
        HashSet::new()
    };
    let plan = plan(frontier.clone(), &existing, requests);
    if plan.rows.is_empty() {
        sqlx::query("ROLLBACK")
            .execute(&mut *conn)
            .await
            .map_err(crate::error::db("ending a read-only access round"))?;
        *cached = Some(frontier);
        return Ok(plan);
    }
    let cp = checkpoint(signer, &plan.frontier)?;
    backend::sqlite::write_access(&mut *conn, &plan, &cp, backend::sqlite::AccessTxn::Commit).await?;
    *cached = Some(plan.frontier.clone());
    Ok(plan)
}

/// A round on SQLite in one trip, planned on the tip this process last committed (`None` when
/// it has none: the round is then [`round_sqlite`]'s). Under the process's write gate no other
/// writer of this process is inside a transaction, so that tip is the log's head unless another
/// process wrote since: the write checks it under the lock and refuses the round otherwise
/// ([`backend::sqlite::write_access`] with `Own`). This saves [`round_sqlite`]'s first trip,
/// ~0.2 ms of a ~0.9 ms round with 8 clients reading back to back (BENCHMARKS.md, sixth session).
/// The tip is taken before the database's lock here, the other way round from the sequencer:
/// both take the process's write gate first, so neither ever waits for the other's.
async fn round_sqlite_at_tip(
    conn: &mut sqlx::SqliteConnection,
    tip: &crate::AccessTip,
    signer: &LogSigner,
    requests: &[&[AccessEntry]],
) -> Result<Option<Plan>> {
    let mut cached = tip.lock().await;
    let Some(frontier) = cached.clone() else { return Ok(None) };
    let plan = plan(frontier, &HashSet::new(), requests);
    if plan.rows.is_empty() {
        return Ok(Some(plan));
    }
    let cp = checkpoint(signer, &plan.frontier)?;
    // Until it commits, the round's tip is unknown: a failure leaves none.
    cached.take();
    backend::sqlite::write_access(&mut *conn, &plan, &cp, backend::sqlite::AccessTxn::Own).await?;
    *cached = Some(plan.frontier.clone());
    Ok(Some(plan))
}

/// Runs a SQLite round on `own`, the writer's connection, opening it (with the pool's options)
/// when there is none: at the writer's tip in one trip when it can, else (or if that is refused)
/// from the head. After a failed round the connection is closed, which rolls back whatever the
/// round left open; the next round opens another.
async fn sqlite_round(
    own: &mut Option<sqlx::SqliteConnection>,
    pool: &sqlx::SqlitePool,
    tip: &crate::AccessTip,
    signer: &LogSigner,
    requests: &[&[AccessEntry]],
    check: bool,
) -> Result<Plan> {
    if !check {
        match round_sqlite_at_tip(connection(own, pool).await?, tip, signer, requests).await {
            Ok(Some(plan)) => return Ok(plan),
            Ok(None) => {}
            // The database went away, maybe with the `COMMIT` in flight: the outcome is
            // unknown, and the callers must be told so (not "already recorded" by a retry).
            Err(e @ Error::Unavailable(_)) => {
                close(own).await;
                return Err(e);
            }
            Err(e) => {
                // Refused (another process wrote since) or failed before `COMMIT`: rolled back,
                // and decided again from the database's head.
                tracing::debug!(error = %e, "access round at the cached tip refused; reading the head");
                rollback(own).await;
            }
        }
    }
    let result = round_sqlite(connection(own, pool).await?, tip, signer, requests, check).await;
    if result.is_err() {
        close(own).await;
    }
    result
}

/// The writer's connection, opened (with the pool's options) when there is none.
async fn connection<'c>(
    own: &'c mut Option<sqlx::SqliteConnection>,
    pool: &sqlx::SqlitePool,
) -> Result<&'c mut sqlx::SqliteConnection> {
    use sqlx::Connection as _;
    Ok(match own {
        Some(c) => c,
        None => own.insert(
            sqlx::SqliteConnection::connect_with(&pool.connect_options())
                .await
                .map_err(crate::error::db("opening the access log's connection"))?,
        ),
    })
}

/// Rolls back what a failed round left open on the writer's connection (keeping it), or closes
/// the connection when that fails (nothing was open, or the connection is broken).
async fn rollback(own: &mut Option<sqlx::SqliteConnection>) {
    if let Some(c) = own.as_mut()
        && sqlx::query("ROLLBACK").execute(&mut *c).await.is_ok()
    {
        return;
    }
    close(own).await;
}

/// Closes the writer's connection, which rolls back whatever a failed round left open.
async fn close(own: &mut Option<sqlx::SqliteConnection>) {
    use sqlx::Connection as _;
    if let Some(c) = own.take() {
        let _ = c.close().await;
    }
}

/// Decides a round (`$round`, with `$check` bound) without the duplicate-id query and, if the
/// UNIQUE constraint refused it, again with it, for both backends.
macro_rules! with_recheck {
    (|$check:ident| $round:expr) => {{
        let $check = false;
        match $round {
            Err(Error::Duplicate(_)) => {
                let $check = true;
                recheck_outcome($round)
            }
            other => other,
        }
    }};
}

/// The writer task: runs until every sender is dropped, answering what was queued.
pub(crate) async fn run(
    db: Db,
    signer: Arc<LogSigner>,
    mut rx: mpsc::Receiver<Request>,
    head: Arc<watch::Sender<u64>>,
    writes: crate::WriteGate,
    tip: crate::AccessTip,
) {
    let mut own = None;
    while let Some(round) = group::Group::next(&mut rx, MAX_GROUP_ENTRIES).await {
        let result = {
            let requests = round.items();
            let span = tracing::debug_span!("access_round", requests = requests.len());
            let _gate = writes.enter(&db).await;
            async {
                match &db {
                    Db::Sqlite(p) => {
                        with_recheck!(|check| sqlite_round(&mut own, p, &tip, &signer, &requests, check).await)
                    }
                    Db::Postgres(p) => with_recheck!(|check| postgres_round(p, &tip, &signer, &requests, check).await),
                }
            }
            .instrument(span)
            .await
        };
        let committed = result.as_ref().map(|plan| plan.rows.len()).unwrap_or(0);
        let outcomes = result.map(|plan| {
            if !plan.rows.is_empty() {
                crate::advance(&head, plan.frontier.size());
            }
            plan.outcomes
        });
        round.answer("access", outcomes, committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, subjects: &[&str]) -> AccessEntry {
        AccessEntry {
            access_id: [id; 16],
            at: Timestamp(10),
            agency: "met-police".into(),
            user: "u1".into(),
            granted: true,
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            items: vec!["pos:1".into(), "pos:1".into()],
            record: vec![id],
        }
    }

    #[test]
    fn a_token_is_the_upper_case_hex_of_its_key_as_sqlite_hex_makes_it() {
        // Migration 0005 built the first tokens with SQLite's `hex('s:' || subject)`.
        assert_eq!(token("s", "child:é"), "733A6368696C643AC3A9");
        assert_eq!(token("i", ""), "693A");
        assert_eq!(untoken(&token("s", "child:é \"x\"")), ("subject".to_owned(), "child:é \"x\"".to_owned()));
    }

    #[test]
    fn a_refused_request_leaves_no_trace_and_indexes_are_distinct() {
        let ok1 = vec![entry(1, &["child:a", "child:b", "child:a"]), entry(2, &[])];
        let dup_recorded = vec![entry(3, &[]), entry(9, &[])];
        let twice = vec![entry(4, &[]), entry(4, &[])];
        let dup_round = vec![entry(5, &[]), entry(2, &[])];
        let ok2 = vec![entry(6, &["child:c"])];
        let existing = HashSet::from([[9; 16]]);
        let p = plan(Frontier::empty(), &existing, &[&ok1, &dup_recorded, &twice, &dup_round, &ok2]);
        assert_eq!(p.outcomes[0].as_ref().unwrap(), &vec![0, 1]);
        assert!(matches!(&p.outcomes[1], Err(Error::Duplicate(_))));
        assert!(matches!(&p.outcomes[2], Err(Error::Invalid(_))));
        assert!(matches!(&p.outcomes[3], Err(Error::Duplicate(_))));
        assert_eq!(p.outcomes[4].as_ref().unwrap(), &vec![2]);
        assert_eq!(p.rows.iter().map(|r| r.position).collect::<Vec<_>>(), vec![0, 1, 2]);
        let keys: Vec<(u64, Vec<(String, String)>)> =
            p.keys.iter().map(|(pos, t)| (*pos, t.iter().map(|t| untoken(t)).collect())).collect();
        let subjects: Vec<(u64, String)> = keys
            .iter()
            .flat_map(|(pos, ks)| ks.iter().filter(|(k, _)| k == "subject").map(move |(_, v)| (*pos, v.clone())))
            .collect();
        assert_eq!(subjects, vec![(0, "child:a".to_owned()), (0, "child:b".to_owned()), (2, "child:c".to_owned())]);
        let items = keys.iter().flat_map(|(_, ks)| ks.iter().filter(|(k, _)| k == "item")).count();
        assert_eq!(items, 3, "one distinct item per row");
        let mut f = Frontier::empty();
        for r in &p.rows {
            assert_eq!(r.leaf_hash, r.leaf().hash());
            f.push(r.leaf_hash);
        }
        assert_eq!(p.frontier.root(), f.root());
    }
}
