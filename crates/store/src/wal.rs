//! SQLite's write-ahead log, checkpointed in the background.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a *checkpoint* copies them back into
//! the database file and fsyncs it. By default the connection whose commit takes the WAL past
//! 1,000 pages runs that checkpoint itself, inside its commit, while its callers wait. Here the
//! store's connections only do so past [`FOREGROUND_PAGES`] (a fallback), and one task per store,
//! on a connection of its own, checkpoints every [`INTERVAL`], in two passes:
//! 1. a PASSIVE checkpoint without any lock of ours: it copies what no reader still needs and
//!    takes no write lock, so writers go on meanwhile;
//! 2. once the WAL holds [`RESTART_FRAMES`] frames and pass 1 left at most [`GATED_FRAMES`]
//!    (committed during it, or still needed by a reader), and the WAL has grown since the last
//!    such pass, a RESTART checkpoint holding the process's [`WriteGate`](crate::WriteGate):
//!    it takes SQLite's write lock, copies the rest and waits for readers still using the WAL
//!    to finish (all within [`RESTART_WAIT`]), so the next writer starts the WAL again from its
//!    beginning. Pass 1 alone rarely lets that happen while reads run back to back: a WAL is
//!    only rewound when no reader still uses it, and each reader that starts while writes go on
//!    uses it. Writers, in this process and others, wait for this short pass only.
//!
//! A WAL that has grown is truncated to [`JOURNAL_SIZE_LIMIT`] when it is rewound; that limit is
//! above the fallback's size, so a WAL this task keeps small is never truncated (a truncation of
//! 20–60 MB, inside the commit that rewinds the WAL, took that commit 4–24 ms). Durability is
//! unchanged: a commit is durable once its WAL frames are fsynced (`synchronous = FULL`),
//! checkpointed or not. Measured: the 200k-event load 4–14 % faster, its rebuild 11–15 %
//! (BENCHMARKS.md, 2026-12-02 fourth session); audited reads: BENCHMARKS.md, fifth session.

use std::time::Duration;

/// How often the background checkpoint runs. Each run's copy and fsync of the database file
/// slows the commits that meet it; at 50 ms they are short (1–3 ms for ~500 frames): audited
/// reads at 1,000/s had p99 4.3–5.7 ms against 7.1–7.2 ms at 200 ms (BENCHMARKS.md, fifth session).
pub(crate) const INTERVAL: Duration = Duration::from_millis(50);

/// WAL pages (4 KiB) past which a committing connection checkpoints in the foreground, as SQLite
/// does by default at 1,000: only reached if the background checkpoint cannot keep up.
pub(crate) const FOREGROUND_PAGES: &str = "16384";

/// Bytes the `-wal` file is truncated to when it is rewound after growing past them (80 MiB):
/// above a WAL of [`FOREGROUND_PAGES`] frames (4 KiB pages and a 24-byte header each, 67.5 MB),
/// so only a WAL that grew past the fallback (a transaction larger than it, or readers pinning
/// it) is truncated.
pub(crate) const JOURNAL_SIZE_LIMIT: &str = "83886080";

/// WAL frames (4 KiB pages) from which the second pass rewinds the WAL (16 MiB).
const RESTART_FRAMES: i64 = 4096;

/// The most frames left by the first pass that the second copies while writers wait (1 MiB).
const GATED_FRAMES: i64 = 256;

/// How long the second pass waits in all, for SQLite's write lock and for readers still using
/// the WAL (its connection's busy timeout); it gives up after that and a later run tries again.
const RESTART_WAIT: Duration = Duration::from_millis(10);

