//! The access log, against SQLite and PostgreSQL (the latter when `DATABASE_URL` is set; required
//! in CI). Records are opaque bytes to the store.

use std::collections::HashSet;
use std::sync::Arc;

use accord_domain::checkpoint::{LogSigner, verify_checkpoint};
use accord_domain::merkle::{self, Frontier};
use accord_domain::payload::RegistryEffect;
use accord_domain::{AgencyId, EventId, EventType, ExpectedVersion, KeyId, SYSTEM_AGENCY, StreamId, Timestamp};
use accord_store::{AccessEntry, AccessFilter, AppendRecord, Error, NewEvent, Options, Receipt, RecordedAccess, Store};
use ed25519_dalek::SigningKey;

struct Fixture {
    store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn event_signer() -> LogSigner {
    LogSigner::new("accord.test/log", &SigningKey::from_bytes(&[42; 32])).unwrap()
}

fn access_signer() -> LogSigner {
    LogSigner::new("accord.test/access", &SigningKey::from_bytes(&[43; 32])).unwrap()
}

async fn open(url: &str) -> Store {
    let store = Store::open(url, Some(event_signer()), Options::default()).await.unwrap();
    store.start_access_log(access_signer());
    store
}

async fn fixture(backend: &str) -> Option<Fixture> {
    let (url, dir) = match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            (dir.path().join("accord.db").display().to_string(), Some(dir))
        }
        _ => (accord_store::testing::fresh_postgres_url().await?, None),
    };
    let store = open(&url).await;
    Some(Fixture { store, url, _dir: dir })
}

fn id() -> [u8; 16] {
    *uuid::Uuid::now_v7().as_bytes()
}

fn entry(at: i64, agency: &str, user: &str, granted: bool, subjects: &[&str], items: &[&str]) -> AccessEntry {
    let access_id = id();
    AccessEntry {
        access_id,
        at: Timestamp(at),
        agency: agency.into(),
        user: user.into(),
        granted,
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        items: items.iter().map(|s| s.to_string()).collect(),
        record: format!("record {at} {agency} {user} {access_id:?}").into_bytes(),
    }
}

