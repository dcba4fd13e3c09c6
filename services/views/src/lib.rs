//! Projections and read models (DESIGN.md §4), and the `Views` gRPC service over them.
//!
//! The [`Projector`] feeds the log to the [`projection::State`] fold in position order, in
//! batches; after each batch it writes the changed read-model rows and moves the projection's
//! checkpoint in one transaction (compare-and-set on the checkpoint, so several server processes
//! on one database never apply a range twice: the loser reloads). On start it restores its state
//! from the rows and resumes at the checkpoint; `accord rebuild` drops the rows and replays from
//! zero. [`Projector::as_of`] folds a fresh state up to any position, for audit replay.

mod metrics;
pub mod projection;
mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use accord_ledger::{Sharing, convert};
use accord_store::{Store, Visibility};
use tokio::sync::{Mutex, RwLock, watch};
use tracing::Instrument;

pub use accord_ledger::access::Replayed;
pub use projection::{Model, PROJECTION, State};
pub use service::{DisclosureLimits, Views, answer_as_of, replay};

/// Events read and applied per transaction.
pub const BATCH: u32 = 2000;

/// The longest applied events wait for their rows to be committed while appends continue.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Rows read per page when restoring the read models on start.
const RESTORE_PAGE: u32 = 5000;

/// Why projecting failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] accord_store::Error),
    /// The log or the stored read models hold something the projection cannot apply.
    #[error("{0}")]
    Corrupt(String),
}

impl From<accord_ledger::Error> for Error {
    fn from(e: accord_ledger::Error) -> Self {
        match e {
            accord_ledger::Error::Store(s) => Error::Store(s),
            other => Error::Corrupt(other.to_string()),
        }
    }
}

impl From<accord_domain::Error> for Error {
    fn from(e: accord_domain::Error) -> Self {
        Error::Corrupt(format!("a recorded event does not decode: {e}"))
    }
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the projection: keeps the read models in step with the log.
pub struct Projector {
    sharing: Arc<Sharing>,
    /// The read models; written only while a decoded batch is applied.
    state: RwLock<State>,
    /// Held by the one catch-up (or rebuild) running, with what it has applied but not committed.
    applying: Mutex<Pending>,
    applied: watch::Sender<u64>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").finish_non_exhaustive()
    }
}

/// What the projection has applied in memory but not yet committed.
#[derive(Debug)]
struct Pending {
    /// The checkpoint as last committed (or loaded) by this process, not counting `in_flight`.
    committed: u64,
    /// When the oldest batch not yet handed to a commit was applied.
    since: Option<Instant>,
    /// The commit running in the background (the fold goes on meanwhile): up to which position,
    /// and whether it moved the checkpoint (`false`: another process had moved it first).
    in_flight: Option<(u64, tokio::task::JoinHandle<accord_store::Result<bool>>)>,
    /// Changed rows were taken for a commit whose outcome is failed or unknown: the state must be
    /// reloaded from the database before anything else is folded or committed (else a later
    /// commit would move the checkpoint over rows never written).
    stale: bool,
}

impl Pending {
    fn new(committed: u64) -> Self {
        Pending { committed, since: None, in_flight: None, stale: false }
    }

    /// Where the next commit starts: the end of the one in flight, or the checkpoint.
    fn base(&self) -> u64 {
        self.in_flight.as_ref().map_or(self.committed, |(to, _)| *to)
    }

    /// Lets the commit in flight, if any, finish, whatever its outcome (what it did is in the
    /// database, which the caller reads or replaces next).
    async fn drain(&mut self) {
        if let Some((_, handle)) = self.in_flight.as_mut() {
            let _ = handle.await;
            self.in_flight = None;
        }
    }

    /// Whether the batch just applied up to `to` should be committed now.
    fn due(&self, to: u64) -> bool {
        to - self.base() >= u64::from(BATCH) || self.since.is_some_and(|t| t.elapsed() >= COMMIT_EVERY)
    }
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Events applied.
    pub events: u64,
    /// Transactions committed.
    pub batches: u64,
    /// The first position not applied afterwards.
    pub next_position: u64,
}

/// The state as last committed: the checkpoint and its rows, read in one snapshot (so another
/// process committing meanwhile cannot mix a later batch's rows under an earlier checkpoint).
/// With no checkpoint for this projection, rows left by an earlier projection (an older
/// [`PROJECTION`] name) are not this fold's: it starts from zero on an emptied table, unless
/// another process committed its first batch in between, which is then loaded instead.
async fn load_state(store: &Store) -> Result<State> {
    loop {
        let mut state = State::default();
        // A row the fold cannot read is the read models' corruption, not the log's.
        let mut unreadable = None;
        let loaded = store
            .load_views(PROJECTION, RESTORE_PAGE, |page| {
                state.restore(page).map_err(|e| {
                    unreadable = Some(e);
                    accord_store::Error::Invalid("a stored read-model row cannot be restored".into())
                })
            })
            .await;
        if let Some(e) = unreadable {
            return Err(Error::Corrupt(e));
        }
        state.next_position = loaded?;
        if state.next_position > 0 || store.reset_views_unless_started(PROJECTION).await? {
            return Ok(state);
        }
    }
}

