//! The `accord` binary's offline commands.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_accord");

fn policy_check(policies: &std::path::Path, views: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["policy-check", "--policies"])
        .arg(policies)
        .arg("--views")
        .arg(views)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn policy_check_accepts_the_defaults_and_names_what_fails() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies");
    let (ok, out) = policy_check(&root.join("sharing.cedar"), &root.join("views.toml"));
    assert!(ok && out.starts_with("ok: "), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        r#"@id("typo") permit (principal, action == Accord::Action::"receive", resource) when { principal.knd == "police" };"#,
    )
    .unwrap();
    let (ok, out) = policy_check(&bad, &root.join("views.toml"));
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED") && out.contains("do not validate") && out.contains("typo"), "{out}");
}

/// `accord token --bind-cert` mints a token bound to that certificate (RFC 8705), which the
/// server's authenticator accepts with the certificate and refuses with another or none.
#[test]
fn a_development_token_can_be_bound_to_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let der = b"not really a certificate, only its bytes";
    let pem = "-----BEGIN CERTIFICATE-----\nbm90IHJlYWxseSBhIGNlcnRpZmljYXRlLCBvbmx5IGl0cyBieXRlcw==\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("client.pem"), pem).unwrap();
    let key = dir.path().join("dev.key");
    let out = Command::new(BIN)
        .args(["token", "--agency", "st-marys-school", "--user", "dsl-1", "--role", "dsl", "--dev-issuer-key"])
        .arg(&key)
        .arg("--bind-cert")
        .arg(dir.path().join("client.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let header = format!("Bearer {}", token.trim());

    let dev = accord_auth::DevIssuer::new(accord_server::keys::load_or_create(&key).unwrap()).unwrap();
    let mut auth = accord_auth::Authenticator::new(accord_server::DEFAULT_AUDIENCE);
    auth.trust(dev.issuer());
    let presented = accord_auth::certificate_thumbprint(der);
    let who = auth.authenticate_on(Some(&header), Some(&presented)).expect("accepted with its certificate");
    assert_eq!((who.agency.as_str(), who.user.as_str()), ("st-marys-school", "dsl-1"));
    let another = accord_auth::certificate_thumbprint(b"another certificate");
    assert!(auth.authenticate_on(Some(&header), Some(&another)).is_err());
    assert!(auth.authenticate(Some(&header)).is_err());

    let missing = Command::new(BIN)
        .args(["token", "--agency", "a", "--user", "u", "--role", "dsl", "--dev-issuer-key"])
        .arg(&key)
        .arg("--bind-cert")
        .arg(dir.path().join("missing.pem"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.pem"));
}
