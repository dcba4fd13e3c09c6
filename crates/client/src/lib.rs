//! Accord's Rust SDK: hold an agency signing key, build and sign events, append them with safe
//! retries, and verify what the server returns (signatures, leaf hashes, checkpoints, inclusion
//! and consistency proofs) without trusting the server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), accord_client::Error> {
//! use accord_client::{AgencyKey, Client, EventDraft};
//! use accord_proto::v1 as pb;
//!
//! let key = AgencyKey::from_pem_file("met-police-2026.key", "met-police-2026")?;
//! let nominal = uuid::Uuid::now_v7().to_string();
//! let event = EventDraft::new(&format!("nominal-{nominal}"), &pb::NominalRegistered {
//!         nominal_id: nominal.clone(),
//!         names: vec!["John Smith".into()],
//!         date_of_birth: "1980-04-01".into(),
//!         mappa_category: 1,
//!         lead_agency: "met-police".into(),
//!         nominal_manager: "pc-1234".into(),
//!         index_offence: "sexual assault".into(),
//!         ..Default::default()
//!     })
//!     .author("met-police", "pc-1234", "offender_manager")
//!     .legal_basis("DPA2018-s35", "management of a registered sexual offender")
//!     .subject("nominal", &nominal)
//!     .no_stream()
//!     .sign(&key);
//! let mut client = Client::connect("http://127.0.0.1:50051", "<JWT>").await?;
//! let receipts = client.append(vec![event]).await?;
//! println!("recorded at position {}", receipts[0].position);
//! # Ok(()) }
//! ```
//!
//! This crate does not decide policy or store anything; it speaks the public gRPC contract.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use accord_domain::checkpoint::VerifiedCheckpoint;
use accord_domain::merkle::{self, Hash, parse_hash};
use accord_domain::{KeyId, Timestamp, signing};
use accord_proto::v1 as pb;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use accord_domain::checkpoint::verify_checkpoint as verify_checkpoint_note;

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file or key could not be used.
    #[error("key: {0}")]
    Key(String),
    /// Could not connect.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error.
    #[error("server: {0}")]
    Status(#[from] tonic::Status),
    /// Something the server returned does not verify.
    #[error("verification failed: {0}")]
    Verify(String),
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An agency's Ed25519 signing key and its registered id.
pub struct AgencyKey {
    key_id: KeyId,
    key: SigningKey,
}

impl std::fmt::Debug for AgencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencyKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl AgencyKey {
    /// A fresh random key.
    pub fn generate(key_id: &str) -> Result<Self> {
        Self::new(key_id, SigningKey::generate(&mut rand_core::OsRng))
    }

    /// From a secret key.
    pub fn new(key_id: &str, key: SigningKey) -> Result<Self> {
        Ok(Self { key_id: KeyId::parse(key_id).map_err(|e| Error::Key(e.to_string()))?, key })
    }

    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as `accord keygen` writes.
    pub fn from_pem(pem: &str, key_id: &str) -> Result<Self> {
        let key =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| Error::Key(format!("not an Ed25519 PKCS#8 PEM key: {e}")))?;
        Self::new(key_id, key)
    }

    /// From a PKCS#8 PEM file.
    pub fn from_pem_file(path: impl AsRef<std::path::Path>, key_id: &str) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| Error::Key(format!("reading {}: {e}", path.display())))?;
        Self::from_pem(&pem, key_id)
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        pkcs8_pem(&self.key)
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        self.key_id.as_str()
    }

    /// The 32-byte public key, as registered with Accord.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The secret key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs an encoded `EventBody`.
    pub fn sign_body(&self, body: Vec<u8>) -> pb::SignedEvent {
        let signature = signing::sign_body(&self.key, &body).to_vec();
        pb::SignedEvent { body, key_id: self.key_id.to_string(), signature }
    }
}

/// A payload message of the event catalogue, with its event type name.
pub trait Catalogued: Message {
    /// The `EventBody.event_type` of this payload.
    const EVENT_TYPE: &'static str;
}