/// Decodes a page of recorded events (outside any lock) and makes sure the policy history covers
/// them.
async fn decode_page(
    sharing: &Sharing,
    events: Vec<accord_store::RecordedEvent>,
) -> Result<Vec<(accord_store::RecordedEvent, accord_domain::EventBody, accord_domain::payload::Payload)>> {
    if let Some(last) = events.last() {
        // Reads the log's adoptions up to here; every earlier position then uses what it knows.
        sharing.in_force_at(last.position).await?;
    }
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let at = format!("position {}", e.position);
        let body = convert::event_body(&at, &e.body)?;
        let payload = convert::payload(&at, &body)?;
        out.push((e, body, payload));
    }
    Ok(out)
}

/// Applies decoded events to `state`.
fn apply_decoded(
    sharing: &Sharing,
    state: &mut State,
    events: &[(accord_store::RecordedEvent, accord_domain::EventBody, accord_domain::payload::Payload)],
) -> Result<()> {
    for (e, body, payload) in events {
        state.apply(e, body, payload, &|p| sharing.known_at(p)).map_err(|e| Error::Corrupt(e.to_string()))?;
    }
    Ok(())
}

impl Projector {
    /// Restores the projection from its stored rows and checkpoint.
    pub async fn open(sharing: Arc<Sharing>) -> Result<Arc<Projector>> {
        let state = load_state(sharing.store()).await?;
        let (applied, _) = watch::channel(state.next_position);
        let pending = Pending::new(state.next_position);
        Ok(Arc::new(Projector { sharing, state: RwLock::new(state), applying: Mutex::new(pending), applied }))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.sharing.store()
    }

    /// The sharing policy history.
    pub fn sharing(&self) -> &Arc<Sharing> {
        &self.sharing
    }

    /// Follows the first position not yet applied.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Applies everything recorded so far and commits it: rows and checkpoint in one transaction
    /// per batch of at most [`BATCH`] events. One catch-up runs at a time; readers are held off
    /// only while a decoded batch is applied in memory (and its changed rows taken), not while it
    /// is read, decoded or committed.
    pub async fn catch_up(&self) -> Result<Progress> {
        let one = self.applying.lock().await;
        self.catch_up_holding(one, true).await
    }

    /// Catches up while holding `applying` (taken by the caller); commits what is applied when
    /// `flush`, or else only once it is [`BATCH`] events or [`COMMIT_EVERY`] old. If a batch
    /// fails, reloads the state from the rows last committed.
    async fn catch_up_holding(
        &self,
        mut pending: tokio::sync::MutexGuard<'_, Pending>,
        flush: bool,
    ) -> Result<Progress> {
        let mut r = self.catch_up_inner(&mut pending).await;
        if flush && let Ok(p) = &mut r {
            match self.commit(&mut pending, true).await {
                Ok(committed) => p.batches += u64::from(committed),
                Err(e) => r = Err(e),
            }
        }
        if r.is_err() {
            self.reload(&mut pending).await;
        }
        r
    }

