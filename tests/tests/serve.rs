//! What an agency's operations team and client developers rely on around the API: TLS and
//! mutual TLS on the real server, and the SDK's own proof checks (a kept checkpoint extended, an
//! appended event proven included, a live inbox subscription). Transport settings do not depend
//! on the storage backend, so the TLS tests run on SQLite; the SDK test runs on both.

use accord_client::{Client, Tls};
use accord_e2e::{Backend, TEST_PURPOSE, TestServer, encompass_notification};
use accord_proto::v1 as pb;
use accord_server::TlsSettings;
use accord_server::config;
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A CA and a certificate it signed for `name`, each as PEM.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(cn: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki { ca_pem, issuer: Issuer::new(params, key) }
    }

    /// (certificate, key) for `name`, for a server or a client.
    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let (cert, key, _) = self.issue_with_der(name, purpose);
        (cert, key)
    }

    /// (certificate, key, the certificate's DER) for `name`.
    fn issue_with_der(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// The server's TLS settings read through the configuration path `accord serve` uses.
fn server_tls(dir: &std::path::Path, pki: &Pki, mutual: bool) -> TlsSettings {
    let (cert, key) = pki.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server-key.pem"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    let tls = config::Tls {
        cert: Some(dir.join("server.pem")),
        key: Some(dir.join("server-key.pem")),
        client_ca: mutual.then(|| dir.join("ca.pem")),
        bound_tokens: false,
    };
    TlsSettings::read(&tls).expect("TLS files read")
}

