//! "Any gRPC client works": the Python example client (`examples/python/accord_example.py`, stubs
//! generated from `proto/` by `examples/python/generate.sh`) against the real server, on both
//! backends. It signs an Operation Encompass notification with a key file as `accord keygen`
//! writes it, appends it, and reads it back from the school DSL's inbox; the Rust side then checks
//! the recorded event (signature, envelope), the inbox and the access record of the Python read.
//!
//! Needs `ACCORD_PYTHON`: a Python with `examples/python/requirements.txt` installed (`.ci/run`
//! makes one). Without it the test is skipped with a note, except under CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use accord_e2e::{TestServer, query};
use accord_proto::v1 as pb;
use prost::Message;

const PURPOSE: &str = "morning check of Operation Encompass notifications (python e2e)";

/// The Python to run the example with, or `None` (skip) outside CI when none is configured.
fn python() -> Option<String> {
    match std::env::var("ACCORD_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| !v.is_empty()) => panic!(
            "ACCORD_PYTHON is not set: CI must run the Python example client (a Python with \
             examples/python/requirements.txt installed; .ci/run makes one)"
        ),
        _ => {
            eprintln!(
                "note: skipping the Python example client test: set ACCORD_PYTHON to a Python with \
                 examples/python/requirements.txt installed (python3 -m venv .venv && \
                 .venv/bin/pip install -r examples/python/requirements.txt)"
            );
            None
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// Runs `program args` in the repository root, killed after two minutes.
async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).current_dir(repo_root()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 2 minutes"))
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn the_python_example_client_appends_and_reads_the_school_inbox(s: TestServer) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let stubs = dir.path().join("stubs");
    let stubs = stubs.to_str().expect("a UTF-8 temp path");
    let generated = run("bash", &["examples/python/generate.sh", stubs], &[("PYTHON", &python)]).await;
    assert!(generated.status.success(), "generate.sh failed:\n{}{}", text(&generated.stdout), text(&generated.stderr));

    // The force's key as `accord keygen` and the Rust SDK write it (PKCS#8 v2 PEM).
    let key_file = dir.path().join("met-1.key");
    std::fs::write(&key_file, s.key("met-1").to_pem()).expect("write the key");
    let key_file = key_file.to_str().expect("a UTF-8 temp path");
    let police = s.token("met-police", "do-1", &["disclosure_officer"]);
    let dsl = s.token("st-marys-school", "dsl-1", &["dsl"]);
    let example = |police_token: &str| {
        [
            "examples/python/accord_example.py",
            "--endpoint",
            s.endpoint.as_str(),
            "--stubs",
            stubs,
            "--key",
            key_file,
            "--key-id",
            "met-1",
            "--agency",
            "met-police",
            "--user",
            "do-1",
            "--role",
            "disclosure_officer",
            "--school",
            "st-marys-school",
            "--urn",
            "100234",
            "--purpose",
            PURPOSE,
            "--police-token",
            police_token,
        ]
        .map(str::to_owned)
    };

    let args = example(&police);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&python, &args, &[("ACCORD_DSL_TOKEN", &dsl)]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the Python example failed ({}):\n{stdout}{stderr}", out.status);
    eprintln!("the Python example said:\n{stdout}");

    // The event Python signed is in the log as sent, and its signature verifies with met-1.
    let mut officer = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let log = officer
        .ledger()
        .read_all(pb::ReadAllRequest { from_position: 0, limit: 1000 })
        .await
        .expect("read the log")
        .into_inner();
    let sent: Vec<&pb::RecordedEvent> =
        log.events.iter().filter(|e| e.event_type == "accord.v1.EncompassNotificationSent").collect();
    assert_eq!(sent.len(), 1, "one notification recorded");
    let recorded = sent[0];
    accord_client::verify_recorded_event(recorded, &s.key("met-1").public_key())
        .expect("the Python signature and the leaf hash verify");
    let signed = recorded.event.as_ref().expect("the signed event");
    assert_eq!(signed.key_id, "met-1");
    let body = pb::EventBody::decode(signed.body.as_slice()).expect("an EventBody");
    let author = body.author.as_ref().expect("author");
    assert_eq!(
        (author.agency.as_str(), author.user.as_str(), author.role.as_str()),
        ("met-police", "do-1", "disclosure_officer")
    );
    assert_eq!(body.addressees, ["st-marys-school"]);
    assert_eq!(body.expected_version.and_then(|v| v.kind), Some(pb::expected_version::Kind::NoStream(pb::Empty {})));
    assert_eq!(uuid::Uuid::parse_str(&body.event_id).expect("a UUID").get_version_num(), 7);
    let payload = pb::EncompassNotificationSent::decode(body.payload.as_slice()).expect("the payload");
    assert_eq!(body.stream, format!("encompass-{}", payload.notification_id));
    let child = payload.child.as_ref().expect("the child");
    assert!(body.subjects.iter().any(|x| x.kind == "child" && x.id == child.child_id));

    // What Python printed: the receipt's position and the notification found in the inbox.
    assert!(stdout.contains(&format!("position={} stream_version=0", recorded.position)), "{stdout}");
    assert!(stdout.contains("(matches what we signed)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "notification {} from met-police at position={}",
            payload.notification_id, recorded.position
        )),
        "{stdout}"
    );
    assert!(stdout.contains("child: Child A (born 2016-04-01)"), "{stdout}");

    // The DSL's inbox through the Rust SDK shows the same notification.
    let mut school = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let inbox = query(&mut school, pb::ReadModel::SchoolInbox).await.expect("the inbox");
    let item = inbox.items.iter().find(|i| i.item_id == payload.notification_id).expect("the notification");
    assert_eq!((item.record_position, item.source_agency.as_str()), (recorded.position, "met-police"));
    let Some(pb::view_item::Content::Notification(n)) = &item.content else { panic!("a notification: {item:?}") };
    assert_eq!(n.child.as_ref().map(|c| c.name.as_str()), Some("Child A"));
    assert!(item.redacted_groups.is_empty(), "the DSL sees the whole notification: {item:?}");

    // Python's read is in the access log, with the purpose it stated in `accord-purpose`.
    let mut dpo = s.client("st-marys-school", "dpo-1", &["auditor"]).await;
    let mut listed = dpo
        .audit()
        .list_accesses(pb::ListAccessesRequest {
            agency: "st-marys-school".into(),
            user: "dsl-1".into(),
            ..Default::default()
        })
        .await
        .expect("list accesses")
        .into_inner();
    let mut python_reads = 0;
    while let Some(e) = listed.message().await.expect("the access stream") {
        let r = e.record.expect("a record");
        if r.method == "Query" && r.purpose == PURPOSE {
            assert_eq!(r.outcome, pb::AccessOutcome::Granted as i32);
            python_reads += usize::from(r.records.iter().any(|x| x.position == recorded.position));
        }
    }
    assert!(python_reads >= 1, "the Python Views.Query is recorded with its purpose and the notification");

    // The error model: a refused call exits 1 naming the status code, and nothing is written.
    let before = s.store().log_size().await.expect("log size");
    let args = example("not-a-jwt");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&python, &args, &[("ACCORD_DSL_TOKEN", &dsl)]).await;
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("error: Ledger.Append failed: UNAUTHENTICATED: "), "{}", text(&out.stderr));
    assert_eq!(s.store().log_size().await.expect("log size"), before, "nothing appended");
    s.stop().await;
}

accord_e2e::on_both_backends!(the_python_example_client_appends_and_reads_the_school_inbox);