    /// Catches up; the caller holds `applying`. Each page is applied and published at once (the
    /// lag readers and subscribers see is the fold's, not the commit's); commits are grouped.
    ///
    /// Readers and subscribers may see a batch before its rows are committed: it is derived from
    /// events already durable in the log, and if its commit fails (or the process stops first)
    /// the same state is folded again from the rows last committed (the fold is deterministic),
    /// so what they saw stays true. Commits are grouped (at most one per [`COMMIT_EVERY`] or
    /// [`BATCH`] events) and run in the background while the next pages are folded: committing
    /// after every page took SQLite's single write lock and an fsync once per append round
    /// (measured at one client: each append waited 0.7 ms p50 behind it), and on PostgreSQL a
    /// large commit held the fold, and so every subscriber, for its whole duration.
    async fn catch_up_inner(&self, pending: &mut Pending) -> Result<Progress> {
        let store = self.store();
        if pending.stale {
            self.reload_state(pending).await?;
        }
        let mut progress = Progress { next_position: self.state.read().await.next_position, ..Progress::default() };
        loop {
            let from = self.state.read().await.next_position;
            let page = store.read_all(from, BATCH, &Visibility::All).await?;
            if page.events.is_empty() {
                break;
            }
            let (next_page, log_size) = (page.next, page.log_size);
            let started = Instant::now();
            let n = page.events.len() as u64;
            let newest = page.events.last().map(|e| e.recorded_at);
            let span = tracing::info_span!("projection.batch", from, events = n);
            let decoded = decode_page(&self.sharing, page.events).instrument(span.clone()).await?;
            let to = {
                let mut state = self.state.write().await;
                apply_decoded(&self.sharing, &mut state, &decoded)?;
                state.next_position
            };
            self.publish(to);
            pending.since.get_or_insert(started);
            progress.events += n;
            metrics::batch(n, newest, log_size.saturating_sub(to));
            tracing::debug!(from, events = n, elapsed_ms = started.elapsed().as_millis() as u64, "projection batch");
            if pending.due(to) && self.commit(pending, false).instrument(span).await? {
                progress.batches += 1;
            }
            if self.state.read().await.next_position < to {
                // Settling the previous commit found another process's rows and reloaded them:
                // fold on from there.
                continue;
            }
            if next_page >= log_size {
                break;
            }
        }
        progress.next_position = self.state.read().await.next_position;
        Ok(progress)
    }

    /// Waits for the commit in flight, if any (in place: if this future is dropped, the commit
    /// stays in flight for the next caller). If another process had committed its range first,
    /// loads that process's rows instead (`applied` may move back; the fold goes on from there).
    async fn settle(&self, pending: &mut Pending) -> Result<()> {
        let Some((to, handle)) = pending.in_flight.as_mut() else { return Ok(()) };
        let to = *to;
        let outcome = handle.await;
        pending.in_flight = None;
        match outcome {
            Ok(Ok(true)) => {
                tracing::debug!(to, "read models committed");
                pending.committed = to;
                Ok(())
            }
            Ok(Ok(false)) => {
                tracing::debug!(to, "read models advanced by another process; reloading");
                pending.stale = true;
                self.reload_state(pending).await
            }
            Ok(Err(e)) => {
                pending.stale = true;
                Err(e.into())
            }
            Err(e) => {
                pending.stale = true;
                Err(Error::Corrupt(format!("committing the read models failed: {e}")))
            }
        }
    }

    /// Replaces the state with the rows last committed; then (never before) publishes it. On
    /// failure the state stays marked stale, so the next fold or commit tries again first.
    async fn reload_state(&self, pending: &mut Pending) -> Result<()> {
        let reloaded = load_state(self.store()).await?;
        let next = reloaded.next_position;
        *self.state.write().await = reloaded;
        *pending = Pending::new(next);
        self.applied.send_replace(next);
        Ok(())
    }

    /// Hands the rows changed since the last commit, with the checkpoint, to a commit that runs
    /// while the fold goes on (after the previous one has finished: commits are chained, each
    /// from where the last ended); with `wait`, waits for it. `false` if there was nothing to
    /// commit.
    async fn commit(&self, pending: &mut Pending, wait: bool) -> Result<bool> {
        self.settle(pending).await?;
        if pending.stale {
            self.reload_state(pending).await?;
        }
        let from = pending.committed;
        let (rows, to) = {
            let mut state = self.state.write().await;
            if state.next_position == from {
                return Ok(false);
            }
            (state.take_changes(), state.next_position)
        };
        let store = self.store().clone();
        let commit = async move { store.commit_views(PROJECTION, from, to, rows).await };
        pending.in_flight = Some((to, tokio::spawn(commit.instrument(tracing::Span::current()))));
        pending.since = None;
        if wait {
            self.settle(pending).await?;
        }
        Ok(true)
    }

    /// Commits what is applied but not yet committed, and waits for it (the server's projection
    /// task calls it when appends pause and on shutdown).
    pub async fn flush(&self) -> Result<()> {
        let mut pending = self.applying.lock().await;
        let r = self.commit(&mut pending, true).await.map(|_| ());
        if r.is_err() {
            self.reload(&mut pending).await;
        }
        r
    }