/// Reads the whole access log, checking positions are 0..n and every leaf hash matches its record.
async fn all(store: &Store) -> Vec<RecordedAccess> {
    let mut out = Vec::new();
    loop {
        let page = store.access_range(out.len() as u64, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        for a in page {
            assert_eq!(a.position, out.len() as u64, "gap or disorder in the access log");
            assert_eq!(a.leaf().hash(), a.leaf_hash, "leaf hash at {}", a.position);
            out.push(a);
        }
    }
    assert_eq!(store.access_log_size().await.unwrap(), out.len() as u64);
    out
}

/// Recomputes the access tree from the leaves and checks roots, checkpoints and proofs.
async fn check_tree(store: &Store) {
    let rows = all(store).await;
    let n = rows.len() as u64;
    let mut fr = Frontier::empty();
    let mut roots = Vec::new();
    for a in &rows {
        fr.push(a.leaf().hash());
        roots.push(fr.root());
    }
    assert_eq!(store.access_root(n).await.unwrap(), fr.root());
    let cp = store.access_latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(cp.tree_size, n);
    let v = verify_checkpoint(&cp.note, &[access_signer().verifier_key().to_owned()]).unwrap();
    assert_eq!((v.size, v.root), (n, fr.root()));
    assert_eq!(v.origin, "accord.test/access");
    assert!(
        verify_checkpoint(&cp.note, &[event_signer().verifier_key().to_owned()]).is_err(),
        "the event log's key does not verify access checkpoints"
    );
    let cps = store.access_checkpoints(0, 10_000).await.unwrap();
    assert!(!cps.is_empty());
    for c in &cps {
        assert_eq!(c.root, roots[c.tree_size as usize - 1], "checkpoint {}", c.tree_size);
    }
    // Stored leaf hashes sit at stored_hash_index(0, position).
    let stored = store.access_hash_range(0, merkle::stored_hash_index(0, n)).await.unwrap();
    let stored: std::collections::HashMap<_, _> = stored.into_iter().collect();
    for a in &rows {
        assert_eq!(stored[&merkle::stored_hash_index(0, a.position)], a.leaf_hash);
    }
    let mut sizes = vec![1, n / 2 + 1, n];
    sizes.dedup();
    for t in sizes {
        let root_t = store.access_root(t).await.unwrap();
        assert_eq!(root_t, roots[t as usize - 1]);
        for pos in [0, t / 2, t - 1] {
            let (leaf, proof, root) = store.access_inclusion_proof(pos, t).await.unwrap();
            assert_eq!((leaf, root), (rows[pos as usize].leaf_hash, root_t));
            merkle::verify_inclusion(&proof, t, root, pos, leaf).unwrap();
        }
        for from in [1, t / 2 + 1, t] {
            let (proof, r_from, r_to) = store.access_consistency_proof(from, t).await.unwrap();
            assert_eq!((r_from, r_to), (roots[from as usize - 1], root_t));
            merkle::verify_consistency(&proof, t, r_to, from, r_from).unwrap();
        }
    }
    assert!(matches!(store.access_inclusion_proof(n, n).await, Err(Error::Invalid(_))));
    assert!(matches!(store.access_inclusion_proof(0, n + 1).await, Err(Error::NotFound(_))));
    assert!(matches!(store.access_root(n + 1).await, Err(Error::NotFound(_))));
}

async fn concurrent_records_are_gap_free_and_queries_filter(f: Fixture) {
    let mut head = f.store.watch_access_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for j in 0..10i64 {
                let at = 1_000 * j + t;
                let agency = if t % 2 == 0 { "met-police" } else { "st-marys" };
                let user = format!("u{}", t % 4);
                let granted = j % 3 != 0;
                let subject = format!("child:c-{}", j % 5);
                let item = format!("pos:{t}-{j}");
                let batch = if j % 4 == 0 {
                    vec![
                        entry(at, agency, &user, granted, &[&subject, &subject], &[&item, &item]),
                        entry(at, agency, &user, granted, &[], &["school_inbox/n-1"]),
                    ]
                } else {
                    vec![entry(at, agency, &user, granted, &[&subject], &[&item])]
                };
                let ids: Vec<_> = batch.iter().map(|e| e.access_id).collect();
                let positions = s.record_access(batch).await.unwrap();
                assert_eq!(positions.len(), ids.len());
                assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "a request's entries are consecutive");
                got.extend(ids.into_iter().zip(positions));
            }
            got
        }));
    }
    let mut recorded = Vec::new();
    for t in tasks {
        recorded.extend(t.await.unwrap());
    }
    let rows = all(&f.store).await;
    let n = rows.len();
    assert_eq!(n, 8 * (10 + 3));
    assert_eq!(*head.borrow_and_update(), n as u64);
    let positions: HashSet<u64> = recorded.iter().map(|(_, p)| *p).collect();
    assert_eq!(positions.len(), n, "positions are unique");
    for (id, p) in &recorded {
        let a = f.store.access_by_id(id).await.unwrap().unwrap();
        assert_eq!((a.position, &a), (*p, &rows[*p as usize]));
    }
    assert!(f.store.access_by_id(&id()).await.unwrap().is_none());

    let query = |filter: AccessFilter| {
        let s = f.store.clone();
        async move { s.accesses(&filter).await.unwrap().into_iter().map(|a| a.position).collect::<Vec<_>>() }
    };
    let want = |pred: &dyn Fn(&RecordedAccess) -> bool| {
        rows.iter().filter(|a| pred(a)).map(|a| a.position).take(1000).collect::<Vec<_>>()
    };
    let lim = |limit| AccessFilter { limit, ..Default::default() };
    assert_eq!(query(lim(1000)).await, want(&|_| true));
    assert_eq!(query(lim(0)).await, want(&|_| true).into_iter().take(100).collect::<Vec<_>>());
    assert_eq!(query(lim(5)).await, vec![0, 1, 2, 3, 4]);
    let agency = AccessFilter { agency: Some("st-marys".into()), limit: 1000, ..Default::default() };
    assert_eq!(query(agency.clone()).await, want(&|a| a.agency == "st-marys"));
    let user = AccessFilter { user: Some("u1".into()), ..agency.clone() };
    let w = want(&|a| a.agency == "st-marys" && a.user == "u1");
    assert!(!w.is_empty());
    assert_eq!(query(user).await, w);
    let denied = AccessFilter { denied_only: true, limit: 1000, ..Default::default() };
    let w = want(&|a| !a.granted);
    assert_eq!(w.len(), 8 * (4 + 1));
    assert_eq!(query(denied).await, w);
    let window =
        AccessFilter { from: Some(Timestamp(2_000)), to: Some(Timestamp(5_000)), limit: 1000, ..Default::default() };
    let w = want(&|a| (2_000..5_000).contains(&a.at.0));
    assert_eq!(w.len(), 8 * (3 + 1));
    assert_eq!(query(window).await, w);

    // The subject and item indexes: positions from the index rows, compared with the filters.
    let idx = f.store.access_index_rows(0, n as u64).await.unwrap();
    let mut sorted = idx.clone();
    sorted.sort();
    assert_eq!(idx, sorted, "index rows are ordered by position, kind, value");
    assert_eq!(idx.iter().filter(|r| r.1 == "subject").count(), 8 * 10, "subjects stored distinct");
    assert_eq!(idx.iter().filter(|r| r.1 == "item").count(), 8 * (10 + 3), "items stored distinct");
    let subject = AccessFilter { subject: Some("child:c-2".into()), limit: 1000, ..Default::default() };
    let w: Vec<u64> = idx.iter().filter(|r| r.1 == "subject" && r.2 == "child:c-2").map(|r| r.0).collect();
    assert_eq!(w.len(), 8 * 2);
    assert_eq!(query(subject.clone()).await, w);
    let item = AccessFilter { item: Some("school_inbox/n-1".into()), limit: 1000, ..Default::default() };
    let w: Vec<u64> = idx.iter().filter(|r| r.1 == "item" && r.2 == "school_inbox/n-1").map(|r| r.0).collect();
    assert_eq!(w.len(), 8 * 3);
    assert_eq!(query(item).await, w);
    let mid = idx.iter().filter(|r| r.0 >= 10 && r.0 < 20).cloned().collect::<Vec<_>>();
    assert_eq!(f.store.access_index_rows(10, 20).await.unwrap(), mid);

    // Keyset paging with a combined filter.
    let combined = AccessFilter { agency: Some("met-police".into()), subject: Some("child:c-0".into()), ..subject };
    let all_pages = query(AccessFilter { limit: 1000, ..combined.clone() }).await;
    assert!(all_pages.len() >= 4);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = query(AccessFilter { after_position: after, limit: 3, ..combined.clone() }).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, all_pages);
    check_tree(&f.store).await;
}

