//! DSSE signing of event bodies with Ed25519 (DESIGN.md §2).
//!
//! The signed message is the DSSE pre-authentication encoding
//! `PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body`, which binds the payload
//! type to the bytes so a signature over an event can never be replayed as anything else.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{Error, Result};

/// The DSSE payload type of an Accord event body.
pub const EVENT_PAYLOAD_TYPE: &str = "application/vnd.accord.event+protobuf";

/// The DSSE pre-authentication encoding of `body` under `payload_type`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let tl = payload_type.len().to_string();
    let bl = body.len().to_string();
    let mut out = Vec::with_capacity(6 + 3 + tl.len() + payload_type.len() + bl.len() + body.len());
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(tl.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(bl.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// Signs an encoded event body.
pub fn sign_body(key: &SigningKey, body: &[u8]) -> [u8; 64] {
    key.sign(&pae(EVENT_PAYLOAD_TYPE, body)).to_bytes()
}

/// Verifies a signature over an encoded event body with `verify_strict` (rejects non-canonical
/// and small-order components, so one body has one valid signature per key).
pub fn verify_body(key: &VerifyingKey, body: &[u8], signature: &[u8]) -> Result<()> {
    let sig = Signature::from_slice(signature).map_err(|_| {
        Error::Signature(format!("must be 64 bytes of Ed25519 signature, found {} bytes", signature.len()))
    })?;
    key.verify_strict(&pae(EVENT_PAYLOAD_TYPE, body), &sig)
        .map_err(|_| Error::Signature("does not verify against the body with the named key".into()))
}

/// Parses a 32-byte Ed25519 public key and refuses weak (small-order) keys.
pub fn parse_public_key(field: &str, bytes: &[u8]) -> Result<VerifyingKey> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| {
        Error::invalid(field, format!("must be a 32-byte Ed25519 public key, found {} bytes", bytes.len()))
    })?;
    let key = VerifyingKey::from_bytes(&arr).map_err(|_| Error::invalid(field, "is not a valid Ed25519 point"))?;
    if key.is_weak() {
        return Err(Error::invalid(field, "is a weak (small-order) Ed25519 key"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn signatures_verify_and_any_change_breaks_them() {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let body = b"some body bytes".to_vec();
        let sig = sign_body(&key, &body);
        verify_body(&key.verifying_key(), &body, &sig).unwrap();

        let mut tampered = body.clone();
        tampered[0] ^= 1;
        assert!(verify_body(&key.verifying_key(), &tampered, &sig).is_err());
        let other = SigningKey::generate(&mut rand_core::OsRng);
        assert!(verify_body(&other.verifying_key(), &body, &sig).is_err());
        assert!(verify_body(&key.verifying_key(), &body, &sig[..63]).is_err());
        // A raw signature over the body without PAE is not accepted.
        let raw = key.sign(&body).to_bytes();
        assert!(verify_body(&key.verifying_key(), &body, &raw).is_err());
    }

    #[test]
    fn weak_and_malformed_public_keys_are_refused() {
        assert!(parse_public_key("k", &[0u8; 31]).is_err());
        // The identity point is small-order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_public_key("k", &identity).is_err());
        let good = SigningKey::generate(&mut rand_core::OsRng).verifying_key();
        assert!(parse_public_key("k", good.as_bytes()).is_ok());
    }
}
