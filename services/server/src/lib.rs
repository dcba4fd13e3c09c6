//! The `accord` server: wires the store, the registry and the gRPC services into one process, and
//! the commands around it (`keygen`, `token`, `verify`).
//!
//! The library exposes [`Server::build`] and [`Server::run_until_stopped`] so tests can run the
//! real server on a loopback port 0; `main.rs` only parses the command line. Business rules are
//! not here: this crate assembles and configures.

/// The allocator of every process that links the server (the `accord` binary, the end-to-end
/// tests and benchmarks, which run this server in process): mimalloc. A profile of a read-model
/// rebuild spent about 40 % of its CPU in glibc's malloc and free (`malloc_consolidate`,
/// `unlink_chunk`: the projection allocates and frees many small strings); BENCHMARKS.md has the
/// figures with each allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod audit_cli;
pub mod config;
pub mod demo;
pub mod keys;
pub mod telemetry;
pub mod verify;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use accord_auth::{Authenticator, DevIssuer};
use accord_client::AgencyKey;
use accord_domain::checkpoint::LogSigner;
use accord_ledger::Ledger;
use accord_registry::AgenciesFile;
use accord_store::Store;
use anyhow::Context;
use tokio::net::TcpListener;

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default database: the embedded SQLite file.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://accord.db";
/// Default checkpoint origin (the log's name).
pub const DEFAULT_ORIGIN: &str = "accord.local/log";
/// Default token audience.
pub const DEFAULT_AUDIENCE: &str = "accord";

/// What `accord serve` needs. Passed explicitly; nothing is global.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// `sqlite://FILE`, a file path, or `postgres://…`.
    pub database_url: String,
    /// The server's Ed25519 key (PKCS#8 PEM): signs checkpoints and registry records. Created
    /// (mode 0600) when missing.
    pub server_key: PathBuf,
    /// The log's origin line in checkpoints.
    pub origin: String,
    /// Agencies, keys and issuers to load.
    pub agencies: Option<PathBuf>,
    /// Trust tokens minted by `accord token` with this key (development only). Created when missing.
    pub dev_issuer_key: Option<PathBuf>,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// Store options.
    pub store: accord_store::Options,
    /// Disclosure-scheme time limits shown in the disclosure register.
    pub disclosure_limits: accord_views::DisclosureLimits,
    /// Views answers without access records: only for the benchmark that measures what the
    /// access log costs. Not reachable from the command line, environment or any file.
    #[doc(hidden)]
    pub unrecorded_views_for_benchmarks: bool,
    /// TLS for the listener (absent: plaintext gRPC).
    pub tls: Option<TlsSettings>,
}

/// The listener's TLS material, read from PEM files at start-up.
#[derive(Clone)]
pub struct TlsSettings {
    /// The certificate chain and key.
    pub identity: tonic::transport::Identity,
    /// Mutual TLS: client certificates must chain to this CA.
    pub client_ca: Option<tonic::transport::Certificate>,
    /// Only tokens bound to the client certificate presented are accepted (RFC 8705).
    pub bound_tokens: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mutual", &self.client_ca.is_some())
            .field("bound_tokens", &self.bound_tokens)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads the PEM files named in `tls` (which must name a certificate and a key).
    pub fn read(tls: &config::Tls) -> anyhow::Result<TlsSettings> {
        let read = |what: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| {
                    let pem = std::fs::read(p).with_context(|| format!("reading the TLS {what} {}", p.display()))?;
                    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                        anyhow::bail!("the TLS {what} {} is not PEM", p.display());
                    }
                    Ok(pem)
                })
                .transpose()
        };
        let (Some(cert), Some(key)) = (read("certificate", &tls.cert)?, read("key", &tls.key)?) else {
            anyhow::bail!("TLS needs both a certificate and its key");
        };
        Ok(TlsSettings {
            identity: tonic::transport::Identity::from_pem(cert, key),
            client_ca: read("client CA", &tls.client_ca)?.map(tonic::transport::Certificate::from_pem),
            bound_tokens: tls.bound_tokens,
        })
    }

    fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let c = tonic::transport::ServerTlsConfig::new().identity(self.identity.clone());
        match &self.client_ca {
            Some(ca) => c.client_ca_root(ca.clone()),
            None => c,
        }
    }
}

impl Settings {
    /// Defaults with the given database and key locations.
    pub fn new(database_url: &str, server_key: PathBuf) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            database_url: database_url.to_owned(),
            server_key,
            origin: DEFAULT_ORIGIN.to_owned(),
            agencies: None,
            dev_issuer_key: None,
            audience: DEFAULT_AUDIENCE.to_owned(),
            store: Default::default(),
            disclosure_limits: Default::default(),
            unrecorded_views_for_benchmarks: false,
            tls: None,
        }
    }
}

/// A built server, bound and bootstrapped, not yet serving.
pub struct Server {
    listener: TcpListener,
    store: Store,
    ledger: Ledger,
    views: accord_views::Views,
    audit: accord_audit::Audit,
    projector: Arc<accord_views::Projector>,
    stopping: tokio::sync::watch::Sender<bool>,
    tls: Option<TlsSettings>,
}

impl Server {
    /// Opens the store (running migrations), records the registry, binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Server> {
        let server_key = keys::load_or_create(&settings.server_key)?;
        let server_key =
            AgencyKey::new(&accord_registry::server_key_id(&server_key.verifying_key().to_bytes()), server_key)?;
        let signer = LogSigner::new(&settings.origin, server_key.signing_key()).context("the checkpoint origin")?;
        let access_signer = LogSigner::new(&accord_ledger::access_origin(&settings.origin), server_key.signing_key())
            .context("the access log's checkpoint origin")?;
        let verifier_key = signer.verifier_key().to_owned();

