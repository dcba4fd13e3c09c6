//! SQLite's write-ahead log, checkpointed in the background.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a *checkpoint* copies them back into
//! the database file and fsyncs it. By default the connection whose commit takes the WAL past
//! 1,000 pages runs that checkpoint itself, inside its commit, while its callers wait. Here the
//! store's connections only do so past [`FOREGROUND_PAGES`] (a fallback), and one task per store
//! checkpoints every [`INTERVAL`], in two passes:
//! 1. a PASSIVE checkpoint without any lock of ours: it copies what no reader still needs and
//!    takes no write lock, so writers go on meanwhile (it can never finish under steady writes);
//! 2. when that leaves at most [`GATED_FRAMES`] frames (those committed during pass 1), a second
//!    PASSIVE checkpoint holding the process's [`WriteGate`](crate::WriteGate), so the next
//!    writer finds the WAL fully copied and SQLite starts it again from the beginning (a WAL is
//!    only rewound then). Writers wait for this short pass only.
//!
//! [`JOURNAL_SIZE_LIMIT`] truncates the file when it is rewound after having grown. Durability is
//! unchanged: a commit is durable once its WAL frames are fsynced (`synchronous = FULL`),
//! checkpointed or not. Measured: the 200k-event load 4–14 % faster, its rebuild 11–15 %
//! (BENCHMARKS.md, 2026-12-02 fourth session); audited reads unchanged.

use std::time::Duration;

/// How often the background checkpoint runs.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

/// WAL pages (4 KiB) past which a committing connection checkpoints in the foreground, as SQLite
/// does by default at 1,000: only reached if the background checkpoint cannot keep up.
pub(crate) const FOREGROUND_PAGES: &str = "16384";

/// Bytes the `-wal` file is truncated to when it is rewound after growing past them.
pub(crate) const JOURNAL_SIZE_LIMIT: &str = "16777216";

/// The most frames left by the first pass that the second copies while writers wait (1 MiB).
const GATED_FRAMES: i64 = 256;

/// The background checkpoint task; stops when dropped (with the store).
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One PASSIVE checkpoint: (frames in the WAL, frames copied into the database file). Copied <
/// frames when a reader still needs the rest or writers committed meanwhile.
async fn checkpoint(pool: &sqlx::SqlitePool) -> Result<(i64, i64), sqlx::Error> {
    // The first column is 1 only when another connection was checkpointing (this one then did
    // nothing; the next run retries).
    let (_busy, frames, copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    Ok((frames, copied))
}

/// Starts checkpointing `pool`'s database every [`INTERVAL`]; `gate` is the process's SQLite
/// write gate. Must be called within a Tokio runtime.
pub(crate) fn start(pool: sqlx::SqlitePool, gate: crate::WriteGate) -> Checkpointer {
    Checkpointer(tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let result = match checkpoint(&pool).await {
                Ok((frames, copied)) if frames > copied && frames - copied <= GATED_FRAMES => {
                    let _writers = gate.hold().await;
                    checkpoint(&pool).await
                }
                other => other,
            };
            match result {
                Err(sqlx::Error::PoolClosed) => return,
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
