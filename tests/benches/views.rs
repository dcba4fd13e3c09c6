//! The read models (`accord_views`) on SQLite and PostgreSQL, through the real gRPC server:
//!
//! 1. **Full rebuild.** N events of a realistic mix (Encompass notifications from the force to two
//!    schools 60 %, the schools' acknowledgements 20 %, consents and support referrals 20 %) are
//!    loaded through gRPC (pre-signed, 500 events per request, several concurrent workers; the load
//!    is timed and reported on its own) and the server's live read models are awaited. Then, on
//!    that log: the queries of 3, and two processes of their own (as `accord rebuild` is): one
//!    restores a `Projector` from the stored rows (what a server does on start), the other drops
//!    the rows and rebuilds from zero (`rebuild`, timed), then folds the log again without writing
//!    (`as_of`: the fold alone) and answers St Mary's inbox as of the middle of the log
//!    (`answer_as_of`, the audit replay). Each reports its time and peak RSS (`VmHWM`, the
//!    rebuild's read before the extra folds); the two digests must be equal.
//! 2. **Projection lag under steady load.** A paced appender of Encompass notifications (50 per
//!    request) at a target rate, two subscribers (`Subscribe`, school inbox, one per school); lag =
//!    time an item reaches its subscriber − time its append was acknowledged. A second, shorter
//!    run adds DSLs querying their inbox meanwhile and reports their latency.
//! 3. **Query latency.** `Query` (limit 100) of a school's inbox and of the force's agency
//!    records, from concurrent clients in this process; on a small log and on the rebuild's.
//!
//! `DATABASE_URL=postgres://… cargo bench -p accord-e2e --bench views`
//! Knobs: ACCORD_BENCH_BACKENDS (default "sqlite,postgres"), ACCORD_BENCH_PARTS (default
//! "rebuild,lag,query"), ACCORD_BENCH_REBUILD_EVENTS (default 1000000), for PostgreSQL
//! ACCORD_BENCH_REBUILD_EVENTS_POSTGRES (default the smaller of that and 300000: loading through
//! the Ledger runs at 3,500–5,700 events/s there on 2 cores, so 1M would take the run past 20
//! minutes), ACCORD_BENCH_LOAD_WORKERS (default 8), ACCORD_BENCH_RATE (events/s, default 5000),
//! ACCORD_BENCH_LAG_SECS (default 20), ACCORD_BENCH_LAG_CLIENTS (default 4),
//! ACCORD_BENCH_LAG_QUERY_CLIENTS (DSLs querying in the second lag run; default 2, 0: no second
//! run), ACCORD_BENCH_QUERIES (default 20000), ACCORD_BENCH_QUERY_CLIENTS (default 8),
//! ACCORD_BENCH_QUERY_ITEMS (notifications per school on the small log, default 3000). Writes
//! target/bench/views.md. The PostgreSQL databases it creates are dropped at the end.
//!
//! Each part runs on each backend in a process of its own (a heap that held a million events
//! slows the allocator for whatever runs next in that process), whose rows the parent collects.
//! Every table gives the CPU cores this benchmark (with its children) and everything else on the
//! machine (PostgreSQL included) used meanwhile, from /proc: on a shared machine, a phase that ran
//! while something else was busy reads accordingly. Needs Linux (/proc) for RSS and CPU figures.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use accord_client::EventDraft;
use accord_e2e::{Backend, TestServer, consent_recorded, encompass_notification, support_referral};
use accord_proto::v1::{self as pb, ReadModel};

/// The one police user: a disclosure officer who is also the sex-work liaison officer (a token
/// must name the author's user, and one request carries both kinds of event).
const OFFICER: &str = "do-1";
const OFFICER_ROLES: &[&str] = &["disclosure_officer", "swlo"];
/// (agency, URN, DSL user, key id).
const SCHOOLS: [(&str, &str, &str, &str); 2] =
    [("st-marys-school", "100234", "dsl-1", "school-1"), ("st-johns-school", "100235", "dsl-2", "school-2")];
const LOAD_BATCH: usize = 500;
const LAG_BATCH: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn pct_f(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn backend_name(b: Backend) -> &'static str {
    if b == Backend::Sqlite { "SQLite" } else { "PostgreSQL" }
}

/// A field of /proc/self/status in KiB (`VmHWM`, `VmRSS`), or 0 where there is none.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// CPU time so far, in clock ticks (USER_HZ, 100 on Linux): busy on the whole machine, and of
/// this process with the children it has waited for.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    at: Instant,
    busy: u64,
    own: u64,
}