        let mut auth = Authenticator::new(&settings.audience);
        if let Some(tls) = &settings.tls {
            if tls.bound_tokens && tls.client_ca.is_none() {
                anyhow::bail!("bound tokens need mutual TLS: the TLS settings have no client CA");
            }
            if tls.bound_tokens {
                auth.require_bound_tokens();
            }
        }
        let agencies = match &settings.agencies {
            Some(path) => {
                let file = AgenciesFile::load(path)?;
                for issuer in file.issuers(path)? {
                    auth.trust(issuer);
                }
                file.agencies(path)?
            }
            None => Vec::new(),
        };
        if let Some(path) = &settings.dev_issuer_key {
            let dev = DevIssuer::new(keys::load_or_create(path)?)?;
            tracing::warn!(key = %path.display(), "trusting development tokens minted by `accord token`");
            auth.trust(dev.issuer());
        }

        let store = Store::open(&settings.database_url, Some(signer), settings.store.clone())
            .await
            .with_context(|| format!("opening the log at {}", redact(&settings.database_url)))?;
        store.start_access_log(access_signer);
        let sharing = accord_ledger::Sharing::load(store.clone()).await?;
        accord_registry::bootstrap(&sharing, &server_key, &verifier_key, &agencies).await?;

        let listener =
            TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let projector = accord_views::Projector::open(Arc::clone(&sharing)).await.context("opening the read models")?;
        let auth = Arc::new(auth);
        let mut views = accord_views::Views::new(Arc::clone(&projector), Arc::clone(&auth), stopping_rx.clone())
            .with_limits(settings.disclosure_limits);
        if settings.unrecorded_views_for_benchmarks {
            tracing::warn!("Views answers are NOT recorded in the access log (benchmark setting)");
            views = views.with_access_log(accord_ledger::access::AccessLog::unrecorded_for_benchmarks(store.clone()));
        }
        let audit = accord_audit::Audit::new(Arc::clone(&projector), Arc::clone(&auth), settings.disclosure_limits);
        let ledger = Ledger::new(sharing, auth, settings.origin.clone(), stopping_rx);
        Ok(Server { listener, store, ledger, views, audit, projector, stopping, tls: settings.tls })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The store (tests use it to look underneath).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then stops accepting, drains in-flight calls and lets
    /// the sequencer finish every append it has queued.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<accord_proto::v1::ledger_server::LedgerServer<Ledger>>().await;
        health.set_serving::<accord_proto::v1::views_server::ViewsServer<accord_views::Views>>().await;
        health.set_serving::<accord_proto::v1::audit_server::AuditServer<accord_audit::Audit>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(accord_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;
        tracing::info!(
            addr = %self.local_addr(),
            tls = self.tls.is_some(),
            mutual_tls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            "accord serving"
        );
        // TCP_NODELAY: a gRPC response is several small HTTP/2 frames; with Nagle's algorithm the
        // last one waits for the client's delayed ACK (~40 ms per call). Keepalive finds dead peers.
        let incoming = tonic::transport::server::TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(std::time::Duration::from_secs(60)));
        let stopping = self.stopping;
        let projection = self.projector.spawn(stopping.subscribe());
        let reporter = health.clone();
        let shutdown = async move {
            shutdown.await;
            reporter.set_not_serving::<accord_proto::v1::ledger_server::LedgerServer<Ledger>>().await;
            reporter.set_not_serving::<accord_proto::v1::views_server::ViewsServer<accord_views::Views>>().await;
            reporter.set_not_serving::<accord_proto::v1::audit_server::AuditServer<accord_audit::Audit>>().await;
            reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            let _ = stopping.send(true);
        };
        // A gRPC-web layer, if ever added, must come before the status layer: gRPC-web carries
        // the trailers inside the body, where the status layer does not look.
        let mut builder =
            tonic::transport::Server::builder().trace_fn(telemetry::rpc_span).layer(telemetry::GrpcStatusLayer);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server_config()).context("configuring TLS")?;
        }
        builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(self.ledger.into_server())
            .add_service(self.views.into_server())
            .add_service(self.audit.into_server())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .context("serving gRPC")?;
        let _ = projection.await;
        self.store.shutdown().await;
        tracing::info!("accord stopped");
        Ok(())
    }
}

/// Builds and runs a server on `settings` in the background; returns its address and a handle
/// that stops it. For tests and embedding.
pub async fn spawn(settings: Settings) -> anyhow::Result<(SocketAddr, Running)> {
    let server = Server::build(settings).await?;
    let addr = server.local_addr();
    let store = server.store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async {
        let _ = rx.await;
    }));
    Ok((addr, Running { stop: Some(tx), task, store }))
}

/// A server running in the background.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its store.
    pub store: Store,
}

impl Running {
    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await?
    }
}

/// A database URL without its password (in the user part or a `password`/`sslpassword` query
/// parameter), for messages and `--print-config`.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |k: &str| k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
    if parsed.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) { "***".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // `url` writes `sqlite://accord.db` unchanged and keeps everything else as given.
    parsed.to_string()
}

/// Resolves when the process receives Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining");
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        assert_eq!(redact("postgres://accord:s3cret@db/accord"), "postgres://accord:***@db/accord");
        assert_eq!(
            redact("postgres://accord:s3cret@db:5432/accord?sslmode=require"),
            "postgres://accord:***@db:5432/accord?sslmode=require"
        );
        let r = redact("postgres://accord@db/accord?password=s3cret&application_name=x@y");
        assert!(!r.contains("s3cret") && r.contains("password=***") && r.contains("application_name=x%40y"), "{r}");
        assert_eq!(redact("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(redact("sqlite://accord.db"), "sqlite://accord.db");
        assert_eq!(redact("not a url"), "not a url");
    }
}
