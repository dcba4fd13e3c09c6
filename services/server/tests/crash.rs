//! The real `accord` binary as an operator runs it: a SIGKILL under load loses no acknowledged
//! append, a SIGTERM under load drains and exits cleanly, and `accord verify` passes on an honest log and names the first divergence in a
//! tampered one. Both backends (PostgreSQL when `DATABASE_URL` is set; required in CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accord_client::{AgencyKey, Client, EventDraft};
use accord_proto::v1 as pb;
use base64::Engine;

const BIN: &str = env!("CARGO_BIN_EXE_accord");

enum Backend {
    Sqlite,
    Postgres,
}

struct Site {
    dir: tempfile::TempDir,
    url: String,
    key: AgencyKey,
    token: String,
}

impl Site {
    async fn new(backend: Backend) -> Option<Site> {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("accord.db").display()),
            Backend::Postgres => accord_store::testing::fresh_postgres_url().await?,
        };
        let key = AgencyKey::generate("met-1").unwrap();
        let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
        std::fs::write(
            dir.path().join("agencies.toml"),
            format!(
                "[[agencies]]\nid = \"met-police\"\nname = \"Met\"\nkind = \"police\"\n[[agencies.keys]]\nid = \"met-1\"\npublic_key = \"{public}\"\n"
            ),
        )
        .unwrap();
        let dev =
            accord_auth::DevIssuer::new(accord_server::keys::load_or_create(&dir.path().join("dev.key")).unwrap())
                .unwrap();
        let token = dev.mint("accord", "met-police", "pc-1", &["offender_manager"], 600).unwrap();
        Some(Site { dir, url, key, token })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `accord serve` and waits until its health service says SERVING. The caller owns the
    /// child and kills and waits for it.
    async fn serve(&self) -> (Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", &self.url])
            .arg("--server-key")
            .arg(self.path("server.key"))
            .arg("--agencies")
            .arg(self.path("agencies.toml"))
            .arg("--dev-issuer-key")
            .arg(self.path("dev.key"));
        self.start(cmd, port).await
    }

    /// Starts `accord serve --config FILE` with everything in the file, JSON log lines.
    async fn serve_from_config_file(&self) -> (Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{}\"\nserver_key = \"{}\"\nagencies = \"{}\"\ndev_issuer_key = \"{}\"\nlog_format = \"json\"\n",
            self.url,
            self.path("server.key").display(),
            self.path("agencies.toml").display(),
            self.path("dev.key").display()
        );
        std::fs::write(self.path("accord.toml"), config).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--config").arg(self.path("accord.toml"));
        // Only the file configures this server (the environment would override it).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ACCORD_") {
                cmd.env_remove(k);
            }
        }
        self.start(cmd, port).await
    }

    #[allow(clippy::zombie_processes)]
    async fn start(&self, mut cmd: Command, port: u16) -> (Child, String) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("serve.log")).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) = tonic::transport::Channel::from_shared(endpoint.clone()).unwrap().connect().await {
                let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
                let req = tonic_health::pb::HealthCheckRequest { service: "accord.v1.Ledger".into() };
                if h.check(req).await.is_ok_and(|r| r.into_inner().status == 1) {
                    return (child, endpoint);
                }
            }
            assert!(Instant::now() < deadline, "server did not become SERVING: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    fn event(&self) -> pb::SignedEvent {
        let nominal = accord_domain::EventId::new().to_string();
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::NominalRegistered {
                nominal_id: nominal.clone(),
                names: vec!["John Example".into()],
                date_of_birth: "1980-04-01".into(),
                mappa_category: 1,
                lead_agency: "met-police".into(),
                nominal_manager: "pc-1".into(),
                index_offence: "sexual assault".into(),
                ..Default::default()
            },
        )
        .author("met-police", "pc-1", "offender_manager")
        .legal_basis("DPA2018-s35", "management of a registered sexual offender")
        .subject("nominal", &nominal)
        .no_stream()
        .sign(&self.key)
    }

    fn verify(&self, against: Option<&Path>) -> (bool, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(["verify", "--database-url", &self.url]);
        if let Some(a) = against {
            cmd.arg("--against").arg(a);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// SIGTERM, then wait: a graceful stop drains and exits 0.
fn terminate(mut child: Child) {
    let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "graceful stop exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "server did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn read_all(endpoint: &str, token: &str) -> Vec<pb::RecordedEvent> {
    let mut c = Client::connect(endpoint, token).await.unwrap();
    c.set_purpose(Some("crash test: reading back every acknowledged append")).unwrap();
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let r =
            c.ledger().read_all(pb::ReadAllRequest { from_position: from, limit: 1000 }).await.unwrap().into_inner();
        out.extend(r.events);
        if r.next >= r.log_size {
            return out;
        }
        from = r.next;
    }
}

/// Eight clients appending two events a request until the server refuses them, and the receipts
/// they were given. `refused` judges the status that stops each writer.
type Acked = Arc<Mutex<Vec<pb::Receipt>>>;

async fn load(site: &Arc<Site>, endpoint: &str, refused: fn(tonic::Status)) -> (Acked, tokio::task::JoinSet<()>) {
    let acked: Acked = Arc::default();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (site, acked, endpoint) = (site.clone(), acked.clone(), endpoint.to_owned());
        writers.spawn(async move {
            let mut c = Client::connect(&endpoint, &site.token).await.unwrap();
            loop {
                match c.ledger().append(pb::AppendRequest { events: vec![site.event(), site.event()] }).await {
                    Ok(r) => acked.lock().unwrap().extend(r.into_inner().receipts),
                    Err(s) => return refused(s),
                }
            }
        });
    }
    (acked, writers)
}

/// Waits until `n` events are acknowledged.
async fn until_acknowledged(acked: &Acked, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "too slow to acknowledge {n} events");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every acknowledged event is in `log`, at its position, unaltered.
fn assert_kept(log: &[pb::RecordedEvent], acked: &Acked) {
    for r in acked.lock().unwrap().iter() {
        let e = log.get(r.position as usize).unwrap_or_else(|| panic!("acknowledged position {} lost", r.position));
        assert_eq!((&e.event_id, &e.leaf_hash), (&r.event_id, &r.leaf_hash), "acknowledged event altered");
    }
}

async fn crash_keeps_every_acknowledged_append(site: Site) {
    let (mut child, endpoint) = site.serve().await;
    let site = Arc::new(site);
    // Until the server dies under us.
    let (acked, mut writers) = load(&site, &endpoint, |_| {}).await;
    until_acknowledged(&acked, 400).await;
    child.kill().unwrap(); // SIGKILL: no chance to flush or drain anything
    child.wait().unwrap();
    while writers.join_next().await.is_some() {}

    let (child, endpoint) = site.serve().await;
    let log = read_all(&endpoint, &site.token).await;
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.position, i as u64, "positions are gap-free after the crash");
    }
    assert_kept(&log, &acked);
    // The log keeps accepting appends after the crash.
    let mut c = Client::connect(&endpoint, &site.token).await.unwrap();
    c.append(vec![site.event()]).await.unwrap();
    terminate(child);
    let (ok, out) = site.verify(None);
    assert!(ok && out.starts_with("ok:"), "verify after the crash: {out}");
}

