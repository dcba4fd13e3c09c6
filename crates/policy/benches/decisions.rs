//! `receive` and `view` decisions per second and their latency under the default sharing
//! agreements: first uncached (every distinct question evaluated by Cedar once), then the steady
//! state a read model sees (the same questions again, answered from the per-policy cache), on one
//! thread and on every core.
//!
//! `cargo bench -p accord-policy --bench decisions` (knob: ACCORD_BENCH_ROUNDS, default 20).
//! Writes target/bench/decisions.md.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use accord_domain::Role;
use accord_domain::payload::AgencyKind;
use accord_policy::{Actor, AgencyFacts, Policy, RecordFacts, Relation, default_policy, record_kind};

const ROLES: &[&str] = &[
    "offender_manager",
    "ppro",
    "solo",
    "swlo",
    "probation_om",
    "vlo",
    "mappa_coordinator",
    "dtc_rep",
    "dsl",
    "isva",
    "auditor",
];
const EVENT_TYPES: &[&str] = &[
    "accord.v1.NominalRegistered",
    "accord.v1.RiskAssessmentRecorded",
    "accord.v1.MappaMeetingHeld",
    "accord.v1.DisclosureDecided",
    "accord.v1.EncompassNotificationSent",
    "accord.v1.VictimContactDetailsRecorded",
    "accord.v1.SupportReferralMade",
];
const KINDS: &[AgencyKind] = &[
    AgencyKind::Police,
    AgencyKind::Probation,
    AgencyKind::School,
    AgencyKind::ChildrensServices,
    AgencyKind::SupportService,
];

struct Question {
    who: AgencyFacts<'static>,
    roles: Vec<Role>,
    record: RecordFacts<'static>,
    rel: Relation,
}

fn questions() -> Vec<Question> {
    let author = AgencyFacts { id: "met-police", kind: AgencyKind::Police, governs_policy: false };
    let mut out = Vec::new();
    for (ki, kind) in KINDS.iter().enumerate() {
        let id: &'static str = ["agency-0", "agency-1", "agency-2", "agency-3", "agency-4"][ki];
        for role in ROLES {
            for ty in EVENT_TYPES {
                for bits in 0..32u8 {
                    let rel = Relation {
                        authored: false,
                        addressed: bits & 1 != 0,
                        case_member: bits & 2 != 0,
                        mappa_panel: bits & 4 != 0,
                        consent_in_scope: bits & 8 != 0,
                    };
                    let rel = Relation { authored: bits & 16 != 0, ..rel };
                    out.push(Question {
                        who: AgencyFacts { id, kind: *kind, governs_policy: false },
                        roles: vec![Role::parse(*role).unwrap()],
                        record: RecordFacts { event_type: ty, kind: record_kind(ty), author, tags: &[] },
                        rel,
                    });
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Ask {
    Receive,
    View,
}

fn ask(p: &Policy, q: &Question, what: Ask) -> bool {
    match what {
        Ask::Receive => p.receive(&q.who, &q.record, q.rel).allowed,
        Ask::View => p.view(&Actor { agency: q.who, user: "u-1", roles: &q.roles }, &q.record, q.rel).allowed(),
    }
}

struct Row {
    what: &'static str,
    threads: usize,
    decisions: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn timed(p: &Policy, qs: &[Question], what: Ask, rounds: usize) -> (usize, Duration, Vec<Duration>) {
    let mut lat = Vec::with_capacity(qs.len() * rounds);
    let start = Instant::now();
    let mut allowed = 0;
    for _ in 0..rounds {
        for q in qs {
            let t = Instant::now();
            allowed += usize::from(std::hint::black_box(ask(p, q, what)));
            lat.push(t.elapsed());
        }
    }
    let total = start.elapsed();
    std::hint::black_box(allowed);
    (qs.len() * rounds, total, lat)
}

fn row(what: &'static str, threads: usize, decisions: usize, total: Duration, mut lat: Vec<Duration>) -> Row {
    lat.sort();
    Row {
        what,
        threads,
        decisions,
        per_sec: decisions as f64 / total.as_secs_f64(),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
    }
}

fn main() {
    let rounds: usize = std::env::var("ACCORD_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let qs = questions();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut rows = Vec::new();
    for (what, name) in [(Ask::Receive, "receive"), (Ask::View, "view")] {
        // A fresh policy: every question is new to its cache.
        let p = default_policy(0);
        let (n, total, lat) = timed(&p, &qs, what, 1);
        rows.push(row(
            if matches!(what, Ask::Receive) { "receive, uncached" } else { "view, uncached" },
            1,
            n,
            total,
            lat,
        ));
        let (n, total, lat) = timed(&p, &qs, what, rounds);
        rows.push(row(if matches!(what, Ask::Receive) { "receive, cached" } else { "view, cached" }, 1, n, total, lat));
        // Every core at once, on the same policy (the read models share one per version).
        let start = Instant::now();
        let results: Vec<(usize, Vec<Duration>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let (n, _, lat) = timed(&p, &qs, what, rounds);
                        (n, lat)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total = start.elapsed();
        let n = results.iter().map(|r| r.0).sum();
        let lat = results.into_iter().flat_map(|r| r.1).collect();
        rows.push(row(
            if matches!(what, Ask::Receive) { "receive, cached, all cores" } else { "view, cached, all cores" },
            threads,
            n,
            total,
            lat,
        ));
        println!("{name} done");
    }

    let mut md = String::new();
    writeln!(md, "| decision | threads | decisions | decisions/s | p50 | p99 |").unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---:|").unwrap();
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.2} µs | {:.2} µs |",
            r.what,
            r.threads,
            r.decisions,
            r.per_sec,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6
        )
        .unwrap();
    }
    writeln!(md, "\n{} distinct questions (agency kind × role × event type × relation).", qs.len()).unwrap();
    println!("\n{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("decisions.md"), md).unwrap();
}