macro_rules! catalogued {
    ($($t:ident),*) => {$(
        impl Catalogued for pb::$t {
            const EVENT_TYPE: &'static str = concat!("accord.v1.", stringify!($t));
        }
    )*};
}
catalogued!(
    AgencyRegistered,
    SigningKeyRegistered,
    SigningKeyRevoked,
    LogKeyRegistered,
    NominalRegistered,
    MappaLevelSet,
    PolicyAdopted,
    EncompassNotificationSent,
    EncompassNotificationAcknowledged,
    ConsentRecorded,
    ConsentWithdrawn,
    SupportReferralMade,
    SupportReferralAccepted,
    SupportReferralDeclined,
    RecordCorrected,
    NotificationRequirementUpdated,
    OrderRecorded,
    RiskAssessmentRecorded,
    MappaReferralMade,
    MappaMeetingHeld,
    ActionAssigned,
    ActionCompleted,
    DisclosureRequested,
    DisclosureChecksCompleted,
    ApplicantVerified,
    DisclosureDecided,
    DisclosureMade,
    DisclosureApplicationClosed,
    RiskManagementPlanUpdated,
    MinutesDistributed,
    DomesticAbuseIncidentRecorded,
    SchoolSupportRecorded,
    IntelligenceShared,
    IncidentRecorded,
    VictimContactDetailsRecorded,
    AccessInvestigationOpened,
    AccessInvestigationClosed,
    RetentionReviewed,
    RecordErased
);

/// An event being built. Defaults: a fresh UUIDv7 id, expected version `any`, schema version 1,
/// occurred now, regime Part 3, classification OFFICIAL-SENSITIVE.
#[derive(Debug, Clone)]
pub struct EventDraft {
    body: pb::EventBody,
}

impl EventDraft {
    /// A draft for `stream` carrying `payload`.
    pub fn new<P: Catalogued>(stream: &str, payload: &P) -> Self {
        Self::raw(stream, P::EVENT_TYPE, payload.encode_to_vec())
    }

    /// A draft with an already encoded payload of `event_type`.
    pub fn raw(stream: &str, event_type: &str, payload: Vec<u8>) -> Self {
        let (seconds, nanos) = Timestamp::now().parts();
        Self {
            body: pb::EventBody {
                event_id: uuid::Uuid::now_v7().to_string(),
                stream: stream.to_owned(),
                expected_version: Some(pb::ExpectedVersion {
                    kind: Some(pb::expected_version::Kind::Any(pb::Empty {})),
                }),
                event_type: event_type.to_owned(),
                schema_version: 1,
                payload,
                occurred_at: Some(prost_types::Timestamp { seconds, nanos }),
                regime: pb::Regime::Part3 as i32,
                classification: pb::Classification::OfficialSensitive as i32,
                ..Default::default()
            },
        }
    }

    /// Sets the author.
    pub fn author(mut self, agency: &str, user: &str, role: &str) -> Self {
        self.body.author = Some(pb::Author { agency: agency.into(), user: user.into(), role: role.into() });
        self
    }

    /// Sets the legal basis.
    pub fn legal_basis(mut self, statute: &str, purpose: &str) -> Self {
        self.body.legal_basis = Some(pb::LegalBasis { statute: statute.into(), purpose: purpose.into() });
        self
    }

    /// Adds a data subject.
    pub fn subject(mut self, kind: &str, id: &str) -> Self {
        self.body.subjects.push(pb::Subject { kind: kind.into(), id: id.into() });
        self
    }

    /// Adds an addressee agency.
    pub fn addressee(mut self, agency: &str) -> Self {
        self.body.addressees.push(agency.into());
        self
    }

    /// The stream must not exist yet.
    pub fn no_stream(mut self) -> Self {
        self.body.expected_version =
            Some(pb::ExpectedVersion { kind: Some(pb::expected_version::Kind::NoStream(pb::Empty {})) });
        self
    }

    /// The stream's last event must have version `v`.
    pub fn expect_version(mut self, v: u64) -> Self {
        self.body.expected_version = Some(pb::ExpectedVersion { kind: Some(pb::expected_version::Kind::Exact(v)) });
        self
    }

    /// Sets the regime.
    pub fn regime(mut self, r: pb::Regime) -> Self {
        self.body.regime = r as i32;
        self
    }

    /// Changes the body directly (for fields without a helper, and for tests of bad input).
    pub fn with(mut self, f: impl FnOnce(&mut pb::EventBody)) -> Self {
        f(&mut self.body);
        self
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        &self.body.event_id
    }

    /// The body as built.
    pub fn body(&self) -> &pb::EventBody {
        &self.body
    }

