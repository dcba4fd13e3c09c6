//! What the access log costs a read, through the real gRPC server, on SQLite and PostgreSQL.
//!
//! On one log (a school's inbox holding ACCORD_BENCH_AUDIT_ITEMS Encompass notifications), the
//! same server configuration is run twice in the same process and database: once with every
//! `Views.Query` recorded in the access log (as the server always runs), once with the benchmark-only
//! setting that leaves Views answers unrecorded. For each:
//! - **closed loop**: ACCORD_BENCH_AUDIT_CLIENTS clients query the inbox (newest first, a page of
//!   20) back to back for ACCORD_BENCH_AUDIT_SECS seconds: reads/s and latency;
//! - **paced**: the same clients together at ACCORD_BENCH_AUDIT_RATE reads/s (default 1000) for
//!   the same time: latency p50/p99/max and the rate achieved;
//! - for the recorded runs, the access records written and their group-commit batches (records
//!   per signed access-log checkpoint).
//!
//! `DATABASE_URL=postgres://… cargo bench -p accord-e2e --bench audit`
//! Knobs: ACCORD_BENCH_BACKENDS (default "sqlite,postgres"), ACCORD_BENCH_AUDIT_ITEMS (default
//! 2000), ACCORD_BENCH_AUDIT_CLIENTS (default 8), ACCORD_BENCH_AUDIT_SECS (default 10),
//! ACCORD_BENCH_AUDIT_RATE (default 1000). Writes target/bench/audit.md.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use accord_e2e::{Backend, TestServer, encompass_notification};
use accord_proto::v1::{self as pb, ReadModel};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One measured run.
struct Run {
    reads: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.reads as f64 / self.secs
    }
}

fn inbox() -> pb::QueryViewRequest {
    pb::QueryViewRequest { model: ReadModel::SchoolInbox as i32, newest_first: true, limit: 20, ..Default::default() }
}

/// `clients` DSL clients query for `secs`; paced at `rate` reads/s in all when given.
async fn run(s: &TestServer, clients: usize, secs: u64, rate: Option<usize>) -> Run {
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
        let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut next = Instant::now();
            while Instant::now() < end {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                let t = Instant::now();
                let r = c.views().query(inbox()).await.expect("query").into_inner();
                lat.push(t.elapsed());
                assert!(!r.items.is_empty());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    Run { reads: latencies.len(), secs, latencies }
}

async fn seed(s: &TestServer, items: usize) {
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let key = s.key("met-1");
    let mut left = items;
    while left > 0 {
        let n = left.min(500);
        let batch = (0..n)
            .map(|_| encompass_notification("met-police", "do-1", "st-marys-school", "100234").0.sign(key))
            .collect();
        police.append(batch).await.expect("seed");
        left -= n;
    }
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    for _ in 0..600 {
        let r = dsl
            .views()
            .query(pb::QueryViewRequest { model: ReadModel::SchoolInbox as i32, limit: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        if r.log_size >= s.store().log_size().await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the read models never caught up");
}

fn row(out: &mut String, backend: &str, mode: &str, kind: &str, r: &Run, extra: &str) {
    let line = format!(
        "| {backend} | {mode} | {kind} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {extra} |",
        r.reads,
        r.rate(),
        pct(&r.latencies, 0.5),
        pct(&r.latencies, 0.99),
        pct(&r.latencies, 1.0)
    );
    println!("{line}");
    let _ = writeln!(out, "{line}");
}

async fn bench(backend: Backend, out: &mut String) {
    let Some(mut s) = TestServer::start(backend).await else {
        eprintln!("skipping PostgreSQL: DATABASE_URL is not set");
        return;
    };
    let name = if backend == Backend::Sqlite { "SQLite" } else { "PostgreSQL" };
    let (items, clients, secs, rate) = (
        env_usize("ACCORD_BENCH_AUDIT_ITEMS", 2000),
        env_usize("ACCORD_BENCH_AUDIT_CLIENTS", 8),
        env_usize("ACCORD_BENCH_AUDIT_SECS", 10) as u64,
        env_usize("ACCORD_BENCH_AUDIT_RATE", 1000),
    );
    seed(&s, items).await;
    // Warm up caches and connections.
    run(&s, clients, 2, None).await;
    let mut closed = Vec::new();
    for recorded in [false, true] {
        s.restart_with(|st| st.unrecorded_views_for_benchmarks = !recorded).await;
        run(&s, clients, 1, None).await;
        let mode = if recorded { "recorded" } else { "unrecorded" };
        let size0 = s.store().access_log_size().await.unwrap();
        let cps0 = s.store().access_checkpoints(0, u32::MAX).await.unwrap().len();
        let c = run(&s, clients, secs, None).await;
        let p = run(&s, clients, secs, Some(rate)).await;
        let written = s.store().access_log_size().await.unwrap() - size0;
        let batches = s.store().access_checkpoints(0, u32::MAX).await.unwrap().len() - cps0;
        let extra = if recorded {
            format!(
                "{written} access records in {batches} commits ({:.1} per commit)",
                written as f64 / batches.max(1) as f64
            )
        } else {
            format!("{written} access records")
        };
        row(out, name, mode, "closed loop", &c, &extra);
        row(out, name, mode, &format!("paced {rate}/s"), &p, "");
        closed.push(c.rate());
    }
    let line = format!(
        "\n{name}: the access log costs {:.1} % of closed-loop read throughput ({:.0} → {:.0} reads/s).\n",
        100.0 * (1.0 - closed[1] / closed[0]),
        closed[0],
        closed[1]
    );
    println!("{line}");
    out.push_str(&line);
    let url = s.database_url.clone();
    s.stop().await;
    if backend == Backend::Postgres {
        drop_database(&url).await;
    }
}

async fn drop_database(url: &str) {
    use sqlx::Connection;
    let Ok(base) = std::env::var("DATABASE_URL") else { return };
    let name = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
        let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let backends = std::env::var("ACCORD_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let mut out = String::from(
        "| backend | Views answers | load | reads | reads/s | p50 ms | p99 ms | max ms | access log |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    println!("{out}");
    rt.block_on(async {
        for b in backends.split(',') {
            match b.trim() {
                "sqlite" => bench(Backend::Sqlite, &mut out).await,
                "postgres" => bench(Backend::Postgres, &mut out).await,
                other => eprintln!("unknown backend {other}"),
            }
        }
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("audit.md"), out).expect("write results");
}