impl Cpu {
    fn now() -> Cpu {
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_owned();
                let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal
                Some(v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum())
            })
            .unwrap_or(0);
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                // Fields after the command name, from the state (field 3): utime, stime, cutime
                // and cstime are fields 14–17.
                let f: Vec<u64> = s.rsplit_once(')')?.1.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
                Some(f.get(11..15)?.iter().sum())
            })
            .unwrap_or(0);
        Cpu { at: Instant::now(), busy, own }
    }

    /// Cores used since `self`: (this process and its children, everything else on the machine).
    fn since(self) -> (f64, f64) {
        let n = Cpu::now();
        let secs = (n.at - self.at).as_secs_f64().max(1e-9);
        let own = n.own.saturating_sub(self.own) as f64 / 100.0 / secs;
        let busy = n.busy.saturating_sub(self.busy) as f64 / 100.0 / secs;
        (own, (busy - own).max(0.0))
    }
}

fn gib(kib: u64) -> f64 {
    kib as f64 / (1024.0 * 1024.0)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// An acknowledgement of notification `id` by the school's DSL (as in tests/read_models.rs).
fn ack(school: &str, user: &str, id: &str) -> EventDraft {
    EventDraft::new(
        &format!("encompass-{id}"),
        &pb::EncompassNotificationAcknowledged { notification_id: id.into(), acknowledged_by: user.into() },
    )
    .author(school, user, "dsl")
    .legal_basis("DAA2021-s49A", "acknowledge an Operation Encompass notification")
    .subject("agency", school)
    .regime(pb::Regime::UkGdpr)
}

// ------------------------------------------------------------------------------------------------
// 1. Load and full rebuild
// ------------------------------------------------------------------------------------------------

/// One request of the load: who sends it (0 police, 1 St Mary's, 2 St John's) and its events.
struct Req {
    who: usize,
    events: Vec<pb::SignedEvent>,
}

/// What one load worker sends, in order. Every request carries new notifications and consents
/// plus the referrals under the consents of its previous request; one notification in three is
/// acknowledged by its school in a later request (500 acknowledgements per request). Per full
/// cycle: 376 notifications (60 %), 125 acknowledgements (20 %), 62 consents and 62 referrals
/// (20 %).
fn plan_worker(keys: &Keys<'_>, events: usize, counts: &mut [usize; 3]) -> Vec<Req> {
    let met = keys.met;
    let consents_per = LOAD_BATCH / 8;
    let mut reqs = Vec::new();
    let mut acks: [Vec<pb::SignedEvent>; 2] = [Vec::new(), Vec::new()];
    let mut prev_consents: Vec<(String, String)> = Vec::new();
    let mut total = 0;
    let mut k = 0usize;
    while total < events {
        let left = events - total;
        let mut ev = Vec::with_capacity(LOAD_BATCH);
        for (consent, person) in prev_consents.drain(..) {
            ev.push(support_referral("met-police", OFFICER, &consent, &person, "solace-isva").0.sign(met));
        }
        let c = if left > 2 * LOAD_BATCH { consents_per } else { 0 };
        for _ in 0..c {
            let person = uuid::Uuid::now_v7().to_string();
            let (d, id) = consent_recorded("met-police", OFFICER, &person, &["solace-isva"]);
            ev.push(d.sign(met));
            prev_consents.push((id, person));
        }
        let room = LOAD_BATCH - ev.len();
        let m = room.min(left.saturating_sub(ev.len()) * 3 / 4).max(1);
        let mut added_acks = 0;
        for _ in 0..m {
            let school = k % 2;
            let (agency, urn, dsl, _) = SCHOOLS[school];
            let (d, id) = encompass_notification("met-police", OFFICER, agency, urn);
            ev.push(d.sign(met));
            counts[school] += 1;
            if k.is_multiple_of(3) {
                acks[school].push(ack(agency, dsl, &id).sign(keys.schools[school]));
                counts[2] += 1;
                added_acks += 1;
            }
            k += 1;
        }
        total += ev.len() + added_acks;
        reqs.push(Req { who: 0, events: ev });
        for (school, queue) in acks.iter_mut().enumerate() {
            if queue.len() >= LOAD_BATCH {
                reqs.push(Req { who: 1 + school, events: std::mem::take(queue) });
            }
        }
    }
    for (school, queue) in acks.into_iter().enumerate() {
        if !queue.is_empty() {
            reqs.push(Req { who: 1 + school, events: queue });
        }
    }
    reqs
}

struct Load {
    events: usize,
    sign_secs: f64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    /// Notifications per school.
    per_school: [usize; 2],
    /// Acknowledgements.
    acks: usize,
    /// Cores used during the load: (this process, everything else).
    cpu: (f64, f64),
}

/// The signing keys the load uses.
struct Keys<'a> {
    met: &'a accord_client::AgencyKey,
    schools: [&'a accord_client::AgencyKey; 2],
}

/// Loads about `events` events with `workers` concurrent workers (each with a police and two
/// school connections).
async fn load(s: &TestServer, events: usize, workers: usize) -> Load {
    let t = Instant::now();
    let per_worker = events / workers;
    let keys = Keys { met: s.key("met-1"), schools: [s.key(SCHOOLS[0].3), s.key(SCHOOLS[1].3)] };
    let keys = &keys;
    let plans: Vec<(Vec<Req>, [usize; 3])> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(move || {
                        let mut counts = [0; 3];
                        let plan = plan_worker(keys, per_worker, &mut counts);
                        (plan, counts)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("signing thread")).collect()
        })
    });
    let sign_secs = t.elapsed().as_secs_f64();
    let mut per_school = [0; 2];
    let mut acks = 0;
    let mut total = 0;
    for (plan, counts) in &plans {
        per_school[0] += counts[0];
        per_school[1] += counts[1];
        acks += counts[2];
        total += plan.iter().map(|r| r.events.len()).sum::<usize>();
    }
    println!("  signed {total} events in {sign_secs:.1} s");
    let mut conns = Vec::new();
    for _ in 0..workers {
        conns.push([
            s.client("met-police", OFFICER, OFFICER_ROLES).await,
            s.client(SCHOOLS[0].0, SCHOOLS[0].2, &["dsl"]).await,
            s.client(SCHOOLS[1].0, SCHOOLS[1].2, &["dsl"]).await,
        ]);
    }
    let start = Instant::now();
    let cpu = Cpu::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut c, (plan, _)) in conns.into_iter().zip(plans) {
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(plan.len());
            for r in plan {
                let t = Instant::now();
                if let Err(e) = c[r.who].ledger().append(pb::AppendRequest { events: r.events }).await {
                    panic!("append refused: {:?} {}", e.code(), e.message());
                }
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(l) = tasks.join_next().await {
        lat.extend(l.expect("load worker"));
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.since();
    lat.sort();
    Load { events: total, sign_secs, secs, p50: pct(&lat, 0.5), p99: pct(&lat, 0.99), per_school, acks, cpu }
}

/// Waits until the server's read models have applied the whole log (a query catches up first).
async fn wait_projected(s: &TestServer) -> f64 {
    let t = Instant::now();
    let mut c = s.client(SCHOOLS[0].0, SCHOOLS[0].2, &["dsl"]).await;
    let size = s.store().log_size().await.expect("log size");
    loop {
        let r = c
            .views()
            .query(pb::QueryViewRequest { model: ReadModel::SchoolInbox as i32, limit: 1, ..Default::default() })
            .await
            .expect("query")
            .into_inner();
        if r.log_size >= size {
            return t.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many read-model rows are stored, and the bytes of their documents (looked at directly).
async fn view_stats(database_url: &str) -> (i64, i64) {
    use sqlx::Connection as _;
    const SQL: &str = "SELECT COUNT(*), COALESCE(SUM(LENGTH(doc)), 0) FROM view_items";
    if database_url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(database_url).await.expect("connect");
        sqlx::query_as::<_, (i64, i64)>(SQL).fetch_one(&mut c).await.expect("view stats")
    } else {
        let mut c = sqlx::SqliteConnection::connect(database_url).await.expect("connect");
        sqlx::query_as::<_, (i64, i64)>(SQL).fetch_one(&mut c).await.expect("view stats")
    }
}

/// What a child process measured: `key=value` pairs.
type ChildReport = HashMap<String, String>;

/// Runs this benchmark binary again as a child doing `role` on `database_url` (a process of its
/// own, as `accord rebuild` is, so its peak RSS is the projection's alone).
async fn run_child(role: &'static str, database_url: &str) -> ChildReport {
    let url = database_url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env("ACCORD_BENCH_CHILD", role)
            .env("ACCORD_BENCH_CHILD_DB", url)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("child runs")
    })
    .await
    .expect("child");
    assert!(out.status.success(), "child {role} failed: {}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("CHILD ")).expect("child reports");
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The child's side: `restore` opens a projector on the stored rows; `rebuild` drops them and
/// replays the log from zero.
fn child(role: &str) {
    let url = std::env::var("ACCORD_BENCH_CHILD_DB").expect("ACCORD_BENCH_CHILD_DB");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = accord_store::Store::open(&url, None, Default::default()).await.expect("store opens");
        let sharing = accord_ledger::Sharing::load(store.clone()).await.expect("sharing loads");
        let rss_before = proc_status_kib("VmRSS:");
        match role {
            "restore" => {
                let t = Instant::now();
                let cpu = Cpu::now();
                let projector = accord_views::Projector::open(sharing).await.expect("projector opens");
                let secs = t.elapsed().as_secs_f64();
                let (own, others) = cpu.since();
                let t = Instant::now();
                let digest = projector.digest().await;
                let digest_secs = t.elapsed().as_secs_f64();
                println!(
                    "CHILD restore_secs={secs:.3} digest_secs={digest_secs:.3} cpu_own={own:.2} cpu_others={others:.2} hwm_kib={} rss_before_kib={rss_before} digest={}",
                    proc_status_kib("VmHWM:"),
                    hex(&digest)
                );
            }
            "rebuild" => {
                let t = Instant::now();
                store.reset_views().await.expect("rows dropped");
                let drop_secs = t.elapsed().as_secs_f64();
                let projector = accord_views::Projector::open(sharing).await.expect("projector opens");
                let t = Instant::now();
                let cpu = Cpu::now();
                let (progress, digest) = projector.rebuild().await.expect("rebuild");
                let secs = t.elapsed().as_secs_f64();
                let (own, others) = cpu.since();
                // The digest is computed inside `rebuild`; time it again to tell it apart.
                let t = Instant::now();
                let again = projector.digest().await;
                let digest_secs = t.elapsed().as_secs_f64();
                assert_eq!(digest, again);
                let hwm = proc_status_kib("VmHWM:");
                // The same fold without writing rows (what an as-of query does), to tell the fold
                // from the database writes.
                let t = Instant::now();
                let folded = projector.as_of(progress.next_position - 1).await.expect("as of");
                let fold_secs = t.elapsed().as_secs_f64();
                assert_eq!(folded.digest(), digest, "a fold equals the rebuild");
                drop(folded);
                // The audit replay: what St Mary's DSL was answered as of the middle of the log.
                let principal = accord_auth::Principal {
                    agency: accord_domain::AgencyId::parse(SCHOOLS[0].0.to_owned()).expect("agency id"),
                    user: accord_domain::UserId::parse(SCHOOLS[0].2.to_owned()).expect("user id"),
                    roles: vec![accord_domain::Role::parse("dsl".to_owned()).expect("role")],
                    token_id: None,
                    issuer: "bench".into(),
                };
                let t = Instant::now();
                let (items, _) = accord_views::answer_as_of(
                    &projector,
                    &principal,
                    accord_views::Model::SchoolInbox,
                    progress.next_position / 2,
                    accord_domain::Timestamp::now(),
                    accord_views::DisclosureLimits::default(),
                )
                .await
                .expect("as-of answer");
                let as_of_secs = t.elapsed().as_secs_f64();
                assert!(items.len() >= 100);
                println!(
                    "CHILD drop_secs={drop_secs:.3} rebuild_secs={secs:.3} digest_secs={digest_secs:.3} fold_secs={fold_secs:.3} as_of_secs={as_of_secs:.3} as_of_items={} cpu_own={own:.2} cpu_others={others:.2} events={} batches={} hwm_kib={hwm} rss_before_kib={rss_before} digest={}",
                    items.len(),
                    progress.events,
                    progress.batches,
                    hex(&digest)
                );
            }
            other => panic!("unknown child role {other}"),
        }
        store.shutdown().await;
    });
}

struct RebuildRow {
    backend: &'static str,
    load: Load,
    projected_after_load: f64,
    server_hwm_kib: u64,
    /// Read-model rows stored and the bytes of their documents.
    view_rows: (i64, i64),
    restore: ChildReport,
    rebuild: ChildReport,
}

fn f(r: &ChildReport, k: &str) -> f64 {
    r.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

// ------------------------------------------------------------------------------------------------
// 2. Projection lag
// ------------------------------------------------------------------------------------------------

struct LagRow {
    backend: &'static str,
    target_rate: usize,
    clients: usize,
    events: usize,
    achieved_rate: f64,
    append_p50: Duration,
    append_p99: Duration,
    received: usize,
    lag_p50: f64,
    lag_p99: f64,
    lag_max: f64,
    negative: usize,
    cpu: (f64, f64),
    /// Concurrent queries of the inbox.
    queries: Option<QueriesMeanwhile>,
}

/// Queries of St Mary's inbox made while the log grows.
struct QueriesMeanwhile {
    clients: usize,
    queries: usize,
    /// Items per answer, on average.
    items: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn lag(s: &TestServer, rate: usize, secs: usize, clients: usize, query_clients: usize) -> LagRow {
    let met = s.key("met-1");
    let requests_per_client = (rate * secs / LAG_BATCH / clients).max(1);
    // Pre-signed: per client, per request, the events and (school, notification id).
    type Planned = Vec<(Vec<pb::SignedEvent>, Vec<(usize, String)>)>;
    let plans: Vec<Planned> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    scope.spawn(move || {
                        (0..requests_per_client)
                            .map(|r| {
                                (0..LAG_BATCH)
                                    .map(|i| {
                                        let school = (c + r + i) % 2;
                                        let (agency, urn, _, _) = SCHOOLS[school];
                                        let (d, id) = encompass_notification("met-police", OFFICER, agency, urn);
                                        (d.sign(met), (school, id))
                                    })
                                    .unzip()
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("signing thread")).collect()
        })
    });
    let mut expected = [0usize; 2];
    for (_, ids) in plans.iter().flatten() {
        for (school, _) in ids {
            expected[*school] += 1;
        }
    }
    // Subscribers first, one per school.
    let mut subs = tokio::task::JoinSet::new();
    for (school, &(agency, _, dsl, _)) in SCHOOLS.iter().enumerate() {
        let mut c = s.client(agency, dsl, &["dsl"]).await;
        let mut stream = c
            .views()
            .subscribe(pb::SubscribeViewRequest { model: ReadModel::SchoolInbox as i32, after_position: None })
            .await
            .expect("subscribe")
            .into_inner();
        let want = expected[school];
        subs.spawn(async move {
            let _keep = c;
            let mut got: Vec<(String, Instant)> = Vec::with_capacity(want);
            while got.len() < want {
                match tokio::time::timeout(Duration::from_secs(15), stream.message()).await {
                    Ok(Ok(Some(item))) => got.push((item.item_id, Instant::now())),
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => panic!("subscription failed: {e}"),
                    Err(_) => {
                        eprintln!("  subscriber: nothing for 15 s, {} of {want} received", got.len());
                        break;
                    }
                }
            }
            got
        });
    }
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(s.client("met-police", OFFICER, OFFICER_ROLES).await);
    }
    let interval = Duration::from_secs_f64((LAG_BATCH * clients) as f64 / rate as f64);
    let cpu = Cpu::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    // Optionally, DSLs querying their inbox meanwhile (each query waits for the read models to
    // catch up with the log and shares the projection's lock).
    let stop_queries = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut queriers = tokio::task::JoinSet::new();
    for _ in 0..query_clients {
        let mut c = s.client(SCHOOLS[0].0, SCHOOLS[0].2, &["dsl"]).await;
        let stop = std::sync::Arc::clone(&stop_queries);
        queriers.spawn(async move {
            // From half a second into the run: the inbox holds more than a page by then.
            tokio::time::sleep_until(start + Duration::from_millis(500)).await;
            let mut lat = Vec::new();
            let mut items = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                items += c
                    .views()
                    .query(pb::QueryViewRequest {
                        model: ReadModel::SchoolInbox as i32,
                        limit: 100,
                        ..Default::default()
                    })
                    .await
                    .expect("query")
                    .into_inner()
                    .items
                    .len();
                lat.push(t.elapsed());
            }
            (lat, items)
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (mut c, plan)) in conns.into_iter().zip(plans).enumerate() {
        let first = start + interval * i as u32 / clients as u32;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(first, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut acked: Vec<(String, Instant)> = Vec::new();
            let mut lat = Vec::new();
            for (events, ids) in plan {
                tick.tick().await;
                let t = Instant::now();
                c.ledger().append(pb::AppendRequest { events }).await.expect("append");
                let done = Instant::now();
                lat.push(done - t);
                acked.extend(ids.into_iter().map(|(_, id)| (id, done)));
            }
            (acked, lat)
        });
    }
    let mut acked: HashMap<String, Instant> = HashMap::new();
    let mut lat = Vec::new();
    let mut last = start.into_std();
    while let Some(r) = tasks.join_next().await {
        let (a, l) = r.expect("appender");
        for (id, t) in a {
            last = last.max(t);
            acked.insert(id, t);
        }
        lat.extend(l);
    }
    let cpu = cpu.since();
    stop_queries.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut query_lat = Vec::new();
    let mut query_items = 0;
    while let Some(l) = queriers.join_next().await {
        let (l, n) = l.expect("query client");
        query_lat.extend(l);
        query_items += n;
    }
    query_lat.sort();
    let queries = (query_clients > 0 && !query_lat.is_empty()).then(|| QueriesMeanwhile {
        clients: query_clients,
        queries: query_lat.len(),
        items: query_items as f64 / query_lat.len() as f64,
        p50: pct(&query_lat, 0.5),
        p99: pct(&query_lat, 0.99),
        max: *query_lat.last().expect("some"),
    });
    let events = acked.len();
    let achieved_rate = events as f64 / (last - start.into_std()).as_secs_f64();
    let mut lags = Vec::new();
    let mut received = 0;
    while let Some(r) = subs.join_next().await {
        for (id, t) in r.expect("subscriber") {
            if let Some(a) = acked.remove(&id) {
                received += 1;
                let l = if t >= a { (t - a).as_secs_f64() } else { -(a - t).as_secs_f64() };
                lags.push(l * 1e3);
            }
        }
    }
    lags.sort_by(f64::total_cmp);
    lat.sort();
    let negative = lags.iter().filter(|l| **l < 0.0).count();
    LagRow {
        backend: backend_name(s.backend),
        target_rate: rate,
        clients,
        events,
        achieved_rate,
        append_p50: pct(&lat, 0.5),
        append_p99: pct(&lat, 0.99),
        received,
        lag_p50: pct_f(&lags, 0.5),
        lag_p99: pct_f(&lags, 0.99),
        lag_max: *lags.last().unwrap_or(&f64::NAN),
        negative,
        cpu,
        queries,
    }
}

// ------------------------------------------------------------------------------------------------
// 3. Query latency
// ------------------------------------------------------------------------------------------------

struct QueryRow {
    backend: &'static str,
    log: String,
    model: &'static str,
    held: usize,
    clients: usize,
    queries: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu: (f64, f64),
}

#[allow(clippy::too_many_arguments)]
async fn query_latency(
    s: &TestServer,
    log: &str,
    who: (&str, &str, &[&str]),
    model: ReadModel,
    held: usize,
    clients: usize,
    queries: usize,
) -> QueryRow {
    let per = queries / clients;
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(s.client(who.0, who.1, who.2).await);
    }
    let want = held.min(100);
    let start = Instant::now();
    let cpu = Cpu::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let r = c
                    .views()
                    .query(pb::QueryViewRequest { model: model as i32, limit: 100, ..Default::default() })
                    .await
                    .expect("query")
                    .into_inner();
                lat.push(t.elapsed());
                assert_eq!(r.items.len(), want, "a query returns a full page");
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(l) = tasks.join_next().await {
        lat.extend(l.expect("query client"));
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.since();
    lat.sort();
    QueryRow {
        backend: backend_name(s.backend),
        log: log.to_owned(),
        model: match model {
            ReadModel::SchoolInbox => "school inbox (DSL)",
            ReadModel::AgencyRecords => "agency records (force)",
            _ => "other",
        },
        held,
        clients,
        queries: per * clients,
        secs,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        max: *lat.last().expect("queries ran"),
        cpu,
    }
}

/// Both query measurements on `s`, whose St Mary's inbox holds `school_items` and whose force
/// authored `force_items` records.
async fn queries(s: &TestServer, log: &str, school_items: usize, force_items: usize, out: &mut Vec<QueryRow>) {
    let clients = env_usize("ACCORD_BENCH_QUERY_CLIENTS", 8);
    let n = env_usize("ACCORD_BENCH_QUERIES", 20_000);
    for (who, model, held) in [
        ((SCHOOLS[0].0, SCHOOLS[0].2, &["dsl"][..]), ReadModel::SchoolInbox, school_items),
        (("met-police", OFFICER, &["disclosure_officer"][..]), ReadModel::AgencyRecords, force_items),
    ] {
        let row = query_latency(s, log, who, model, held, clients, n).await;
        println!(
            "{} {} {}: {:.0} queries/s, p50 {:.2} ms, p99 {:.2} ms",
            row.backend,
            row.log,
            row.model,
            row.queries as f64 / row.secs,
            ms(row.p50),
            ms(row.p99)
        );
        out.push(row);
    }
}

/// Appends `per_school` notifications to each school (batches of 500) and waits for the read
/// models.
async fn small_log(s: &TestServer, per_school: usize) {
    let met = s.key("met-1");
    let mut c = s.client("met-police", OFFICER, OFFICER_ROLES).await;
    let all: Vec<pb::SignedEvent> = (0..2 * per_school)
        .map(|i| {
            let (agency, urn, _, _) = SCHOOLS[i % 2];
            encompass_notification("met-police", OFFICER, agency, urn).0.sign(met)
        })
        .collect();
    for chunk in all.chunks(LOAD_BATCH) {
        c.ledger().append(pb::AppendRequest { events: chunk.to_vec() }).await.expect("append");
    }
    wait_projected(s).await;
}

/// Drops a PostgreSQL database this benchmark created.
async fn drop_database(database_url: &str) {
    use sqlx::Connection as _;
    let (Ok(base), Some((_, name))) = (std::env::var("DATABASE_URL"), database_url.rsplit_once('/')) else {
        return;
    };
    let name = name.split('?').next().unwrap_or(name);
    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await
        && let Err(e) = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await
    {
        eprintln!("dropping {name}: {e}");
    }
}

async fn start(backend: Backend) -> Option<TestServer> {
    let s = TestServer::start(backend).await;
    if s.is_none() {
        println!("PostgreSQL skipped: DATABASE_URL is not set");
    }
    s
}

async fn stop(s: TestServer) {
    let url = s.database_url.clone();
    let pg = s.backend == Backend::Postgres;
    s.stop().await;
    if pg {
        drop_database(&url).await;
    }
}

/// Prints one row of one report table for the parent process to collect.
fn emit(table: &str, row: String) {
    println!("ROW {table} {row}");
}

fn load_md(r: &RebuildRow) -> String {
    format!(
        "| {} | {} | {:.1} | {:.1} | {:.0} | {:.1} ms | {:.1} ms | {:.1} | {} ({:.0}) | {:.2} GiB | {:.2} / {:.2} |",
        r.backend,
        r.load.events,
        r.load.sign_secs,
        r.load.secs,
        r.load.events as f64 / r.load.secs,
        ms(r.load.p50),
        ms(r.load.p99),
        r.projected_after_load,
        r.view_rows.0,
        r.view_rows.1 as f64 / (1024.0 * 1024.0),
        gib(r.server_hwm_kib),
        r.load.cpu.0,
        r.load.cpu.1
    )
}

fn rebuild_md(r: &RebuildRow) -> String {
    let events = f(&r.rebuild, "events");
    let secs = f(&r.rebuild, "rebuild_secs");
    format!(
        "| {} | {events:.0} | {:.0} | {:.1} | {secs:.1} | {:.1} | {:.0} | {:.2} GiB | {:.1} | {:.1} | {:.2} GiB | {:.1} | {} | {:.2} / {:.2} |",
        r.backend,
        f(&r.rebuild, "batches"),
        f(&r.rebuild, "drop_secs"),
        f(&r.rebuild, "digest_secs"),
        events / secs,
        gib(f(&r.rebuild, "hwm_kib") as u64),
        f(&r.rebuild, "fold_secs"),
        f(&r.restore, "restore_secs"),
        gib(f(&r.restore, "hwm_kib") as u64),
        f(&r.rebuild, "as_of_secs"),
        if r.rebuild.get("digest") == r.restore.get("digest") { "yes" } else { "**no**" },
        f(&r.rebuild, "cpu_own"),
        f(&r.rebuild, "cpu_others")
    )
}

fn lag_md(r: &LagRow) -> String {
    format!(
        "| {} | {} | {} | {} | {:.0} | {:.1} ms | {:.1} ms | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {:.2} / {:.2} |",
        r.backend,
        r.target_rate,
        r.clients,
        r.events,
        r.achieved_rate,
        ms(r.append_p50),
        ms(r.append_p99),
        r.received,
        r.lag_p50,
        r.lag_p99,
        r.lag_max,
        r.negative,
        r.queries.as_ref().map_or_else(
            || "none".to_owned(),
            |q| format!(
                "{}, {} ({:.0} items each), {:.1} / {:.1} / {:.1} ms",
                q.clients,
                q.queries,
                q.items,
                ms(q.p50),
                ms(q.p99),
                ms(q.max)
            )
        ),
        r.cpu.0,
        r.cpu.1
    )
}

fn query_md(r: &QueryRow) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} / {:.2} |",
        r.backend,
        r.log,
        r.model,
        r.held,
        r.clients,
        r.queries,
        r.queries as f64 / r.secs,
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        r.cpu.0,
        r.cpu.1
    )
}