    /// Encodes and signs.
    pub fn sign(&self, key: &AgencyKey) -> pb::SignedEvent {
        key.sign_body(self.body.encode_to_vec())
    }
}

/// Adds `authorization: Bearer <token>` to every call, and the purpose the client states for
/// its reads (`accord-purpose`, see `audit.proto`) when one is set.
#[derive(Clone)]
pub struct Bearer {
    token: MetadataValue<tonic::metadata::Ascii>,
    purpose: Arc<RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>>,
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.token.clone());
        if let Some(p) = self.purpose.read().expect("purpose lock").clone() {
            req.metadata_mut().insert("accord-purpose", p);
        }
        Ok(req)
    }
}

/// The generated Audit client with a bearer token (auditors only).
pub type AuditClient = pb::audit_client::AuditClient<InterceptedService<Channel, Bearer>>;

/// The generated Ledger client with a bearer token.
pub type LedgerClient = pb::ledger_client::LedgerClient<InterceptedService<Channel, Bearer>>;

/// The generated Views client with a bearer token.
pub type ViewsClient = pb::views_client::ViewsClient<InterceptedService<Channel, Bearer>>;

/// A connection to an Accord server.
#[derive(Clone)]
pub struct Client {
    ledger: LedgerClient,
    views: ViewsClient,
    audit: AuditClient,
    purpose: Arc<RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>>,
}

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`) with a bearer token.
    pub async fn connect(endpoint: &str, token: &str) -> Result<Self> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| Error::Key(format!("bad endpoint {endpoint:?}: {e}")))?
            .connect()
            .await
            .map_err(|source| Error::Connect { endpoint: endpoint.to_owned(), source })?;
        Self::with_channel(channel, token)
    }

    /// Connects over TLS (an `https://` endpoint): the server's certificate must chain to
    /// `tls`'s CA (the platform's roots are not consulted), and with an identity in `tls` the
    /// client presents its own certificate (mutual TLS).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), accord_client::Error> {
    /// use accord_client::{Client, Tls};
    ///
    /// let tls = Tls::from_files("accord-ca.pem")?.identity_files("agency.pem", "agency-key.pem")?;
    /// let client = Client::connect_tls("https://accord.example.org:50051", "<JWT>", &tls).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_tls(endpoint: &str, token: &str, tls: &Tls) -> Result<Self> {
        // tonic only speaks TLS to https:// endpoints; anything else would send the token in
        // the clear although the caller asked for TLS.
        if !endpoint.starts_with("https://") {
            return Err(Error::Key(format!("connect_tls needs an https:// endpoint, not {endpoint:?}")));
        }
        let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(tls.ca.clone());
        if let Some(id) = &tls.identity {
            config = config.identity(id.clone());
        }
        if let Some(d) = &tls.domain {
            config = config.domain_name(d.clone());
        }
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| Error::Key(format!("bad endpoint {endpoint:?}: {e}")))?
            .tls_config(config)
            .map_err(|source| Error::Connect { endpoint: endpoint.to_owned(), source })?
            .connect()
            .await
            .map_err(|source| Error::Connect { endpoint: endpoint.to_owned(), source })?;
        Self::with_channel(channel, token)
    }

    /// Uses an existing channel.
    pub fn with_channel(channel: Channel, token: &str) -> Result<Self> {
        let token: MetadataValue<_> =
            format!("Bearer {token}").parse().map_err(|_| Error::Key("token is not valid header text".into()))?;
        let purpose = Arc::new(RwLock::new(None));
        let bearer = Bearer { token, purpose: Arc::clone(&purpose) };
        Ok(Self {
            ledger: pb::ledger_client::LedgerClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(16 * 1024 * 1024),
            views: pb::views_client::ViewsClient::with_interceptor(channel.clone(), bearer.clone())
                .max_decoding_message_size(16 * 1024 * 1024),
            audit: pb::audit_client::AuditClient::with_interceptor(channel, bearer)
                .max_decoding_message_size(16 * 1024 * 1024),
            purpose,
        })
    }

    /// States the purpose of this client's reads from now on (sent as `accord-purpose` metadata
    /// and recorded in the access log with every read), or stops stating one (`None`). Every
    /// read needs one: without it the server refuses reads with INVALID_ARGUMENT.
    ///
    /// ```
    /// # async fn run(mut client: accord_client::Client) -> Result<(), accord_client::Error> {
    /// client.set_purpose(Some("DSL morning check of Operation Encompass notifications"))?;
    /// # Ok(()) }
    /// ```
    pub fn set_purpose(&self, purpose: Option<&str>) -> Result<()> {
        let value = purpose
            .map(|p| p.parse::<MetadataValue<_>>())
            .transpose()
            .map_err(|_| Error::Key("purpose: must be printable ASCII".into()))?;
        *self.purpose.write().expect("purpose lock") = value;
        Ok(())
    }

    /// The generated Audit client: the access log, for auditors.
    pub fn audit(&mut self) -> &mut AuditClient {
        &mut self.audit
    }

    /// The generated Views client: the caller's read models.
    pub fn views(&mut self) -> &mut ViewsClient {
        &mut self.views
    }

    /// The generated client, for every other call.
    pub fn ledger(&mut self) -> &mut LedgerClient {
        &mut self.ledger
    }

    /// Appends events atomically. Retries (up to 5 times, backing off) when the server is
    /// unavailable: safe, because the same signed events are re-sent and the server answers a
    /// resend with the original receipts.
    pub async fn append(&mut self, events: Vec<pb::SignedEvent>) -> Result<Vec<pb::Receipt>> {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match self.ledger.append(pb::AppendRequest { events: events.clone() }).await {
                Ok(r) => return Ok(r.into_inner().receipts),
                Err(s) if s.code() == tonic::Code::Unavailable && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }
}

