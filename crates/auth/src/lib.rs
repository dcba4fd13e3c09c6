//! Caller authentication: validates a JWT bearer token and turns its claims into a [`Principal`]
//! (agency, user, roles).
//!
//! Each trusted issuer is configured with its own key, algorithm and the agencies it may speak
//! for; the token's issuer, audience, expiry, not-before and algorithm are all checked, `alg: none`
//! and algorithm confusion (an HMAC token "signed" with a public key) are refused because only the
//! issuer's configured asymmetric algorithm is accepted. A [`DevIssuer`] mints tokens for local
//! use; a server trusts it only when started with its key. This crate decides who the caller is,
//! never what they may do (that is `accord-policy`).
//!
//! A token may be bound to the client certificate of the agency system it was issued to (RFC 8705
//! certificate-bound access tokens: a `cnf` claim holding `x5t#S256`, the base64url SHA-256 of the
//! certificate's DER). Such a token is accepted only on a connection that presented that
//! certificate over mutual TLS, so a token copied out of one agency's system is of no use from
//! another's; a server can also require every token to be bound
//! ([`Authenticator::require_bound_tokens`]).

use std::collections::HashMap;

use accord_domain::{AgencyId, Role, UserId};
use base64::Engine;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a caller could not be authenticated. Messages are safe to return to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `authorization: Bearer` metadata.
    #[error("missing bearer token: send metadata `authorization: Bearer <JWT>`")]
    Missing,
    /// The token is malformed, from an untrusted issuer, badly signed, expired or not yet valid.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid token used without the client certificate it is bound to (or unbound where
    /// binding is required): refused, but its holder is known, for the refusal's access record.
    #[error("invalid token: {reason}")]
    Unbound {
        /// Whose token it is.
        principal: Box<Principal>,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration value is wrong (at start-up, not per request).
    #[error("auth configuration: {0}")]
    Config(String),
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The agency the caller acts for.
    pub agency: AgencyId,
    /// The user (the token's `sub`).
    pub user: UserId,
    /// Roles granted by the token. Unknown roles carry no rights (policy ignores them).
    pub roles: Vec<Role>,
    /// The token id (`jti`), for the access log.
    pub token_id: Option<String>,
    /// The issuer that vouched for the caller.
    pub issuer: String,
}

impl Principal {
    /// Whether the token grants `role`.
    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.contains(role)
    }
}

/// The claims Accord reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Audience (Accord's configured audience).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The agency the user acts for.
    pub agency: String,
    /// The user's roles.
    pub roles: Vec<String>,
    /// Confirmation (RFC 7800): the client certificate the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// A token's `cnf` claim. Only the certificate thumbprint of RFC 8705 is understood: a token
/// confirmed any other way is refused, since this server could not check it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The base64url (unpadded) SHA-256 of the client certificate's DER encoding.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

/// The RFC 8705 thumbprint of a certificate (DER): what a bound token's `cnf.x5t#S256` holds.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// A trusted token issuer.
pub struct Issuer {
    /// The `iss` value it uses.
    pub issuer: String,
    /// The one algorithm accepted from it (asymmetric only).
    pub algorithm: Algorithm,
    /// Its public key.
    pub key: DecodingKey,
    /// The agencies it may vouch for; `None` for any (development issuer only).
    pub agencies: Option<Vec<AgencyId>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .field("agencies", &self.agencies)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer from a PEM public key: `algorithm` is `EdDSA`, `ES256`, `ES384`, `RS256`,
    /// `RS384`, `RS512`, `PS256`, `PS384` or `PS512`. HMAC algorithms are refused: a shared secret
    /// would let Accord itself mint tokens for an agency.
    pub fn from_pem(issuer: &str, algorithm: &str, pem: &[u8], agencies: Option<Vec<AgencyId>>) -> Result<Self> {
        let alg: Algorithm = algorithm
            .parse()
            .map_err(|_| Error::Config(format!("issuer {issuer:?}: unknown algorithm {algorithm:?}")))?;
        let key = match alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            _ => {
                return Err(Error::Config(format!(
                    "issuer {issuer:?}: algorithm {algorithm} is not allowed, use an asymmetric one"
                )));
            }
        }
        .map_err(|e| Error::Config(format!("issuer {issuer:?}: public key: {e}")))?;
        if issuer.is_empty() {
            return Err(Error::Config("issuer name must not be empty".into()));
        }
        Ok(Self { issuer: issuer.to_owned(), algorithm: alg, key, agencies })
    }
}