/// Runs one part of the benchmark on one backend, in a process of its own (a heap shaped by an
/// earlier part — a million events loaded and freed — slows the allocator for the next), and
/// prints its rows.
fn phase(part: &str, backend: Backend) {
    let rebuild_events = env_usize("ACCORD_BENCH_REBUILD_EVENTS", 1_000_000);
    let rebuild_events_pg = env_usize("ACCORD_BENCH_REBUILD_EVENTS_POSTGRES", rebuild_events.min(300_000));
    let workers = env_usize("ACCORD_BENCH_LOAD_WORKERS", 8);
    let rate = env_usize("ACCORD_BENCH_RATE", 5000);
    let lag_secs = env_usize("ACCORD_BENCH_LAG_SECS", 20);
    let lag_clients = env_usize("ACCORD_BENCH_LAG_CLIENTS", 4);
    let lag_query_clients = env_usize("ACCORD_BENCH_LAG_QUERY_CLIENTS", 2);
    let query_items = env_usize("ACCORD_BENCH_QUERY_ITEMS", 3000);
    let with_queries = std::env::var("ACCORD_BENCH_PARTS").map_or(true, |p| p.split(',').any(|x| x.trim() == "query"));
    let label = backend_name(backend);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        match part {
            "rebuild" => {
                let Some(s) = start(backend).await else { return };
                let n = if backend == Backend::Postgres { rebuild_events_pg } else { rebuild_events };
                println!("{label}: loading {n} events with {workers} workers…");
                let load = load(&s, n, workers).await;
                println!(
                    "{label}: loaded {} events in {:.1} s ({:.0} events/s; request p50 {:.1} ms, p99 {:.1} ms)",
                    load.events,
                    load.secs,
                    load.events as f64 / load.secs,
                    ms(load.p50),
                    ms(load.p99)
                );
                let projected_after_load = wait_projected(&s).await;
                println!("{label}: live read models caught up {projected_after_load:.1} s after the last append");
                let server_hwm_kib = proc_status_kib("VmHWM:");
                let view_rows = view_stats(&s.database_url).await;
                if with_queries {
                    let log = format!("{} events", load.events);
                    let mut rows = Vec::new();
                    // Every loaded event but the schools' acknowledgements is the force's.
                    queries(&s, &log, load.per_school[0], load.events - load.acks, &mut rows).await;
                    for r in &rows {
                        emit("query", query_md(r));
                    }
                }
                let restore = run_child("restore", &s.database_url).await;
                println!("{label}: restored from rows in {:.1} s", f(&restore, "restore_secs"));
                let rebuild = run_child("rebuild", &s.database_url).await;
                println!(
                    "{label}: rebuilt {} events in {:.1} s (+ {:.1} s dropping rows), peak RSS {:.2} GiB",
                    rebuild.get("events").map_or("?", String::as_str),
                    f(&rebuild, "rebuild_secs"),
                    f(&rebuild, "drop_secs"),
                    gib(f(&rebuild, "hwm_kib") as u64)
                );
                let row =
                    RebuildRow { backend: label, load, projected_after_load, server_hwm_kib, view_rows, restore, rebuild };
                emit("load", load_md(&row));
                emit("rebuild", rebuild_md(&row));
                stop(s).await;
            }
            "lag" => {
                let runs = if lag_query_clients > 0 { vec![0, lag_query_clients] } else { vec![0] };
                for query_clients in runs {
                    let Some(s) = start(backend).await else { return };
                    // The run with queries is shorter: it is there for the queries' latency.
                    let secs = if query_clients == 0 { lag_secs } else { lag_secs.div_ceil(2) };
                    let row = lag(&s, rate, secs, lag_clients, query_clients).await;
                    println!(
                        "{label}: {:.0} events/s appended; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} received; {query_clients} querying)",
                        row.achieved_rate, row.lag_p50, row.lag_p99, row.lag_max, row.received, row.events
                    );
                    emit("lag", lag_md(&row));
                    stop(s).await;
                }
            }
            "query" => {
                let Some(s) = start(backend).await else { return };
                small_log(&s, query_items).await;
                let log = format!("{} events", s.store().log_size().await.expect("size"));
                let mut rows = Vec::new();
                queries(&s, &log, query_items, 2 * query_items, &mut rows).await;
                for r in &rows {
                    emit("query", query_md(r));
                }
                stop(s).await;
            }
            other => panic!("unknown part {other}"),
        }
    });
}

