//! Test support for end-to-end scenarios: a real Accord server on a loopback port 0 over SQLite
//! or a fresh PostgreSQL database, with agencies, signing keys and development tokens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use accord_auth::DevIssuer;
use accord_client::{AgencyKey, Client, EventDraft};
use accord_proto::v1 as pb;
use accord_server::{Running, Settings};
use base64::Engine;

fn encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Which storage backend a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// A fresh database on `DATABASE_URL`.
    Postgres,
}

/// The agencies every test server knows, with their key ids. `met-old` is revoked in the file.
pub const AGENCIES: &[(&str, &str, &str, &[&str])] = &[
    ("met-police", "Metropolitan Police Service", "police", &["met-1", "met-2", "met-old"]),
    ("kent-police", "Kent Police", "police", &["kent-1"]),
    ("probation-london", "Probation Service London", "probation", &["prob-1"]),
    ("st-marys-school", "St Mary's Primary School", "school", &["school-1"]),
    ("london-mappa", "London MAPPA Strategic Management Board", "mappa_unit", &["mappa-1"]),
    ("st-johns-school", "St John's Academy", "school", &["school-2"]),
    ("solace-isva", "Solace Independent Sexual Violence Advisers", "support_service", &["solace-1"]),
    ("safer-streets", "Safer Streets Outreach", "support_service", &["safer-1"]),
    ("london-csc", "London Borough Children's Social Care", "childrens_services", &["csc-1"]),
];

/// The agencies whose admins may adopt sharing policy.
pub const GOVERNING: &[&str] = &["london-mappa"];

/// The purpose every test client states for its reads (`accord-purpose`).
pub const TEST_PURPOSE: &str = "end-to-end test of the safeguarding read paths";

/// A client of `endpoint` with `token`, stating [`TEST_PURPOSE`] for its reads.
pub async fn connect(endpoint: &str, token: &str) -> Client {
    let c = Client::connect(endpoint, token).await.expect("connect");
    c.set_purpose(Some(TEST_PURPOSE)).expect("a valid purpose");
    c
}