impl Client {
    /// New and changed items of one of the caller's read models from after `after` (the
    /// `position` of the last item you processed; `None` for everything), then live. Resuming
    /// from the last position received loses and repeats nothing. Set a purpose first.
    ///
    /// ```no_run
    /// # async fn demo(mut client: accord_client::Client) -> Result<(), accord_client::Error> {
    /// use accord_proto::v1 as pb;
    ///
    /// client.set_purpose(Some("Operation Encompass: the morning check"))?;
    /// let mut inbox = client.subscribe_view(pb::ReadModel::SchoolInbox, None).await?;
    /// while let Some(item) = inbox.message().await? {
    ///     println!("{} (position {})", item.item_id, item.position);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_view(
        &mut self,
        model: pb::ReadModel,
        after: Option<u64>,
    ) -> Result<tonic::Streaming<pb::ViewItem>> {
        let req = pb::SubscribeViewRequest { model: model as i32, after_position: after };
        Ok(self.views.subscribe(req).await?.into_inner())
    }

    /// Fetches the latest signed checkpoint of `log`, verifies its signature with
    /// `verifier_keys`, and — when you pass the checkpoint you kept earlier — fetches and checks
    /// a consistency proof that the log now extends it (history was not rewritten). Keep the
    /// result for next time.
    ///
    /// ```no_run
    /// # async fn demo(mut client: accord_client::Client, verifier_key: String) -> Result<(), accord_client::Error> {
    /// use accord_proto::v1 as pb;
    ///
    /// let first = client.checkpoint(pb::Log::Events, &[verifier_key.clone()], None).await?;
    /// // ... later: fails with Error::Verify if the log no longer extends `first`.
    /// let later = client.checkpoint(pb::Log::Events, &[verifier_key], Some(&first)).await?;
    /// assert!(later.size >= first.size);
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint(
        &mut self,
        log: pb::Log,
        verifier_keys: &[String],
        kept: Option<&VerifiedCheckpoint>,
    ) -> Result<VerifiedCheckpoint> {
        let cp = self.ledger.get_checkpoint(pb::GetCheckpointRequest { log: log as i32 }).await?.into_inner();
        let new = verify_checkpoint(&cp, verifier_keys)?;
        if let Some(old) = kept {
            if old.origin != new.origin {
                return Err(Error::Verify(format!("the kept checkpoint is of {}, not {}", old.origin, new.origin)));
            }
            if new.size < old.size {
                return Err(Error::Verify(format!(
                    "the log shrank: the kept checkpoint has size {}, the server's {}",
                    old.size, new.size
                )));
            }
            if new.size == old.size {
                if new.root != old.root {
                    return Err(Error::Verify(format!("two different roots for size {}", new.size)));
                }
            } else {
                let req = pb::GetConsistencyProofRequest { from_size: old.size, to_size: new.size, log: log as i32 };
                let proof = self.ledger.get_consistency_proof(req).await?.into_inner();
                verify_consistency(&proof, old, &new)?;
            }
        }
        Ok(new)
    }

    /// Proves that `event`, appended with `receipt`, is in the log a verified checkpoint
    /// commits to: recomputes the leaf hash from the event you signed and the receipt's fields
    /// (not trusting the receipt's hash), fetches an inclusion proof and checks it.
    ///
    /// ```no_run
    /// # async fn demo(mut client: accord_client::Client, signed: accord_proto::v1::SignedEvent,
    /// #               verifier_key: String) -> Result<(), accord_client::Error> {
    /// use accord_proto::v1 as pb;
    ///
    /// let receipt = client.append(vec![signed.clone()]).await?.remove(0);
    /// let cp = client.checkpoint(pb::Log::Events, &[verifier_key], None).await?;
    /// client.prove_included(&signed, &receipt, &cp).await?;
    /// # Ok(()) }
    /// ```
    pub async fn prove_included(
        &mut self,
        event: &pb::SignedEvent,
        receipt: &pb::Receipt,
        checkpoint: &VerifiedCheckpoint,
    ) -> Result<()> {
        if checkpoint.origin.ends_with("/access") {
            return Err(Error::Verify(format!(
                "{} is the access log's checkpoint, not the event log's",
                checkpoint.origin
            )));
        }
        let body = pb::EventBody::decode(event.body.as_slice())
            .map_err(|e| Error::Verify(format!("the event's body does not decode: {e}")))?;
        let stream = body.stream.as_str();
        if receipt.position >= checkpoint.size {
            return Err(Error::Verify(format!(
                "position {} is not in the checkpoint of size {}; fetch a newer checkpoint",
                receipt.position, checkpoint.size
            )));
        }
        let t = receipt.recorded_at.ok_or_else(|| Error::Verify("receipt without recorded_at".into()))?;
        let leaf = merkle::Leaf {
            position: receipt.position,
            recorded_at: Timestamp::from_parts("recorded_at", t.seconds, t.nanos)
                .map_err(|e| Error::Verify(e.to_string()))?,
            stream,
            stream_version: receipt.stream_version,
            key_id: &event.key_id,
            signature: &event.signature,
            body_sha256: merkle::sha256(&event.body),
        }
        .hash();
        if leaf.0.as_slice() != receipt.leaf_hash.as_slice() {
            return Err(Error::Verify(format!(
                "the receipt's leaf hash for position {} is not the hash of the event sent",
                receipt.position
            )));
        }
        let req = pb::GetInclusionProofRequest {
            position: receipt.position,
            tree_size: checkpoint.size,
            log: pb::Log::Events as i32,
        };
        let proof = self.ledger.get_inclusion_proof(req).await?.into_inner();
        verify_inclusion(&proof, leaf, checkpoint)
    }
}