    /// [`flush`](Self::flush) when the projection task stops; a failure only costs folding those
    /// events again at the next start.
    async fn flush_at_exit(&self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "committing the read models failed; the next start folds those events again");
        }
    }

    /// After a failure: the state as last committed, published (the applied mark may move back;
    /// the same events are folded again). If even that fails, the state stays marked stale.
    async fn reload(&self, pending: &mut Pending) {
        pending.drain().await;
        pending.stale = true;
        if let Err(e) = self.reload_state(pending).await {
            tracing::error!(error = %e, "reloading the read models failed; retrying before the next batch");
        }
    }

    /// When the oldest applied but uncommitted batch is [`COMMIT_EVERY`] old (`None`: nothing
    /// waits).
    async fn commit_due(&self) -> Option<Instant> {
        self.applying.lock().await.since.map(|t| t + COMMIT_EVERY)
    }

    /// Tells readers and subscribers that the state holds everything before `to` (never moves
    /// the mark back; a failed batch's reload does, in `catch_up`).
    fn publish(&self, to: u64) {
        self.applied.send_if_modified(|a| {
            let later = to > *a;
            if later {
                *a = to;
            }
            later
        });
    }

    /// Runs with the state locked, once it holds at least the first `min_size` positions. When a
    /// catch-up is already running (the server's, under steady appends), waits for it to
    /// publish rather than queueing behind it for its commit and then applying a batch of its
    /// own; catches up itself only when none runs.
    pub async fn read<T>(&self, min_size: u64, f: impl FnOnce(&State) -> T) -> Result<T> {
        let mut applied = self.applied.subscribe();
        loop {
            let mut caught_up = false;
            while *applied.borrow_and_update() < min_size {
                tokio::select! {
                    biased;
                    changed = applied.changed() => changed.map_err(|_| Error::Corrupt("the projection stopped".into()))?,
                    one = self.applying.lock() => {
                        // Catching up reads the log to its end, which holds `min_size`.
                        self.catch_up_holding(one, false).await?;
                        caught_up = true;
                        break;
                    }
                }
            }
            let state = self.state.read().await;
            // The mark is published after the state is written, but a reload may have moved the
            // state back since: then wait again.
            if state.next_position >= min_size || caught_up {
                return Ok(f(&state));
            }
        }
    }

    /// A fresh state folded from the start of the log up to and including `position`.
    pub async fn as_of(&self, position: u64) -> Result<State> {
        let store = self.store();
        let mut state = State::default();
        while state.next_position <= position {
            let page = store.read_all(state.next_position, BATCH, &Visibility::All).await?;
            let events: Vec<_> = page.events.into_iter().take_while(|e| e.position <= position).collect();
            if events.is_empty() {
                break;
            }
            let decoded = decode_page(&self.sharing, events).await?;
            apply_decoded(&self.sharing, &mut state, &decoded)?;
        }
        state.forget_changes();
        Ok(state)
    }

    /// Keeps the read models in step with the log until `stopping` turns true: after each commit
    /// of this process and at every poll tick (for other processes' commits).
    pub fn spawn(self: &Arc<Self>, mut stopping: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut head = me.store().watch_head();
            let mut backoff = Duration::from_millis(100);
            loop {
                if *stopping.borrow() {
                    me.flush_at_exit().await;
                    return;
                }
                let live = me.applying.lock().await;
                match me.catch_up_holding(live, false).await {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::error!(error = %e, "projection failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
                let poll = me.store().poll_interval();
                let due = me.commit_due().await;
                let wait = due.map_or(poll, |t| t.saturating_duration_since(Instant::now()).min(poll));
                tokio::select! {
                    r = head.changed() => if r.is_err() {
                        // No sequencer (it stopped): commit what is applied, then stop following.
                        me.flush_at_exit().await;
                        return;
                    },
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopping.changed() => {}
                }
                // Appends paused with applied events uncommitted: commit them now.
                if me.commit_due().await.is_some_and(|t| t <= Instant::now())
                    && let Err(e) = me.flush().await
                {
                    tracing::error!(error = %e, "committing the read models failed; folding again from the last commit");
                }
            }
        })
    }

    /// Drops every read-model row and replays the log from zero; returns what was done and the
    /// digest of the result.
    pub async fn rebuild(&self) -> Result<(Progress, [u8; 32])> {
        let mut pending = self.applying.lock().await;
        // Its rows are about to be dropped; only let it finish first.
        pending.drain().await;
        if let Err(e) = self.store().reset_views().await {
            self.reload(&mut pending).await;
            return Err(e.into());
        }
        *self.state.write().await = State::default();
        *pending = Pending::new(0);
        self.applied.send_replace(0);
        let mut progress = self.catch_up_inner(&mut pending).await;
        if let Ok(p) = &mut progress {
            match self.commit(&mut pending, true).await {
                Ok(committed) => p.batches += u64::from(committed),
                Err(e) => progress = Err(e),
            }
        }
        if progress.is_err() {
            self.reload(&mut pending).await;
        }
        let state = self.state.read().await;
        self.applied.send_replace(state.next_position);
        Ok((progress?, state.digest()))
    }

    /// The digest of the current read models.
    pub async fn digest(&self) -> [u8; 32] {
        self.state.read().await.digest()
    }
}