/// A running test server.
pub struct TestServer {
    /// Its address.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub endpoint: String,
    /// The database it runs on.
    pub database_url: String,
    /// The backend.
    pub backend: Backend,
    /// Agency signing keys by key id.
    pub keys: HashMap<String, AgencyKey>,
    dev: DevIssuer,
    settings: Settings,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on `backend`; `None` when PostgreSQL is not configured outside CI.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("accord.db").display()),
            Backend::Postgres => accord_store::testing::fresh_postgres_url().await?,
        };
        let mut keys = HashMap::new();
        let mut toml = String::new();
        for (id, name, kind, key_ids) in AGENCIES {
            toml.push_str(&format!("[[agencies]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"{kind}\"\n"));
            if GOVERNING.contains(id) {
                toml.push_str("governs_policy = true\n");
            }
            for k in *key_ids {
                let key = AgencyKey::generate(k).expect("key");
                toml.push_str(&format!(
                    "[[agencies.keys]]\nid = \"{k}\"\npublic_key = \"{}\"\n",
                    encode(&key.public_key())
                ));
                if *k == "met-old" {
                    toml.push_str("revoked = \"replaced by met-1\"\n");
                }
                keys.insert((*k).to_owned(), key);
            }
        }
        let agencies: PathBuf = dir.path().join("agencies.toml");
        std::fs::write(&agencies, toml).expect("write agencies");
        let dev_key = dir.path().join("dev-issuer.key");
        let mut settings = Settings::new(&database_url, dir.path().join("server.key"));
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        settings.agencies = Some(agencies);
        settings.dev_issuer_key = Some(dev_key.clone());
        let (addr, running) = accord_server::spawn(settings.clone()).await.expect("server starts");
        let dev = DevIssuer::new(accord_server::keys::load_or_create(&dev_key).expect("dev key")).expect("dev issuer");
        Some(TestServer {
            addr,
            endpoint: format!("http://{addr}"),
            database_url,
            backend,
            keys,
            dev,
            settings,
            running: Some(running),
            _dir: dir,
        })
    }

    /// The running server's store (to look underneath the API).
    pub fn store(&self) -> &accord_store::Store {
        &self.running.as_ref().expect("running").store
    }

    /// A development token.
    pub fn token(&self, agency: &str, user: &str, roles: &[&str]) -> String {
        self.dev.mint("accord", agency, user, roles, 600).expect("token")
    }

    /// The development issuer (for hand-made claims).
    pub fn dev_issuer(&self) -> &DevIssuer {
        &self.dev
    }

    /// A client with a token for `user` of `agency` with `roles`.
    pub async fn client(&self, agency: &str, user: &str, roles: &[&str]) -> Client {
        self.client_at(&self.endpoint, agency, user, roles).await
    }

    /// A signing key by id.
    pub fn key(&self, key_id: &str) -> &AgencyKey {
        &self.keys[key_id]
    }

    /// Stops the server gracefully and starts it again on the same database and keys (a new
    /// port).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Stops the server and starts it again with `change` applied to its settings.
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.settings);
        self.running.take().expect("running").stop().await.expect("clean stop");
        let (addr, running) = accord_server::spawn(self.settings.clone()).await.expect("server restarts");
        self.addr = addr;
        self.endpoint = format!("http://{addr}");
        self.running = Some(running);
    }

    /// Starts a second server process's worth of server (its own store, sequencer and policy
    /// history) on the same database and keys, as a second replica would; returns its endpoint
    /// and the handle that stops it.
    pub async fn second_instance(&self) -> (String, accord_server::Running) {
        let (addr, running) = accord_server::spawn(self.settings.clone()).await.expect("second instance starts");
        (format!("http://{addr}"), running)
    }

    /// A client of another instance at `endpoint`.
    pub async fn client_at(&self, endpoint: &str, agency: &str, user: &str, roles: &[&str]) -> Client {
        connect(endpoint, &self.token(agency, user, roles)).await
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
    }

    /// Stops the server but keeps its files (the SQLite database) until the returned directory
    /// is dropped: for a test that goes on with the store afterwards, as an operator would with
    /// the server down. (`stop` deletes them, and a connection the store's pool opens later fails.)
    pub async fn stop_keeping_files(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        self._dir
    }
}

/// A valid `NominalRegistered` for a new nominal, authored by `user` (an offender manager) of
/// `agency`; returns the draft and the nominal id.
pub fn nominal_registered(agency: &str, user: &str) -> (EventDraft, String) {
    let nominal = uuid::Uuid::now_v7().to_string();
    let draft = EventDraft::new(
        &format!("nominal-{nominal}"),
        &pb::NominalRegistered {
            nominal_id: nominal.clone(),
            visor_ref: "VISOR-0001".into(),
            pnc_ref: "01/123456A".into(),
            names: vec!["John Example".into()],
            aliases: vec!["Jack".into()],
            date_of_birth: "1980-04-01".into(),
            mappa_category: 1,
            lead_agency: agency.into(),
            nominal_manager: user.into(),
            index_offence: "sexual assault".into(),
            notification_period_end: None,
            co_managing_agencies: if agency == "probation-london" { vec![] } else { vec!["probation-london".into()] },
        },
    )
    .author(agency, user, "offender_manager")
    .legal_basis("DPA2018-s35", "management of a registered sexual offender")
    .subject("nominal", &nominal)
    .no_stream();
    (draft, nominal)
}

/// A valid `MappaLevelSet` for `nominal` by a MAPPA coordinator.
pub fn mappa_level_set(agency: &str, user: &str, nominal: &str, level: u32) -> EventDraft {
    EventDraft::new(
        &format!("nominal-{nominal}"),
        &pb::MappaLevelSet {
            nominal_id: nominal.into(),
            level,
            decided_by: user.into(),
            rationale: "high risk of serious harm to children".into(),
        },
    )
    .author(agency, user, "mappa_coordinator")
    .legal_basis("CJA2003-s325", "MAPPA level 2 management")
    .subject("nominal", nominal)
}

/// Runs each named `async fn(TestServer)` on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let s = $crate::TestServer::start($crate::Backend::Sqlite).await.expect("sqlite always runs");
                    super::$test(s).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(s) = $crate::TestServer::start($crate::Backend::Postgres).await {
                        super::$test(s).await;
                    }
                }
            )*
        }
    };
}

