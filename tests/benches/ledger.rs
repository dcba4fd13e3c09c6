//! Append throughput and latency through the real gRPC server, on SQLite and PostgreSQL, with N
//! concurrent clients, against the ceiling of a raw batched INSERT of the same bytes into
//! PostgreSQL. Events are signed before timing starts (agencies sign on their own machines).
//!
//! `DATABASE_URL=postgres://… cargo bench -p accord-e2e --bench ledger`
//! Knobs: ACCORD_BENCH_EVENTS (per configuration, default 20000), ACCORD_BENCH_CLIENTS
//! (default "1,8,32,64"), ACCORD_BENCH_BACKENDS (default "sqlite,postgres"). Writes
//! target/bench/ledger.md.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use accord_e2e::{Backend, TestServer, nominal_registered};
use accord_proto::v1 as pb;

struct Row {
    backend: &'static str,
    clients: usize,
    batch: usize,
    events: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(s: &TestServer, clients: usize, batch: usize, events: usize) -> Row {
    let key = s.key("met-1");
    // Pre-sign and pre-split the work.
    let per_client = events / clients;
    let mut work: Vec<Vec<Vec<pb::SignedEvent>>> = Vec::new();
    for _ in 0..clients {
        let mut requests = Vec::new();
        let mut left = per_client;
        while left > 0 {
            let n = batch.min(left);
            requests.push((0..n).map(|_| nominal_registered("met-police", "pc-1").0.sign(key)).collect());
            left -= n;
        }
        work.push(requests);
    }
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(s.client("met-police", "pc-1", &["offender_manager"]).await);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut c, requests) in conns.into_iter().zip(work) {
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(requests.len());
            for events in requests {
                let t = Instant::now();
                c.ledger().append(pb::AppendRequest { events }).await.expect("append");
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(l) = tasks.join_next().await {
        lat.extend(l.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    Row {
        backend: if s.backend == Backend::Sqlite { "SQLite" } else { "PostgreSQL" },
        clients,
        batch,
        events: per_client * clients,
        secs,
        p50: pct(&lat, 0.50),
        p99: pct(&lat, 0.99),
        max: *lat.last().unwrap(),
    }
}

/// The same bytes, inserted with batched multi-row INSERTs into a plain table (no triggers, no
/// Merkle hashes, no checks) by 8 tasks: what PostgreSQL itself can take on this machine.
async fn raw_insert_ceiling(events: usize) -> Option<f64> {
    let url = accord_store::testing::fresh_postgres_url().await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE events (position BIGINT PRIMARY KEY, event_id BYTEA NOT NULL UNIQUE, stream TEXT NOT NULL,
         stream_version BIGINT NOT NULL, event_type TEXT NOT NULL, author_agency TEXT NOT NULL, key_id TEXT NOT NULL,
         recorded_at BIGINT NOT NULL, body BYTEA NOT NULL, signature BYTEA NOT NULL, leaf_hash BYTEA NOT NULL,
         UNIQUE (stream, stream_version))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let key = accord_client::AgencyKey::generate("k").unwrap();
    let rows: Vec<(Vec<u8>, String, pb::SignedEvent)> = (0..events)
        .map(|_| {
            let (d, n) = nominal_registered("met-police", "pc-1");
            (uuid::Uuid::now_v7().as_bytes().to_vec(), format!("nominal-{n}"), d.sign(&key))
        })
        .collect();
    type Prepared = (usize, (Vec<u8>, String, pb::SignedEvent));
    let chunks: Vec<Vec<Prepared>> =
        rows.into_iter().enumerate().collect::<Vec<_>>().chunks(500).map(<[_]>::to_vec).collect();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = chunks.len().div_ceil(8);
    for part in chunks.chunks(per_task).map(<[_]>::to_vec) {
        let pool = pool.clone();
        tasks.spawn(async move {
            for chunk in part {
                let mut tx = pool.begin().await.unwrap();
                let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                    "INSERT INTO events (position, event_id, stream, stream_version, event_type, author_agency, key_id, recorded_at, body, signature, leaf_hash) ",
                );
                qb.push_values(chunk, |mut b, (i, (id, stream, e))| {
                    b.push_bind(i as i64)
                        .push_bind(id)
                        .push_bind(stream)
                        .push_bind(0i64)
                        .push_bind("accord.v1.NominalRegistered")
                        .push_bind("met-police")
                        .push_bind(e.key_id)
                        .push_bind(0i64)
                        .push_bind(e.body)
                        .push_bind(e.signature)
                        .push_bind(vec![0u8; 32]);
                });
                qb.build().execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Some(events as f64 / start.elapsed().as_secs_f64())
}

fn crypto_costs() -> (Duration, Duration) {
    let key = accord_client::AgencyKey::generate("k").unwrap();
    let events: Vec<pb::SignedEvent> =
        (0..2000).map(|_| nominal_registered("met-police", "pc-1").0.sign(&key)).collect();
    let vk = key.signing_key().verifying_key();
    let t = Instant::now();
    for e in &events {
        accord_domain::signing::verify_body(&vk, &e.body, &e.signature).unwrap();
    }
    let verify = t.elapsed() / events.len() as u32;
    let t = Instant::now();
    for e in &events {
        std::hint::black_box(accord_domain::signing::sign_body(key.signing_key(), &e.body));
    }
    (verify, t.elapsed() / events.len() as u32)
}

fn main() {
    // ACCORD_BENCH_TELEMETRY=FILTER: install the server's logging and tracing (JSON lines to
    // stderr, and OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set) to measure what they cost.
    let telemetry = std::env::var("ACCORD_BENCH_TELEMETRY").ok().map(|filter| {
        accord_server::telemetry::init(accord_server::config::LogFormat::Json, &filter, true).expect("telemetry")
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let events = env_usize("ACCORD_BENCH_EVENTS", 20_000);
    let clients: Vec<usize> = std::env::var("ACCORD_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8,32,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let mut rows = Vec::new();
    let mut ceiling = None;
    rt.block_on(async {
        let backends = std::env::var("ACCORD_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let name = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
            if !backends.split(',').any(|b| b.trim() == name) {
                continue;
            }
            let Some(s) = TestServer::start(backend).await else {
                println!("PostgreSQL skipped: DATABASE_URL is not set");
                continue;
            };
            for &c in &clients {
                // Fewer events for one client: it measures latency, not throughput.
                let n = if c == 1 { events / 4 } else { events };
                let row = run(&s, c, 1, n).await;
                println!("{} clients={} batch=1: {:.0} events/s", row.backend, c, row.events as f64 / row.secs);
                rows.push(row);
            }
            for batch in [10, 100] {
                let row = run(&s, 32, batch, events).await;
                println!("{} clients=32 batch={batch}: {:.0} events/s", row.backend, row.events as f64 / row.secs);
                rows.push(row);
            }
            s.stop().await;
        }
        ceiling = raw_insert_ceiling(events * 2).await;
    });
    let (verify, sign) = crypto_costs();

    let mut md = String::new();
    writeln!(md, "| backend | clients | events/request | events | events/s | p50 request | p99 request | max |")
        .unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
            r.backend,
            r.clients,
            r.batch,
            r.events,
            r.events as f64 / r.secs,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3
        )
        .unwrap();
    }
    if let Some(c) = ceiling {
        writeln!(md, "\nRaw batched INSERT of the same bytes into PostgreSQL (8 tasks, 500 rows per transaction): {c:.0} events/s").unwrap();
        let best_pg =
            rows.iter().filter(|r| r.backend == "PostgreSQL").map(|r| r.events as f64 / r.secs).fold(0.0, f64::max);
        writeln!(md, "Best Accord PostgreSQL append rate / raw INSERT ceiling: {:.2}", best_pg / c).unwrap();
    }
    writeln!(
        md,
        "\nEd25519 per event, in process: verify_strict {:.1} µs, sign {:.1} µs",
        verify.as_secs_f64() * 1e6,
        sign.as_secs_f64() * 1e6
    )
    .unwrap();
    println!("\n{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ledger.md"), md).unwrap();
    drop(rt);
    if let Some(t) = telemetry {
        t.shutdown();
    }
}
