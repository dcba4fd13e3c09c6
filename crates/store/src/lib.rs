//! The append-only, tamper-evident event log (DESIGN.md §3) on SQLite (the embedded default) or
//! PostgreSQL, through sqlx.
//!
//! Appends go through one **sequencer** task per process that batches concurrent requests (group
//! commit): one transaction per batch takes the write lock (`BEGIN IMMEDIATE` in SQLite, a
//! transaction-scoped advisory lock in PostgreSQL, so several server processes stay correct),
//! reads the head, checks every rule only the store can check (idempotency, expected versions,
//! key revocation at recording time), assigns gap-free positions, writes events, Merkle hashes and
//! a signed checkpoint, commits, and only then acknowledges. A rejected request writes nothing and
//! does not disturb the other requests of its batch.
//!
//! The store exposes no update or delete, and the databases refuse them by trigger. It does not
//! decode event bodies, check signatures or apply policy: the Ledger service does that before it
//! calls [`Store::append`]. Nothing outside this crate issues SQL.
//!
//! Beside it, the **access log** (module `access`, [`Store::record_access`]) is a second
//! append-only Merkle log with the same guarantees, written by its own group-commit writer
//! (started by [`Store::start_access_log`]) and proven by the same code, parametrised by log.
//! An append's own access record is written by the sequencer in the append's transaction
//! ([`Store::append_recorded`]); the two writers share the access log's tip.

mod access;
mod backend;
mod error;
mod gin;
mod group;
mod metrics;
mod sequencer;
mod wal;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accord_domain::checkpoint::LogSigner;
use accord_domain::merkle::{self, Hash};
use accord_domain::payload::RegistryEffect;
use accord_domain::{AgencyId, EventId, EventType, ExpectedVersion, KeyId, StreamId, Timestamp};
use ed25519_dalek::VerifyingKey;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, watch};

pub use access::{AccessEntry, AccessFilter, RecordedAccess};
use backend::Log;
pub use error::{Error, Result};

/// Migrations of the SQLite backend.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// Migrations of the PostgreSQL backend.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The most events one append request may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// The most events the sequencer commits in one transaction (several requests).
const MAX_GROUP_EVENTS: usize = 4000;

/// An event ready to be recorded: decoded, validated, signature verified, policy allowed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Idempotency key.
    pub event_id: EventId,
    /// Aggregate.
    pub stream: StreamId,
    /// Concurrency condition.
    pub expected: ExpectedVersion,
    /// Payload type.
    pub event_type: EventType,
    /// The author's agency (checked against the key's agency again at recording time).
    pub author_agency: AgencyId,
    /// The signing key.
    pub key_id: KeyId,
    /// The signed body, verbatim.
    pub body: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// What recording this event does to the registry (keys, agencies, policy).
    pub effect: RegistryEffect,
    /// The version (adoption position) of the sharing policy the event was allowed under, or
    /// `None` for the server's own records. The sequencer refuses the event if another policy
    /// has been adopted since ([`Error::PolicyChanged`]), so no event is recorded under a policy
    /// that did not allow it.
    pub policy_version: Option<u64>,
}

/// Proof of recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The event id.
    pub event_id: EventId,
    /// Global position (= leaf index).
    pub position: u64,
    /// Version within its stream.
    pub stream_version: u64,
    /// When recorded.
    pub recorded_at: Timestamp,
    /// Merkle leaf hash.
    pub leaf_hash: Hash,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Global position.
    pub position: u64,
    /// Event id.
    pub event_id: EventId,
    /// Stream.
    pub stream: String,
    /// Version within the stream.
    pub stream_version: u64,
    /// Payload type.
    pub event_type: String,
    /// Author agency.
    pub author_agency: String,
    /// Signing key id.
    pub key_id: String,
    /// Recording time.
    pub recorded_at: Timestamp,
    /// Signed body bytes.
    pub body: Vec<u8>,
    /// Signature.
    pub signature: Vec<u8>,
    /// Stored leaf hash.
    pub leaf_hash: Hash,
}

impl RecordedEvent {
    /// The leaf this event's stored fields commit to (recomputed, not read).
    pub fn leaf(&self) -> merkle::Leaf<'_> {
        merkle::Leaf {
            position: self.position,
            recorded_at: self.recorded_at,
            stream: &self.stream,
            stream_version: self.stream_version,
            key_id: &self.key_id,
            signature: &self.signature,
            body_sha256: merkle::sha256(&self.body),
        }
    }

    /// The receipt of this event.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            event_id: self.event_id,
            position: self.position,
            stream_version: self.stream_version,
            recorded_at: self.recorded_at,
            leaf_hash: self.leaf_hash,
        }
    }
}

/// A checkpoint the server signed.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub tree_size: u64,
    /// Tree head.
    pub root: Hash,
    /// The C2SP signed note.
    pub note: String,
    /// When signed.
    pub signed_at: Timestamp,
}