async fn inbox(c: &mut Client) -> Result<pb::QueryViewResponse, tonic::Status> {
    c.set_purpose(Some(TEST_PURPOSE)).unwrap();
    let req = pb::QueryViewRequest { model: pb::ReadModel::SchoolInbox as i32, ..Default::default() };
    c.views().query(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_plaintext() {
    let mut s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Accord test CA");
    let tls = server_tls(dir.path(), &pki, false);
    s.restart_with(|st| st.tls = Some(tls)).await;
    let token = s.token("st-marys-school", "dsl-1", &["dsl"]);
    let https = format!("https://localhost:{}", s.addr.port());

    let mut c = Client::connect_tls(&https, &token, &Tls::new(&pki.ca_pem, None)).await.expect("TLS connects");
    inbox(&mut c).await.expect("a DSL reads her inbox over TLS");

    // A client that does not trust the server's CA does not get through.
    let stranger = Pki::new("Some other CA");
    let refused = match Client::connect_tls(&https, &token, &Tls::new(&stranger.ca_pem, None)).await {
        Ok(mut c) => inbox(&mut c).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a server certificate from an untrusted CA must be refused");
    // Plaintext gRPC to a TLS port fails rather than being served.
    let plain = match Client::connect(&s.endpoint, &token).await {
        Ok(mut c) => inbox(&mut c).await.is_err(),
        Err(_) => true,
    };
    assert!(plain, "plaintext must not be served on a TLS listener");
    s.stop().await;
}

#[tokio::test]
async fn mutual_tls_admits_only_agency_systems_with_certificates_from_the_client_ca() {
    let mut s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Accord agencies CA");
    let tls = server_tls(dir.path(), &pki, true);
    s.restart_with(|st| st.tls = Some(tls)).await;
    let token = s.token("st-marys-school", "dsl-1", &["dsl"]);
    let https = format!("https://localhost:{}", s.addr.port());

    let (cert, key) = pki.issue("st-marys-school", ExtendedKeyUsagePurpose::ClientAuth);
    let with_cert = Tls::new(&pki.ca_pem, Some((cert.into_bytes(), key.into_bytes())));
    let mut c = Client::connect_tls(&https, &token, &with_cert).await.expect("mTLS connects");
    inbox(&mut c).await.expect("an agency system with a certificate from the CA is served");

    let refused = |r: Result<Client, accord_client::Error>| async {
        match r {
            Ok(mut c) => inbox(&mut c).await.is_err(),
            Err(_) => true,
        }
    };
    let no_cert = Client::connect_tls(&https, &token, &Tls::new(&pki.ca_pem, None)).await;
    assert!(refused(no_cert).await, "a client without a certificate must be refused");
    let rogue = Pki::new("Rogue CA");
    let (cert, key) = rogue.issue("st-marys-school", ExtendedKeyUsagePurpose::ClientAuth);
    let rogue_cert =
        Client::connect_tls(&https, &token, &Tls::new(&pki.ca_pem, Some((cert.into_bytes(), key.into_bytes())))).await;
    assert!(refused(rogue_cert).await, "a client certificate from another CA must be refused");
    s.stop().await;
}

/// A token bound to an agency system's client certificate (RFC 8705) is served only on a
/// connection that presents that certificate: copied to another system with its own valid
/// certificate it is UNAUTHENTICATED (without any certificate: the auth crate's tests, as mutual
/// TLS refuses such a connection first). A server that requires bound tokens refuses unbound
/// ones.
#[tokio::test]
async fn a_token_bound_to_a_client_certificate_is_served_only_with_it() {
    let mut s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Accord agencies CA");
    let tls = server_tls(dir.path(), &pki, true);
    s.restart_with(|st| st.tls = Some(tls.clone())).await;
    let https = format!("https://localhost:{}", s.addr.port());
    let (cert, key, der) = pki.issue_with_der("st-marys-school", ExtendedKeyUsagePurpose::ClientAuth);
    let ours = Tls::new(&pki.ca_pem, Some((cert.into_bytes(), key.into_bytes())));
    let (cert, key, their_der) = pki.issue_with_der("st-johns-school", ExtendedKeyUsagePurpose::ClientAuth);
    let theirs = Tls::new(&pki.ca_pem, Some((cert.into_bytes(), key.into_bytes())));

    let claims = accord_auth::DevIssuer::claims("accord", "st-marys-school", "dsl-1", &["dsl"], 600);
    let cnf = Some(accord_auth::Confirmation { x5t_s256: Some(accord_auth::certificate_thumbprint(&der)) });
    let bound = s.dev_issuer().mint_claims(&accord_auth::Claims { cnf, ..claims }).unwrap();
    let mut c = Client::connect_tls(&https, &bound, &ours).await.expect("mTLS connects");
    inbox(&mut c).await.expect("the bound token is served with its certificate");
    let mut copied = Client::connect_tls(&https, &bound, &theirs).await.expect("mTLS connects");
    let e = inbox(&mut copied).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("bound to another client certificate"), "{e:?}");
    let e = copied.ledger().append(pb::AppendRequest { events: Vec::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = copied.audit().list_accesses(pb::ListAccessesRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // Each refusal is on record under the token's holder, with the certificate presented, so the
    // school's auditor sees that its DSL's token was used from another system.
    let dpo = s.token("st-marys-school", "dpo-1", &["auditor"]);
    let mut dpo = Client::connect_tls(&https, &dpo, &ours).await.expect("mTLS connects");
    dpo.set_purpose(Some(TEST_PURPOSE)).unwrap();
    let req = pb::ListAccessesRequest {
        agency: "st-marys-school".into(),
        user: "dsl-1".into(),
        denied_only: true,
        ..Default::default()
    };
    let mut listed = dpo.audit().list_accesses(req).await.expect("auditor lists").into_inner();
    let mut refused = Vec::new();
    while let Some(e) = listed.message().await.expect("stream") {
        let r = e.record.expect("a record");
        refused.push((r.method, r.denial_code, r.client_certificate));
    }
    let theirs_print = accord_auth::certificate_thumbprint(&their_der);
    let expected: Vec<_> = ["Query", "Append", "ListAccesses"]
        .iter()
        .map(|m| (m.to_string(), "Unauthenticated".to_owned(), theirs_print.clone()))
        .collect();
    assert_eq!(refused, expected);

    // Required: an unbound token is refused even with a valid certificate.
    let required = TlsSettings { bound_tokens: true, ..tls };
    s.restart_with(|st| st.tls = Some(required)).await;
    let https = format!("https://localhost:{}", s.addr.port());
    let unbound = s.token("st-marys-school", "dsl-1", &["dsl"]);
    let mut c = Client::connect_tls(&https, &unbound, &ours).await.expect("mTLS connects");
    let e = inbox(&mut c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("accepts only tokens bound"), "{e:?}");
    let mut c = Client::connect_tls(&https, &bound, &ours).await.expect("mTLS connects");
    inbox(&mut c).await.expect("the bound token is still served");
    s.stop().await;
}

#[tokio::test]
async fn tls_files_that_are_not_pem_are_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let tls = config::Tls {
        cert: Some(dir.path().join("cert.pem")),
        key: Some(dir.path().join("key.pem")),
        client_ca: None,
        bound_tokens: false,
    };
    let e = TlsSettings::read(&tls).unwrap_err().to_string();
    assert!(e.contains("cert.pem") && e.contains("not PEM"), "{e}");
    let tls = config::Tls { cert: Some(dir.path().join("missing.pem")), ..tls };
    let e = format!("{:#}", TlsSettings::read(&tls).unwrap_err());
    assert!(e.contains("missing.pem"), "{e}");
}

async fn sdk_proves_appends_and_follows_the_inbox(s: TestServer) {
    let mut police = s.client("met-police", "pc-1", &["disclosure_officer"]).await;
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    // The log's verifier key is recorded in the log itself.
    let page =
        police.ledger().read_all(pb::ReadAllRequest { from_position: 0, limit: 100 }).await.unwrap().into_inner();
    let log_key = page
        .events
        .iter()
        .find(|e| e.event_type == "accord.v1.LogKeyRegistered")
        .map(|e| {
            let b = pb::EventBody::decode(e.event.as_ref().unwrap().body.as_slice()).unwrap();
            pb::LogKeyRegistered::decode(b.payload.as_slice()).unwrap().verifier_key
        })
        .expect("log key recorded");
    let keys = [log_key];
    let kept = police.checkpoint(pb::Log::Events, &keys, None).await.expect("a verified checkpoint");

    let mut inbox = dsl.subscribe_view(pb::ReadModel::SchoolInbox, None).await.expect("subscribed");
    let (draft, id) = encompass_notification("met-police", "pc-1", "st-marys-school", "100234");
    let signed = draft.sign(s.key("met-1"));
    let receipt = police.append(vec![signed.clone()]).await.expect("appended").remove(0);

    let now =
        police.checkpoint(pb::Log::Events, &keys, Some(&kept)).await.expect("the log extends the kept checkpoint");
    assert!(now.size > kept.size);
    police.prove_included(&signed, &receipt, &now).await.expect("the event is proven in the log");
    // The receipt is checked against the event sent, not taken on trust.
    let mut forged = receipt.clone();
    forged.stream_version += 1;
    let e = police.prove_included(&signed, &forged, &now).await.unwrap_err();
    assert!(e.to_string().contains("not the hash of the event sent"), "{e}");
    // A kept checkpoint the log does not extend is refused: another root for the same size,
    // another root for an older size (the consistency proof fails), or a log that shrank.
    use accord_domain::checkpoint::VerifiedCheckpoint;
    use accord_domain::merkle::Hash;
    let forged_now = VerifiedCheckpoint { root: Hash([7; 32]), ..now.clone() };
    let forged_old = VerifiedCheckpoint { root: Hash([7; 32]), ..kept.clone() };
    let from_the_future = VerifiedCheckpoint { size: now.size + 10, ..now.clone() };
    for bad in [forged_now, forged_old, from_the_future] {
        match police.checkpoint(pb::Log::Events, &keys, Some(&bad)).await {
            Err(accord_client::Error::Verify(_)) => {}
            other => panic!("a log that does not extend {bad:?} must fail verification: {other:?}"),
        }
    }
    // The access log's checkpoint cannot stand in for the event log's.
    let access = VerifiedCheckpoint { origin: format!("{}/access", now.origin), ..now.clone() };
    assert!(police.prove_included(&signed, &receipt, &access).await.is_err());

    let item = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.message())
        .await
        .expect("the notification arrives live")
        .unwrap()
        .expect("an item");
    match item.content {
        Some(pb::view_item::Content::Notification(n)) => assert_eq!(n.notification_id, id),
        other => panic!("not a notification: {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn sdk_proves_appends_and_follows_the_inbox_sqlite() {
    sdk_proves_appends_and_follows_the_inbox(TestServer::start(Backend::Sqlite).await.expect("sqlite")).await;
}

#[tokio::test]
async fn sdk_proves_appends_and_follows_the_inbox_postgres() {
    if let Some(s) = TestServer::start(Backend::Postgres).await {
        sdk_proves_appends_and_follows_the_inbox(s).await;
    }
}

/// `accord demo` against a server started as README's first command starts it (the demo
/// agencies file and a development issuer key): the story runs through gRPC and each user sees
/// what the scenarios promise.
async fn run_demo(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let db = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("accord.db").display()));
    let mut settings = accord_server::Settings::new(&db, dir.path().join("server.key"));
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.agencies = Some(repo.join("deploy/dev/agencies.toml"));
    settings.dev_issuer_key = Some(dir.path().join("dev.key"));
    let (addr, running) = accord_server::spawn(settings).await.expect("server starts");
    let opts = accord_server::demo::Options {
        endpoint: format!("http://{addr}"),
        dev_issuer_key: dir.path().join("dev.key"),
        audience: accord_server::DEFAULT_AUDIENCE.into(),
        keys: repo.join("deploy/dev"),
    };
    // A newcomer may well run it twice: the second run tells the same story about its own
    // records and only counts the first run's.
    let first = accord_server::demo::run(opts.clone()).await.expect("the demo runs");
    let second = accord_server::demo::run(opts).await.expect("the demo runs again");
    assert!(second.contains("(and 1 from earlier runs)"), "{second}");
    for report in [first, second] {
        check_story(&report);
    }
    running.stop().await.unwrap();
}

fn check_story(report: &str) {
    for expected in [
        "St Mary's DSL (not on the case) — 0 item(s) in READ_MODEL_MAPPA_CASES\n",
        "Encompass notification about Child A (anonymised) (URN 100234), not acknowledged",
        "police escalations a minute after the deadline: 1",
        "Child B (anonymised) (URN 137022), not acknowledged, OVERDUE",
        "ISVA isva-2 (named in the consent) — 1 item(s) in READ_MODEL_REFERRAL_INBOX",
        "Safer Streets (not in the consent) — 0 item(s) in READ_MODEL_REFERRAL_INBOX\n",
        "accord.v1.Views/Query by st-marys-school/dsl-mh [dsl]: granted",
        "2 recorded access(es) to the child's record",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in:\n{report}");
    }
}

#[tokio::test]
async fn the_demo_tells_the_story_sqlite() {
    run_demo(None).await;
}

#[tokio::test]
async fn the_demo_tells_the_story_postgres() {
    if let Some(url) = accord_store::testing::fresh_postgres_url().await {
        run_demo(Some(url)).await;
    }
}
