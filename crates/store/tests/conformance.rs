//! One conformance suite for the log, run against SQLite and PostgreSQL (the latter when
//! `DATABASE_URL` is set; required in CI). Bodies here are opaque bytes: the store does not decode
//! or verify them (the Ledger service does, and the end-to-end tests cover that).

use std::collections::HashMap;

use accord_domain::checkpoint::{LogSigner, verify_checkpoint};
use accord_domain::merkle::{self, Frontier};
use accord_domain::payload::RegistryEffect;
use accord_domain::{AgencyId, EventId, EventType, ExpectedVersion, KeyId, SYSTEM_AGENCY, StreamId};
use accord_store::{Error, NewEvent, Options, Store, ViewChanges, ViewRow, Visibility};
use ed25519_dalek::SigningKey;

struct Fixture {
    store: Store,
    url: String,
    verifier_key: String,
    _dir: Option<tempfile::TempDir>,
}

fn signer() -> LogSigner {
    LogSigner::new("accord.test/log", &SigningKey::from_bytes(&[42; 32])).unwrap()
}

async fn open(url: &str) -> Store {
    Store::open(url, Some(signer()), Options::default()).await.unwrap()
}

/// A store with the system key `sys` and an agency key `k1` for `met-police` registered.
async fn fixture(backend: &str) -> Option<Fixture> {
    let (url, dir) = match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            (dir.path().join("accord.db").display().to_string(), Some(dir))
        }
        _ => (accord_store::testing::fresh_postgres_url().await?, None),
    };
    let store = open(&url).await;
    store.append(vec![register("sys", SYSTEM_AGENCY, "sys"), register("sys", "met-police", "k1")]).await.unwrap();
    Some(Fixture { store, url, verifier_key: signer().verifier_key().to_owned(), _dir: dir })
}

fn key_bytes(key_id: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..key_id.len().min(32)].copy_from_slice(&key_id.as_bytes()[..key_id.len().min(32)]);
    SigningKey::from_bytes(&seed).verifying_key().to_bytes()
}

fn register(signing_key: &str, agency: &str, key_id: &str) -> NewEvent {
    NewEvent {
        effect: RegistryEffect::RegisterKey {
            key_id: KeyId::parse(key_id).unwrap(),
            agency: AgencyId::parse(agency).unwrap(),
            public_key: key_bytes(key_id),
        },
        ..ev(&format!("agency-{agency}"), ExpectedVersion::Any, SYSTEM_AGENCY, signing_key)
    }
}

fn ev(stream: &str, expected: ExpectedVersion, agency: &str, key: &str) -> NewEvent {
    let id = EventId::new();
    NewEvent {
        event_id: id,
        stream: StreamId::parse(stream).unwrap(),
        expected,
        event_type: EventType::parse("accord.v1.Test").unwrap(),
        author_agency: AgencyId::parse(agency).unwrap(),
        key_id: KeyId::parse(key).unwrap(),
        body: format!("body of {id}").into_bytes(),
        signature: vec![7; 64],
        effect: RegistryEffect::None,
        policy_version: None,
    }
}

fn police(stream: &str, expected: ExpectedVersion) -> NewEvent {
    ev(stream, expected, "met-police", "k1")
}

/// Reads the whole log and checks positions are 0..n without gaps and every leaf hash matches
/// the stored fields; returns the events.
async fn all_events(store: &Store) -> Vec<accord_store::RecordedEvent> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read_all(from, 1000, &Visibility::All).await.unwrap();
        for e in &page.events {
            assert_eq!(e.position, out.len() as u64, "gap or disorder in the log");
            assert_eq!(e.leaf().hash(), e.leaf_hash, "leaf hash at {}", e.position);
            out.push(e.clone());
        }
        if page.next >= page.log_size {
            return out;
        }
        from = page.next;
    }
}

/// Recomputes the tree from the leaves and compares it to the store's roots and checkpoints.
async fn check_tree(f: &Fixture) {
    let events = all_events(&f.store).await;
    let mut fr = Frontier::empty();
    let mut roots = Vec::new();
    for e in &events {
        fr.push(e.leaf_hash);
        roots.push(fr.root());
    }
    let n = events.len() as u64;
    assert_eq!(f.store.root(n).await.unwrap(), fr.root());
    let cp = f.store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(cp.tree_size, n);
    let v = verify_checkpoint(&cp.note, std::slice::from_ref(&f.verifier_key)).unwrap();
    assert_eq!((v.size, v.root), (n, fr.root()));
    for c in f.store.checkpoints(0, 10_000).await.unwrap() {
        assert_eq!(c.root, roots[c.tree_size as usize - 1], "checkpoint {}", c.tree_size);
    }
}

