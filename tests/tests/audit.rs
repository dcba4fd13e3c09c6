//! The access log and the Audit service through the real gRPC server, on both backends (issue 5;
//! DOMAIN.md §7 scenario 5): every personal-data call leaves an access record, granted or denied;
//! a read states its purpose; an auditor finds an access, replays it and the digest matches; the
//! auditor's own queries are recorded and nobody else can read the log; a read whose access
//! record cannot be written returns no data; tampering with the access log is detected by
//! `verify`; agencies can hold the access log's checkpoints and get consistency proofs.

use std::time::Duration;

use accord_client::{Client, verify_checkpoint, verify_consistency};
use accord_e2e::{TestServer, encompass_notification, query, try_append};
use accord_proto::v1::{self as pb, ReadModel};
use prost::Message;
use tonic::Code;

const AUDITOR: &[&str] = &["auditor"];

/// The DSL's inbox once the projection has applied `n` notifications.
async fn inbox_with(c: &mut Client, n: usize) -> pb::QueryViewResponse {
    for _ in 0..100 {
        let r = query(c, ReadModel::SchoolInbox).await.expect("inbox");
        if r.items.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the inbox never held {n} notifications");
}

async fn list(c: &mut Client, req: pb::ListAccessesRequest) -> Vec<pb::AccessEntry> {
    let mut s = c.audit().list_accesses(req).await.expect("list accesses").into_inner();
    let mut out = Vec::new();
    while let Some(e) = s.message().await.expect("stream") {
        out.push(e);
    }
    out
}

fn by_user(agency: &str, user: &str) -> pb::ListAccessesRequest {
    pb::ListAccessesRequest { agency: agency.into(), user: user.into(), ..Default::default() }
}

fn record(e: &pb::AccessEntry) -> &pb::AccessRecord {
    e.record.as_ref().expect("a record")
}

/// A police notification reaches a school; the DSL reads the inbox with a stated purpose; the
/// school's data protection officer finds that read by user, by subject and by record, replays it
/// and the digest matches; the auditor's own queries are recorded; the DSL cannot read the log.
async fn an_auditor_finds_and_replays_a_dsl_read(mut s: TestServer) {
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let mut dpo = s.client("st-marys-school", "dpo-1", AUDITOR).await;

    let (n, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let child = n.body().subjects[0].id.clone();
    let receipt = police.append(vec![n.sign(s.key("met-1"))]).await.expect("notification")[0].clone();
    dsl.set_purpose(Some("morning check of Operation Encompass notifications")).unwrap();
    let seen = inbox_with(&mut dsl, 1).await;

    // Every read by the DSL is on record; the last one is the answer the DSL holds.
    let reads = list(&mut dpo, by_user("st-marys-school", "dsl-1")).await;
    let last = reads.last().expect("the DSL's reads are recorded");
    let r = record(last);
    assert_eq!((r.service.as_str(), r.method.as_str()), ("accord.v1.Views", "Query"));
    assert_eq!(r.outcome, pb::AccessOutcome::Granted as i32);
    assert_eq!(r.purpose, "morning check of Operation Encompass notifications");
    let who = r.who.as_ref().unwrap();
    assert_eq!(
        (who.agency.as_str(), who.user.as_str(), who.roles.as_slice()),
        ("st-marys-school", "dsl-1", &["dsl".to_owned()][..])
    );
    assert!(r.actions.contains(&(pb::AccessAction::Consultation as i32)));
    assert!(
        r.actions.contains(&(pb::AccessAction::Disclosure as i32)),
        "police data shown to a school is a disclosure"
    );
    assert_eq!(r.recipients, vec!["st-marys-school".to_owned()]);
    assert!(r.subjects.iter().any(|x| x.kind == "child" && x.id == child));
    assert!(r.records.iter().any(|x| x.position == receipt.position && x.source_agency == "met-police"));
    assert_eq!(r.log_size, seen.log_size);
    assert_eq!(r.policy_version, seen.policy_version);
    assert!(!r.policy_ids.is_empty(), "the deciding policies are named");
    assert!(!r.request_id.is_empty() && r.client_address.starts_with("127.0.0.1:"));
    assert_eq!(r.response_sha256, sha256(&seen.encode_to_vec()), "the digest is of the answer the DSL received");
    assert_eq!(last.record_bytes, r.encode_to_vec());

    // Found by subject and by record too.
    let subject = pb::Subject { kind: "child".into(), id: child.clone() };
    let by_subject = list(&mut dpo, pb::ListAccessesRequest { subject: Some(subject), ..Default::default() }).await;
    assert!(by_subject.iter().any(|e| record(e).access_id == r.access_id));
    let by_record =
        list(&mut dpo, pb::ListAccessesRequest { record_position: Some(receipt.position), ..Default::default() }).await;
    assert!(by_record.iter().any(|e| record(e).access_id == r.access_id));
    let append =
        by_record.iter().map(record).find(|x| x.method == "Append").expect("the police append is on record too");
    assert_ne!(append.policy_version, 0);
    assert_eq!(
        append.policy_version, r.policy_version,
        "the append names the sharing policy it was checked under (the one the DSL read under)"
    );
    assert!(!append.policy_ids.is_empty(), "the append names the policies that allowed it");

    // The replay re-builds exactly what the DSL was shown, also after a restart (the live read
    // models then come from their stored rows; the replay folds the log).
    s.restart().await;
    let mut dpo = s.client("st-marys-school", "dpo-1", AUDITOR).await;
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let proof = dpo
        .audit()
        .replay_access(pb::ReplayAccessRequest { access_id: r.access_id.clone(), ..Default::default() })
        .await
        .expect("replay")
        .into_inner();
    assert!(proof.digest_matches, "the replayed answer hashes to the recorded digest");
    assert!(
        proof.response.is_empty() && proof.withheld.contains("investigation"),
        "content only within an investigation"
    );
    let inv = uuid::Uuid::now_v7().to_string();
    let open =
        investigation_by("st-marys-school", "dpo-1", "st-marys-school/dsl-1", true, &inv, "routine DSL access review");
    dpo.append(vec![open.sign(s.key("school-1"))]).await.expect("investigation opened");
    let replay = dpo
        .audit()
        .replay_access(pb::ReplayAccessRequest { access_id: r.access_id.clone(), investigation_id: inv })
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.digest_matches, "the replayed answer hashes to the recorded digest");
    assert_eq!(replay.response_sha256, proof.response_sha256);
    assert_eq!(replay.response_type, "accord.v1.QueryViewResponse");
    assert_eq!(pb::QueryViewResponse::decode(replay.response.as_slice()).unwrap(), seen);

    // The auditor's own queries are on record, with their purpose.
    let mine = list(&mut dpo, by_user("st-marys-school", "dpo-1")).await;
    let methods: Vec<_> = mine.iter().map(|e| record(e).method.as_str()).collect();
    assert!(methods.contains(&"ListAccesses") && methods.contains(&"ReplayAccess"), "{methods:?}");
    for listing in mine.iter().map(record).filter(|r| r.method == "ListAccesses" || r.method == "GetAccess") {
        let again = dpo
            .audit()
            .replay_access(pb::ReplayAccessRequest { access_id: listing.access_id.clone(), ..Default::default() })
            .await
            .expect("an auditor's own query replays")
            .into_inner();
        assert!(again.digest_matches, "{} replays to its digest", listing.method);
    }
    assert!(
        mine.iter()
            .filter(|e| record(e).service == "accord.v1.Audit")
            .all(|e| record(e).purpose == accord_e2e::TEST_PURPOSE)
    );
    assert!(mine.iter().any(|e| record(e).method == "Append"
        && record(e).purpose == "self-monitoring: investigation of access outside allocation"));

    // The DSL can neither read nor alter the log: the attempt is refused and recorded.
    let refused = dsl.audit().list_accesses(by_user("st-marys-school", "dsl-1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let denied =
        list(&mut dpo, pb::ListAccessesRequest { denied_only: true, ..by_user("st-marys-school", "dsl-1") }).await;
    let d = record(denied.last().expect("the refusal is recorded"));
    assert_eq!(
        (d.service.as_str(), d.method.as_str(), d.denial_code.as_str()),
        ("accord.v1.Audit", "ListAccesses", "PermissionDenied")
    );
    assert!(d.response_sha256.is_empty());
    s.stop().await;
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

/// A read without a purpose is INVALID_ARGUMENT and recorded as denied; a write outside the
/// agreement is PERMISSION_DENIED and recorded as denied; another agency's auditor sees neither.
async fn refusals_are_recorded(s: TestServer) {
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let mut dpo = s.client("st-marys-school", "dpo-1", AUDITOR).await;
    dsl.set_purpose(None).unwrap();
    let e = query(&mut dsl, ReadModel::SchoolInbox).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("accord-purpose"), "{e:?}");
    dsl.set_purpose(Some("x")).unwrap();
    assert_eq!(query(&mut dsl, ReadModel::SchoolInbox).await.unwrap_err().code(), Code::InvalidArgument);

    // A school may not send Encompass notifications.
    let (n, _) = encompass_notification("st-marys-school", "dsl-1", "st-johns-school", "100235");
    let n = n.with(|b| b.author.as_mut().unwrap().role = "dsl".into());
    let refused = try_append(&mut dsl, vec![n.sign(s.key("school-1"))]).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let denied =
        list(&mut dpo, pb::ListAccessesRequest { denied_only: true, ..by_user("st-marys-school", "dsl-1") }).await;
    let got: Vec<_> = denied.iter().map(|e| (record(e).method.as_str(), record(e).denial_code.as_str())).collect();
    assert_eq!(got, vec![("Query", "InvalidArgument"), ("Query", "InvalidArgument"), ("Append", "PermissionDenied")]);
    assert!(denied.iter().all(|e| record(e).outcome == pb::AccessOutcome::Denied as i32));
    let append = record(&denied[2]);
    assert!(
        append.policy_version != 0 && !append.policy_ids.is_empty(),
        "a refusal by the sharing policy names its version and deciding policies: {append:?}"
    );
    assert!(append.policy_ids.iter().all(|id| append.denial_reason.contains(id.as_str())), "{append:?}");
    let granted = list(&mut dpo, by_user("st-marys-school", "dsl-1")).await;
    assert_eq!(granted.len(), 3, "nothing was granted");

    // Kent's auditor is no party to St Mary's accesses.
    let mut kent = s.client("kent-police", "dpo-9", AUDITOR).await;
    assert!(list(&mut kent, by_user("st-marys-school", "dsl-1")).await.is_empty());
    let id = record(&denied[0]).access_id.clone();
    let e =
        kent.audit().replay_access(pb::ReplayAccessRequest { access_id: id, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    s.stop().await;
}

/// Fail closed: when the access record cannot be written, the read returns no data.
async fn an_unrecorded_read_returns_nothing(s: TestServer) {
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let (n, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    police.append(vec![n.sign(s.key("met-1"))]).await.expect("notification");
    inbox_with(&mut dsl, 1).await;

    // The operator's database refuses writes to the access log (a full disk, a read-only
    // replica promoted by mistake, ...).
    let (refuse, allow) = if s.store().is_postgres() {
        (
            "CREATE FUNCTION refuse_access() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'read-only'; END $$; \
             CREATE TRIGGER refuse_access BEFORE INSERT ON access_log FOR EACH ROW EXECUTE FUNCTION refuse_access();",
            "DROP TRIGGER refuse_access ON access_log;",
        )
    } else {
        (
            "CREATE TRIGGER refuse_access BEFORE INSERT ON access_log BEGIN SELECT RAISE(ABORT, 'read-only'); END;",
            "DROP TRIGGER refuse_access;",
        )
    };
    s.store().execute_raw_for_tests(refuse).await.unwrap();
    let before = s.store().access_log_size().await.unwrap();
    let e = query(&mut dsl, ReadModel::SchoolInbox).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("access log"), "{e:?}");
    let mut live = dsl
        .views()
        .subscribe(pb::SubscribeViewRequest { model: ReadModel::SchoolInbox as i32, after_position: None })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), live.message()).await.expect("an answer");
    assert_eq!(first.unwrap_err().code(), Code::Unavailable, "a subscription sends nothing unrecorded");
    assert_eq!(s.store().access_log_size().await.unwrap(), before, "nothing half-written");

    s.store().execute_raw_for_tests(allow).await.unwrap();
    assert_eq!(inbox_with(&mut dsl, 1).await.items.len(), 1);
    s.stop().await;
}

/// The access log is a Merkle log like the event log: its checkpoints verify under the server's
/// log key (as `<origin>/access`), consistency proofs verify on the client, `verify` recomputes it
/// and detects an edited record, an edited index row and a rewritten history.
async fn the_access_log_is_tamper_evident(s: TestServer) {
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let (n, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    police.append(vec![n.sign(s.key("met-1"))]).await.expect("notification");
    inbox_with(&mut dsl, 1).await;

    let access = |log: pb::Log| pb::GetCheckpointRequest { log: log as i32 };
    let event_cp = dsl.ledger().get_checkpoint(access(pb::Log::Events)).await.unwrap().into_inner();
    let kept_pb = dsl.ledger().get_checkpoint(access(pb::Log::Access)).await.unwrap().into_inner();
    assert_eq!(kept_pb.origin, format!("{}/access", event_cp.origin));
    let log_key = verifier_key(&s).await;
    let access_key = accord_domain::checkpoint::verifier_key_for(&log_key, &kept_pb.origin).unwrap();
    let kept = verify_checkpoint(&kept_pb, std::slice::from_ref(&access_key)).expect("the access checkpoint verifies");
    assert!(
        verify_checkpoint(&kept_pb, std::slice::from_ref(&log_key)).is_err(),
        "the logs' checkpoints are not interchangeable"
    );
    for _ in 0..3 {
        query(&mut dsl, ReadModel::SchoolInbox).await.unwrap();
    }
    let now_pb = dsl.ledger().get_checkpoint(access(pb::Log::Access)).await.unwrap().into_inner();
    let now = verify_checkpoint(&now_pb, std::slice::from_ref(&access_key)).unwrap();
    assert!(now.size >= kept.size + 3);
    let proof = dsl
        .ledger()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_size: kept.size,
            to_size: now.size,
            log: pb::Log::Access as i32,
        })
        .await
        .unwrap()
        .into_inner();
    verify_consistency(&proof, &kept, &now).expect("the access log extends the kept checkpoint");

    let store = s.store().clone();
    let report = accord_server::verify::verify(&store, Some(&kept_pb.note), |_| {}).await.expect("verifies");
    assert_eq!(report.extends, Some(kept.size));
    assert!(report.accesses >= now.size);
    let _files = s.stop_keeping_files().await;

    // An operator rewrites a record's purpose: verify names the position, and the kept
    // checkpoint no longer matches.
    let pg = store.is_postgres();
    let victim = store.access_range(1, 1).await.unwrap().remove(0);
    let mut r = pb::AccessRecord::decode(victim.record.as_slice()).unwrap();
    r.purpose = "routine".into();
    let unprotect = |t: &str, op: &str| {
        if pg { format!("ALTER TABLE {t} DISABLE TRIGGER {t}_immutable") } else { format!("DROP TRIGGER {t}_no_{op}") }
    };
    store.execute_raw_for_tests(&unprotect("access_log", "update")).await.unwrap();
    let set_record = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if pg {
            format!("UPDATE access_log SET record = decode('{hex}', 'hex') WHERE position = 1")
        } else {
            format!("UPDATE access_log SET record = X'{hex}' WHERE position = 1")
        }
    };
    assert_eq!(store.execute_raw_for_tests(&set_record(&r.encode_to_vec())).await.unwrap(), 1);
    let e = accord_server::verify::verify(&store, None, |_| {}).await.unwrap_err().to_string();
    assert!(e.contains("access position 1"), "{e}");
    let e = accord_server::verify::verify(&store, Some(&kept_pb.note), |_| {}).await.unwrap_err().to_string();
    assert!(e.contains("access position 1"), "{e}");
    assert_eq!(store.execute_raw_for_tests(&set_record(&victim.record)).await.unwrap(), 1);
    accord_server::verify::verify(&store, Some(&kept_pb.note), |_| {}).await.expect("restored");

    // An operator removes the latest checkpoint, to slip records in after the last signed one:
    // verify names the uncovered tail.
    store.execute_raw_for_tests(&unprotect("access_checkpoints", "delete")).await.unwrap();
    let dropped = store
        .execute_raw_for_tests(
            "DELETE FROM access_checkpoints WHERE tree_size = (SELECT MAX(tree_size) FROM access_checkpoints)",
        )
        .await
        .unwrap();
    assert_eq!(dropped, 1);
    let e = accord_server::verify::verify(&store, None, |_| {}).await.unwrap_err().to_string();
    assert!(e.contains("no signed checkpoint covers"), "{e}");

    // An operator hides an access from auditors' subject queries: verify names it.
    // (The SQLite index is a full-text table, which carries no trigger.)
    if pg {
        store.execute_raw_for_tests(&unprotect("access_keys", "delete")).await.unwrap();
    }
    let hidden = store
        .execute_raw_for_tests(if pg {
            "DELETE FROM access_keys WHERE position = (SELECT MIN(position) FROM access_keys)"
        } else {
            "DELETE FROM access_keys WHERE rowid = (SELECT MIN(rowid) FROM access_keys)"
        })
        .await
        .unwrap();
    assert_eq!(hidden, 1);
    let e = accord_server::verify::verify(&store, None, |_| {}).await.unwrap_err().to_string();
    assert!(e.contains("index rows"), "{e}");
}

fn investigation(user: &str, opened: bool, id: &str, text: &str) -> accord_client::EventDraft {
    investigation_by("met-police", user, "met-police/pc-7", opened, id, text)
}

/// An access investigation by `user` (an auditor) of `agency` into `investigated`.
fn investigation_by(
    agency: &str,
    user: &str,
    investigated: &str,
    opened: bool,
    id: &str,
    text: &str,
) -> accord_client::EventDraft {
    let stream = format!("investigation-{id}");
    let d = if opened {
        accord_client::EventDraft::new(
            &stream,
            &pb::AccessInvestigationOpened {
                investigation_id: id.into(),
                user_investigated: investigated.into(),
                purpose: text.into(),
            },
        )
        .no_stream()
    } else {
        accord_client::EventDraft::new(
            &stream,
            &pb::AccessInvestigationClosed { investigation_id: id.into(), findings: text.into() },
        )
        .expect_version(0)
    };
    d.author(agency, user, "auditor")
        .legal_basis("DPA2018-s62", "self-monitoring: investigation of access outside allocation")
        .subject("user", investigated)
        .regime(pb::Regime::Part3)
}

/// DOMAIN.md §7 scenario 5: monitoring flags a user who consulted a nominal outside their
/// allocation; the auditor opens an investigation, lists that user's accesses, replays exactly
/// what they saw, and records the findings; the auditor's own queries are logged, and the user
/// can neither read the log nor record anything about the investigation.
async fn scenario_5_an_auditor_investigates(s: TestServer) {
    let met = s.key("met-1");
    let mut om = s.client("met-police", "om-1", &["offender_manager"]).await;
    let (reg, nominal) = accord_e2e::nominal_registered("met-police", "om-1");
    om.append(vec![reg.sign(met)]).await.expect("registration");
    let mut coordinator = s.client("london-mappa", "coord-1", &["mappa_coordinator"]).await;
    let level = accord_e2e::mappa_level_set("london-mappa", "coord-1", &nominal, 2);
    coordinator.append(vec![level.sign(s.key("mappa-1"))]).await.expect("level 2");

    // pc-7 is not allocated to the case but looks at the joint view.
    let mut pc7 = s.client("met-police", "pc-7", &["offender_manager"]).await;
    pc7.set_purpose(Some("checking an address for a colleague")).unwrap();
    let mut seen = None;
    for _ in 0..100 {
        let r = query(&mut pc7, ReadModel::MappaCases).await.expect("joint view");
        if r.items
            .iter()
            .any(|i| matches!(&i.content, Some(pb::view_item::Content::MappaCase(c)) if c.nominal_id == nominal))
        {
            seen = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = match seen {
        Some(s) => s,
        None => panic!("the case reaches the joint view: {:?}", query(&mut pc7, ReadModel::MappaCases).await),
    };

    // Monitoring flags pc-7; the force's auditor opens an investigation (a signed event).
    let mut dpo = s.client("met-police", "dpo-1", AUDITOR).await;
    dpo.set_purpose(Some("investigation INV-7: pc-7 consulted a nominal outside allocation")).unwrap();
    let inv = uuid::Uuid::now_v7().to_string();
    dpo.append(vec![investigation("dpo-1", true, &inv, "access outside allocation flagged by monitoring").sign(met)])
        .await
        .expect("investigation opened");

    // Everything pc-7 accessed about that nominal, and the last answer replayed exactly.
    let about = list(
        &mut dpo,
        pb::ListAccessesRequest {
            subject: Some(pb::Subject { kind: "nominal".into(), id: nominal.clone() }),
            ..by_user("met-police", "pc-7")
        },
    )
    .await;
    assert!(!about.is_empty(), "pc-7's consultations of the nominal are found");
    let last = record(about.last().unwrap());
    assert!(
        last.actions.contains(&(pb::AccessAction::Combination as i32)),
        "the joint view combines agencies' records"
    );
    assert_eq!(last.purpose, "checking an address for a colleague");
    let replay = dpo
        .audit()
        .replay_access(pb::ReplayAccessRequest { access_id: last.access_id.clone(), investigation_id: inv.clone() })
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.digest_matches);
    assert_eq!(pb::QueryViewResponse::decode(replay.response.as_slice()).unwrap(), seen, "exactly what pc-7 saw");

    // The findings are recorded (the export: access ids and digests, signed into the log).
    let findings = format!(
        "pc-7 consulted nominal {nominal} {} times without allocation; last access {} replayed, digest {} matches",
        about.len(),
        last.access_id,
        hex(&replay.response_sha256)
    );
    dpo.append(vec![investigation("dpo-1", false, &inv, &findings).sign(met)]).await.expect("findings");
    // Once closed, the investigation no longer opens content.
    let after = dpo
        .audit()
        .replay_access(pb::ReplayAccessRequest { access_id: last.access_id.clone(), investigation_id: inv.clone() })
        .await
        .expect("replay")
        .into_inner();
    assert!(
        after.digest_matches && after.response.is_empty() && after.withheld.contains("closed"),
        "{:?}",
        after.withheld
    );

    // pc-7 can neither read the log nor touch the investigation.
    assert_eq!(
        pc7.audit().list_accesses(by_user("met-police", "pc-7")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let forged = investigation("pc-7", false, &inv, "nothing found")
        .with(|b| b.author.as_mut().unwrap().role = "offender_manager".into());
    let e = try_append(&mut pc7, vec![forged.sign(met)]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The auditor's own work is on record, with its purpose.
    let mine = list(&mut dpo, by_user("met-police", "dpo-1")).await;
    let methods: Vec<_> = mine.iter().map(|e| record(e).method.as_str()).collect();
    assert!(["Append", "ListAccesses", "ReplayAccess"].iter().all(|m| methods.contains(m)), "{methods:?}");
    assert!(
        mine.iter()
            .filter(|e| record(e).service == "accord.v1.Audit")
            .all(|e| record(e).purpose.starts_with("investigation INV-7"))
    );
    s.stop().await;
}

/// The Ledger's reads are recorded and replayed too: ReadAll, ReadStream and a Subscribe run
/// re-answered from the log at the recorded size, digests matching, after more events arrived.
async fn ledger_reads_are_replayed(s: TestServer) {
    let met = s.key("met-1");
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let (n, id) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    police.append(vec![n.sign(met)]).await.expect("notification");
    let all = police.ledger().read_all(pb::ReadAllRequest { from_position: 0, limit: 0 }).await.unwrap().into_inner();
    let stream = police
        .ledger()
        .read_stream(pb::ReadStreamRequest { stream: format!("encompass-{id}"), from_version: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut live = police.ledger().subscribe(pb::SubscribeRequest { from_position: 0 }).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), live.message()).await.unwrap().unwrap().unwrap();
    drop(live);
    // The log moves on.
    let (later, _) = encompass_notification("met-police", "do-1", "st-johns-school", "100235");
    police.append(vec![later.sign(met)]).await.expect("later notification");

    let mut dpo = s.client("met-police", "dpo-1", AUDITOR).await;
    let inv = uuid::Uuid::now_v7().to_string();
    let open = investigation_by(
        "met-police",
        "dpo-1",
        "met-police/do-1",
        true,
        &inv,
        "review of a disclosure officer's reads",
    );
    dpo.append(vec![open.sign(met)]).await.expect("investigation");
    let reads = list(&mut dpo, by_user("met-police", "do-1")).await;
    let replay = |method: &'static str| {
        let r = reads
            .iter()
            .map(record)
            .find(|r| r.method == method)
            .unwrap_or_else(|| panic!("{method} recorded"))
            .clone();
        let mut dpo = dpo.clone();
        let inv = inv.clone();
        async move {
            dpo.audit()
                .replay_access(pb::ReplayAccessRequest { access_id: r.access_id.clone(), investigation_id: inv })
                .await
                .expect("replay")
                .into_inner()
        }
    };
    let r = replay("ReadAll").await;
    assert!(r.digest_matches, "{:?}", r.withheld);
    assert_eq!(pb::ReadResponse::decode(r.response.as_slice()).unwrap(), all);
    let r = replay("ReadStream").await;
    assert!(r.digest_matches);
    assert_eq!(pb::ReadResponse::decode(r.response.as_slice()).unwrap(), stream);
    let r = replay("Subscribe").await;
    assert!(r.digest_matches, "the run of events sent is re-built");
    assert_eq!(r.response_type, "accord.v1.RecordedEvent");
    let len = u32::from_be_bytes(r.response[..4].try_into().unwrap()) as usize;
    assert_eq!(pb::RecordedEvent::decode(&r.response[4..4 + len]).unwrap(), first);
    let write = reads.iter().map(record).find(|r| r.method == "Append").unwrap();
    let e = dpo
        .audit()
        .replay_access(pb::ReplayAccessRequest { access_id: write.access_id.clone(), investigation_id: inv.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    s.stop().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The server's log verifier key, as the log records it.
async fn verifier_key(s: &TestServer) -> String {
    let events = s.store().read_all(0, 1000, &accord_store::Visibility::All).await.unwrap().events;
    events
        .iter()
        .find(|e| e.event_type == "accord.v1.LogKeyRegistered")
        .map(|e| {
            let b = pb::EventBody::decode(e.body.as_slice()).unwrap();
            pb::LogKeyRegistered::decode(b.payload.as_slice()).unwrap().verifier_key
        })
        .expect("the log key is recorded")
}

accord_e2e::on_both_backends!(
    an_auditor_finds_and_replays_a_dsl_read,
    refusals_are_recorded,
    an_unrecorded_read_returns_nothing,
    the_access_log_is_tamper_evident,
    scenario_5_an_auditor_investigates,
    ledger_reads_are_replayed,
);
