//! `accord serve`'s configuration: command-line flags, environment variables and a TOML file.
//!
//! Precedence, highest first: a flag, its `ACCORD_*` environment variable, the file named by
//! `--config` (or `ACCORD_CONFIG`), the built-in default. clap reads flags and environment into
//! [`ServeArgs`] (every field optional, so "not given" is visible); [`ServeArgs::resolve`] lays
//! them over the file and the defaults and checks every value, naming where a bad one came from.
//! `accord serve --print-config` prints the result ([`Config::to_toml`], secrets redacted).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_AUDIENCE, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_ORIGIN, Settings, redact};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// TLS for the gRPC listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The server's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS for agency systems.
    pub client_ca: Option<PathBuf>,
    /// Accept only tokens bound to the client certificate their connection presented (RFC 8705
    /// `cnf` / `x5t#S256`); needs mutual TLS. Bound tokens are checked against the certificate
    /// either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bound_tokens: bool,
}

/// The configuration file (`--config`): every key optional; unknown keys are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    database_url: Option<String>,
    server_key: Option<PathBuf>,
    origin: Option<String>,
    agencies: Option<PathBuf>,
    dev_issuer_key: Option<PathBuf>,
    audience: Option<String>,
    dvds_target_days: Option<u32>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    tls: Option<Tls>,
}

/// `accord serve`'s flags. Each also reads its environment variable; none has a default here,
/// so that an absent flag lets the file decide.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file (keys as printed by --print-config).
    #[arg(long, env = "ACCORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "ACCORD_LISTEN")]
    pub listen: Option<String>,
    /// sqlite://FILE (the embedded default) or postgres://USER@HOST/DB [default: sqlite://accord.db].
    #[arg(long, env = "ACCORD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The server's key (PKCS#8 PEM); created when missing [default: accord-server.key].
    #[arg(long, env = "ACCORD_SERVER_KEY")]
    pub server_key: Option<PathBuf>,
    /// The log's name, the origin line of its checkpoints [default: accord.local/log].
    #[arg(long, env = "ACCORD_ORIGIN")]
    pub origin: Option<String>,
    /// Agencies, signing keys and token issuers (TOML).
    #[arg(long, env = "ACCORD_AGENCIES")]
    pub agencies: Option<PathBuf>,
    /// Trust development tokens minted with this key by `accord token` (created when missing).
    /// Development and demos only.
    #[arg(long, env = "ACCORD_DEV_ISSUER_KEY")]
    pub dev_issuer_key: Option<PathBuf>,
    /// The audience tokens must be issued for [default: accord].
    #[arg(long, env = "ACCORD_AUDIENCE")]
    pub audience: Option<String>,
    /// Clare's Law (DVDS) time limit for the whole process, in days, 1 to 90 (guidance says 28
    /// or 35) [default: 28].
    #[arg(long, env = "ACCORD_DVDS_TARGET_DAYS")]
    pub dvds_target_days: Option<u32>,
    /// Log lines as human text or JSON [default: text].
    #[arg(long, env = "ACCORD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Which log lines: a tracing filter such as `info` or `info,accord_store=debug` [default: info].
    #[arg(long, env = "ACCORD_LOG")]
    pub log: Option<String>,
    /// The TLS certificate chain (PEM); with --tls-key, serve gRPC over TLS.
    #[arg(long, env = "ACCORD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "ACCORD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "ACCORD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Accept only tokens bound to the client certificate presented (RFC 8705); needs
    /// --tls-client-ca. The variable takes true/false, yes/no, on/off or 1/0.
    #[arg(long, env = "ACCORD_TLS_BOUND_TOKENS", value_parser = clap::builder::BoolishValueParser::new())]
    pub tls_bound_tokens: bool,
}

/// The effective configuration of `accord serve`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The database.
    pub database_url: String,
    /// The server's key file.
    pub server_key: PathBuf,
    /// The checkpoint origin.
    pub origin: String,
    /// The agencies file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agencies: Option<PathBuf>,
    /// The development issuer key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_issuer_key: Option<PathBuf>,
    /// The token audience.
    pub audience: String,
    /// Clare's Law time limit in days.
    pub dvds_target_days: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// TLS (absent: plaintext).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