/// A registered signing key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Key id.
    pub key_id: String,
    /// Owning agency.
    pub agency: String,
    /// Public key.
    pub public_key: VerifyingKey,
    /// Position of the registering event.
    pub registered_at: u64,
    /// Position of the revoking event, if revoked.
    pub revoked_at: Option<u64>,
}

/// A registered agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyRecord {
    /// The agency id.
    pub agency_id: String,
    /// Its kind.
    pub kind: accord_domain::payload::AgencyKind,
    /// Whether its admins may adopt sharing policy.
    pub governs_policy: bool,
    /// Position of the registering event.
    pub registered_at: u64,
}

/// One item of one read model, held for one agency (see `accord-views`). Read models are derived
/// data: unlike the log, their rows are rewritten as the log grows and dropped on a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRow {
    /// The read model.
    pub model: String,
    /// The agency that holds the item.
    pub agency: String,
    /// The item's id within the model.
    pub item_id: String,
    /// The log position of the item's latest change.
    pub position: u64,
    /// The item, serialised by the projection.
    pub doc: Vec<u8>,
}

/// What one projection commit writes: the rows the projection created since its last commit and
/// the rows it changed. Created rows are plain INSERTs (half the cost of an upsert on
/// PostgreSQL): one already stored means the projection's state and the table disagree, and the
/// commit fails instead of overwriting it. Changed rows are upserted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewChanges {
    /// Rows no earlier commit wrote.
    pub created: Vec<ViewRow>,
    /// Rows an earlier commit wrote, with their new position and document.
    pub changed: Vec<ViewRow>,
}

/// What a read may return.
#[derive(Debug, Clone)]
pub enum Visibility {
    /// Everything (server-side tools: verify, projections).
    All,
    /// Events authored by this agency, and the registry's own records.
    AuthoredBy(AgencyId),
}

/// A page of events.
#[derive(Debug, Clone)]
pub struct Page {
    /// The events.
    pub events: Vec<RecordedEvent>,
    /// The log size the read saw.
    pub log_size: u64,
    /// Where to continue (position for `read_all`, stream version for `read_stream`).
    pub next: u64,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections in the pool. On SQLite the access-log writer and the WAL checkpoint each
    /// keep one more of their own.
    pub max_connections: u32,
    /// How often a subscriber re-checks the database for events written by other processes.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_connections: 8, poll_interval: Duration::from_millis(250) }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$q` bound to the backend module matching `$db`, and `$pool` to its pool.
macro_rules! dispatch {
    ($db:expr, |$q:ident, $pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => {
                use $crate::backend::sqlite as $q;
                $body
            }
            $crate::Db::Postgres($pool) => {
                use $crate::backend::postgres as $q;
                $body
            }
        }
    };
}

/// Builds the access record of an accepted append from its receipts, inside the sequencer's
/// transaction (see [`Store::append_recorded`]). Called once per accepted request, with the
/// log's locks held: keep it cheap (decode and gather before appending, not in here).
pub type AppendRecord = Arc<dyn Fn(&[Receipt]) -> AccessEntry + Send + Sync>;

/// The access log's tip as this process last committed it, shared by its two writers (the
/// access-log writer and the sequencer, which records an append's access record in the append's
/// own transaction). Held for the whole of a round that writes the access log; `None` after a
/// failed round or before the first (it is then read from the database).
pub(crate) type AccessTip = Arc<tokio::sync::Mutex<Option<merkle::Frontier>>>;

struct Inner {
    db: Db,
    sequencer: group::Slot<NewEvent, Vec<Receipt>, Option<AppendRecord>>,
    sequencer_done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    head: watch::Receiver<u64>,
    access: group::Slot<AccessEntry, Vec<u64>>,
    access_done: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether the access-log writer was ever started (it is started at most once).
    access_started: std::sync::atomic::AtomicBool,
    access_head: Arc<watch::Sender<u64>>,
    /// The access log's signer, set when its writer is started; the sequencer signs the access
    /// log's checkpoints with it too.
    access_signer: Arc<std::sync::OnceLock<Arc<LogSigner>>>,
    access_tip: AccessTip,
    keys: std::sync::RwLock<HashMap<String, KeyRecord>>,
    agencies: std::sync::RwLock<HashMap<String, AgencyRecord>>,
    options: Options,
    /// Taken around every SQLite write transaction of this process (see [`WriteGate`]).
    writes: WriteGate,
    /// SQLite's background WAL checkpoint (`None` on PostgreSQL, or once stopped by
    /// [`Store::shutdown`]); aborted with the store.
    checkpointer: std::sync::Mutex<Option<wal::Checkpointer>>,
    /// PostgreSQL's background merge of the access log's key index (`None` on SQLite); aborted
    /// with the store.
    _gin_cleaner: Option<gin::Cleaner>,
}

