//! PostgreSQL: the access log's key index (a GIN index, migration 0005) merged in the background.
//!
//! A GIN index with `fastupdate` appends new entries to a *pending list*, cheap per insert; once
//! the list passes `gin_pending_list_limit` (4 MB by default), the inserting transaction merges
//! the whole list into the index before it can commit. Every access record writes one row into
//! that index, the append path included (an append's record is written in the append's
//! transaction), so every few seconds one append or access round paid for the merge: the
//! projection-lag benchmark at 5,000 appends/s showed all appenders stalled together for
//! 50–200 ms every ~2.4 s, the sequencer's backend inside the access-record insert
//! (`pg_stat_activity`), and the stalls gone with the limit raised out of reach
//! (BENCHMARKS.md, 2026-12-04).
//!
//! Here one task per store merges the list, on a pool connection, with
//! `gin_clean_pending_list` at most every [`INTERVAL`] while the access log grows, so the list
//! stays far below the limit and no writer meets it. The merge is the same work PostgreSQL
//! would do, moved off the writers' path; an inserter that does reach the limit while this
//! merge runs skips its own (PostgreSQL takes the cleanup lock conditionally for inserters).
//! Nothing depends on it for correctness: if it cannot run (a role that does not own the
//! index, a standby), PostgreSQL merges in the foreground as before, and a warning says why.

use std::time::Duration;

use tokio::sync::watch;

/// The least time between two merges. The list then holds at most this long's records (at
/// 1,000 audited reads/s and 5,000 appends/s, ~150 KB).
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// The longest wait between two tries after failures (doubling from [`INTERVAL`]).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The background merge task; aborted when dropped (with the store).
pub(crate) struct Cleaner(tokio::task::JoinHandle<()>);

impl Drop for Cleaner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts merging the access-key index's pending list of `pool`'s database whenever
/// `access_head` (this process's access-log size) moves, at most every [`INTERVAL`]. Must be
/// called within a Tokio runtime. Stops when the pool is closed or the head's sender dropped.
pub(crate) fn start(pool: sqlx::PgPool, mut access_head: watch::Receiver<u64>) -> Cleaner {
    Cleaner(tokio::spawn(async move {
        let mut failing = false;
        let mut backoff = INTERVAL;
        while access_head.changed().await.is_ok() {
            if pool.is_closed() {
                return;
            }
            match sqlx::query_scalar::<_, i64>("SELECT gin_clean_pending_list('access_keys_by_key'::regclass)")
                .fetch_one(&pool)
                .await
            {
                Ok(pages) => {
                    backoff = INTERVAL;
                    if failing {
                        failing = false;
                        tracing::info!("the access log's key index is merged in the background again");
                    }
                    tracing::trace!(pages, "access-key index pending list merged");
                }
                Err(_) if pool.is_closed() => return,
                Err(e) => {
                    // 42501: this role does not own the index; 25006: a read-only server. Neither
                    // passes with time: stop, rather than fill the server's log with errors.
                    let code = e.as_database_error().and_then(|d| d.code()).unwrap_or_default();
                    if code == "42501" || code == "25006" {
                        tracing::warn!(error = %e, "the access log's key index cannot be merged in the background by this role; PostgreSQL merges it inside writes instead (slower tails, nothing lost)");
                        return;
                    }
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "merging the access log's key index in the background failed; retrying with backoff, PostgreSQL merges it inside writes meanwhile (slower tails, nothing lost)");
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }))
}
