//! The registry: which agencies take part, which Ed25519 keys sign for them, and which token
//! issuers vouch for their users.
//!
//! `accord serve --agencies FILE` loads an [`AgenciesFile`]; [`bootstrap`] then records whatever
//! the log does not hold yet as registry events signed by the server's own key (agency `accord`):
//! `AgencyRegistered`, `SigningKeyRegistered`, `SigningKeyRevoked`, and, the first time a server
//! key is used, its self-registration and `LogKeyRegistered`. The key history is therefore in the
//! log, verifiable and replayable like any other event. Events go through the same validation as
//! an agency's append (`accord_ledger::prepare_batch`). This crate does not serve gRPC yet.

use std::path::{Path, PathBuf};

use accord_client::{AgencyKey, EventDraft};
use accord_domain::payload::{AgencyKind, LOG_STREAM, agency_stream};
use accord_domain::{AgencyId, KeyId, SYSTEM_AGENCY, SYSTEM_ROLE};
use accord_ledger::Sharing;
use accord_proto::v1 as pb;
use accord_store::{Store, Visibility};
use base64::Engine;
use serde::Deserialize;

/// Why the registry could not load or record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agencies file is unreadable or wrong.
    #[error("agencies file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// The file contradicts what the log already holds.
    #[error("agencies file contradicts the log: {0}")]
    Conflict(String),
    /// Recording failed.
    #[error(transparent)]
    Ledger(#[from] accord_ledger::Error),
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] accord_store::Error),
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The agencies file (TOML). See `deploy/agencies.example.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgenciesFile {
    /// Agencies.
    #[serde(default)]
    pub agencies: Vec<AgencyEntry>,
    /// Token issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerEntry>,
}

/// One agency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyEntry {
    /// Agency id (`[a-z0-9-]`).
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Kind: police, probation, prison, school, childrens_services, health, support_service,
    /// local_authority, housing, youth_justice, mappa_unit.
    pub kind: String,
    /// Whether the agency's `agency_admin` users may adopt sharing policy (default false).
    #[serde(default)]
    pub governs_policy: bool,
    /// Its signing keys.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// One signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Key id, permanent: a new key gets a new id.
    pub id: String,
    /// The 32-byte Ed25519 public key, base64 (as `accord keygen` prints it).
    pub public_key: String,
    /// Set to a reason to revoke the key: it signs nothing recorded from then on.
    #[serde(default)]
    pub revoked: Option<String>,
}

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerEntry {
    /// The `iss` claim.
    pub issuer: String,
    /// EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, PS384 or PS512.
    pub algorithm: String,
    /// The public key, PEM, inline...
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// ...or in a file (relative to the agencies file).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// The agencies it may vouch for.
    pub agencies: Vec<String>,
}

/// A validated agency.
#[derive(Debug, Clone)]
pub struct Agency {
    /// Id.
    pub id: AgencyId,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: AgencyKind,
    /// Whether its admins may adopt sharing policy.
    pub governs_policy: bool,
    /// Keys: id, public key, revocation reason.
    pub keys: Vec<(KeyId, [u8; 32], Option<String>)>,
}

impl AgenciesFile {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |message: String| Error::File { path: path.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// Validates every entry.
    pub fn agencies(&self, path: &Path) -> Result<Vec<Agency>> {
        let err = |message: String| Error::File { path: path.to_owned(), message };
        let mut out: Vec<Agency> = Vec::new();
        let mut key_ids = std::collections::HashSet::new();
        for (i, a) in self.agencies.iter().enumerate() {
            let at = format!("agencies[{i}]");
            let id = AgencyId::parse_field(&format!("{at}.id"), a.id.clone()).map_err(|e| err(e.to_string()))?;
            if id.as_str() == SYSTEM_AGENCY {
                return Err(err(format!("{at}.id: {SYSTEM_AGENCY:?} is reserved for the server")));
            }
            if out.iter().any(|o| o.id == id) {
                return Err(err(format!("{at}.id: agency {id} appears twice")));
            }
            let kind = AgencyKind::parse(&a.kind).map_err(|e| err(format!("{at}.{e}")))?;
            if kind == AgencyKind::System {
                return Err(err(format!("{at}.kind: system is reserved for the server")));
            }
            let mut keys = Vec::new();
            for (j, k) in a.keys.iter().enumerate() {
                let kat = format!("{at}.keys[{j}]");
                let key_id = KeyId::parse_field(&format!("{kat}.id"), k.id.clone()).map_err(|e| err(e.to_string()))?;
                if !key_ids.insert(key_id.clone()) {
                    return Err(err(format!("{kat}.id: key {key_id} appears twice")));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(k.public_key.trim())
                    .map_err(|e| err(format!("{kat}.public_key: not base64: {e}")))?;
                let pk = accord_domain::signing::parse_public_key(&format!("{kat}.public_key"), &bytes)
                    .map_err(|e| err(e.to_string()))?;
                keys.push((key_id, pk.to_bytes(), k.revoked.clone()));
            }
            out.push(Agency { id, name: a.name.clone(), kind, governs_policy: a.governs_policy, keys });
        }
        Ok(out)
    }

    /// The token issuers to trust.
    pub fn issuers(&self, path: &Path) -> Result<Vec<accord_auth::Issuer>> {
        let err = |message: String| Error::File { path: path.to_owned(), message };
        let dir = path.parent().unwrap_or(Path::new("."));
        self.issuers
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let pem = match (&e.public_key_pem, &e.public_key_file) {
                    (Some(p), None) => p.clone().into_bytes(),
                    (None, Some(f)) => {
                        std::fs::read(dir.join(f)).map_err(|x| err(format!("issuers[{i}].public_key_file: {x}")))?
                    }
                    _ => {
                        return Err(err(format!(
                            "issuers[{i}]: set exactly one of public_key_pem and public_key_file"
                        )));
                    }
                };
                let agencies = e
                    .agencies
                    .iter()
                    .map(|a| {
                        AgencyId::parse_field(&format!("issuers[{i}].agencies"), a.clone())
                            .map_err(|x| err(x.to_string()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                accord_auth::Issuer::from_pem(&e.issuer, &e.algorithm, &pem, Some(agencies))
                    .map_err(|x| err(format!("issuers[{i}]: {x}")))
            })
            .collect()
    }
}

/// The key id under which a server key signs: `accord-server-` and 8 bytes of its fingerprint.
pub fn server_key_id(public_key: &[u8; 32]) -> String {
    let fp = accord_domain::merkle::sha256(public_key);
    format!("accord-server-{}", fp[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn system_event<P: accord_client::Catalogued>(stream: &str, payload: &P, subject: (&str, &str)) -> EventDraft {
    EventDraft::new(stream, payload)
        .author(SYSTEM_AGENCY, "accord-server", SYSTEM_ROLE)
        .legal_basis("ACCORD-REGISTRY", "record which agencies and keys may take part in Accord")
        .subject(subject.0, subject.1)
        .regime(pb::Regime::System)
        .with(|b| b.classification = pb::Classification::Official as i32)
}

/// A `PolicyAdopted` payload from Cedar policy text and a views file (TOML, as in
/// `deploy/policies/views.toml`).
pub fn policy_adopted(policies: &str, views_toml: &str, description: &str) -> Result<pb::PolicyAdopted> {
    let views = accord_policy::parse_views(views_toml).map_err(|e| Error::Conflict(e.to_string()))?;
    Ok(pb::PolicyAdopted {
        policies: policies.to_owned(),
        views: views
            .into_iter()
            .map(|v| pb::PolicyView {
                id: v.id,
                record_kind: v.record_kind,
                field_groups: v.field_groups.into_iter().collect(),
            })
            .collect(),
        schema_version: accord_policy::SCHEMA_VERSION,
        description: description.to_owned(),
    })
}

async fn stream_exists(store: &Store, stream: &str) -> Result<bool> {
    // Registry streams hold only registry records, so any event means the agency is registered.
    let s = accord_domain::StreamId::parse(stream).map_err(|e| Error::Conflict(e.to_string()))?;
    Ok(!store.read_stream(&s, 0, 1, &Visibility::All).await?.events.is_empty())
}

async fn append(sharing: &Sharing, key: &AgencyKey, drafts: Vec<EventDraft>) -> Result<usize> {
    let n = drafts.len();
    for chunk in drafts.chunks(accord_ledger::MAX_EVENTS) {
        let signed = chunk.iter().map(|d| d.sign(key)).collect();
        let events = accord_ledger::prepare_batch(sharing, accord_ledger::Writer::System, signed).await?.events;
        sharing.store().append(events).await?;
    }
    Ok(n)
}

/// Records the server key (first use) and whatever `agencies` adds to the log. Returns how many
/// events were appended. Refuses a file that contradicts the log (a key id registered with
/// another public key or agency): key ids are permanent.
pub async fn bootstrap(
    sharing: &Sharing,
    server_key: &AgencyKey,
    log_verifier_key: &str,
    agencies: &[Agency],
) -> Result<usize> {
    let store = sharing.store();
    let mut appended = 0;
    if store.key(server_key.key_id()).await?.is_none() {
        // The server's key registers itself: the very first record of a new log, and the first
        // record after the server's key is rotated.
        let first = vec![system_event(
            &format!("agency-{SYSTEM_AGENCY}"),
            &pb::SigningKeyRegistered {
                key_id: server_key.key_id().into(),
                agency_id: SYSTEM_AGENCY.into(),
                public_key: server_key.public_key().to_vec(),
            },
            ("key", server_key.key_id()),
        )];
        appended += append(sharing, server_key, first).await?;
        appended += append(
            sharing,
            server_key,
            vec![system_event(
                LOG_STREAM,
                &pb::LogKeyRegistered { verifier_key: log_verifier_key.into() },
                ("key", server_key.key_id()),
            )],
        )
        .await?;
    }

    let mut drafts = Vec::new();
    for a in agencies {
        let stream = agency_stream(&a.id);
        if !stream_exists(store, &stream).await? {
            drafts.push(system_event(
                &stream,
                &pb::AgencyRegistered {
                    agency_id: a.id.to_string(),
                    name: a.name.clone(),
                    kind: accord_ledger::convert::agency_kind_pb(a.kind) as i32,
                    governs_policy: a.governs_policy,
                },
                ("agency", a.id.as_str()),
            ));
        }
        for (key_id, pk, _) in &a.keys {
            match store.key(key_id.as_str()).await? {
                None => drafts.push(system_event(
                    &stream,
                    &pb::SigningKeyRegistered {
                        key_id: key_id.to_string(),
                        agency_id: a.id.to_string(),
                        public_key: pk.to_vec(),
                    },
                    ("key", key_id.as_str()),
                )),
                Some(k) if k.agency != a.id.as_str() || k.public_key.as_bytes() != pk => {
                    return Err(Error::Conflict(format!(
                        "key {key_id} is registered to agency {} with another public key; key ids are permanent, give a new key a new id",
                        k.agency
                    )));
                }
                Some(_) => {}
            }
        }
    }
    appended += append(sharing, server_key, drafts).await?;

    // Revocations come after registrations, so a key can be registered and revoked in one start.
    let mut revocations = Vec::new();
    for a in agencies {
        for (key_id, _, revoked) in &a.keys {
            if let Some(reason) = revoked {
                let current = store.key(key_id.as_str()).await?;
                if current.is_some_and(|k| k.revoked_at.is_none()) {
                    revocations.push(system_event(
                        &agency_stream(&a.id),
                        &pb::SigningKeyRevoked {
                            key_id: key_id.to_string(),
                            agency_id: a.id.to_string(),
                            reason: reason.clone(),
                        },
                        ("key", key_id.as_str()),
                    ));
                }
            }
        }
    }
    appended += append(sharing, server_key, revocations).await?;

    // A new log adopts the default sharing agreements, so that nothing is allowed before them
    // and everything after is decided by a policy the log holds.
    sharing.refresh().await?;
    if sharing.current().is_none() {
        let adopted = policy_adopted(
            accord_policy::DEFAULT_POLICIES,
            accord_policy::DEFAULT_VIEWS,
            "the default sharing agreements (deploy/policies/)",
        )?;
        // Expected version "no stream": of several processes starting on one new log, one
        // adopts and the others find its adoption.
        let draft = system_event(accord_domain::payload::POLICY_STREAM, &adopted, ("agency", SYSTEM_AGENCY))
            .legal_basis("ACCORD-POLICY", "adopt the sharing agreements in force")
            .no_stream();
        match append(sharing, server_key, vec![draft]).await {
            Ok(n) => appended += n,
            Err(Error::Store(accord_store::Error::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
        sharing.refresh().await?;
    }
    if appended > 0 {
        tracing::info!(events = appended, "registry records appended");
    }
    Ok(appended)
}