/// SQLite has one write lock per database file. When this process's writers (the sequencer, the
/// access-log writer, the projection) met on it, the loser waited in SQLite's busy handler,
/// which sleeps 1, 2, 5, 10, … up to 100 ms between tries rather than waking when the lock is
/// free, so a writer could wait milliseconds behind another's sub-millisecond commit. The gate
/// queues them in process instead (FIFO, woken on release); the 2026-12-02 benchmarks could not
/// separate its effect from noise (BENCHMARKS.md).
/// `busy_timeout` still covers other processes on the same file. Not used on PostgreSQL, where
/// the event and access logs have separate locks and the read models none.
#[derive(Clone, Default)]
pub(crate) struct WriteGate(Arc<tokio::sync::Mutex<()>>);

impl WriteGate {
    /// Holds the gate for one write transaction when `db` is SQLite; `None` on PostgreSQL.
    pub(crate) async fn enter(&self, db: &Db) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match db {
            Db::Sqlite(_) => Some(self.0.lock().await),
            Db::Postgres(_) => None,
        }
    }

    /// Holds the gate (SQLite only: the background WAL checkpoint's short second pass).
    pub(crate) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// Advances a log's announced size to `size` unless it is already there or beyond (two writers
/// announce the access log's size, each after its own commit, so a later send may be older).
pub(crate) fn advance(head: &watch::Sender<u64>, size: u64) {
    head.send_if_modified(|v| {
        let newer = size > *v;
        if newer {
            *v = size;
        }
        newer
    });
}

const APPENDS_CLOSED: &str = "the log is not accepting appends (read-only or shutting down)";
const ACCESS_CLOSED: &str = "the access log is not accepting records (not started or shutting down)";

fn check_batch(events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::Invalid("a batch needs at least one event".into()));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(Error::Invalid(format!(
            "a batch may hold at most {MAX_BATCH_EVENTS} events, found {}",
            events.len()
        )));
    }
    Ok(())
}

