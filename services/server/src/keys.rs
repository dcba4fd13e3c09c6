//! Key files: Ed25519 secret keys as PKCS#8 PEM, created with mode 0600.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;

/// Reads the key at `path`, or creates one there (0600) when the file does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(pem) => SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 PEM private key: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            write_new(path, &key)?;
            tracing::info!(path = %path.display(), "created a new key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a new key file; refuses to overwrite one.
pub fn write_new(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::io::Write;
    let pem = accord_client::pkcs8_pem(key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