/// An Ed25519 secret key as PKCS#8 v1 PEM (RFC 8410: the secret key alone). The v2 form, with
/// the public key appended, is refused by OpenSSL 3.0 and Python's `cryptography`; every reader
/// accepts v1, and the public key follows from the secret one.
pub fn pkcs8_pem(key: &SigningKey) -> String {
    let bytes = ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    bytes.to_pkcs8_pem(Default::default()).expect("Ed25519 keys encode").to_string()
}

/// TLS settings for [`Client::connect_tls`].
#[derive(Clone)]
pub struct Tls {
    ca: tonic::transport::Certificate,
    identity: Option<tonic::transport::Identity>,
    domain: Option<String>,
}

impl Tls {
    /// The CA that signed the server's certificate, and optionally the client's own
    /// certificate and key for mutual TLS, all PEM.
    pub fn new(ca_pem: impl AsRef<[u8]>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Tls {
            ca: tonic::transport::Certificate::from_pem(ca_pem),
            identity: identity.map(|(cert, key)| tonic::transport::Identity::from_pem(cert, key)),
            domain: None,
        }
    }

    /// Trusts the CA in this PEM file (no client certificate; add one with
    /// [`Tls::identity_files`]).
    pub fn from_files(ca: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Tls::new(read_file(ca.as_ref())?, None))
    }

    /// Presents the client certificate and key in these PEM files (mutual TLS).
    pub fn identity_files(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<Self> {
        let (cert, key) = (read_file(cert.as_ref())?, read_file(key.as_ref())?);
        self.identity = Some(tonic::transport::Identity::from_pem(cert, key));
        Ok(self)
    }

    /// The name to check the server's certificate against, when it is not the endpoint's host.
    pub fn domain(mut self, name: &str) -> Self {
        self.domain = Some(name.to_owned());
        self
    }
}