/// A `PolicyAdopted` of `policies` (Cedar) with the default views, by an agency admin.
pub fn policy_adopted(agency: &str, user: &str, policies: &str) -> EventDraft {
    let payload = accord_registry::policy_adopted(policies, accord_policy::DEFAULT_VIEWS, "a test policy change")
        .expect("the default views parse");
    EventDraft::new(accord_domain::payload::POLICY_STREAM, &payload)
        .author(agency, user, "agency_admin")
        .legal_basis("CJA2003-s325", "MAPPA sharing agreement review")
        .subject("agency", agency)
        .regime(pb::Regime::Part3)
}

/// A valid `EncompassNotificationSent` from a police disclosure officer of `agency` to the school
/// `to` (URN `urn`) about a new child, due in 36 hours. Returns the draft and the notification id.
pub fn encompass_notification(agency: &str, user: &str, to: &str, urn: &str) -> (EventDraft, String) {
    let id = uuid::Uuid::now_v7().to_string();
    let child = uuid::Uuid::now_v7().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let draft = EventDraft::new(
        &format!("encompass-{id}"),
        &pb::EncompassNotificationSent {
            notification_id: id.clone(),
            incident_ref: "MPS-DA-2026-0042".into(),
            child: Some(pb::EncompassChild {
                child_id: child.clone(),
                name: "Child A".into(),
                date_of_birth: "2016-04-01".into(),
                present: true,
                whereabouts: "upstairs bedroom".into(),
                voice_of_child: "said she was frightened by the shouting".into(),
            }),
            establishment_urn: urn.into(),
            local_authority: String::new(),
            recipient_role: "dsl".into(),
            incident_summary: "Saturday 23:10, the family home".into(),
            circumstances: "Police attended a verbal argument between the adults; the child was awake".into(),
            deadline: Some(prost_types::Timestamp { seconds: now + 36 * 3600, nanos: 0 }),
        },
    )
    .author(agency, user, "disclosure_officer")
    .legal_basis("DAA2021-s49A", "Operation Encompass notification")
    .subject("child", &child)
    .addressee(to)
    .no_stream();
    (draft, id)
}

/// An acknowledgement of Operation Encompass notification `id` by `user`, the DSL of `school`.
pub fn encompass_acknowledgement(school: &str, user: &str, id: &str) -> EventDraft {
    EventDraft::new(
        &format!("encompass-{id}"),
        &pb::EncompassNotificationAcknowledged { notification_id: id.into(), acknowledged_by: user.into() },
    )
    .author(school, user, "dsl")
    .legal_basis("DAA2021-s49A", "acknowledge an Operation Encompass notification")
    .subject("agency", school)
    .regime(pb::Regime::UkGdpr)
}