/// The event log. Cheap to clone; all clones share one sequencer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Which backend a database URL names.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// Opens the log at `url` (`postgres://…`, `sqlite://…`, or a file path for SQLite), runs the
    /// migrations, and, given a log signer, starts the sequencer so the store accepts appends.
    #[tracing::instrument(name = "store.open", skip_all)]
    pub async fn open(url: &str, signer: Option<LogSigner>, options: Options) -> Result<Store> {
        let db = if is_postgres(url) {
            // Every write takes its log's advisory lock and then reads the head: only READ
            // COMMITTED gives the statements after the lock a snapshot that sees the previous
            // holder's commit, so it is pinned whatever the database's or role's default.
            let connect = url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(error::db("reading the PostgreSQL URL"))?
                .options([("default_transaction_isolation", "read\\ committed")]);
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect)
                .await
                .map_err(error::db("connecting to PostgreSQL"))?;
            POSTGRES_MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| Error::Database { context: "migrating PostgreSQL", source: Arc::new(e) })?;
            Db::Postgres(pool)
        } else {
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .map_err(error::db("parsing the SQLite URL"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: in WAL mode every commit is fsynced, so an acknowledged append survives
                // power loss (NORMAL would only survive an application crash).
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                // Checkpoints run in the background (`wal`), not inside a commit.
                .pragma("wal_autocheckpoint", wal::FOREGROUND_PAGES)
                .pragma("journal_size_limit", wal::JOURNAL_SIZE_LIMIT);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .connect_with(opts)
                .await
                .map_err(error::db("opening SQLite"))?;
            SQLITE_MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| Error::Database { context: "migrating SQLite", source: Arc::new(e) })?;
            Db::Sqlite(pool)
        };
        let size = dispatch!(&db, |q, pool| q::head(pool).await)?.size;
        let access_size = dispatch!(&db, |q, pool| q::access_size(pool).await)?;
        let (head_tx, head_rx) = watch::channel(size);
        let writes = WriteGate::default();
        let checkpointer = match &db {
            Db::Sqlite(pool) => Some(wal::start(pool.clone(), writes.clone())),
            Db::Postgres(_) => None,
        };
        let access_head = Arc::new(watch::Sender::new(access_size));
        let gin_cleaner = match &db {
            Db::Postgres(pool) => Some(gin::start(pool.clone(), access_head.subscribe())),
            Db::Sqlite(_) => None,
        };
        let access_signer: Arc<std::sync::OnceLock<Arc<LogSigner>>> = Default::default();
        let access_tip = AccessTip::default();
        let (tx, handle) = match signer {
            Some(signer) => {
                let (tx, rx) = mpsc::channel(1024);
                let handle = tokio::spawn(sequencer::run(
                    db.clone(),
                    signer,
                    rx,
                    head_tx,
                    writes.clone(),
                    sequencer::AccessWriter {
                        signer: access_signer.clone(),
                        tip: access_tip.clone(),
                        head: access_head.clone(),
                    },
                ));
                (Some(tx), Some(handle))
            }
            None => (None, None),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                sequencer: Mutex::new(tx),
                sequencer_done: tokio::sync::Mutex::new(handle),
                head: head_rx,
                access: Mutex::new(None),
                access_done: Mutex::new(None),
                access_started: Default::default(),
                access_head,
                access_signer,
                access_tip,
                keys: Default::default(),
                agencies: Default::default(),
                options,
                writes,
                checkpointer: std::sync::Mutex::new(checkpointer),
                _gin_cleaner: gin_cleaner,
            }),
        })
    }

    /// Appends one request's events atomically; returns a receipt per event, in order. A request
    /// whose events are all already recorded with identical bytes returns the original receipts.
    #[tracing::instrument(name = "store.append", skip_all)]
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Receipt>> {
        check_batch(&events)?;
        group::submit(&self.inner.sequencer, events, None, APPENDS_CLOSED).await
    }

    /// Appends one request's events as [`Store::append`] does and, in the same transaction,
    /// records in the access log the entry `record` builds from the receipts (also for an
    /// idempotent resend, which is another access). One commit makes both durable, so an append
    /// is never recorded without its access record (DPA 2018 s.62: collection is logged) and
    /// costs one fsync, not two. [`Error::Unavailable`] when the access-log writer is not
    /// started.
    #[tracing::instrument(name = "store.append_recorded", skip_all)]
    pub async fn append_recorded(&self, events: Vec<NewEvent>, record: AppendRecord) -> Result<Vec<Receipt>> {
        check_batch(&events)?;
        if self.inner.access.lock().expect("access writer lock").is_none() {
            return Err(Error::Unavailable(ACCESS_CLOSED.into()));
        }
        group::submit(&self.inner.sequencer, events, Some(record), APPENDS_CLOSED).await
    }

    /// Stops accepting appends and access records, lets the sequencer and the access-log writer
    /// finish what they have queued, and waits for them; on SQLite then checkpoints the WAL into
    /// the database file one last time and truncates it (best effort: what the WAL still holds
    /// is as durable, and is checkpointed by the next process to open the database).
    #[tracing::instrument(name = "store.shutdown", skip_all)]
    pub async fn shutdown(&self) {
        self.inner.sequencer.lock().expect("sequencer lock").take();
        self.inner.access.lock().expect("access writer lock").take();
        if let Some(h) = self.inner.sequencer_done.lock().await.take() {
            let _ = h.await;
        }
        let access = self.inner.access_done.lock().expect("access writer lock").take();
        if let Some(h) = access {
            let _ = h.await;
        }
        // With the writers stopped, the WAL is checkpointed one last time and truncated.
        let checkpointer = self.inner.checkpointer.lock().expect("checkpointer lock").take();
        if let Some(c) = checkpointer {
            c.stop().await;
        }
    }

    /// Starts the access-log writer (group commit), signing the access log's checkpoints with
    /// `signer` (whose origin must differ from the event log's). Before this, and after
    /// [`Store::shutdown`], [`Store::record_access`] returns [`Error::Unavailable`]. Starts it at
    /// most once: later calls do nothing. Must be called within a Tokio runtime.
    pub fn start_access_log(&self, signer: LogSigner) {
        if self.inner.access_started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!("the access-log writer is already started; ignoring the second start");
            return;
        }
        let signer = Arc::new(signer);
        let _ = self.inner.access_signer.set(signer.clone());
        let (tx, rx) = mpsc::channel(1024);
        let handle = tokio::spawn(access::run(
            self.inner.db.clone(),
            signer,
            rx,
            self.inner.access_head.clone(),
            self.inner.writes.clone(),
            self.inner.access_tip.clone(),
        ));
        *self.inner.access.lock().expect("access writer lock") = Some(tx);
        *self.inner.access_done.lock().expect("access writer lock") = Some(handle);
    }

    /// Durably records `entries` in the access log (in one transaction with every other request
    /// waiting), returning each entry's position, in order. `Ok` only after COMMIT. The request is
    /// atomic: an access id recorded before ([`Error::Duplicate`]) or twice in the request
    /// ([`Error::Invalid`]) refuses all of it. If the round's transaction fails, every request of
    /// the round fails and nothing is acknowledged. An empty request records nothing.
    #[tracing::instrument(name = "store.record_access", skip_all)]
    pub async fn record_access(&self, entries: Vec<AccessEntry>) -> Result<Vec<u64>> {
        if entries.len() > MAX_BATCH_EVENTS {
            return Err(Error::Invalid(format!(
                "an access request may hold at most {MAX_BATCH_EVENTS} entries, found {}",
                entries.len()
            )));
        }
        if entries.is_empty() {
            // Nothing to record, but only a started writer says so.
            return match self.inner.access.lock().expect("access writer lock").is_some() {
                true => Ok(Vec::new()),
                false => Err(Error::Unavailable(ACCESS_CLOSED.into())),
            };
        }
        group::submit(&self.inner.access, entries, (), ACCESS_CLOSED).await
    }

    /// The committed access-log size, read from the database.
    #[tracing::instrument(name = "store.access_log_size", skip_all)]
    pub async fn access_log_size(&self) -> Result<u64> {
        dispatch!(&self.inner.db, |q, pool| q::access_size(pool).await)
    }

    /// The access-log size as last committed by this process's writer or seen at open.
    pub fn watch_access_head(&self) -> watch::Receiver<u64> {
        self.inner.access_head.subscribe()
    }

    /// Access records matching `filter`, in ascending position, at most its (clamped) limit.
    #[tracing::instrument(name = "store.accesses", skip_all)]
    pub async fn accesses(&self, filter: &AccessFilter) -> Result<Vec<RecordedAccess>> {
        let limit = filter.effective_limit();
        dispatch!(&self.inner.db, |q, pool| q::accesses(pool, filter, limit).await)
    }

    /// The access record with id `id`.
    #[tracing::instrument(name = "store.access_by_id", skip_all)]
    pub async fn access_by_id(&self, id: &[u8; 16]) -> Result<Option<RecordedAccess>> {
        dispatch!(&self.inner.db, |q, pool| q::access_by_id(pool, id).await)
    }

    /// Access records from position `from`, ascending, at most `limit` (for verification).
    #[tracing::instrument(name = "store.access_range", skip_all)]
    pub async fn access_range(&self, from: u64, limit: u32) -> Result<Vec<RecordedAccess>> {
        dispatch!(&self.inner.db, |q, pool| q::access_range(pool, from, limit).await)
    }

    /// The index rows of access positions in `[from, to)`: `(position, "subject" | "item",
    /// value)`, ordered by position, kind, then value (bytewise), so a verifier can check them
    /// against the decoded records.
    #[tracing::instrument(name = "store.access_index_rows", skip_all)]
    pub async fn access_index_rows(&self, from: u64, to: u64) -> Result<Vec<(u64, String, String)>> {
        dispatch!(&self.inner.db, |q, pool| q::access_index_rows(pool, from, to).await)
    }

    /// Checks that the access log's query index is internally consistent (SQLite's FTS5
    /// integrity check; PostgreSQL maintains its GIN index itself). `access_index_rows` checks
    /// the rows against the records; this checks the index says what the rows say.
    #[tracing::instrument(name = "store.access_index_integrity", skip_all)]
    pub async fn access_index_integrity(&self) -> Result<()> {
        dispatch!(&self.inner.db, |q, pool| q::access_index_integrity(pool).await)
    }

    /// The access log's latest signed checkpoint, if anything was ever recorded.
    #[tracing::instrument(name = "store.access_latest_checkpoint", skip_all)]
    pub async fn access_latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        dispatch!(&self.inner.db, |q, pool| q::latest_checkpoint(pool, Log::Access).await)
    }

    /// The access log's signed checkpoints with tree size ≥ `from_size`, ascending, at most `limit`.
    #[tracing::instrument(name = "store.access_checkpoints", skip_all)]
    pub async fn access_checkpoints(&self, from_size: u64, limit: u32) -> Result<Vec<SignedCheckpoint>> {
        dispatch!(&self.inner.db, |q, pool| q::checkpoints(pool, Log::Access, from_size, limit).await)
    }

    /// The access log's tree head of size `size` (which must not exceed its size).
    #[tracing::instrument(name = "store.access_root", skip_all)]
    pub async fn access_root(&self, size: u64) -> Result<Hash> {
        self.log_root(Log::Access, size).await
    }

    /// The inclusion proof of access-log `position` in the tree of `tree_size`: the leaf hash,
    /// the audit path and that tree's root.
    #[tracing::instrument(name = "store.access_inclusion_proof", skip_all)]
    pub async fn access_inclusion_proof(&self, position: u64, tree_size: u64) -> Result<(Hash, Vec<Hash>, Hash)> {
        self.log_inclusion_proof(Log::Access, position, tree_size).await
    }

    /// The access log's consistency proof from `from_size` to `to_size`, with both roots.
    #[tracing::instrument(name = "store.access_consistency_proof", skip_all)]
    pub async fn access_consistency_proof(&self, from_size: u64, to_size: u64) -> Result<(Vec<Hash>, Hash, Hash)> {
        self.log_consistency_proof(Log::Access, from_size, to_size).await
    }

    /// The access log's stored Merkle hashes with indexes in `[from, to)`, in index order.
    #[tracing::instrument(name = "store.access_hash_range", skip_all)]
    pub async fn access_hash_range(&self, from: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
        dispatch!(&self.inner.db, |q, pool| q::hash_range(pool, Log::Access, from, to).await)
    }

    /// The log size (next position) as last committed by this process's sequencer or seen at open.
    /// Other processes' appends show up through [`Store::log_size`].
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    /// How often subscribers should poll for other processes' appends.
    pub fn poll_interval(&self) -> Duration {
        self.inner.options.poll_interval
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner.db, Db::Postgres(_))
    }

    /// The committed log size, read from the database.
    #[tracing::instrument(name = "store.log_size", skip_all)]
    pub async fn log_size(&self) -> Result<u64> {
        Ok(dispatch!(&self.inner.db, |q, pool| q::head(pool).await)?.size)
    }

    /// Events from `from` in position order, at most `limit`, those `visibility` allows.
    #[tracing::instrument(name = "store.read_all", skip_all)]
    pub async fn read_all(&self, from: u64, limit: u32, visibility: &Visibility) -> Result<Page> {
        dispatch!(&self.inner.db, |q, pool| q::read_all(pool, from, limit, visibility, None).await)
    }

    /// [`Store::read_all`] as it answered when the log held `size` events (an audit replay; the
    /// log is immutable, so the answer is the same). `size` must not exceed the log size.
    #[tracing::instrument(name = "store.read_all_as_of", skip_all)]
    pub async fn read_all_as_of(&self, from: u64, limit: u32, visibility: &Visibility, size: u64) -> Result<Page> {
        self.check_size(Log::Events, size).await?;
        dispatch!(&self.inner.db, |q, pool| q::read_all(pool, from, limit, visibility, Some(size)).await)
    }

    /// [`Store::read_stream`] as it answered when the log held `size` events.
    #[tracing::instrument(name = "store.read_stream_as_of", skip_all)]
    pub async fn read_stream_as_of(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: u32,
        visibility: &Visibility,
        size: u64,
    ) -> Result<Page> {
        self.check_size(Log::Events, size).await?;
        dispatch!(&self.inner.db, |q, pool| q::read_stream(
            pool,
            stream.as_str(),
            from_version,
            limit,
            visibility,
            Some(size)
        )
        .await)
    }

    /// Events of `stream` from `from_version` in version order, at most `limit`.
    #[tracing::instrument(name = "store.read_stream", skip_all)]
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: u32,
        visibility: &Visibility,
    ) -> Result<Page> {
        dispatch!(&self.inner.db, |q, pool| q::read_stream(
            pool,
            stream.as_str(),
            from_version,
            limit,
            visibility,
            None
        )
        .await)
    }

    /// Stored Merkle hashes with indexes in `[from, to)`, in index order (for verification).
    #[tracing::instrument(name = "store.hash_range", skip_all)]
    pub async fn hash_range(&self, from: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
        dispatch!(&self.inner.db, |q, pool| q::hash_range(pool, Log::Events, from, to).await)
    }

    async fn hashes(&self, log: Log, indexes: &[u64]) -> Result<HashMap<u64, Hash>> {
        let found = dispatch!(&self.inner.db, |q, pool| q::log_hashes(
            &mut *pool.acquire().await.map_err(error::db("acquiring a connection"))?,
            log,
            indexes
        )
        .await)?;
        if let Some(missing) = indexes.iter().find(|i| !found.contains_key(i)) {
            return Err(Error::Corrupt(format!("merkle hash {missing} is missing")));
        }
        Ok(found)
    }

    /// The tree head of size `size` (which must not exceed the log size).
    #[tracing::instrument(name = "store.root", skip_all)]
    pub async fn root(&self, size: u64) -> Result<Hash> {
        self.log_root(Log::Events, size).await
    }

    async fn log_root(&self, log: Log, size: u64) -> Result<Hash> {
        self.check_size(log, size).await?;
        let h = self.hashes(log, &merkle::tree_hash_indexes(size)).await?;
        Ok(merkle::tree_hash(size, &h)?)
    }

    async fn check_size(&self, log: Log, size: u64) -> Result<u64> {
        let current = match log {
            Log::Events => self.log_size().await?,
            Log::Access => self.access_log_size().await?,
        };
        if size > current {
            return Err(Error::NotFound(format!("tree size {size} is beyond the log size {current}")));
        }
        Ok(current)
    }

    /// The inclusion proof of `position` in the tree of `tree_size`: the event's leaf hash, the
    /// audit path and that tree's root, from one query.
    #[tracing::instrument(name = "store.inclusion_proof", skip_all)]
    pub async fn inclusion_proof(&self, position: u64, tree_size: u64) -> Result<(Hash, Vec<Hash>, Hash)> {
        self.log_inclusion_proof(Log::Events, position, tree_size).await
    }

    async fn log_inclusion_proof(&self, log: Log, position: u64, tree_size: u64) -> Result<(Hash, Vec<Hash>, Hash)> {
        self.check_size(log, tree_size).await?;
        let leaf_idx = merkle::stored_hash_index(0, position);
        let mut need = merkle::inclusion_indexes(tree_size, position)?;
        need.extend(merkle::tree_hash_indexes(tree_size));
        need.push(leaf_idx);
        let h = self.hashes(log, &need).await?;
        Ok((h[&leaf_idx], merkle::inclusion_proof(tree_size, position, &h)?, merkle::tree_hash(tree_size, &h)?))
    }

    /// The consistency proof from `from_size` to `to_size`, with both roots.
    #[tracing::instrument(name = "store.consistency_proof", skip_all)]
    pub async fn consistency_proof(&self, from_size: u64, to_size: u64) -> Result<(Vec<Hash>, Hash, Hash)> {
        self.log_consistency_proof(Log::Events, from_size, to_size).await
    }

    async fn log_consistency_proof(&self, log: Log, from_size: u64, to_size: u64) -> Result<(Vec<Hash>, Hash, Hash)> {
        self.check_size(log, to_size).await?;
        let mut need = merkle::consistency_indexes(to_size, from_size)?;
        need.extend(merkle::tree_hash_indexes(to_size));
        need.extend(merkle::tree_hash_indexes(from_size));
        let h = self.hashes(log, &need).await?;
        Ok((
            merkle::consistency_proof(to_size, from_size, &h)?,
            merkle::tree_hash(from_size, &h)?,
            merkle::tree_hash(to_size, &h)?,
        ))
    }

    /// The event at `position`, whoever wrote it (callers authorise).
    #[tracing::instrument(name = "store.event_at", skip_all)]
    pub async fn event_at(&self, position: u64) -> Result<RecordedEvent> {
        self.read_all(position, 1, &Visibility::All)
            .await?
            .events
            .into_iter()
            .find(|e| e.position == position)
            .ok_or_else(|| Error::NotFound(format!("no event at position {position}")))
    }

    /// The first log position `projection` has not applied yet (0 before its first batch).
    #[tracing::instrument(name = "store.view_checkpoint", skip_all)]
    pub async fn view_checkpoint(&self, projection: &str) -> Result<u64> {
        dispatch!(&self.inner.db, |q, pool| q::view_checkpoint(pool, projection).await)
    }

    /// Writes read-model rows and moves `projection`'s checkpoint from `from` to `to` in one
    /// transaction. Returns `false`, writing nothing, when the checkpoint is no longer `from`
    /// (another process applied the range first).
    /// A created row that is already stored fails the commit (see [`ViewChanges`]).
    #[tracing::instrument(name = "store.commit_views", skip_all, fields(created = rows.created.len(), changed = rows.changed.len()))]
    pub async fn commit_views(&self, projection: &str, from: u64, to: u64, rows: ViewChanges) -> Result<bool> {
        let _gate = self.inner.writes.enter(&self.inner.db).await;
        dispatch!(&self.inner.db, |q, pool| q::commit_views(pool, projection, from, to, rows).await)
    }

    /// Read-model rows after `after` (model, agency, item id) in that order, at most `limit`: to
    /// restore a projection's state page by page without holding every row twice.
    #[tracing::instrument(name = "store.view_rows_page", skip_all)]
    pub async fn view_rows_page(&self, after: Option<(&str, &str, &str)>, limit: u32) -> Result<Vec<ViewRow>> {
        dispatch!(&self.inner.db, |q, pool| q::view_rows_page(pool, after, limit).await)
    }

    /// `projection`'s checkpoint (0 before its first batch) and every read-model row, in pages of
    /// `page` rows in key order handed to `on_page`, read in one snapshot: rows and checkpoint
    /// agree even while another process commits (none when there is no checkpoint). An error
    /// from `on_page` stops the load and is returned.
    #[tracing::instrument(name = "store.load_views", skip_all)]
    pub async fn load_views(
        &self,
        projection: &str,
        page: u32,
        mut on_page: impl FnMut(Vec<ViewRow>) -> Result<()> + Send,
    ) -> Result<u64> {
        let page = page.max(1);
        dispatch!(&self.inner.db, |q, pool| q::load_views(pool, projection, page, &mut on_page).await)
    }

    /// Drops every read-model row and every projection's checkpoint, for a rebuild from zero
    /// (the rows table is shared by all projection versions).
    #[tracing::instrument(name = "store.reset_views", skip_all)]
    pub async fn reset_views(&self) -> Result<()> {
        let _gate = self.inner.writes.enter(&self.inner.db).await;
        dispatch!(&self.inner.db, |q, pool| q::reset_views(pool, None).await).map(|_| ())
    }

    /// [`Store::reset_views`] unless `projection` has a checkpoint past 0 by the time the reset
    /// holds its lock (another process has committed its first batch since the caller looked):
    /// then nothing is dropped and `false` is returned. For a projection starting with no
    /// checkpoint, clearing rows an older projection left, without dropping a peer's work.
    #[tracing::instrument(name = "store.reset_views_unless_started", skip_all)]
    pub async fn reset_views_unless_started(&self, projection: &str) -> Result<bool> {
        let _gate = self.inner.writes.enter(&self.inner.db).await;
        dispatch!(&self.inner.db, |q, pool| q::reset_views(pool, Some(projection)).await)
    }

    /// The event recorded under `event_id`, whoever wrote it (callers authorise).
    #[tracing::instrument(name = "store.event_by_id", skip_all)]
    pub async fn event_by_id(&self, event_id: &EventId) -> Result<Option<RecordedEvent>> {
        let found = dispatch!(&self.inner.db, |q, pool| q::existing_events(
            &mut *pool.acquire().await.map_err(error::db("acquiring a connection"))?,
            std::slice::from_ref(event_id)
        )
        .await)?;
        Ok(found.into_iter().next())
    }

    /// The latest signed checkpoint, if any event was ever recorded.
    #[tracing::instrument(name = "store.latest_checkpoint", skip_all)]
    pub async fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        dispatch!(&self.inner.db, |q, pool| q::latest_checkpoint(pool, Log::Events).await)
    }

    /// Signed checkpoints with tree size ≥ `from_size`, ascending, at most `limit`.
    #[tracing::instrument(name = "store.checkpoints", skip_all)]
    pub async fn checkpoints(&self, from_size: u64, limit: u32) -> Result<Vec<SignedCheckpoint>> {
        dispatch!(&self.inner.db, |q, pool| q::checkpoints(pool, Log::Events, from_size, limit).await)
    }

    /// A registered key. Cached: a registration never changes, but the cached revocation state
    /// may lag; the sequencer checks revocation authoritatively when it records an event.
    #[tracing::instrument(name = "store.key", skip_all)]
    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        if let Some(k) = self.inner.keys.read().expect("key cache").get(key_id) {
            return Ok(Some(k.clone()));
        }
        let found = dispatch!(&self.inner.db, |q, pool| q::key(pool, key_id).await)?;
        if let Some(k) = &found {
            self.inner.keys.write().expect("key cache").insert(k.key_id.clone(), k.clone());
        }
        Ok(found)
    }

    /// A registered agency. Cached: a registration never changes.
    #[tracing::instrument(name = "store.agency", skip_all)]
    pub async fn agency(&self, agency_id: &str) -> Result<Option<AgencyRecord>> {
        if let Some(a) = self.inner.agencies.read().expect("agency cache").get(agency_id) {
            return Ok(Some(a.clone()));
        }
        let found = dispatch!(&self.inner.db, |q, pool| q::agency(pool, agency_id).await)?;
        if let Some(a) = &found {
            self.inner.agencies.write().expect("agency cache").insert(a.agency_id.clone(), a.clone());
        }
        Ok(found)
    }

    /// Every registered agency.
    #[tracing::instrument(name = "store.agencies", skip_all)]
    pub async fn agencies(&self) -> Result<Vec<AgencyRecord>> {
        dispatch!(&self.inner.db, |q, pool| q::agencies(pool).await)
    }

    /// The `PolicyAdopted` events recorded after position `after` (all of them for `None`), in
    /// log order.
    #[tracing::instrument(name = "store.policy_adoptions", skip_all)]
    pub async fn policy_adoptions(&self, after: Option<u64>) -> Result<Vec<RecordedEvent>> {
        dispatch!(&self.inner.db, |q, pool| q::policy_adoptions(pool, after).await)
    }

    /// Every registered key.
    #[tracing::instrument(name = "store.keys", skip_all)]
    pub async fn keys(&self) -> Result<Vec<KeyRecord>> {
        dispatch!(&self.inner.db, |q, pool| q::keys(pool).await)
    }

    /// Runs raw SQL against the database. For tests that play an operator with database rights
    /// (tampering, disabling triggers); never used by the server.
    #[doc(hidden)]
    pub async fn execute_raw_for_tests(&self, sql: &str) -> Result<u64> {
        let done = match &self.inner.db {
            Db::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|r| r.rows_affected()),
            Db::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|r| r.rows_affected()),
        };
        done.map_err(error::db("running raw SQL"))
    }
}

