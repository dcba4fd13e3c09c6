//! `accord`: the server and its tools. See `accord --help`.

use std::path::PathBuf;

use accord_server::{keys, verify};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "accord", version, about = "Accord: signed, verifiable multi-agency safeguarding information sharing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (Ledger, Views, Audit, health, reflection).
    ///
    /// Configuration comes from flags, then ACCORD_* environment variables, then the --config
    /// file, then defaults (the first that gives a value wins). Traces and metrics are exported
    /// over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set, and not at all otherwise.
    ///
    /// Examples:
    ///   accord serve --agencies deploy/dev/agencies.toml --dev-issuer-key accord-dev-issuer.key
    ///   accord serve --config /etc/accord/accord.toml --log-format json
    ///   ACCORD_DATABASE_URL=postgres://accord@db/accord accord serve --print-config
    Serve(accord_server::config::ServeArgs),
    /// Create an agency signing key: writes the secret key (PKCS#8 PEM, mode 0600) and prints
    /// the public key and the lines to add to the agencies file.
    ///
    /// Example: accord keygen --agency met-police --key-id met-police-2026 --out met-police-2026.key
    Keygen {
        /// The agency the key will sign for.
        #[arg(long)]
        agency: String,
        /// The key's permanent id.
        #[arg(long)]
        key_id: String,
        /// Where to write the secret key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a development token (JWT) that a server started with the same --dev-issuer-key trusts.
    ///
    /// Example: accord token --agency met-police --user pc-1234 --role offender_manager
    Token {
        /// The agency the user acts for.
        #[arg(long)]
        agency: String,
        /// The user id (the token's subject).
        #[arg(long)]
        user: String,
        /// A role; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 8 * 3600)]
        ttl: u64,
        /// The development issuer key (created when missing).
        #[arg(long, env = "ACCORD_DEV_ISSUER_KEY", default_value = "accord-dev-issuer.key")]
        dev_issuer_key: PathBuf,
        /// The audience.
        #[arg(long, env = "ACCORD_AUDIENCE", default_value = accord_server::DEFAULT_AUDIENCE)]
        audience: String,
        /// Bind the token to this client certificate (PEM; RFC 8705): a server accepts it only
        /// over mutual TLS with that certificate.
        #[arg(long)]
        bind_cert: Option<PathBuf>,
    },
    /// Check sharing policy before adopting it: parse the Cedar policies, validate them against
    /// the server's schema, and check the views they name. Exits 1 with the validator's messages.
    ///
    /// Example: accord policy-check --policies deploy/policies/sharing.cedar --views deploy/policies/views.toml
    PolicyCheck {
        /// Cedar policy text.
        #[arg(long)]
        policies: PathBuf,
        /// The views file (TOML `[[views]]`).
        #[arg(long)]
        views: PathBuf,
    },
    /// Recompute every leaf, Merkle hash, root and signature of the event log and of the access
    /// log from the stored bytes and check every stored checkpoint (and that the access log's
    /// query indexes say what its records say). Exits 1 and names the first divergence.
    ///
    /// Example: accord verify --against kept-checkpoint.txt
    Verify {
        /// The log to verify.
        #[arg(long, env = "ACCORD_DATABASE_URL", default_value = accord_server::DEFAULT_DATABASE_URL)]
        database_url: String,
        /// A checkpoint note kept earlier (of the event log or of the access log, told apart by
        /// its origin line): prove the log still extends it.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Ask the access log who saw what (auditors only; your queries are themselves recorded).
    ///
    /// Examples:
    ///   accord audit list --user met-police/pc-1234 --from 2026-11-24 --to 2026-11-25
    ///   accord audit list --subject child:c-123
    ///   accord audit replay 019a…
    ///   accord audit checkpoint --access-log --out kept-access-checkpoint.txt
    Audit {
        /// The server.
        #[arg(long, env = "ACCORD_ENDPOINT", default_value = "http://127.0.0.1:50051", global = true)]
        endpoint: String,
        /// Your bearer token (the `auditor` role).
        #[arg(long, env = "ACCORD_TOKEN", global = true, default_value = "")]
        token: String,
        /// Why you are looking (recorded with every query).
        #[arg(long, env = "ACCORD_PURPOSE", global = true, default_value = "")]
        purpose: String,
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Tell the story: seed an anonymised dataset through the real gRPC API of a running server
    /// (a force, probation, a MAPPA unit, two schools, two support services; DOMAIN.md's
    /// scenarios) and print what each user sees and does not see. Needs a server started with
    /// deploy/dev/agencies.toml and the same --dev-issuer-key. Run from the repository root (it
    /// signs with deploy/dev/*.key).
    ///
    /// Example (after README's first command, in a second terminal):
    ///   accord demo
    Demo {
        /// The server.
        #[arg(long, env = "ACCORD_ENDPOINT", default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// The development issuer key the server trusts.
        #[arg(long, env = "ACCORD_DEV_ISSUER_KEY", default_value = "accord-dev-issuer.key")]
        dev_issuer_key: PathBuf,
        /// The token audience the server expects.
        #[arg(long, env = "ACCORD_AUDIENCE", default_value = accord_server::DEFAULT_AUDIENCE)]
        audience: String,
        /// The folder of the demo agencies' keys.
        #[arg(long, default_value = "deploy/dev")]
        keys: PathBuf,
    },
    /// Drop every read model and rebuild them from the log, from position 0. Prints the events
    /// applied and the read models' digest: two rebuilds of the same log print the same digest.
    /// Safe while servers run against the same database (they reload the rebuilt rows).
    ///
    /// Example: accord rebuild --database-url postgres://postgres@127.0.0.1/accord
    Rebuild {
        /// The log whose read models to rebuild.
        #[arg(long, env = "ACCORD_DATABASE_URL", default_value = accord_server::DEFAULT_DATABASE_URL)]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Access records matching every filter given, oldest first.
    List {
        /// Accesses by this user: AGENCY/USER.
        #[arg(long)]
        user: Option<String>,
        /// Accesses by this agency.
        #[arg(long)]
        agency: Option<String>,
        /// Accesses concerning this subject: KIND:ID (for example child:c-123, nominal:…).
        #[arg(long)]
        subject: Option<String>,
        /// Accesses that touched the record at this log position.
        #[arg(long)]
        record: Option<u64>,
        /// Only denied attempts.
        #[arg(long)]
        denied: bool,
        /// From (inclusive): YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ.
        #[arg(long)]
        from: Option<String>,
        /// To (exclusive): YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ.
        #[arg(long)]
        to: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Re-build the answer an access was given and check it against the recorded digest. Exits 1
    /// on a mismatch.
    Replay {
        /// The access id.
        access_id: String,
        /// The open access investigation (of your agency, into the user who made the access)
        /// under which to see the content; without one only the digest verdict is shown.
        #[arg(long, default_value = "")]
        investigation: String,
    },
    /// Fetch the latest signed checkpoint (keep it: `accord verify --against FILE` later proves
    /// the log still extends it).
    Checkpoint {
        /// The access log's checkpoint instead of the event log's.
        #[arg(long)]
        access_log: bool,
        /// Write the note here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn list_request(
    user: Option<String>,
    agency: Option<String>,
    subject: Option<String>,
    record: Option<u64>,
    denied: bool,
    (from, to): (Option<String>, Option<String>),
    limit: u64,
) -> anyhow::Result<accord_proto::v1::ListAccessesRequest> {
    use accord_server::audit_cli::parse_time;
    let (agency, user) = match (user, agency) {
        (Some(u), a) => {
            let (ua, uu) = u.split_once('/').context("--user: AGENCY/USER")?;
            if a.as_deref().is_some_and(|a| a != ua) {
                anyhow::bail!("--agency and --user name different agencies");
            }
            (ua.to_owned(), uu.to_owned())
        }
        (None, a) => (a.unwrap_or_default(), String::new()),
    };
    let subject = match subject {
        Some(s) => {
            let (kind, id) = s.split_once(':').context("--subject: KIND:ID")?;
            Some(accord_proto::v1::Subject { kind: kind.to_owned(), id: id.to_owned() })
        }
        None => None,
    };
    let t = |f: &str, v: Option<String>| -> anyhow::Result<_> {
        v.map(|v| parse_time(f, &v).map(accord_ledger::convert::timestamp_pb)).transpose()
    };
    Ok(accord_proto::v1::ListAccessesRequest {
        agency,
        user,
        subject,
        record_position: record,
        denied_only: denied,
        from: t("--from", from)?,
        to: t("--to", to)?,
        limit,
        ..Default::default()
    })
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The server's logging follows its configuration; the tools log human text at `info`.
    let serve = match &cli.command {
        Command::Serve(args) => Some(args.resolve()?),
        _ => None,
    };
    let (format, filter) = match &serve {
        Some(c) => (c.log_format, c.log.clone()),
        None => (Default::default(), std::env::var("ACCORD_LOG").unwrap_or_else(|_| "info".to_owned())),
    };
    if let (Some(c), Command::Serve(args)) = (&serve, &cli.command)
        && args.print_config
    {
        print!("{}", c.to_toml());
        return Ok(());
    }
    let telemetry = accord_server::telemetry::init(format, &filter, serve.is_some())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = run(cli.command, serve, &rt);
    drop(rt);
    telemetry.shutdown();
    result
}

/// A progress bar on stderr for `total` steps; hidden when stderr is not a terminal (CI, pipes).
fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

#[allow(clippy::print_stdout)]
fn run(
    command: Command,
    serve: Option<accord_server::config::Config>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => rt.block_on(async {
            let config = serve.expect("resolved above");
            let server = accord_server::Server::build(config.settings()?).await?;
            server.run_until_stopped(accord_server::shutdown_signal()).await
        }),
        Command::Demo { endpoint, dev_issuer_key, audience, keys } => rt.block_on(async {
            let opts = accord_server::demo::Options { endpoint, dev_issuer_key, audience, keys };
            print!("{}", accord_server::demo::run(opts).await?);
            Ok(())
        }),
        Command::Keygen { agency, key_id, out } => {
            accord_domain::AgencyId::parse(agency.clone()).context("--agency")?;
            accord_domain::KeyId::parse(key_id.clone()).context("--key-id")?;
            let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
            keys::write_new(&out, &key)?;
            use base64::Engine;
            let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes());
            println!("wrote {} (keep it secret)", out.display());
            println!("key id:     {key_id}");
            println!("public key: {public}");
            println!();
            println!("add to the agencies file, under the [[agencies]] entry with id = \"{agency}\":");
            println!("[[agencies.keys]]\nid = \"{key_id}\"\npublic_key = \"{public}\"");
            Ok(())
        }
        Command::Token { agency, user, roles, ttl, dev_issuer_key, audience, bind_cert } => {
            let dev = accord_auth::DevIssuer::new(keys::load_or_create(&dev_issuer_key)?)?;
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let mut claims = accord_auth::DevIssuer::claims(&audience, &agency, &user, &roles, ttl);
            if let Some(path) = bind_cert {
                use rustls_pki_types::pem::PemObject as _;
                let der = rustls_pki_types::CertificateDer::from_pem_file(&path)
                    .map_err(|e| anyhow::anyhow!("reading the certificate {}: {e}", path.display()))?;
                let thumbprint = accord_auth::certificate_thumbprint(&der);
                claims.cnf = Some(accord_auth::Confirmation { x5t_s256: Some(thumbprint) });
            }
            println!("{}", dev.mint_claims(&claims)?);
            Ok(())
        }
        Command::PolicyCheck { policies, views } => {
            let text = std::fs::read_to_string(&policies).with_context(|| format!("reading {}", policies.display()))?;
            let views_text = std::fs::read_to_string(&views).with_context(|| format!("reading {}", views.display()))?;
            let checked = accord_policy::parse_views(&views_text)
                .and_then(|v| accord_policy::Policy::compile(0, accord_policy::SCHEMA_VERSION, &text, v));
            match checked {
                Ok(p) => {
                    println!(
                        "ok: {} policies and {} views validate against schema version {}",
                        p.policy_ids().len(),
                        p.views().len(),
                        accord_policy::SCHEMA_VERSION
                    );
                    Ok(())
                }
                Err(e) => {
                    println!("FAILED: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Rebuild { database_url } => rt.block_on(async {
            let store = accord_store::Store::open(&database_url, None, Default::default())
                .await
                .with_context(|| format!("opening {}", accord_server::redact(&database_url)))?;
            let sharing = accord_ledger::Sharing::load(store.clone()).await?;
            // The rows go first: restoring them only to drop them cost 21 s at 1M events, and
            // rows this version cannot read (another projection version's) would stop `open`.
            store.reset_views().await.context("dropping the read models")?;
            let projector = accord_views::Projector::open(sharing).await?;
            let started = std::time::Instant::now();
            let bar = progress_bar(store.log_size().await?, "rebuilding read models");
            let mut applied = projector.watch_applied();
            let follow = {
                let bar = bar.clone();
                tokio::spawn(async move {
                    while applied.changed().await.is_ok() {
                        let n = *applied.borrow_and_update();
                        bar.set_position(n);
                    }
                })
            };
            let rebuilt = projector.rebuild().await;
            follow.abort();
            bar.finish_and_clear();
            let (progress, digest) = rebuilt?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "ok: {} events applied in {} batches, {secs:.1} s ({:.0} events/s)",
                progress.events,
                progress.batches,
                progress.events as f64 / secs.max(1e-9)
            );
            println!("read models digest: {}", hex::encode(digest));
            // On SQLite: the rebuild's writes checkpointed into the database file.
            store.shutdown().await;
            Ok(())
        }),
        Command::Audit { endpoint, token, purpose, what } => rt.block_on(async {
            use accord_server::audit_cli;
            if token.is_empty() {
                anyhow::bail!("--token (or ACCORD_TOKEN): an auditor's bearer token is required");
            }
            if purpose.is_empty() {
                anyhow::bail!("--purpose (or ACCORD_PURPOSE): state why you are looking; it is recorded");
            }
            let mut c = audit_cli::connect(&endpoint, &token, &purpose).await?;
            match what {
                AuditCommand::List { user, agency, subject, record, denied, from, to, limit } => {
                    let req = list_request(user, agency, subject, record, denied, (from, to), limit)?;
                    let n = audit_cli::list(&mut c, req, |e| print!("{}", audit_cli::describe(e))).await?;
                    eprintln!("{n} access records (your query is recorded too)");
                    Ok(())
                }
                AuditCommand::Replay { access_id, investigation } => {
                    let (matches, text) = audit_cli::replay(&mut c, &access_id, &investigation).await?;
                    print!("{text}");
                    if !matches {
                        std::process::exit(1);
                    }
                    Ok(())
                }
                AuditCommand::Checkpoint { access_log, out } => {
                    let cp = audit_cli::checkpoint(&mut c, access_log).await?;
                    match out {
                        Some(path) => {
                            std::fs::write(&path, &cp.note).with_context(|| format!("writing {}", path.display()))?;
                            eprintln!(
                                "kept the {} checkpoint of size {} in {}",
                                cp.origin,
                                cp.tree_size,
                                path.display()
                            );
                        }
                        None => print!("{}", cp.note),
                    }
                    Ok(())
                }
            }
        }),
        Command::Verify { database_url, against } => rt.block_on(async {
            let against = match against {
                Some(p) => Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            let store = accord_store::Store::open(&database_url, None, Default::default())
                .await
                .with_context(|| format!("opening {}", accord_server::redact(&database_url)))?;
            let bar = progress_bar(store.log_size().await?, "verifying events");
            let result = verify::verify(&store, against.as_deref(), |n| bar.set_position(n)).await;
            bar.finish_and_clear();
            match result {
                Ok(r) => {
                    use base64::Engine;
                    let b64 = |h: accord_domain::merkle::Hash| base64::engine::general_purpose::STANDARD.encode(h.0);
                    println!("ok: {} events, {} checkpoints verified", r.events, r.checkpoints);
                    println!("root: {}", b64(r.root));
                    println!(
                        "ok: access log: {} access records, {} checkpoints verified",
                        r.accesses, r.access_checkpoints
                    );
                    println!("access root: {}", b64(r.access_root));
                    if let Some(s) = r.extends {
                        println!("the log extends the kept checkpoint of size {s}");
                    }
                    Ok(())
                }
                Err(verify::Failure::Diverged(m)) => {
                    println!("FAILED: log diverges: {m}");
                    std::process::exit(1);
                }
                Err(e) => Err(e.into()),
            }
        }),
    }
}