fn main() {
    if let Ok(role) = std::env::var("ACCORD_BENCH_CHILD") {
        child(&role);
        return;
    }
    if let Ok(p) = std::env::var("ACCORD_BENCH_PHASE") {
        let (part, backend) = p.split_once(':').expect("part:backend");
        phase(part, if backend == "postgres" { Backend::Postgres } else { Backend::Sqlite });
        return;
    }
    let backends = std::env::var("ACCORD_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let parts = std::env::var("ACCORD_BENCH_PARTS").unwrap_or_else(|_| "rebuild,lag,query".into());
    let workers = env_usize("ACCORD_BENCH_LOAD_WORKERS", 8);
    let started = Instant::now();
    let mut rows: HashMap<String, Vec<String>> = HashMap::new();
    for backend in ["sqlite", "postgres"] {
        if !backends.split(',').any(|b| b.trim() == backend) {
            continue;
        }
        for part in ["rebuild", "lag", "query"] {
            if !parts.split(',').any(|p| p.trim() == part) {
                continue;
            }
            let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
                .env("ACCORD_BENCH_PHASE", format!("{part}:{backend}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("phase process starts");
            let out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
            for line in std::io::BufRead::lines(out) {
                let line = line.expect("phase output");
                match line.strip_prefix("ROW ").and_then(|r| r.split_once(' ')) {
                    Some((table, row)) => rows.entry(table.to_owned()).or_default().push(row.to_owned()),
                    None => println!("{line}"),
                }
            }
            let status = child.wait().expect("phase process");
            if !status.success() {
                println!("{part} on {backend} failed: {status}");
            }
        }
    }

    let tables = [
        (
            "load",
            format!("Load (through gRPC, {workers} workers, 500 events per request, pre-signed):"),
            "| backend | events | signing (s) | load (s) | events/s | p50 request | p99 request | live read models caught up after load (s) | read-model rows (MiB of documents) | bench process peak RSS | CPU cores: bench / others |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ),
        (
            "rebuild",
            "Rebuild and restore (each a process of its own):".to_owned(),
            "| backend | events applied | batches | drop rows (s) | rebuild (s) | of which digest (s) | events/s | rebuild peak RSS | fold only, no writes (s) | restore from rows (s) | restore peak RSS | as-of answer, middle of log (s) | digests equal | CPU cores during rebuild: rebuild / others |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ),
        (
            "lag",
            format!(
                "Projection lag (Encompass notifications, {LAG_BATCH} per request, paced; two school-inbox subscribers):"
            ),
            "| backend | target events/s | clients | events | achieved events/s | p50 append | p99 append | items received | lag p50 | lag p99 | lag max | lag < 0 | concurrent inbox queries: clients, queries, p50 / p99 / max | CPU cores: bench / others |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ),
        (
            "query",
            "Query (limit 100, concurrent clients):".to_owned(),
            "| backend | log | read model | items held | clients | queries | queries/s | p50 | p99 | max | CPU cores: bench / others |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ),
    ];
    let mut md = String::new();
    for (name, title, header) in tables {
        let Some(rows) = rows.get(name) else { continue };
        writeln!(md, "{title}\n\n{header}").unwrap();
        for r in rows {
            writeln!(md, "{r}").unwrap();
        }
        writeln!(md).unwrap();
    }
    writeln!(md, "Whole benchmark: {:.0} s", started.elapsed().as_secs_f64()).unwrap();
    println!("\n{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("views.md"), md).expect("write views.md");
}
