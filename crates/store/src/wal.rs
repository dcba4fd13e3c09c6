//! SQLite's write-ahead log, checkpointed in the background.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a *checkpoint* copies them back into
//! the database file and fsyncs it. By default the connection whose commit takes the WAL past
//! 1,000 pages runs that checkpoint itself, inside its commit: every hundred-odd access-log
//! rounds one read waited for a whole checkpoint (issue 5's benchmark: round p99 14.3 ms with,
//! 7.8 ms without; BENCHMARKS.md). So the store's connections only checkpoint when the WAL is
//! far larger ([`FOREGROUND_PAGES`], a fallback should this task fall behind), and one task per
//! store runs a PASSIVE checkpoint every [`INTERVAL`]: it copies what no reader still needs
//! without taking the write lock, so writers never wait for it. Durability is unchanged: a
//! commit is durable once its WAL frames are fsynced (`synchronous = FULL`), checkpointed or not.

use std::time::Duration;

/// How often the background checkpoint runs.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

/// WAL pages (4 KiB) past which a committing connection checkpoints in the foreground, as SQLite
/// does by default at 1,000: only reached if the background checkpoint cannot keep up.
pub(crate) const FOREGROUND_PAGES: &str = "16384";

/// The background checkpoint task; stops when dropped (with the store).
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts checkpointing `pool`'s database every [`INTERVAL`]. Must be called within a Tokio
/// runtime.
pub(crate) fn start(pool: sqlx::SqlitePool) -> Checkpointer {
    Checkpointer(tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            // (busy, WAL frames, frames checkpointed); busy only means a reader still needs
            // some frames, which the next run copies.
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("SQLite WAL checkpoints succeed again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "SQLite WAL checkpoint failed; commits stay durable in the WAL, and the WAL is checkpointed by a commit once it holds {FOREGROUND_PAGES} pages");
                }
                Err(_) => {}
            }
        }
    }))
}