async fn appends_get_gap_free_positions_and_read_back(f: Fixture) {
    let r = f
        .store
        .append(vec![police("nominal-a", ExpectedVersion::NoStream), police("nominal-a", ExpectedVersion::Exact(0))])
        .await
        .unwrap();
    assert_eq!((r[0].position, r[0].stream_version), (2, 0));
    assert_eq!((r[1].position, r[1].stream_version), (3, 1));
    let r2 = f.store.append(vec![police("nominal-b", ExpectedVersion::Any)]).await.unwrap();
    assert_eq!(r2[0].position, 4);
    let page = f.store.read_stream(&StreamId::parse("nominal-a").unwrap(), 0, 10, &Visibility::All).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.stream_version).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(page.events[1].receipt(), r[1]);
    assert_eq!(page.next, 2);
    let page = f.store.read_stream(&StreamId::parse("nominal-a").unwrap(), 1, 10, &Visibility::All).await.unwrap();
    assert_eq!(page.events.len(), 1);
    // Paging through the log.
    let p = f.store.read_all(1, 2, &Visibility::All).await.unwrap();
    assert_eq!((p.events.len(), p.next, p.log_size), (2, 3, 5));
    check_tree(&f).await;
}

async fn expected_version_conflicts_write_nothing(f: Fixture) {
    f.store.append(vec![police("nominal-a", ExpectedVersion::NoStream)]).await.unwrap();
    let size = f.store.log_size().await.unwrap();
    let cases = [
        (ExpectedVersion::NoStream, "stream nominal-a: expected no stream, stream is at 0"),
        (ExpectedVersion::Exact(3), "stream nominal-a: expected stream version 3, stream is at 0"),
    ];
    for (expected, msg) in cases {
        match f.store.append(vec![police("nominal-a", expected)]).await {
            Err(Error::Conflict(m)) => assert_eq!(m, msg),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    match f.store.append(vec![police("nominal-new", ExpectedVersion::Exact(0))]).await {
        Err(Error::Conflict(m)) => {
            assert_eq!(m, "stream nominal-new: expected stream version 0, stream does not exist")
        }
        other => panic!("{other:?}"),
    }
    // An atomic batch whose second event conflicts records neither.
    let err = f
        .store
        .append(vec![police("nominal-c", ExpectedVersion::NoStream), police("nominal-a", ExpectedVersion::NoStream)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)));
    assert_eq!(f.store.log_size().await.unwrap(), size);
    assert!(
        f.store
            .read_stream(&StreamId::parse("nominal-c").unwrap(), 0, 10, &Visibility::All)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    check_tree(&f).await;
}

async fn retries_are_idempotent_and_reused_ids_refused(f: Fixture) {
    let batch = vec![police("nominal-a", ExpectedVersion::NoStream), police("nominal-b", ExpectedVersion::NoStream)];
    let first = f.store.append(batch.clone()).await.unwrap();
    let size = f.store.log_size().await.unwrap();
    // The retry's expected versions no longer hold, but a resend is answered from the record.
    assert_eq!(f.store.append(batch.clone()).await.unwrap(), first);
    assert_eq!(f.store.log_size().await.unwrap(), size);

    let mut other = batch[0].clone();
    other.body = b"different".to_vec();
    match f.store.append(vec![other]).await {
        Err(Error::Duplicate(m)) => assert!(m.contains("with other bytes"), "{m}"),
        r => panic!("{r:?}"),
    }
    let mixed = vec![batch[0].clone(), police("nominal-z", ExpectedVersion::Any)];
    assert!(matches!(f.store.append(mixed).await, Err(Error::Duplicate(_))));
    let dup = police("nominal-y", ExpectedVersion::Any);
    assert!(matches!(f.store.append(vec![dup.clone(), dup]).await, Err(Error::Invalid(_))));
    assert_eq!(f.store.log_size().await.unwrap(), size);
}

async fn keys_are_checked_at_recording_time(f: Fixture) {
    let before = f.store.append(vec![police("nominal-a", ExpectedVersion::Any)]).await.unwrap();
    // Unknown key, and a key of another agency.
    assert!(matches!(
        f.store.append(vec![ev("nominal-a", ExpectedVersion::Any, "met-police", "nope")]).await,
        Err(Error::KeyRefused(_))
    ));
    match f.store.append(vec![ev("nominal-a", ExpectedVersion::Any, "kent-police", "k1")]).await {
        Err(Error::KeyRefused(m)) => assert_eq!(m, "signing key k1 belongs to agency met-police, not kent-police"),
        r => panic!("{r:?}"),
    }
    // Revoke k1 (by the agency itself, signed with k1) and use it in the same round: refused.
    let mut revoke = police("agency-met-police", ExpectedVersion::Any);
    revoke.effect = RegistryEffect::RevokeKey {
        key_id: KeyId::parse("k1").unwrap(),
        agency: AgencyId::parse("met-police").unwrap(),
    };
    let revoked = f.store.append(vec![revoke]).await.unwrap();
    match f.store.append(vec![police("nominal-a", ExpectedVersion::Any)]).await {
        Err(Error::KeyRefused(m)) => {
            assert_eq!(m, format!("signing key k1 was revoked at position {}", revoked[0].position))
        }
        r => panic!("{r:?}"),
    }
    let k = f.store.keys().await.unwrap().into_iter().find(|k| k.key_id == "k1").unwrap();
    assert_eq!(k.revoked_at, Some(revoked[0].position));
    // What k1 signed before stays.
    assert_eq!(f.store.event_at(before[0].position).await.unwrap().receipt(), before[0]);
    // Registering an existing key id again is refused.
    assert!(matches!(f.store.append(vec![register("sys", "met-police", "k1")]).await, Err(Error::Duplicate(_))));
    check_tree(&f).await;
}

async fn concurrent_appends_stay_gap_free_and_readers_never_see_gaps(f: Fixture) {
    let writers = 8;
    let per_writer = 40;
    let reader_store = f.store.clone();
    let reader = tokio::spawn(async move {
        // Follow the log while it grows: every page must continue exactly where the last ended.
        let mut next = 0u64;
        let mut rounds = 0;
        while next < (2 + writers * per_writer) as u64 {
            let page = reader_store.read_all(next, 50, &Visibility::All).await.unwrap();
            for e in &page.events {
                assert_eq!(e.position, next, "a reader saw a gap");
                next += 1;
            }
            rounds += 1;
            tokio::task::yield_now().await;
        }
        rounds
    });
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let expected = if i == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(i as u64 - 1) };
                store.append(vec![police(&format!("nominal-w{w}"), expected)]).await.unwrap();
            }
        }));
    }
    // Racing writers on one stream: for each version exactly one wins.
    let mut racers = Vec::new();
    for _ in 0..4 {
        let store = f.store.clone();
        racers.push(tokio::spawn(async move {
            store.append(vec![police("nominal-race", ExpectedVersion::NoStream)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let results: Vec<_> = futures::future::join_all(racers).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Error::Conflict(_))));
    assert!(reader.await.unwrap() > 0);
    let events = all_events(&f.store).await;
    assert_eq!(events.len(), 2 + writers * per_writer + 1);
    let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &events {
        versions.entry(e.stream.as_str()).or_default().push(e.stream_version);
    }
    for (s, v) in versions {
        assert_eq!(v, (0..v.len() as u64).collect::<Vec<_>>(), "stream {s}");
    }
    check_tree(&f).await;
}

async fn two_processes_share_one_log(f: Fixture) {
    // A second store on the same database stands in for a second server process.
    let other = open(&f.url).await;
    let mut tasks = Vec::new();
    for (i, s) in [f.store.clone(), other.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..30 {
                s.append(vec![
                    police(&format!("nominal-p{i}"), ExpectedVersion::Any),
                    police(&format!("nominal-q{j}"), ExpectedVersion::Any),
                ])
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(all_events(&f.store).await.len(), 2 + 2 * 30 * 2);
    check_tree(&f).await;
    other.shutdown().await;
}

async fn proofs_verify_against_roots(f: Fixture) {
    for i in 0..20 {
        f.store.append(vec![police(&format!("nominal-{i}"), ExpectedVersion::Any)]).await.unwrap();
    }
    let events = all_events(&f.store).await;
    let n = events.len() as u64;
    for t in [1, 2, 7, 16, n] {
        let root_t = f.store.root(t).await.unwrap();
        for pos in [0, t / 2, t - 1] {
            let (leaf, proof, root) = f.store.inclusion_proof(pos, t).await.unwrap();
            assert_eq!(root, root_t);
            assert_eq!(leaf, events[pos as usize].leaf_hash);
            merkle::verify_inclusion(&proof, t, root, pos, events[pos as usize].leaf_hash).unwrap();
        }
        for from in [1, t / 2 + 1, t] {
            let (proof, r_from, r_to) = f.store.consistency_proof(from, t).await.unwrap();
            assert_eq!(r_from, f.store.root(from).await.unwrap());
            merkle::verify_consistency(&proof, t, r_to, from, r_from).unwrap();
        }
    }
    assert!(matches!(f.store.inclusion_proof(n, n).await, Err(Error::Invalid(_))));
    assert!(matches!(f.store.inclusion_proof(0, n + 1).await, Err(Error::NotFound(_))));
    assert!(matches!(f.store.consistency_proof(0, n).await, Err(Error::Invalid(_))));
}

async fn log_tables_refuse_update_and_delete(f: Fixture) {
    f.store.append(vec![police("nominal-a", ExpectedVersion::Any)]).await.unwrap();
    let mut statements = vec![
        "UPDATE events SET stream = 'x' WHERE position = 0",
        "DELETE FROM events WHERE position = 2",
        "DELETE FROM events",
        "UPDATE merkle_hashes SET hash = hash",
        "DELETE FROM merkle_hashes",
        "DELETE FROM checkpoints",
        "UPDATE signing_keys SET agency = 'x'",
        "DELETE FROM signing_keys",
    ];
    if f.store.is_postgres() {
        statements.extend(["TRUNCATE events CASCADE", "TRUNCATE merkle_hashes", "TRUNCATE checkpoints"]);
    }
    for sql in statements {
        let err = f.store.execute_raw_for_tests(sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(all_events(&f.store).await.len(), 3);
}

async fn reopening_continues_the_same_log(f: Fixture) {
    f.store.append(vec![police("nominal-a", ExpectedVersion::Any)]).await.unwrap();
    f.store.shutdown().await;
    assert!(matches!(
        f.store.append(vec![police("nominal-a", ExpectedVersion::Any)]).await,
        Err(Error::Unavailable(_))
    ));
    let again = open(&f.url).await;
    let r = again.append(vec![police("nominal-a", ExpectedVersion::Exact(0))]).await.unwrap();
    assert_eq!((r[0].position, r[0].stream_version), (3, 1));
    check_tree(&Fixture { store: again, url: f.url.clone(), verifier_key: f.verifier_key.clone(), _dir: None }).await;
}

/// A projection commit inserts the rows it created and upserts the rows it changed, with its
/// checkpoint, in one transaction: a created row that is already stored fails the whole commit
/// (the projection's state and the table disagree) and changes nothing, not even the checkpoint.
async fn read_model_commits_insert_created_rows_and_upsert_changed_ones(f: Fixture) {
    let row = |id: &str, position: u64, doc: &[u8]| ViewRow {
        model: "school_inbox".into(),
        agency: "st-marys-school".into(),
        item_id: id.into(),
        position,
        doc: doc.to_vec(),
    };
    let created = |rows: Vec<ViewRow>| ViewChanges { created: rows, changed: Vec::new() };
    let s = &f.store;
    assert!(s.commit_views("p", 0, 2, created(vec![row("a", 1, b"a1"), row("b", 1, b"b1")])).await.unwrap());
    // "a" again as created: refused, and nothing of the commit lands.
    let again =
        ViewChanges { created: vec![row("c", 3, b"c3"), row("a", 3, b"a3")], changed: vec![row("b", 3, b"b3")] };
    assert!(matches!(s.commit_views("p", 2, 4, again).await, Err(Error::Duplicate(_))));
    assert_eq!(s.view_checkpoint("p").await.unwrap(), 2);
    assert_eq!(s.view_rows_page(None, 10).await.unwrap(), vec![row("a", 1, b"a1"), row("b", 1, b"b1")]);
    // As changed rows they replace the stored ones; a changed row not stored yet is written too.
    let changes =
        ViewChanges { created: vec![row("c", 3, b"c3")], changed: vec![row("a", 3, b"a3"), row("d", 3, b"d3")] };
    assert!(s.commit_views("p", 2, 4, changes).await.unwrap());
    assert_eq!(s.view_checkpoint("p").await.unwrap(), 4);
    assert_eq!(
        s.view_rows_page(None, 10).await.unwrap(),
        vec![row("a", 3, b"a3"), row("b", 1, b"b1"), row("c", 3, b"c3"), row("d", 3, b"d3")]
    );
    // A commit from a checkpoint that has moved on writes nothing.
    assert!(!s.commit_views("p", 2, 5, created(vec![row("e", 5, b"e5")])).await.unwrap());
    assert_eq!(s.view_rows_page(None, 10).await.unwrap().len(), 4);

    // A load reads the checkpoint and the rows in one snapshot: another process committing while
    // it pages is not seen, neither its rows nor its checkpoint.
    let stored = s.view_rows_page(None, 10).await.unwrap();
    let other = open(&f.url).await;
    let handle = tokio::runtime::Handle::current();
    let mut loaded = Vec::new();
    let next = s
        .load_views("p", 1, |page| {
            if loaded.is_empty() {
                let later = created(vec![row("0", 5, b"05"), row("e", 5, b"e5")]);
                let moved = tokio::task::block_in_place(|| handle.block_on(other.commit_views("p", 4, 6, later)));
                assert!(moved.unwrap(), "the other process commits while the load pages");
            }
            loaded.extend(page);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((next, &loaded), (4, &stored));
    let mut loaded = Vec::new();
    let next = s
        .load_views("p", 2, |page| {
            loaded.extend(page);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((next, loaded.len()), (6, 6), "the next load sees that commit");
    assert_eq!(s.load_views("q", 10, |_| panic!("no rows are read without a checkpoint")).await.unwrap(), 0);
    // A reset for a projection that has started drops nothing; for one that has not, it drops
    // every projection's rows and checkpoints (rows an older projection left).
    assert!(!s.reset_views_unless_started("p").await.unwrap());
    assert_eq!((s.view_checkpoint("p").await.unwrap(), s.view_rows_page(None, 10).await.unwrap().len()), (6, 6));
    // An error from the caller stops the load.
    let refused = s.load_views("p", 1, |_| Err(Error::Corrupt("refused".into()))).await;
    assert!(matches!(refused, Err(Error::Corrupt(m)) if m == "refused"));
    assert!(s.reset_views_unless_started("q").await.unwrap());
    assert_eq!((s.view_checkpoint("p").await.unwrap(), s.view_rows_page(None, 10).await.unwrap().len()), (0, 0));
    other.shutdown().await;
}

macro_rules! conformance {
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

/// SQLite's WAL is copied into the database file by the store's background checkpoint, not
/// only when a commit takes it past the (raised) foreground threshold: the events are in the
/// database file itself (read with `immutable=1`, which ignores the WAL) shortly after they
/// are acknowledged, and stay readable through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_its_wal_in_the_background() {
    use sqlx::Connection;
    let f = fixture("sqlite").await.unwrap();
    for i in 0..20 {
        f.store.append(vec![police(&format!("nominal-{i}"), ExpectedVersion::NoStream)]).await.unwrap();
    }
    let in_file = || async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?immutable=1", f.url)).await.unwrap();
        // Before the first checkpoint even the tables are only in the WAL.
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut c).await.unwrap_or(0);
        c.close().await.unwrap();
        n
    };
    let started = std::time::Instant::now();
    while in_file().await < 22 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the WAL was never checkpointed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(all_events(&f.store).await.len(), 22);
    check_tree(&f).await;
}

/// A store shut down cleanly leaves everything in the database file and an empty WAL (so a copy
/// of the file alone is the whole log).
#[tokio::test]
async fn sqlite_shutdown_leaves_everything_in_the_database_file() {
    use sqlx::Connection;
    let f = fixture("sqlite").await.unwrap();
    for i in 0..20 {
        f.store.append(vec![police(&format!("nominal-{i}"), ExpectedVersion::NoStream)]).await.unwrap();
    }
    f.store.shutdown().await;
    let wal = std::fs::metadata(format!("{}-wal", f.url)).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "the WAL is truncated at shutdown");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?immutable=1", f.url)).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 22, "the database file alone holds every event");
    c.close().await.unwrap();
}

macro_rules! suite {
    ($($backend:ident),*) => {$(
        conformance!($backend:
            appends_get_gap_free_positions_and_read_back,
            expected_version_conflicts_write_nothing,
            retries_are_idempotent_and_reused_ids_refused,
            keys_are_checked_at_recording_time,
            concurrent_appends_stay_gap_free_and_readers_never_see_gaps,
            two_processes_share_one_log,
            proofs_verify_against_roots,
            log_tables_refuse_update_and_delete,
            reopening_continues_the_same_log,
            read_model_commits_insert_created_rows_and_upsert_changed_ones,
        );
    )*};
}

suite!(sqlite, postgres);
