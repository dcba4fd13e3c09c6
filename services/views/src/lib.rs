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
    /// Held by the one catch-up (or rebuild) running.
    applying: Mutex<()>,
    applied: watch::Sender<u64>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").finish_non_exhaustive()
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

async fn load_state(store: &Store) -> Result<State> {
    let next = store.view_checkpoint(PROJECTION).await?;
    if next == 0 {
        // No checkpoint for this projection: rows left by an earlier projection (an older
        // `PROJECTION` name) are not this fold's; start from zero on an empty table.
        store.reset_views(PROJECTION).await?;
        return Ok(State::default());
    }
    let mut state = State::resuming_at(next);
    let mut after: Option<(String, String, String)> = None;
    loop {
        let page = store
            .view_rows_page(after.as_ref().map(|(m, a, i)| (m.as_str(), a.as_str(), i.as_str())), RESTORE_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.model.clone(), last.agency.clone(), last.item_id.clone()));
        let n = page.len();
        state.restore(page).map_err(Error::Corrupt)?;
        if n < RESTORE_PAGE as usize {
            break;
        }
    }
    Ok(state)
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
        Ok(Arc::new(Projector { sharing, state: RwLock::new(state), applying: Mutex::new(()), applied }))
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

    /// Applies everything recorded so far, batch by batch, each batch committed with the
    /// checkpoint. One catch-up runs at a time; readers are held off only while a decoded batch
    /// is applied in memory, not while it is read, decoded or committed. Readers may see a batch
    /// a moment before its rows are committed: it is derived from events already durable in the
    /// log, and a failed commit reloads the same state from the database and applies it again.
    pub async fn catch_up(&self) -> Result<Progress> {
        let _one = self.applying.lock().await;
        let r = self.catch_up_inner().await;
        if r.is_err() {
            match load_state(self.store()).await {
                Ok(s) => *self.state.write().await = s,
                Err(e) => tracing::error!(error = %e, "reloading the read models failed"),
            }
        }
        self.applied.send_replace(self.state.read().await.next_position);
        r
    }

    /// Catches up; the caller holds `applying`.
    async fn catch_up_inner(&self) -> Result<Progress> {
        let store = self.store();
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
            let span = tracing::info_span!("projection.batch", from, events = n, rows = tracing::field::Empty);
            let decoded = decode_page(&self.sharing, page.events).instrument(span.clone()).await?;
            let (rows, to) = {
                let mut state = self.state.write().await;
                apply_decoded(&self.sharing, &mut state, &decoded)?;
                (state.take_changes(), state.next_position)
            };
            span.record("rows", rows.len());
            if !store.commit_views(PROJECTION, from, to, &rows).instrument(span).await? {
                // Another process applied this range first: take its rows and go on from there.
                tracing::debug!(from, "read models advanced by another process; reloading");
                let reloaded = load_state(store).await?;
                *self.state.write().await = reloaded;
                continue;
            }
            progress.events += n;
            progress.batches += 1;
            metrics::batch(n, newest, log_size.saturating_sub(to));
            tracing::debug!(
                from,
                events = n,
                rows = rows.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "projection batch"
            );
            self.applied.send_replace(to);
            if next_page >= log_size {
                break;
            }
        }
        progress.next_position = self.state.read().await.next_position;
        Ok(progress)
    }

    /// Runs with the state locked (after catching up with the log as far as `min_size`).
    pub async fn read<T>(&self, min_size: u64, f: impl FnOnce(&State) -> T) -> Result<T> {
        if *self.applied.borrow() < min_size {
            self.catch_up().await?;
        }
        let state = self.state.read().await;
        Ok(f(&state))
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
        state.take_changes();
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
                    return;
                }
                match me.catch_up().await {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::error!(error = %e, "projection failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
                tokio::select! {
                    r = head.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(me.store().poll_interval()) => {}
                    _ = stopping.changed() => {}
                }
            }
        })
    }

    /// Drops every read-model row and replays the log from zero; returns what was done and the
    /// digest of the result.
    pub async fn rebuild(&self) -> Result<(Progress, [u8; 32])> {
        let _one = self.applying.lock().await;
        self.store().reset_views(PROJECTION).await?;
        *self.state.write().await = State::default();
        let progress = self.catch_up_inner().await;
        if progress.is_err() {
            *self.state.write().await = load_state(self.store()).await?;
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
