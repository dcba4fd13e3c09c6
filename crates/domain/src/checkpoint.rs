//! Signed checkpoints: a tree size and root hash in the C2SP `tlog-checkpoint` format, signed as a
//! C2SP `signed-note` by the server's log key, so that transparency-log tooling can read them and
//! an agency that keeps one can later demand a consistency proof.

use base64::Engine;
use ed25519_dalek::SigningKey;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::merkle::Hash;
use crate::{Error, Result};

/// The server's checkpoint-signing key: a note signer and its public verifier key string.
pub struct LogSigner {
    signer: StandardSigner,
    origin: String,
    verifier_key: String,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner")
            .field("origin", &self.origin)
            .field("verifier_key", &self.verifier_key)
            .finish_non_exhaustive()
    }
}

/// Checks that `origin` is usable as a checkpoint origin and note key name.
pub fn check_origin(origin: &str) -> Result<()> {
    if origin.is_empty() || origin.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(Error::invalid("origin", format!("must be non-empty without spaces or '+', found {origin:?}")));
    }
    Ok(())
}

impl LogSigner {
    /// A signer named `origin` from an Ed25519 key.
    pub fn new(origin: &str, key: &SigningKey) -> Result<Self> {
        check_origin(origin)?;
        let pubkey = [&[1u8][..], key.verifying_key().as_bytes()].concat();
        let id = signed_note::key_id(origin, &pubkey);
        let privkey = [&[1u8][..], key.as_bytes()].concat();
        let skey =
            format!("PRIVATE+KEY+{origin}+{id:08x}+{}", base64::engine::general_purpose::STANDARD.encode(privkey));
        let signer = StandardSigner::new(&skey).map_err(|e| Error::Signature(format!("log key: {e}")))?;
        let verifier_key = signed_note::new_ed25519_verifier_key(origin, &key.verifying_key());
        Ok(Self { signer, origin: origin.to_owned(), verifier_key })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key string `<origin>+<id>+<base64 key>`, recorded in the log.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// A signed checkpoint note for a tree of `size` with head `root`.
    pub fn sign(&self, size: u64, root: Hash) -> Result<String> {
        let cp =
            Checkpoint::new(&self.origin, size, root, "").map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
        let mut note = Note::new(&cp.to_bytes(), &[]).map_err(|e| Error::Signature(e.to_string()))?;
        note.add_sigs(&[&self.signer]).map_err(|e| Error::Signature(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| Error::Signature(e.to_string()))
    }
}

/// A checkpoint whose signature has been verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCheckpoint {
    /// The log's origin.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Tree head.
    pub root: Hash,
}

/// The verifier key of the same Ed25519 key under the note name `name` (the access log's
/// checkpoints are signed by the server's log key under the origin `<origin>/access`): parses a
/// verifier key `<name>+<id>+<base64(0x01 || key)>` and re-derives it for `name`.
pub fn verifier_key_for(verifier_key: &str, name: &str) -> Result<String> {
    check_origin(name)?;
    let bad = || Error::Proof(format!("verifier key {verifier_key:?}: not <name>+<id>+<base64 Ed25519 key>"));
    // The name has no '+' (see `check_origin`), the id is hex; the base64 key may hold '+'.
    let b64 = verifier_key.splitn(3, '+').nth(2).ok_or_else(bad)?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
    let key: [u8; 32] = match raw.as_slice() {
        [1, rest @ ..] => rest.try_into().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
    Ok(signed_note::new_ed25519_verifier_key(name, &key))
}

/// Verifies a signed checkpoint note against the log's verifier keys (any one must have signed).
pub fn verify_checkpoint(note: &str, verifier_keys: &[String]) -> Result<VerifiedCheckpoint> {
    let mut verifiers: Vec<Box<dyn signed_note::Verifier>> = Vec::new();
    for vk in verifier_keys {
        verifiers
            .push(Box::new(StandardVerifier::new(vk).map_err(|e| Error::Proof(format!("verifier key {vk:?}: {e}")))?));
    }
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|e| Error::Proof(format!("checkpoint note: {e}")))?;
    parsed.verify(&VerifierList::new(verifiers)).map_err(|e| Error::Proof(format!("checkpoint signature: {e}")))?;
    let cp = Checkpoint::from_bytes(parsed.text()).map_err(|e| Error::Proof(format!("checkpoint text: {e}")))?;
    Ok(VerifiedCheckpoint { origin: cp.origin().to_owned(), size: cp.size(), root: *cp.hash() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_c2sp_notes_that_verify_and_fail_when_altered() {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let signer = LogSigner::new("accord.example/log", &key).unwrap();
        let root = Hash([7; 32]);
        let note = signer.sign(42, root).unwrap();
        let mut lines = note.lines();
        assert_eq!(lines.next(), Some("accord.example/log"));
        assert_eq!(lines.next(), Some("42"));
        assert_eq!(lines.next(), Some(base64::engine::general_purpose::STANDARD.encode([7u8; 32]).as_str()));
        assert_eq!(lines.next(), Some(""));
        assert!(lines.next().unwrap().starts_with("\u{2014} accord.example/log "));

        let vk = vec![signer.verifier_key().to_owned()];
        let v = verify_checkpoint(&note, &vk).unwrap();
        assert_eq!((v.origin.as_str(), v.size, v.root), ("accord.example/log", 42, root));

        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(verify_checkpoint(&forged, &vk).is_err());
        let other = LogSigner::new("accord.example/log", &SigningKey::generate(&mut rand_core::OsRng)).unwrap();
        assert!(verify_checkpoint(&note, &[other.verifier_key().to_owned()]).is_err());
        assert!(LogSigner::new("bad origin", &key).is_err());

        let access = LogSigner::new("accord.example/log/access", &key).unwrap();
        let derived = verifier_key_for(signer.verifier_key(), "accord.example/log/access").unwrap();
        assert_eq!(derived, access.verifier_key());
        assert!(verify_checkpoint(&access.sign(1, root).unwrap(), &[derived]).is_ok());
        assert!(verify_checkpoint(&access.sign(1, root).unwrap(), &vk).is_err());
    }
}
