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