/// Validates bearer tokens against the trusted issuers.
///
/// A token that validated is remembered (at most [`CACHE_ENTRIES`] tokens) until its own `exp`,
/// so an agency system that sends one token with every call pays for the signature check once.
/// The cache never extends a token: an entry is used only while `nbf <= now < exp`.
#[derive(Debug)]
pub struct Authenticator {
    audience: String,
    issuers: HashMap<String, Issuer>,
    leeway_secs: u64,
    require_bound: bool,
    cache: std::sync::Mutex<HashMap<String, Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    principal: Principal,
    nbf: u64,
    exp: u64,
    /// The thumbprint of the certificate the token is bound to.
    bound_to: Option<String>,
}

/// How many validated tokens are remembered.
pub const CACHE_ENTRIES: usize = 10_000;

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<String>,
}

impl Authenticator {
    /// An authenticator accepting tokens for `audience`, with 30 s of clock leeway.
    pub fn new(audience: &str) -> Self {
        Self {
            audience: audience.to_owned(),
            issuers: HashMap::new(),
            leeway_secs: 30,
            require_bound: false,
            cache: Default::default(),
        }
    }

    /// Accepts only tokens bound to the client certificate their connection presented (for a
    /// server that requires mutual TLS of every agency system).
    pub fn require_bound_tokens(&mut self) {
        self.require_bound = true;
    }

    /// Whether a token bound to `bound_to` may be used on a connection that presented a
    /// certificate of thumbprint `presented` (both [`certificate_thumbprint`]s).
    fn check_binding(&self, who: &Principal, bound_to: Option<&str>, presented: Option<&str>) -> Result<()> {
        let reason = match (bound_to, presented) {
            (None, _) if self.require_bound => {
                "this server accepts only tokens bound to the agency system's client certificate (a `cnf` claim with `x5t#S256`, RFC 8705)"
            }
            (None, _) => return Ok(()),
            (Some(_), None) => {
                "the token is bound to a client certificate (cnf x5t#S256) but this connection presented none: use mutual TLS with that certificate"
            }
            (Some(t), Some(p)) if p == t => return Ok(()),
            (Some(_), Some(_)) => {
                "the token is bound to another client certificate than the one this connection presented"
            }
        };
        Err(Error::Unbound { principal: Box::new(who.clone()), reason: reason.to_owned() })
    }

    /// Trusts `issuer`.
    pub fn trust(&mut self, issuer: Issuer) {
        self.issuers.insert(issuer.issuer.clone(), issuer);
        self.cache.get_mut().expect("token cache").clear();
    }