async fn a_duplicate_access_id_is_refused(f: Fixture) {
    let e = entry(1, "met-police", "u1", true, &["child:a"], &[]);
    assert_eq!(f.store.record_access(vec![e.clone()]).await.unwrap(), vec![0]);
    assert!(matches!(f.store.record_access(vec![e.clone()]).await, Err(Error::Duplicate(_))));
    let other = entry(2, "met-police", "u1", true, &[], &[]);
    assert!(matches!(f.store.record_access(vec![other.clone(), e.clone()]).await, Err(Error::Duplicate(_))));
    assert!(matches!(f.store.record_access(vec![other.clone(), other.clone()]).await, Err(Error::Invalid(_))));
    assert_eq!(f.store.access_log_size().await.unwrap(), 1, "refused requests record nothing");
    // Concurrent requests with the same new id: exactly one is recorded.
    let dup = entry(3, "met-police", "u1", true, &[], &[]);
    let (a, b) = tokio::join!(f.store.record_access(vec![dup.clone()]), f.store.record_access(vec![dup.clone()]));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|x| **x).count(), 1, "{a:?} {b:?}");
    assert!(matches!(a.err().or(b.err()), Some(Error::Duplicate(_))));
    // A request refused for a recorded id does not take down the others waiting with it (the
    // writer may take both in one round: the UNIQUE constraint refuses the round, and it is
    // decided again with the duplicate check).
    let fresh = entry(4, "met-police", "u1", true, &["child:b"], &[]);
    let (a, b) = tokio::join!(f.store.record_access(vec![e.clone()]), f.store.record_access(vec![fresh]));
    assert!(matches!(a, Err(Error::Duplicate(_))), "{a:?}");
    assert_eq!(b.unwrap(), vec![2]);
    assert_eq!(f.store.record_access(vec![other]).await.unwrap(), vec![3]);
    assert_eq!(f.store.record_access(Vec::new()).await.unwrap(), Vec::<u64>::new());
    check_tree(&f.store).await;
}