/// SIGTERM under load (the server configured from a file, logging JSON): the process drains and
/// exits 0, every append it acknowledged is in the log, the ones it refused were refused cleanly
/// (UNAVAILABLE or a closed connection, never a half-written event), and the log verifies.
async fn sigterm_drains_in_flight_appends(site: Site) {
    let (child, endpoint) = site.serve_from_config_file().await;
    let site = Arc::new(site);
    let (acked, mut writers) = load(&site, &endpoint, |s| {
        assert!(
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled),
            "a draining server refuses with UNAVAILABLE, not {s:?}"
        );
    })
    .await;
    until_acknowledged(&acked, 200).await;
    // Waiting for the exit blocks: off the runtime, so the writers keep writing meanwhile.
    tokio::task::spawn_blocking(move || terminate(child)).await.unwrap();
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    let log_lines = site.log();
    assert!(log_lines.lines().any(|l| l.starts_with('{') && l.contains("shutdown requested; draining")), "{log_lines}");
    assert!(log_lines.lines().any(|l| l.starts_with('{') && l.contains("accord stopped")), "{log_lines}");

    let (child, endpoint) = site.serve().await;
    let log = read_all(&endpoint, &site.token).await;
    assert_kept(&log, &acked);
    terminate(child);
    let (ok, out) = site.verify(None);
    assert!(ok && out.starts_with("ok:"), "verify after a graceful stop: {out}");
}