    /// Authenticates the value of an `authorization` header on a connection without a client
    /// certificate.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal> {
        self.authenticate_on(authorization, None)
    }

    /// Authenticates the value of an `authorization` header on a connection that presented a
    /// client certificate of thumbprint `presented` ([`certificate_thumbprint`] of its DER; its
    /// chain was verified by the TLS layer): a token bound to a certificate is accepted only with
    /// that one.
    pub fn authenticate_on(&self, authorization: Option<&str>, presented: Option<&str>) -> Result<Principal> {
        let header = authorization.ok_or(Error::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Error::Invalid("authorization must be `Bearer <JWT>`".into()))?
            .trim();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(c) = self.cache.lock().expect("token cache").get(token)
            && c.nbf <= now + self.leeway_secs
            && now < c.exp
        {
            self.check_binding(&c.principal, c.bound_to.as_deref(), presented)?;
            return Ok(c.principal.clone());
        }
        // Read `iss` without trusting it, only to choose the key; the signature is verified below
        // with that issuer's key and algorithm, and `iss` is checked again.
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<IssOnly>(token)
            .map_err(|e| Error::Invalid(format!("malformed token: {e}")))?
            .iss
            .ok_or_else(|| Error::Invalid("token has no iss claim".into()))?;
        let issuer = self.issuers.get(&iss).ok_or_else(|| Error::Invalid(format!("issuer {iss:?} is not trusted")))?;
        let mut v = Validation::new(issuer.algorithm);
        v.set_issuer(&[&issuer.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = self.leeway_secs;
        let data = jsonwebtoken::decode::<Claims>(token, &issuer.key, &v).map_err(|e| Error::Invalid(e.to_string()))?;
        let c = data.claims;
        let agency = AgencyId::parse_field("agency claim", c.agency).map_err(|e| Error::Invalid(e.to_string()))?;
        if let Some(allowed) = &issuer.agencies
            && !allowed.contains(&agency)
        {
            return Err(Error::Invalid(format!("issuer {iss:?} may not vouch for agency {agency}")));
        }
        let user = UserId::parse_field("sub claim", c.sub).map_err(|e| Error::Invalid(e.to_string()))?;
        // A malformed role name is not an error: it simply grants nothing.
        let roles = c.roles.into_iter().filter_map(|r| Role::parse(r).ok()).collect();
        let bound_to = match c.cnf {
            None => None,
            Some(Confirmation { x5t_s256: Some(t) }) => Some(t),
            Some(Confirmation { x5t_s256: None }) => {
                return Err(Error::Invalid(
                    "the token's cnf claim has no x5t#S256 certificate thumbprint, the only confirmation this server can check".into(),
                ));
            }
        };
        let principal = Principal { agency, user, roles, token_id: c.jti, issuer: iss };
        self.check_binding(&principal, bound_to.as_deref(), presented)?;
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, e| now < e.exp);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), Cached { principal: principal.clone(), nbf: c.nbf, exp: c.exp, bound_to });
        Ok(principal)
    }
}

/// The development token issuer: an Ed25519 key that mints tokens for any agency. For local use;
/// a server trusts it only when started with `--dev-issuer-key`.
pub struct DevIssuer {
    key: SigningKey,
    encoding: EncodingKey,
}

/// The `iss` of development tokens.
pub const DEV_ISSUER: &str = "accord-dev-issuer";

impl DevIssuer {
    /// From the Ed25519 secret key.
    pub fn new(key: SigningKey) -> Result<Self> {
        let der = key.to_pkcs8_der().map_err(|e| Error::Config(format!("dev issuer key: {e}")))?;
        Ok(Self { encoding: EncodingKey::from_ed_der(der.as_bytes()), key })
    }