async fn access_tables_refuse_update_and_delete(f: Fixture) {
    f.store.record_access(vec![entry(1, "met-police", "u1", false, &["child:a"], &["pos:1"])]).await.unwrap();
    let mut statements = vec![
        "UPDATE access_log SET granted = TRUE",
        "UPDATE access_log SET record = record",
        "DELETE FROM access_log WHERE position = 0",
        "DELETE FROM access_log",
        "UPDATE access_merkle_hashes SET hash = hash",
        "DELETE FROM access_merkle_hashes",
        "UPDATE access_checkpoints SET note = 'x'",
        "DELETE FROM access_checkpoints",
    ];
    if f.store.is_postgres() {
        statements.extend([
            "TRUNCATE access_log",
            "UPDATE access_keys SET keys = keys",
            "DELETE FROM access_keys",
            "TRUNCATE access_keys",
            "TRUNCATE access_merkle_hashes",
            "TRUNCATE access_checkpoints",
        ]);
    }
    for sql in statements {
        let err = f.store.execute_raw_for_tests(sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(all(&f.store).await.len(), 1);
    assert_eq!(f.store.access_index_rows(0, 1).await.unwrap().len(), 2);
    check_tree(&f.store).await;
}

/// Makes the database refuse (`true`) or accept again (`false`) every insert into the access
/// log, as a failing disk or a revoked grant would.
async fn refuse_access_inserts(store: &Store, refuse: bool) {
    let sql = match (store.is_postgres(), refuse) {
        (true, true) => {
            "CREATE OR REPLACE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'insert refused for the test'; END $$; \
             CREATE TRIGGER refuse_insert BEFORE INSERT ON access_log FOR EACH ROW EXECUTE FUNCTION refuse_insert();"
        }
        (false, true) => {
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON access_log \
             BEGIN SELECT RAISE(ABORT, 'insert refused for the test'); END;"
        }
        (true, false) => "DROP TRIGGER refuse_insert ON access_log",
        (false, false) => "DROP TRIGGER refuse_insert",
    };
    store.execute_raw_for_tests(sql).await.unwrap();
}

/// PostgreSQL: the access-key index's pending list is merged in the background while the log
/// grows, so no writer has to merge it inside its commit (BENCHMARKS.md, 2026-12-04).
async fn the_key_index_is_merged_in_the_background(f: Fixture) {
    if !f.store.is_postgres() {
        return;
    }
    // Pages the pending list holds (merging them): the rows of a SELECT of that many rows.
    let pending = "SELECT 1 FROM generate_series(1, gin_clean_pending_list('access_keys_by_key'::regclass))";
    let subjects: Vec<String> = (0..40).map(|i| format!("child:c-{i:04}-{}", "x".repeat(40))).collect();
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    for round in 0..5 {
        let requests: Vec<_> =
            (0..20).map(|i| vec![entry(round * 100 + i, "met-police", "u1", true, &subjects, &["pos:1"])]).collect();
        futures::future::join_all(requests.into_iter().map(|r| f.store.record_access(r))).await;
    }
    assert_eq!(f.store.access_log_size().await.unwrap(), 100);
    // The task merges within its interval (100 ms) of the last write.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(f.store.execute_raw_for_tests(pending).await.unwrap(), 0, "nothing left to merge");
    // Without the task (a store writing no access records) the list holds what was written.
    f.store.shutdown().await;
    let quiet = Store::open(&f.url, None, Options::default()).await.unwrap();
    quiet.execute_raw_for_tests(
        "INSERT INTO access_keys (position, keys) SELECT 1000 + g, ARRAY['AB' || g::text] FROM generate_series(1, 2000) AS g",
    )
    .await
    .unwrap();
    assert!(quiet.execute_raw_for_tests(pending).await.unwrap() > 0, "the check sees a pending list");
    quiet.shutdown().await;
}

async fn a_failed_round_fails_every_request_and_writes_nothing(f: Fixture) {
    assert_eq!(f.store.access_log_size().await.unwrap(), 0);
    refuse_access_inserts(&f.store, true).await;
    let requests: Vec<_> = (0..6).map(|i| vec![entry(i, "met-police", "u1", true, &["child:a"], &["pos:1"])]).collect();
    let results = futures::future::join_all(requests.iter().map(|r| f.store.record_access(r.clone()))).await;
    for r in &results {
        assert!(matches!(r, Err(Error::Database { .. })), "{r:?}");
    }
    assert_eq!(f.store.access_log_size().await.unwrap(), 0);
    assert!(f.store.access_latest_checkpoint().await.unwrap().is_none());
    assert!(f.store.access_hash_range(0, 1000).await.unwrap().is_empty());
    assert!(f.store.access_index_rows(0, 1000).await.unwrap().is_empty());
    assert_eq!(*f.store.watch_access_head().borrow(), 0);

    refuse_access_inserts(&f.store, false).await;
    // The same requests now succeed, from position 0: nothing of the failed round remains.
    let again = f.store.record_access(requests[0].clone()).await.unwrap();
    assert_eq!(again, vec![0]);
    check_tree(&f.store).await;
}

async fn the_access_log_is_independent_of_the_event_log_and_survives_reopening(f: Fixture) {
    assert!(f.store.latest_checkpoint().await.unwrap().is_none(), "no event was appended");
    f.store.record_access(vec![entry(1, "", "", false, &[], &[])]).await.unwrap();
    assert_eq!(f.store.log_size().await.unwrap(), 0);
    assert!(f.store.latest_checkpoint().await.unwrap().is_none());
    // A second store on the same database stands in for a second server process.
    let other = open(&f.url).await;
    let mut tasks = Vec::new();
    for (i, s) in [f.store.clone(), other.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                s.record_access(vec![entry(j, "met-police", &format!("p{i}"), true, &[], &[])]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(all(&f.store).await.len(), 41);
    check_tree(&f.store).await;
    // A record the other process just wrote is found through the index at once, by a process
    // whose cached tip it overtook (its next round is refused at that tip and decided again).
    other.record_access(vec![entry(2, "met-police", "p1", true, &["child:x"], &["pos:9"])]).await.unwrap();
    let by_subject = AccessFilter { subject: Some("child:x".into()), ..Default::default() };
    assert_eq!(f.store.accesses(&by_subject).await.unwrap().len(), 1);
    assert_eq!(f.store.access_index_rows(41, 42).await.unwrap().len(), 2);
    other.shutdown().await;
    f.store.shutdown().await;
    assert!(matches!(f.store.record_access(vec![entry(1, "", "", true, &[], &[])]).await, Err(Error::Unavailable(_))));
    let again = open(&f.url).await;
    assert_eq!(*again.watch_access_head().borrow(), 42);
    assert_eq!(again.record_access(vec![entry(1, "", "", true, &[], &[])]).await.unwrap(), vec![42]);
    check_tree(&again).await;
    again.shutdown().await;

    let unstarted = Store::open(&f.url, None, Options::default()).await.unwrap();
    assert!(matches!(
        unstarted.record_access(vec![entry(1, "", "", true, &[], &[])]).await,
        Err(Error::Unavailable(_))
    ));
    assert_eq!(unstarted.accesses(&AccessFilter::default()).await.unwrap().len(), 43);
}

fn event(stream: &str, agency: &str, key: &str, effect: RegistryEffect) -> NewEvent {
    let id = EventId::new();
    NewEvent {
        event_id: id,
        stream: StreamId::parse(stream).unwrap(),
        expected: ExpectedVersion::Any,
        event_type: EventType::parse("accord.v1.Test").unwrap(),
        author_agency: AgencyId::parse(agency).unwrap(),
        key_id: KeyId::parse(key).unwrap(),
        body: format!("body of {id}").into_bytes(),
        signature: vec![7; 64],
        effect,
        policy_version: None,
    }
}

/// The access record of an append: its receipts' positions, as the Ledger service builds it.
fn append_record(user: &'static str) -> AppendRecord {
    Arc::new(move |receipts: &[Receipt]| {
        let positions: Vec<String> = receipts.iter().map(|r| format!("pos:{}", r.position)).collect();
        let mut e = entry(9, "met-police", user, true, &["nominal:n-1"], &[]);
        e.record = format!("append by {user} at {positions:?}").into_bytes();
        e.items = positions;
        e
    })
}

/// The one access record of the append that got `receipts`, built from exactly those receipts.
async fn assert_recorded(store: &Store, user: &str, receipts: &[Receipt]) {
    let positions: Vec<String> = receipts.iter().map(|r| format!("pos:{}", r.position)).collect();
    let found = store.accesses(&AccessFilter { item: Some(positions[0].clone()), ..Default::default() }).await.unwrap();
    assert_eq!(found.len(), 1, "one access record for the append at {positions:?}");
    assert_eq!(found[0].record, format!("append by {user} at {positions:?}").into_bytes());
}

async fn an_append_and_its_access_record_commit_together(f: Fixture) {
    let key = KeyId::parse("sys").unwrap();
    let sys = AgencyId::parse(SYSTEM_AGENCY).unwrap();
    let public_key = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
    let register = event(
        &format!("agency-{SYSTEM_AGENCY}"),
        SYSTEM_AGENCY,
        "sys",
        RegistryEffect::RegisterKey { key_id: key.clone(), agency: sys.clone(), public_key },
    );
    let receipts = f.store.append_recorded(vec![register.clone()], append_record("admin")).await.unwrap();
    assert_eq!(receipts[0].position, 0);
    let rows = all(&f.store).await;
    assert_eq!(rows.len(), 1, "the append's access record is in the access log");
    assert_eq!(rows[0].record, b"append by admin at [\"pos:0\"]".to_vec(), "built from the receipts");
    let found = f.store.accesses(&AccessFilter { item: Some("pos:0".into()), ..Default::default() }).await.unwrap();
    assert_eq!(found.len(), 1, "and indexed");

    // A resend is another access: the same receipts, another record.
    assert_eq!(f.store.append_recorded(vec![register.clone()], append_record("admin")).await.unwrap(), receipts);
    assert_eq!(f.store.access_log_size().await.unwrap(), 2);
    // A refused append records nothing here (the service records the refusal itself).
    let mut conflict = event("stream-a", SYSTEM_AGENCY, "sys", RegistryEffect::None);
    conflict.expected = ExpectedVersion::Exact(5);
    assert!(matches!(
        f.store.append_recorded(vec![conflict.clone()], append_record("admin")).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(f.store.access_log_size().await.unwrap(), 2);

    // Refused, recorded and plain requests in one round: each record goes with its own request.
    let plain = event("stream-p", SYSTEM_AGENCY, "sys", RegistryEffect::None);
    let (a, b) = (
        event("stream-a", SYSTEM_AGENCY, "sys", RegistryEffect::None),
        event("stream-b", SYSTEM_AGENCY, "sys", RegistryEffect::None),
    );
    let (refused, first, plain, second) = tokio::join!(
        f.store.append_recorded(vec![conflict], append_record("refused")),
        f.store.append_recorded(vec![a], append_record("first")),
        f.store.append(vec![plain]),
        f.store.append_recorded(vec![b], append_record("second")),
    );
    assert!(matches!(refused, Err(Error::Conflict(_))));
    plain.unwrap();
    for (user, receipts) in [("first", first.unwrap()), ("second", second.unwrap())] {
        assert_recorded(&f.store, user, &receipts).await;
    }
    assert_eq!(f.store.access_log_size().await.unwrap(), 4, "no record of the refused or the plain append");

    // Appends with records, plain access records and plain appends, from this store and from a
    // second one on the same database (another server process), all at once: both logs stay
    // gap-free and every checkpoint of the access log is right, whichever writer wrote it.
    let other = open(&f.url).await;
    let mut tasks = Vec::new();
    for (i, s) in [f.store.clone(), other.clone()].into_iter().enumerate() {
        for kind in 0..3 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut recorded = Vec::new();
                for j in 0..15 {
                    let e = event(&format!("stream-{i}-{kind}"), SYSTEM_AGENCY, "sys", RegistryEffect::None);
                    match kind {
                        0 => recorded.push(s.append_recorded(vec![e], append_record("writer")).await.unwrap()),
                        1 => {
                            drop(s.record_access(vec![entry(j, "met-police", "reader", true, &[], &[])]).await.unwrap())
                        }
                        _ => drop(s.append(vec![e]).await.unwrap()),
                    }
                }
                recorded
            }));
        }
    }
    // A lock taken in the wrong order would hang here: fail instead.
    let done = tokio::time::timeout(std::time::Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .expect("the two stores' writers finish (no deadlock)");
    for receipts in done.into_iter().flat_map(Result::unwrap) {
        assert_recorded(&f.store, "writer", &receipts).await;
    }
    assert_eq!(f.store.log_size().await.unwrap(), 4 + 4 * 15);
    assert_eq!(all(&f.store).await.len(), 4 + 4 * 15);
    check_tree(&f.store).await;
    check_tree(&other).await;
    other.shutdown().await;

    // If the access record cannot be written, the events are not recorded either.
    refuse_access_inserts(&f.store, true).await;
    let size = f.store.log_size().await.unwrap();
    let head = *f.store.watch_head().borrow();
    let access_size = f.store.access_log_size().await.unwrap();
    let access_head = *f.store.watch_access_head().borrow();
    let e = event("stream-z", SYSTEM_AGENCY, "sys", RegistryEffect::None);
    let r = f.store.append_recorded(vec![e.clone()], append_record("writer")).await;
    assert!(matches!(r, Err(Error::Database { .. })), "{r:?}");
    assert_eq!(f.store.log_size().await.unwrap(), size, "no event without its access record");
    assert_eq!(*f.store.watch_head().borrow(), head, "nor announced to subscribers");
    assert_eq!(f.store.access_log_size().await.unwrap(), access_size);
    assert_eq!(*f.store.watch_access_head().borrow(), access_head);
    // Appends that record no access go on meanwhile.
    f.store.append(vec![event("stream-x", SYSTEM_AGENCY, "sys", RegistryEffect::None)]).await.unwrap();
    refuse_access_inserts(&f.store, false).await;
    // The same events are accepted once records can be written.
    let receipts = f.store.append_recorded(vec![e], append_record("late")).await.unwrap();
    assert_eq!(receipts[0].position, size + 1);
    assert_recorded(&f.store, "late", &receipts).await;
    check_tree(&f.store).await;

    // Without an access-log writer, an append that must be recorded is refused up front.
    f.store.shutdown().await;
    let unstarted = Store::open(&f.url, Some(event_signer()), Options::default()).await.unwrap();
    let e = event("stream-y", SYSTEM_AGENCY, "sys", RegistryEffect::None);
    assert!(matches!(unstarted.append_recorded(vec![e], append_record("w")).await, Err(Error::Unavailable(_))));
    assert_eq!(unstarted.log_size().await.unwrap(), size + 2);
    unstarted.shutdown().await;
}

macro_rules! suite {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(f) = super::fixture(stringify!($backend)).await {
                        super::$test(f).await;
                    }
                }
            )*
        }
    };
}

macro_rules! backends {
    ($($backend:ident),*) => {$(
        suite!($backend:
            concurrent_records_are_gap_free_and_queries_filter,
            a_duplicate_access_id_is_refused,
            access_tables_refuse_update_and_delete,
            a_failed_round_fails_every_request_and_writes_nothing,
            the_key_index_is_merged_in_the_background,
            the_access_log_is_independent_of_the_event_log_and_survives_reopening,
            an_append_and_its_access_record_commit_together,
        );
    )*};
}

backends!(sqlite, postgres);