/// Appends through the generated client, returning the gRPC status on refusal.
pub async fn try_append(c: &mut Client, events: Vec<pb::SignedEvent>) -> Result<Vec<pb::Receipt>, tonic::Status> {
    c.ledger().append(pb::AppendRequest { events }).await.map(|r| r.into_inner().receipts)
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A `ConsentRecorded` by a police sex-work liaison officer of `agency`: the person `subject`
/// agrees that `recipients` receive her contact details and needs for support. Returns the draft
/// and the consent id.
pub fn consent_recorded(agency: &str, user: &str, subject: &str, recipients: &[&str]) -> (EventDraft, String) {
    let id = uuid::Uuid::now_v7().to_string();
    let draft = EventDraft::new(
        &format!("consent-{id}"),
        &pb::ConsentRecorded {
            consent_id: id.clone(),
            subject_id: subject.into(),
            data: vec!["contact_details".into(), "needs".into()],
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            purposes: vec!["support after a sexual assault".into()],
            given_by: "the person herself".into(),
            method: "written".into(),
            expires_at: None,
        },
    )
    .author(agency, user, "swlo")
    .legal_basis("UKGDPR-6-1-a", "consent to a support referral")
    .subject("person", subject)
    .regime(pb::Regime::UkGdpr)
    .no_stream();
    (draft, id)
}

/// A `SupportReferralMade` under `consent` to the support service `to`. Returns the draft and the
/// referral id.
pub fn support_referral(agency: &str, user: &str, consent: &str, subject: &str, to: &str) -> (EventDraft, String) {
    let id = uuid::Uuid::now_v7().to_string();
    let draft = EventDraft::new(
        &format!("referral-{id}"),
        &pb::SupportReferralMade {
            referral_id: id.clone(),
            consent_id: consent.into(),
            subject_id: subject.into(),
            contact_name: "Sam".into(),
            needs: vec!["ISVA support through the investigation".into()],
            safe_contact_method: "text only, after 6pm".into(),
            safe_contact_details: "07700 900123".into(),
        },
    )
    .author(agency, user, "swlo")
    .legal_basis("UKGDPR-6-1-a", "support referral with consent")
    .subject("person", subject)
    .addressee(to)
    .regime(pb::Regime::UkGdpr)
    .no_stream();
    (draft, id)
}

/// A `RecordCorrected` of `corrected` (an event of `agency` in `stream`) setting `fields`.
pub fn record_corrected(
    agency: &str,
    user: &str,
    role: &str,
    stream: &str,
    corrected: &str,
    fields: &[(&str, &str)],
) -> EventDraft {
    EventDraft::new(
        stream,
        &pb::RecordCorrected {
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            reason: "recorded wrongly at first".into(),
        },
    )
    .author(agency, user, role)
    .legal_basis("DPA2018-s46", "accuracy: correcting a record")
    .subject("agency", agency)
    .with(|b| b.supersedes = corrected.to_owned())
}

/// The caller's items of one read model (latest), or the refusal.
pub async fn query(c: &mut Client, model: pb::ReadModel) -> Result<pb::QueryViewResponse, tonic::Status> {
    c.views()
        .query(pb::QueryViewRequest { model: model as i32, ..Default::default() })
        .await
        .map(tonic::Response::into_inner)
}

/// What a user of `agency` with `roles` would have been answered for `model` just after log
/// `position` (the audit replay; not a public API): a fresh fold of the log prefix.
pub async fn query_as_of(
    s: &TestServer,
    agency: &str,
    user: &str,
    roles: &[&str],
    model: accord_views::Model,
    position: u64,
) -> Vec<pb::ViewItem> {
    let sharing = accord_ledger::Sharing::load(s.store().clone()).await.expect("policy history");
    let projector = accord_views::Projector::open(sharing).await.expect("read models");
    let principal = accord_auth::Principal {
        agency: accord_domain::AgencyId::parse(agency.to_owned()).expect("agency id"),
        user: accord_domain::UserId::parse(user.to_owned()).expect("user id"),
        roles: roles.iter().map(|r| accord_domain::Role::parse((*r).to_owned()).expect("role")).collect(),
        token_id: None,
        issuer: "test".into(),
    };
    accord_views::answer_as_of(
        &projector,
        &principal,
        model,
        position,
        accord_domain::Timestamp::now(),
        Default::default(),
    )
    .await
    .expect("as-of answer")
    .0
}
/// Asserts that the read models the server stored, a fresh fold of the whole log and a rebuild
/// from zero are byte-identical, then restarts the server on them and checks that `check`
/// (a read through the API) answers the same before and after.
pub async fn assert_rebuilds_identically<T, F, Fut>(s: &mut TestServer, check: F)
where
    T: PartialEq + std::fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before = check(s.endpoint.clone()).await;
    let size = s.store().log_size().await.expect("log size");
    let sharing = accord_ledger::Sharing::load(s.store().clone()).await.expect("policy history");
    let projector = accord_views::Projector::open(sharing).await.expect("read models");
    projector.catch_up().await.expect("caught up");
    let stored = projector.digest().await;
    let folded = projector.as_of(size - 1).await.expect("fold").digest();
    let (progress, rebuilt) = projector.rebuild().await.expect("rebuild");
    assert_eq!(progress.events, size);
    assert_eq!(stored, folded, "the stored read models equal a fold of the log");
    assert_eq!(stored, rebuilt, "a rebuild from zero gives identical read models");
    s.restart().await;
    assert_eq!(check(s.endpoint.clone()).await, before, "a restarted server serves the same read models");
}