#[doc(hidden)]
pub mod testing {
    //! Test support: a fresh PostgreSQL database per test. Used by this crate's and the
    //! end-to-end tests; not part of the API.

    use sqlx::Connection;

    /// A URL of a new, empty PostgreSQL database created from `DATABASE_URL`, or `None` when
    /// `DATABASE_URL` is unset outside CI. In CI (`CI` set) a missing or unreachable PostgreSQL
    /// is a failure, never a silent skip.
    pub async fn fresh_postgres_url() -> Option<String> {
        let base = match std::env::var("DATABASE_URL") {
            Ok(u) if super::is_postgres(&u) => u,
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but DATABASE_URL does not name a PostgreSQL database: the PostgreSQL suite must run in CI"
                );
                return None;
            }
        };
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
        let name = format!("accord_test_{}", uuid_like());
        // SERIALIZABLE by default, as a database may be configured: the store must not depend
        // on the server's default (its writes pin READ COMMITTED, see `Store::open`).
        for statement in [
            format!("CREATE DATABASE {name}"),
            format!("ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'"),
        ] {
            sqlx::raw_sql(&statement)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        }
        let (path, query) = match base.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (base.as_str(), String::new()),
        };
        let (prefix, _) = path.rsplit_once('/').expect("DATABASE_URL has a database path");
        Some(format!("{prefix}/{name}{query}"))
    }

    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("{}_{}_{}", std::process::id(), t, N.fetch_add(1, Ordering::Relaxed))
    }
}