async fn verify_names_the_first_divergence(site: Site) {
    let (child, endpoint) = site.serve().await;
    let mut c = Client::connect(&endpoint, &site.token).await.unwrap();
    for _ in 0..10 {
        c.append(vec![site.event()]).await.unwrap();
    }
    terminate(child);
    let (ok, out) = site.verify(None);
    assert!(ok, "{out}");

    let store = accord_store::Store::open(&site.url, None, Default::default()).await.unwrap();
    let kept = site.path("kept-checkpoint.txt");
    std::fs::write(&kept, store.latest_checkpoint().await.unwrap().unwrap().note).unwrap();
    let (ok, out) = site.verify(Some(&kept));
    assert!(ok && out.contains("the log extends the kept checkpoint"), "{out}");

    // An operator forges a policy adoption at an ordinary event: verify names the table.
    let forged = store.log_size().await.unwrap() - 1;
    let sql = format!("INSERT INTO policy_adoptions (position) VALUES ({forged})");
    assert_eq!(store.execute_raw_for_tests(&sql).await.unwrap(), 1);
    let (ok, out) = site.verify(None);
    assert!(!ok && out.contains("policy-adoption table"), "verify missed a forged adoption: {out}");
    let unprotect = if store.is_postgres() {
        "ALTER TABLE policy_adoptions DISABLE TRIGGER policy_adoptions_immutable"
    } else {
        "DROP TRIGGER policy_adoptions_no_delete"
    };
    store.execute_raw_for_tests(unprotect).await.unwrap();
    let undo = format!("DELETE FROM policy_adoptions WHERE position = {forged}");
    assert_eq!(store.execute_raw_for_tests(&undo).await.unwrap(), 1);
    let (ok, out) = site.verify(None);
    assert!(ok, "{out}");

    // An operator with database rights flips one byte of the body at position 5.
    let mut body = store.event_at(5).await.unwrap().body;
    body[3] ^= 0x01;
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    let unprotect = if store.is_postgres() {
        "ALTER TABLE events DISABLE TRIGGER events_immutable"
    } else {
        "DROP TRIGGER events_no_update"
    };
    store.execute_raw_for_tests(unprotect).await.unwrap();
    let sql = if store.is_postgres() {
        format!("UPDATE events SET body = decode('{hex}', 'hex') WHERE position = 5")
    } else {
        format!("UPDATE events SET body = X'{hex}' WHERE position = 5")
    };
    assert_eq!(store.execute_raw_for_tests(&sql).await.unwrap(), 1);
    let (ok, out) = site.verify(None);
    assert!(!ok, "verify passed a tampered log: {out}");
    assert!(out.contains("position 5"), "verify does not name the tampered position: {out}");
    let (ok, out) = site.verify(Some(&kept));
    assert!(!ok, "verify --against passed a tampered log: {out}");
}

macro_rules! on_both_backends {
    ($($test:ident),*) => {
        mod sqlite {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Site::new(super::Backend::Sqlite).await.unwrap()).await;
            }
        )*}
        mod postgres {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(site) = super::Site::new(super::Backend::Postgres).await {
                    super::$test(site).await;
                }
            }
        )*}
    };
}

on_both_backends!(
    crash_keeps_every_acknowledged_append,
    sigterm_drains_in_flight_appends,
    verify_names_the_first_divergence
);