/// The background checkpoint task; aborted when dropped (with the store), or stopped with a last
/// checkpoint by [`Checkpointer::stop`] (at [`Store::shutdown`](crate::Store::shutdown)).
pub(crate) struct Checkpointer {
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checkpointer {
    /// Stops the task after a last checkpoint that copies the whole WAL into the database file
    /// and truncates the WAL (`TRUNCATE`), so that a store shut down cleanly leaves everything
    /// in the database file. Best effort: a reader (of another process) still using the WAL
    /// leaves it as it is, which loses nothing.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// One checkpoint (`mode` PASSIVE or RESTART): (frames in the WAL, frames copied into the
/// database file). Copied < frames when a reader still needs the rest or writers committed
/// meanwhile.
async fn checkpoint(conn: &mut sqlx::SqliteConnection, mode: &str) -> Result<(i64, i64), sqlx::Error> {
    // The first column is 1 when the checkpoint could not finish: another connection was
    // checkpointing, or (RESTART) readers still used the WAL after `RESTART_WAIT`; the next run
    // retries.
    let (_busy, frames, copied): (i64, i64, i64) =
        sqlx::query_as(&format!("PRAGMA wal_checkpoint({mode})")).fetch_one(conn).await?;
    Ok((frames, copied))
}

/// One run of both passes. `restarted` is the WAL's frame count at the last RESTART pass: the
/// WAL keeps that count until the next write rewinds it, and a RESTART with nothing new to copy
/// would only hold writers back (up to [`RESTART_WAIT`] while a reader still uses the WAL).
async fn run(
    conn: &mut sqlx::SqliteConnection,
    gate: &crate::WriteGate,
    restarted: &mut Option<i64>,
) -> Result<(), sqlx::Error> {
    let (frames, copied) = checkpoint(conn, "PASSIVE").await?;
    if frames >= RESTART_FRAMES && frames - copied <= GATED_FRAMES && *restarted != Some(frames) {
        let _writers = gate.hold().await;
        *restarted = Some(frames);
        checkpoint(conn, "RESTART").await?;
    }
    Ok(())
}

/// Starts checkpointing `pool`'s database every [`INTERVAL`], on a connection of its own opened
/// with the pool's options (and [`RESTART_WAIT`] as its busy timeout); `gate` is the process's
/// SQLite write gate. Must be called within a Tokio runtime. Stops when the pool is closed.
pub(crate) fn start(pool: sqlx::SqlitePool, gate: crate::WriteGate) -> Checkpointer {
    use sqlx::Connection as _;
    let options = (*pool.connect_options()).clone().busy_timeout(RESTART_WAIT);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<sqlx::SqliteConnection> = None;
        let mut restarted = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => {
                    if !pool.is_closed() {
                        last(&options, &gate).await;
                    }
                    return;
                }
            }
            if pool.is_closed() {
                return;
            }
            let result = match &mut conn {
                Some(c) => run(c, &gate, &mut restarted).await,
                None => match sqlx::SqliteConnection::connect_with(&options).await {
                    Ok(c) => run(conn.insert(c), &gate, &mut restarted).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("SQLite WAL checkpoints succeed again");
                }
                Ok(()) => {}
                Err(e) => {
                    // A fresh connection next time (this one may be what failed).
                    conn = None;
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "SQLite WAL checkpoint failed; commits stay durable in the WAL, and the WAL is checkpointed by a commit once it holds {FOREGROUND_PAGES} pages");
                    }
                }
            }
        }
    });
    Checkpointer { task, stop: Some(stop) }
}

/// The last checkpoint, at shutdown: the whole WAL copied and the file truncated, holding the
/// process's write gate (its writers have stopped; other processes' may still write, and a
/// reader still using the WAL makes SQLite give up after its busy timeout).
async fn last(options: &sqlx::sqlite::SqliteConnectOptions, gate: &crate::WriteGate) {
    use sqlx::Connection as _;
    let _writers = gate.hold().await;
    let result = async {
        let mut c = sqlx::SqliteConnection::connect_with(options).await?;
        let r: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut c).await;
        c.close().await?;
        r
    }
    .await;
    match result {
        Ok((0, frames, copied)) => tracing::debug!(frames, copied, "last SQLite WAL checkpoint"),
        Ok((_, frames, copied)) => tracing::info!(
            frames,
            copied,
            "the last SQLite WAL checkpoint gave up (a reader still used the WAL); the WAL keeps the rest"
        ),
        Err(e) => tracing::warn!(error = %e, "the last SQLite WAL checkpoint failed; the WAL keeps what it holds"),
    }
}