    /// The issuer to trust for this key.
    pub fn issuer(&self) -> Issuer {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes());
        Issuer {
            issuer: DEV_ISSUER.to_owned(),
            algorithm: Algorithm::EdDSA,
            key: DecodingKey::from_ed_components(&x).expect("32-byte key encodes"),
            agencies: None,
        }
    }

    /// Mints a token valid from now for `ttl_secs`.
    pub fn mint(&self, audience: &str, agency: &str, user: &str, roles: &[&str], ttl_secs: u64) -> Result<String> {
        self.mint_claims(&Self::claims(audience, agency, user, roles, ttl_secs))
    }

    /// The claims [`DevIssuer::mint`] signs: valid from now for `ttl_secs`, with a fresh `jti`,
    /// unbound (set `cnf` to bind them to a client certificate).
    pub fn claims(audience: &str, agency: &str, user: &str, roles: &[&str], ttl_secs: u64) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            iss: DEV_ISSUER.to_owned(),
            sub: user.to_owned(),
            aud: audience.to_owned(),
            exp: now + ttl_secs,
            nbf: now,
            iat: now,
            jti: Some(uuid::Uuid::now_v7().to_string()),
            agency: agency.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            cnf: None,
        }
    }

    /// Mints a token with exactly these claims (tests use it for expired or future tokens).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| Error::Config(format!("signing token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (DevIssuer, Authenticator) {
        let dev = DevIssuer::new(SigningKey::from_bytes(&[7; 32])).unwrap();
        let mut auth = Authenticator::new("accord");
        auth.trust(dev.issuer());
        (dev, auth)
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn claims(dev_now: u64) -> Claims {
        Claims {
            iss: DEV_ISSUER.into(),
            sub: "pc-1234".into(),
            aud: "accord".into(),
            exp: dev_now + 600,
            nbf: dev_now,
            iat: dev_now,
            jti: None,
            agency: "met-police".into(),
            roles: vec!["offender_manager".into(), "Not A Role".into()],
            cnf: None,
        }
    }

    #[test]
    fn a_good_token_gives_a_principal() {
        let (dev, auth) = setup();
        let t = dev.mint("accord", "met-police", "pc-1234", &["offender_manager"], 60).unwrap();
        let p = auth.authenticate(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(p.agency.as_str(), "met-police");
        assert_eq!(p.user.as_str(), "pc-1234");
        assert_eq!(p.roles, vec![Role::parse("offender_manager").unwrap()]);
        assert!(p.token_id.is_some());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (dev, auth) = setup();
        let now = jsonwebtoken::get_current_timestamp();
        let ok = |c: &Claims| auth.authenticate(Some(&format!("Bearer {}", dev.mint_claims(c).unwrap())));
        assert!(ok(&claims(now)).is_ok());
        // Unknown roles are dropped, not errors.
        assert_eq!(ok(&claims(now)).unwrap().roles.len(), 1);

        let cases: Vec<(&str, Claims)> = vec![
            ("expired", Claims { exp: now - 120, nbf: now - 600, ..claims(now) }),
            ("not yet valid", Claims { nbf: now + 600, exp: now + 1200, ..claims(now) }),
            ("wrong audience", Claims { aud: "other".into(), ..claims(now) }),
            ("untrusted issuer", Claims { iss: "someone-else".into(), ..claims(now) }),
            ("bad agency", Claims { agency: "Met Police".into(), ..claims(now) }),
        ];
        for (what, c) in cases {
            assert!(ok(&c).is_err(), "{what} accepted");
        }

        assert!(matches!(auth.authenticate(None), Err(Error::Missing)));
        assert!(auth.authenticate(Some("Basic abc")).is_err());
        assert!(auth.authenticate(Some("Bearer not.a.token")).is_err());

        // Signed by another key claiming the dev issuer.
        let other = DevIssuer::new(SigningKey::from_bytes(&[8; 32])).unwrap();
        assert!(auth.authenticate(Some(&format!("Bearer {}", other.mint_claims(&claims(now)).unwrap()))).is_err());
    }

    #[test]
    fn the_cache_serves_a_token_only_within_its_own_validity() {
        let (dev, auth) = setup();
        let now = jsonwebtoken::get_current_timestamp();
        let t = dev.mint_claims(&claims(now)).unwrap();
        let header = format!("Bearer {t}");
        assert_eq!(auth.authenticate(Some(&header)).unwrap().user.as_str(), "pc-1234");
        // Mark the cached entry to see when it is used.
        let marker = UserId::parse("from-cache").unwrap();
        auth.cache.lock().unwrap().get_mut(&t).unwrap().principal.user = marker.clone();
        assert_eq!(auth.authenticate(Some(&header)).unwrap().user, marker);
        // Past the entry's expiry it is not used: the token is validated again.
        auth.cache.lock().unwrap().get_mut(&t).unwrap().exp = now - 1;
        assert_eq!(auth.authenticate(Some(&header)).unwrap().user.as_str(), "pc-1234");
        // A token whose signature fails is never cached.
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(auth.authenticate(Some(&format!("Bearer {forged}"))).is_err());
        assert!(!auth.cache.lock().unwrap().contains_key(&forged));
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        let (dev, auth) = setup();
        let now = jsonwebtoken::get_current_timestamp();
        let body = serde_json::to_value(claims(now)).unwrap();

        let none = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT"})), b64(&body));
        assert!(auth.authenticate(Some(&format!("Bearer {none}"))).is_err());

        // HS256 "signed" with the issuer's public key as the HMAC secret.
        let public = dev.key.verifying_key().to_bytes();
        let hs = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(now), &EncodingKey::from_secret(&public))
            .unwrap();
        let err = auth.authenticate(Some(&format!("Bearer {hs}"))).unwrap_err();
        assert!(err.to_string().contains("invalid token"), "{err}");

        assert!(Issuer::from_pem("x", "HS256", b"secret", None).is_err());
    }

    #[test]
    fn an_agency_issuer_vouches_only_for_its_agencies() {
        let dev = DevIssuer::new(SigningKey::from_bytes(&[9; 32])).unwrap();
        let mut restricted = dev.issuer();
        restricted.agencies = Some(vec![AgencyId::parse("kent-police").unwrap()]);
        let mut auth = Authenticator::new("accord");
        auth.trust(restricted);
        let t = dev.mint("accord", "met-police", "u", &[], 60).unwrap();
        let err = auth.authenticate(Some(&format!("Bearer {t}"))).unwrap_err();
        assert!(err.to_string().contains("may not vouch for agency met-police"), "{err}");
        let t = dev.mint("accord", "kent-police", "u", &[], 60).unwrap();
        assert!(auth.authenticate(Some(&format!("Bearer {t}"))).is_ok());
    }

    #[test]
    fn a_bound_token_is_accepted_only_with_its_certificate() {
        let (dev, mut auth) = setup();
        let now = jsonwebtoken::get_current_timestamp();
        let ours = certificate_thumbprint(b"our agency system's certificate");
        let theirs = certificate_thumbprint(b"another certificate");
        let (ours, theirs) = (ours.as_str(), theirs.as_str());
        let cnf = |t: Option<String>| Some(Confirmation { x5t_s256: t });
        let bound = dev.mint_claims(&Claims { cnf: cnf(Some(ours.to_owned())), ..claims(now) }).unwrap();
        let header = format!("Bearer {bound}");
        // Twice each, so that the cached entry is checked as well as a fresh validation.
        for _ in 0..2 {
            assert_eq!(auth.authenticate_on(Some(&header), Some(ours)).unwrap().user.as_str(), "pc-1234");
            let err = auth.authenticate_on(Some(&header), Some(theirs)).unwrap_err();
            assert!(err.to_string().contains("bound to another client certificate"), "{err}");
            let err = auth.authenticate(Some(&header)).unwrap_err();
            assert!(err.to_string().contains("presented none"), "{err}");
        }
        // A confirmation this server cannot check is refused, not ignored.
        let other = dev.mint_claims(&Claims { cnf: cnf(None), ..claims(now) }).unwrap();
        let err = auth.authenticate_on(Some(&format!("Bearer {other}")), Some(ours)).unwrap_err();
        assert!(err.to_string().contains("no x5t#S256"), "{err}");
        // The claim's JSON is RFC 8705's.
        let json = serde_json::to_value(Claims { cnf: cnf(Some("abc".into())), ..claims(now) }).unwrap();
        assert_eq!(json["cnf"], serde_json::json!({ "x5t#S256": "abc" }));

        // Unbound tokens pass unless the server requires binding.
        let plain = format!("Bearer {}", dev.mint_claims(&claims(now)).unwrap());
        assert!(auth.authenticate_on(Some(&plain), Some(ours)).is_ok());
        auth.require_bound_tokens();
        for _ in 0..2 {
            let err = auth.authenticate_on(Some(&plain), Some(ours)).unwrap_err();
            assert!(err.to_string().contains("accepts only tokens bound"), "{err}");
            assert!(auth.authenticate_on(Some(&header), Some(ours)).is_ok());
        }
    }
}