impl ServeArgs {
    /// Lays the flags and environment over the file (if any) and the defaults, and checks every
    /// value. Errors name the flag or file key at fault.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let from = |flag: bool, key: &str| -> String {
            match (&self.config, flag) {
                (_, true) => format!("--{} (or ACCORD_{})", key.replace('_', "-"), key.to_uppercase()),
                (Some(p), false) => format!("{} key `{key}`", p.display()),
                (None, false) => format!("default {key}"),
            }
        };

        let listen_flag = self.listen.is_some();
        let listen = self.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen.parse().map_err(|e| {
            anyhow::anyhow!(
                "{}: `{listen}` is not an IP address and port (such as 0.0.0.0:50051): {e}",
                from(listen_flag, "listen")
            )
        })?;

        let database_url =
            self.database_url.clone().or(file.database_url).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!(
                "{}: `{}` is neither sqlite://FILE nor postgres://USER@HOST/DB",
                from(self.database_url.is_some(), "database_url"),
                redact(&database_url)
            );
        }
        let origin = self.origin.clone().or(file.origin).unwrap_or_else(|| DEFAULT_ORIGIN.to_owned());
        let audience = self.audience.clone().or(file.audience).unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
        if audience.trim().is_empty() {
            bail!("{}: the token audience must not be empty", from(self.audience.is_some(), "audience"));
        }
        let dvds_flag = self.dvds_target_days.is_some();
        let dvds_target_days = self.dvds_target_days.or(file.dvds_target_days).unwrap_or(28);
        if !(1..=90).contains(&dvds_target_days) {
            bail!(
                "{}: {dvds_target_days} days is outside 1 to 90 (Clare's Law guidance sets 28 or 35)",
                from(dvds_flag, "dvds_target_days")
            );
        }
        let log = self.log.clone().or(file.log).unwrap_or_else(|| "info".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            bail!(
                "{}: `{log}` is not a log filter (such as `info` or `info,accord_store=debug`): {e}",
                from(self.log.is_some(), "log")
            );
        }

        let file_tls = file.tls.unwrap_or_default();
        let tls = Tls {
            cert: self.tls_cert.clone().or(file_tls.cert),
            key: self.tls_key.clone().or(file_tls.key),
            client_ca: self.tls_client_ca.clone().or(file_tls.client_ca),
            bound_tokens: self.tls_bound_tokens || file_tls.bound_tokens,
        };
        if tls.bound_tokens && tls.client_ca.is_none() {
            bail!(
                "--tls-bound-tokens / ACCORD_TLS_BOUND_TOKENS / [tls] bound_tokens needs mutual TLS: a client CA \
                 (--tls-client-ca or [tls] client_ca) whose certificates the tokens are bound to"
            );
        }
        let tls = match (&tls.cert, &tls.key) {
            (None, None) if tls.client_ca.is_some() => bail!(
                "--tls-client-ca / ACCORD_TLS_CLIENT_CA / [tls] client_ca (mutual TLS) needs the server's own \
                 certificate and key as well (--tls-cert and --tls-key, or [tls] cert and key)"
            ),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => bail!(
                "TLS needs both a certificate and its key: --tls-cert and --tls-key (or ACCORD_TLS_CERT and \
                 ACCORD_TLS_KEY, or [tls] cert and key)"
            ),
            (Some(_), Some(_)) => Some(tls),
        };

        Ok(Config {
            listen,
            database_url,
            server_key: self.server_key.clone().or(file.server_key).unwrap_or_else(|| "accord-server.key".into()),
            origin,
            agencies: self.agencies.clone().or(file.agencies),
            dev_issuer_key: self.dev_issuer_key.clone().or(file.dev_issuer_key),
            audience,
            dvds_target_days,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            log,
            tls,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<File> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the configuration file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl Config {
    /// The configuration as TOML a `--config` file accepts, with the database password redacted.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = redact(&shown.database_url);
        let note = if shown.database_url != self.database_url {
            "# The database password is shown as ***: put the real one back (or set ACCORD_DATABASE_URL).\n"
        } else {
            ""
        };
        format!(
            "# accord serve's effective configuration (flags > ACCORD_* environment > this file > defaults).\n\
             # Relative paths are relative to the directory the server is started in.\n{note}{}",
            toml::to_string(&shown).expect("the configuration serialises")
        )
    }

    /// The server settings this configuration describes, with TLS material read from its files.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::new(&self.database_url, self.server_key.clone());
        s.listen = self.listen;
        s.origin = self.origin.clone();
        s.agencies = self.agencies.clone();
        s.dev_issuer_key = self.dev_issuer_key.clone();
        s.audience = self.audience.clone();
        s.disclosure_limits = accord_views::DisclosureLimits { dvds_days: self.dvds_target_days };
        s.tls = match &self.tls {
            Some(t) => Some(crate::TlsSettings::read(t)?),
            None => None,
        };
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let c = args().resolve().unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.dvds_target_days, 28);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.tls.is_none());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accord.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:6000\"\ndatabase_url = \"postgres://accord:s3cret@db/accord\"\norigin = \"file.example/log\"\nlog_format = \"json\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        a.origin = Some("flag.example/log".into());
        let c = a.resolve().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:6000", "from the file");
        assert_eq!(c.origin, "flag.example/log", "the flag wins over the file");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.audience, DEFAULT_AUDIENCE, "the default where neither says");
        assert_eq!(c.tls.as_ref().unwrap().cert.as_deref(), Some(Path::new("c.pem")));
        let printed = c.to_toml();
        assert!(printed.contains("postgres://accord:***@db/accord"), "{printed}");
        assert!(!printed.contains("s3cret"));
        // What --print-config prints is a configuration file that gives the same configuration.
        std::fs::write(dir.path().join("printed.toml"), &printed).unwrap();
        let mut again = args();
        again.config = Some(dir.path().join("printed.toml"));
        let c2 = again.resolve().unwrap();
        assert_eq!(Config { database_url: c.database_url.clone(), ..c2 }, c, "everything but the password round-trips");
        assert!(printed.contains("# The database password is shown as ***"), "{printed}");
    }

    #[test]
    fn bad_values_are_refused_with_their_source() {
        let mut a = args();
        a.listen = Some("localhost".into());
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("--listen (or ACCORD_LISTEN)") && e.contains("localhost"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accord.toml");
        std::fs::write(&path, "dvds_target_days = 400\n").unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("dvds_target_days") && e.contains("400"), "{e}");

        std::fs::write(&path, "listn = \"0.0.0.0:1\"\n").unwrap();
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("listn"), "{e}");

        let mut a = args();
        a.tls_cert = Some("c.pem".into());
        assert!(a.resolve().unwrap_err().to_string().contains("both a certificate and its key"));
        a.tls_key = Some("k.pem".into());
        a.tls_bound_tokens = true;
        assert!(a.resolve().unwrap_err().to_string().contains("needs mutual TLS"));
        a.tls_client_ca = Some("ca.pem".into());
        assert!(a.resolve().unwrap().tls.unwrap().bound_tokens);

        let mut a = args();
        a.database_url = Some("mysql://x".into());
        assert!(a.resolve().unwrap_err().to_string().contains("--database-url"));
    }
}