impl std::fmt::Debug for Tls {
    // Never the client's private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mutual", &self.identity.is_some()).field("domain", &self.domain).finish()
    }
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::Key(format!("{}: {e}", p.display())))
}

fn hash(field: &str, b: &[u8]) -> Result<Hash> {
    parse_hash(field, b).map_err(|e| Error::Verify(e.to_string()))
}

/// Verifies a checkpoint's signature with the log's verifier keys and that its fields match the
/// signed note.
pub fn verify_checkpoint(cp: &pb::Checkpoint, verifier_keys: &[String]) -> Result<VerifiedCheckpoint> {
    let v = accord_domain::checkpoint::verify_checkpoint(&cp.note, verifier_keys)
        .map_err(|e| Error::Verify(e.to_string()))?;
    if v.size != cp.tree_size || v.root.0.as_slice() != cp.root_hash.as_slice() || v.origin != cp.origin {
        return Err(Error::Verify("checkpoint fields differ from its signed note".into()));
    }
    Ok(v)
}

/// Recomputes a recorded event's leaf hash from its fields and body, and checks the signature
/// with the author's public key.
pub fn verify_recorded_event(e: &pb::RecordedEvent, public_key: &[u8; 32]) -> Result<Hash> {
    let signed = e.event.as_ref().ok_or_else(|| Error::Verify("recorded event without its signed event".into()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(public_key).map_err(|e| Error::Verify(e.to_string()))?;
    signing::verify_body(&key, &signed.body, &signed.signature).map_err(|e| Error::Verify(e.to_string()))?;
    let t = e.recorded_at.ok_or_else(|| Error::Verify("recorded_at missing".into()))?;
    let leaf = merkle::Leaf {
        position: e.position,
        recorded_at: Timestamp::from_parts("recorded_at", t.seconds, t.nanos)
            .map_err(|e| Error::Verify(e.to_string()))?,
        stream: &e.stream,
        stream_version: e.stream_version,
        key_id: &signed.key_id,
        signature: &signed.signature,
        body_sha256: merkle::sha256(&signed.body),
    }
    .hash();
    if leaf.0.as_slice() != e.leaf_hash.as_slice() {
        return Err(Error::Verify(format!("leaf hash of position {} does not match its fields", e.position)));
    }
    Ok(leaf)
}

/// Checks an inclusion proof of `leaf` against a verified checkpoint.
pub fn verify_inclusion(p: &pb::InclusionProof, leaf: Hash, cp: &VerifiedCheckpoint) -> Result<()> {
    if p.tree_size != cp.size || p.root_hash.as_slice() != cp.root.0.as_slice() {
        return Err(Error::Verify(format!("proof is for tree size {}, checkpoint is {}", p.tree_size, cp.size)));
    }
    let path =
        p.hashes.iter().enumerate().map(|(i, h)| hash(&format!("hashes[{i}]"), h)).collect::<Result<Vec<_>>>()?;
    merkle::verify_inclusion(&path, cp.size, cp.root, p.position, leaf).map_err(|e| Error::Verify(e.to_string()))
}

/// Checks that the checkpoint `new` extends the checkpoint `old` you kept.
pub fn verify_consistency(p: &pb::ConsistencyProof, old: &VerifiedCheckpoint, new: &VerifiedCheckpoint) -> Result<()> {
    if p.from_size != old.size || p.to_size != new.size {
        return Err(Error::Verify(format!(
            "proof is from {} to {}, checkpoints are {} and {}",
            p.from_size, p.to_size, old.size, new.size
        )));
    }
    let path =
        p.hashes.iter().enumerate().map(|(i, h)| hash(&format!("hashes[{i}]"), h)).collect::<Result<Vec<_>>>()?;
    merkle::verify_consistency(&path, new.size, new.root, old.size, old.root).map_err(|e| Error::Verify(e.to_string()))
}
