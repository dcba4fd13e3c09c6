//! The Ledger service end to end: a real server on a loopback port, the generated gRPC client,
//! several agencies with their own keys and tokens, on SQLite and PostgreSQL.

use accord_client::{
    Client, EventDraft, verify_checkpoint, verify_consistency, verify_inclusion, verify_recorded_event,
};
use accord_e2e::{TestServer, mappa_level_set, nominal_registered};
use accord_proto::v1 as pb;
use futures::StreamExt;
use prost::Message;
use tonic::Code;

const OM: &[&str] = &["offender_manager"];

async fn log_size(s: &TestServer) -> u64 {
    s.store().log_size().await.unwrap()
}

/// Reads everything the client may see, paging to the end.
async fn read_everything(c: &mut Client) -> Vec<pb::RecordedEvent> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let r =
            c.ledger().read_all(pb::ReadAllRequest { from_position: from, limit: 1000 }).await.unwrap().into_inner();
        out.extend(r.events);
        if r.next >= r.log_size {
            return out;
        }
        from = r.next;
    }
}

async fn append_read_and_subscribe_in_order(s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    let key = s.key("met-1");
    // Subscribe before appending: catch-up (registry records), then live.
    let mut sub = c.ledger().subscribe(pb::SubscribeRequest { from_position: 0 }).await.unwrap().into_inner();

    let (first, nominal) = nominal_registered("met-police", "pc-1");
    let r = c.append(vec![first.no_stream().sign(key)]).await.unwrap();
    assert_eq!(r[0].stream_version, 0);
    let mut receipts = r;
    for _ in 0..5 {
        let (d, _) = nominal_registered("met-police", "pc-1");
        receipts.extend(c.append(vec![d.sign(key)]).await.unwrap());
    }
    for w in receipts.windows(2) {
        assert_eq!(w[1].position, w[0].position + 1, "positions are consecutive");
    }

    // ReadStream returns the nominal's stream.
    let stream = c
        .ledger()
        .read_stream(pb::ReadStreamRequest { stream: format!("nominal-{nominal}"), from_version: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.events.len(), 1);
    let e = &stream.events[0];
    assert_eq!((e.position, e.event_id.as_str()), (receipts[0].position, receipts[0].event_id.as_str()));
    assert_eq!(verify_recorded_event(e, &key.public_key()).unwrap().0.to_vec(), receipts[0].leaf_hash);
    let body = pb::EventBody::decode(e.event.as_ref().unwrap().body.as_slice()).unwrap();
    assert_eq!(body.author.unwrap().user, "pc-1");

    // The subscription delivers every position in order without gaps or duplicates.
    let last = receipts.last().unwrap().position;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|p| *p < last) {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
            .await
            .expect("live event in time")
            .unwrap()
            .unwrap();
        seen.push(e.position);
    }
    // Registry records (authored by `accord`) are visible to every agency; they come first.
    assert_eq!(seen, (0..=last).collect::<Vec<_>>());

    // Resuming from a position gives exactly what follows it.
    let mut resumed =
        c.ledger().subscribe(pb::SubscribeRequest { from_position: last - 1 }).await.unwrap().into_inner();
    assert_eq!(resumed.next().await.unwrap().unwrap().position, last - 1);
    assert_eq!(resumed.next().await.unwrap().unwrap().position, last);
    let (d, _) = nominal_registered("met-police", "pc-1");
    let live = c.append(vec![d.sign(key)]).await.unwrap();
    assert_eq!(resumed.next().await.unwrap().unwrap().position, live[0].position);
}

async fn agencies_read_only_their_own_records(s: TestServer) {
    let mut met = s.client("met-police", "pc-1", OM).await;
    let (d, nominal) = nominal_registered("met-police", "pc-1");
    met.append(vec![d.sign(s.key("met-1"))]).await.unwrap();
    let mut kent = s.client("kent-police", "pc-9", OM).await;
    let (d, _) = nominal_registered("kent-police", "pc-9");
    kent.append(vec![d.sign(s.key("kent-1"))]).await.unwrap();

    let kent_sees = read_everything(&mut kent).await;
    assert!(kent_sees.iter().all(|e| {
        let b = pb::EventBody::decode(e.event.as_ref().unwrap().body.as_slice()).unwrap();
        let agency = b.author.unwrap().agency;
        agency == "kent-police" || agency == "accord"
    }));
    assert!(kent_sees.iter().any(|e| e.event_type == "accord.v1.NominalRegistered"));
    let r = kent
        .ledger()
        .read_stream(pb::ReadStreamRequest { stream: format!("nominal-{nominal}"), from_version: 0, limit: 10 })
        .await
        .unwrap()
        .into_inner();
    assert!(r.events.is_empty(), "kent-police read a met-police stream");
    // Nor through a subscription.
    let mut sub = kent.ledger().subscribe(pb::SubscribeRequest { from_position: 0 }).await.unwrap().into_inner();
    let total = log_size(&s).await;
    let mut n = 0;
    while let Ok(Some(e)) = tokio::time::timeout(std::time::Duration::from_millis(500), sub.next()).await {
        let e = e.unwrap();
        assert_ne!(e.stream, format!("nominal-{nominal}"));
        n += 1;
        if e.position + 1 == total {
            break;
        }
    }
    assert!(n > 0);
}

/// One refused request: how to make it, the status code and a fragment of the message.
struct Refusal {
    what: &'static str,
    code: Code,
    message: &'static str,
}

async fn refuse(s: &TestServer, c: &mut Client, events: Vec<pb::SignedEvent>, want: &Refusal) {
    let before = log_size(s).await;
    let err = c.ledger().append(pb::AppendRequest { events }).await.expect_err(want.what);
    assert_eq!(err.code(), want.code, "{}: {}", want.what, err.message());
    assert!(
        err.message().contains(want.message),
        "{}: message {:?} lacks {:?}",
        want.what,
        err.message(),
        want.message
    );
    assert_eq!(log_size(s).await, before, "{} wrote something", want.what);
}

async fn every_rejection_rule_has_its_status_and_writes_nothing(s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    let met = s.key("met-1");
    let good = || nominal_registered("met-police", "pc-1").0;
    let (d, nominal) = nominal_registered("met-police", "pc-1");
    c.append(vec![d.sign(met)]).await.unwrap();

    let cases: Vec<(Vec<pb::SignedEvent>, Refusal)> = vec![
        (vec![], Refusal { what: "empty batch", code: Code::InvalidArgument, message: "at least one event" }),
        (
            vec![nominal_registered("kent-police", "pc-1").0.sign(s.key("kent-1"))],
            Refusal {
                what: "author agency differs from token",
                code: Code::PermissionDenied,
                message: "your token is for agency met-police",
            },
        ),
        (
            vec![nominal_registered("met-police", "pc-2").0.sign(met)],
            Refusal {
                what: "author user differs from token",
                code: Code::PermissionDenied,
                message: "your token is for user pc-1",
            },
        ),
        (
            vec![good().author("met-police", "pc-1", "ppro").sign(met)],
            Refusal { what: "role not in token", code: Code::PermissionDenied, message: "does not grant role ppro" },
        ),
        (
            vec![good().sign(s.key("kent-1"))],
            Refusal {
                what: "key of another agency",
                code: Code::PermissionDenied,
                message: "belongs to agency kent-police",
            },
        ),
        (
            vec![good().sign(&accord_client::AgencyKey::generate("met-unknown").unwrap())],
            Refusal {
                what: "unregistered key",
                code: Code::PermissionDenied,
                message: "signing key met-unknown is not registered",
            },
        ),
        (
            vec![good().sign(s.key("met-old"))],
            Refusal { what: "revoked key", code: Code::PermissionDenied, message: "signing key met-old was revoked" },
        ),
        (
            vec![{
                let mut e = good().sign(met);
                e.signature[0] ^= 1;
                e
            }],
            Refusal {
                what: "bad signature",
                code: Code::InvalidArgument,
                message: "events[0].signature: does not verify",
            },
        ),
        (
            vec![{
                let mut e = good().sign(met);
                let n = e.body.len();
                e.body[n - 1] ^= 1;
                e
            }],
            Refusal { what: "body altered after signing", code: Code::InvalidArgument, message: "events[0]" },
        ),
        (
            vec![met.sign_body(b"\xff\xff\xff not protobuf".to_vec())],
            Refusal {
                what: "body not protobuf",
                code: Code::InvalidArgument,
                message: "events[0].body: is not a protobuf accord.v1.EventBody",
            },
        ),
        (
            vec![good().with(|b| b.event_type = "accord.v1.NoSuchEvent".into()).sign(met)],
            Refusal {
                what: "unknown event type",
                code: Code::InvalidArgument,
                message: "unknown event type \"accord.v1.NoSuchEvent\"",
            },
        ),
        (
            vec![good().with(|b| b.payload = vec![0xff, 0xff]).sign(met)],
            Refusal {
                what: "payload does not decode",
                code: Code::InvalidArgument,
                message: "events[0].body.payload: is not a protobuf accord.v1.NominalRegistered",
            },
        ),
        (
            vec![good().with(|b| b.legal_basis = None).sign(met)],
            Refusal {
                what: "no legal basis",
                code: Code::InvalidArgument,
                message: "events[0].body.legal_basis: is required",
            },
        ),
        (
            vec![good().with(|b| b.event_id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8".into()).sign(met)],
            Refusal {
                what: "event id not UUIDv7",
                code: Code::InvalidArgument,
                message: "events[0].body.event_id: must be a UUIDv7",
            },
        ),
        (
            vec![good().with(|b| b.expected_version = None).sign(met)],
            Refusal {
                what: "no expected version",
                code: Code::InvalidArgument,
                message: "expected_version: is required",
            },
        ),
        (
            vec![good().with(|b| b.subjects.clear()).sign(met)],
            Refusal {
                what: "nominal not a subject",
                code: Code::InvalidArgument,
                message: "subjects: must include the nominal",
            },
        ),
        (
            vec![
                good()
                    .with(|b| {
                        let mut p = pb::NominalRegistered::decode(b.payload.as_slice()).unwrap();
                        p.date_of_birth = "2999-01-01".into();
                        b.payload = p.encode_to_vec();
                    })
                    .sign(met),
            ],
            Refusal {
                what: "date of birth after the event",
                code: Code::InvalidArgument,
                message: "payload.date_of_birth: must not be after the event",
            },
        ),
        (
            vec![good().author("accord", "pc-1", "offender_manager").sign(met)],
            Refusal {
                what: "reserved system agency",
                code: Code::PermissionDenied,
                message: "reserved for the server",
            },
        ),
        (
            vec![good().with(|b| b.stream = "nominal-Upper".into()).sign(met)],
            Refusal { what: "malformed stream", code: Code::InvalidArgument, message: "events[0].body.stream" },
        ),
        (
            vec![
                EventDraft::new(
                    &format!("nominal-{nominal}"),
                    &pb::RiskAssessmentRecorded {
                        nominal_id: nominal.clone(),
                        tool: "rm2000".into(),
                        levels: [("overall".to_owned(), "high".to_owned())].into(),
                        assessor: "pc-1".into(),
                        next_review: "2027-01-01".into(),
                        ..Default::default()
                    },
                )
                .author("met-police", "pc-1", "offender_manager")
                .legal_basis("DPA2018-s35", "management of a registered sexual offender")
                .subject("nominal", &nominal)
                .expect_version(4)
                .sign(met),
            ],
            Refusal {
                what: "expected version conflict",
                code: Code::Aborted,
                message: "expected stream version 4, stream is at 0",
            },
        ),
        (
            vec![good().sign(met), good().with(|b| b.legal_basis = None).sign(met)],
            Refusal {
                what: "atomic batch with one bad event",
                code: Code::InvalidArgument,
                message: "events[1].body.legal_basis",
            },
        ),
        (
            (0..1001).map(|_| good().sign(met)).collect(),
            Refusal { what: "too many events", code: Code::ResourceExhausted, message: "at most 1000 events" },
        ),
        (
            vec![met.sign_body(vec![0u8; 1024 * 1024 + 1])],
            Refusal { what: "body too large", code: Code::ResourceExhausted, message: "must be at most 1048576 bytes" },
        ),
    ];
    for (events, want) in &cases {
        refuse(&s, &mut c, events.clone(), want).await;
    }

    // Policy: a DSL may not register a nominal; a MAPPA coordinator may set a level, an offender
    // manager may not.
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let d = nominal_registered("st-marys-school", "dsl-1").0.author("st-marys-school", "dsl-1", "dsl");
    refuse(
        &s,
        &mut dsl,
        vec![d.sign(s.key("school-1"))],
        &Refusal {
            what: "policy denies dsl",
            code: Code::PermissionDenied,
            message: "role dsl of agency st-marys-school (school) may not append accord.v1.NominalRegistered under sharing policy version",
        },
    )
    .await;
    let level = mappa_level_set("met-police", "pc-1", &nominal, 2).author("met-police", "pc-1", "offender_manager");
    refuse(
        &s,
        &mut c,
        vec![level.sign(met)],
        &Refusal {
            what: "policy denies om level",
            code: Code::PermissionDenied,
            message: "may not append accord.v1.MappaLevelSet",
        },
    )
    .await;
    let mut coord = s.client("probation-london", "coord-1", &["mappa_coordinator"]).await;
    let bad_level = mappa_level_set("probation-london", "coord-1", &nominal, 5);
    refuse(
        &s,
        &mut coord,
        vec![bad_level.sign(s.key("prob-1"))],
        &Refusal { what: "MAPPA level 5", code: Code::InvalidArgument, message: "MAPPA level must be 1 to 3, found 5" },
    )
    .await;
    coord
        .append(vec![mappa_level_set("probation-london", "coord-1", &nominal, 2).sign(s.key("prob-1"))])
        .await
        .unwrap();

    // Tokens.
    let no_token = Client::with_channel(
        tonic::transport::Channel::from_shared(s.endpoint.clone()).unwrap().connect().await.unwrap(),
        "not-a-jwt",
    )
    .unwrap();
    let mut no_token = no_token;
    let err = no_token.ledger().append(pb::AppendRequest { events: vec![good().sign(met)] }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let mut raw = pb::ledger_client::LedgerClient::connect(s.endpoint.clone()).await.unwrap();
    let err = raw.read_all(pb::ReadAllRequest { from_position: 0, limit: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("missing bearer token"), "{}", err.message());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = s
        .dev_issuer()
        .mint_claims(&accord_auth::Claims {
            iss: accord_auth::DEV_ISSUER.into(),
            sub: "pc-1".into(),
            aud: "accord".into(),
            exp: now - 600,
            nbf: now - 1200,
            iat: now - 1200,
            jti: None,
            agency: "met-police".into(),
            roles: vec!["offender_manager".into()],
            cnf: None,
        })
        .unwrap();
    let mut old = Client::connect(&s.endpoint, &expired).await.unwrap();
    let err = old.ledger().append(pb::AppendRequest { events: vec![good().sign(met)] }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("xpired"), "{}", err.message());

    // Reads refuse a bad limit.
    let err = c.ledger().read_all(pb::ReadAllRequest { from_position: 0, limit: 5000 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn retries_are_idempotent_and_reused_ids_are_refused(s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    let met = s.key("met-1");
    let batch: Vec<_> = (0..3).map(|_| nominal_registered("met-police", "pc-1").0.no_stream().sign(met)).collect();
    let first = c.append(batch.clone()).await.unwrap();
    let size = log_size(&s).await;
    let again = c.append(batch.clone()).await.unwrap();
    assert_eq!(first, again, "a resend returns the original receipts");
    assert_eq!(log_size(&s).await, size);

    // Same id, other bytes (re-signed with a later occurred_at).
    let body = pb::EventBody::decode(batch[0].body.as_slice()).unwrap();
    let other = EventDraft::raw(&body.stream, &body.event_type, body.payload.clone()).with(|b| {
        *b = body.clone();
        b.legal_basis = Some(pb::LegalBasis { statute: "DPA2018-s35".into(), purpose: "a different purpose".into() });
    });
    let err = c.ledger().append(pb::AppendRequest { events: vec![other.sign(met)] }).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    assert!(err.message().contains(&format!(
        "event id {} is already recorded at position {} with other bytes",
        body.event_id, first[0].position
    )));
    // A batch mixing a recorded event with a new one.
    let mixed = vec![batch[1].clone(), nominal_registered("met-police", "pc-1").0.sign(met)];
    let err = c.ledger().append(pb::AppendRequest { events: mixed }).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(log_size(&s).await, size);
}

async fn racing_writers_on_one_stream_get_exactly_one_winner(s: TestServer) {
    let (d, nominal) = nominal_registered("met-police", "pc-1");
    let mut c = s.client("met-police", "pc-1", OM).await;
    c.append(vec![d.sign(s.key("met-1"))]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = s.client("probation-london", "coord-1", &["mappa_coordinator"]).await;
        let e = mappa_level_set("probation-london", "coord-1", &nominal, 2).expect_version(0).sign(s.key("prob-1"));
        tasks.push(tokio::spawn(async move { c.ledger().append(pb::AppendRequest { events: vec![e] }).await }));
    }
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::Aborted);
        assert_eq!(r.message(), format!("stream nominal-{nominal}: expected stream version 0, stream is at 1"));
    }
}

/// The client checks the server's answers itself: checkpoint signature, inclusion of its event,
/// and that a later checkpoint extends one it kept.
async fn proofs_verify_on_the_client(s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    // The log's verifier key is itself recorded in the log.
    let log_key = read_everything(&mut c)
        .await
        .into_iter()
        .find(|e| e.event_type == "accord.v1.LogKeyRegistered")
        .map(|e| {
            let b = pb::EventBody::decode(e.event.unwrap().body.as_slice()).unwrap();
            pb::LogKeyRegistered::decode(b.payload.as_slice()).unwrap().verifier_key
        })
        .expect("log key recorded");
    let keys = vec![log_key];
    let kept = verify_checkpoint(
        &c.ledger().get_checkpoint(pb::GetCheckpointRequest::default()).await.unwrap().into_inner(),
        &keys,
    )
    .unwrap();

    let mut receipts = Vec::new();
    for _ in 0..9 {
        let (d, _) = nominal_registered("met-police", "pc-1");
        receipts.extend(c.append(vec![d.sign(s.key("met-1"))]).await.unwrap());
    }
    let cp_pb = c.ledger().get_checkpoint(pb::GetCheckpointRequest::default()).await.unwrap().into_inner();
    let now = verify_checkpoint(&cp_pb, &keys).unwrap();
    assert_eq!(now.size, receipts.last().unwrap().position + 1);

    for r in &receipts {
        let p = c
            .ledger()
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                position: r.position,
                tree_size: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.leaf_hash, r.leaf_hash);
        verify_inclusion(&p, accord_domain::merkle::parse_hash("leaf", &r.leaf_hash).unwrap(), &now).unwrap();
    }
    let proof = c
        .ledger()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_size: kept.size,
            to_size: now.size,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    verify_consistency(&proof, &kept, &now).unwrap();

    // A doctored checkpoint or proof fails on the client.
    let mut forged = cp_pb.clone();
    forged.note = forged.note.replacen(&format!("\n{}\n", now.size), &format!("\n{}\n", now.size + 1), 1);
    assert!(verify_checkpoint(&forged, &keys).is_err());
    let mut bad = c
        .ledger()
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            position: receipts[0].position,
            tree_size: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    bad.hashes[0][0] ^= 1;
    assert!(
        verify_inclusion(&bad, accord_domain::merkle::parse_hash("leaf", &receipts[0].leaf_hash).unwrap(), &now)
            .is_err()
    );

    // Asking beyond the log is NOT_FOUND; a malformed request INVALID_ARGUMENT.
    let err = c
        .ledger()
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            position: 0,
            tree_size: now.size + 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .ledger()
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 0, to_size: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// An agency admin revokes a key through the API; the key signs nothing after, and what it signed
/// before stays valid.
async fn an_agency_revokes_its_own_key(s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    let (d, _) = nominal_registered("met-police", "pc-1");
    let before = c.append(vec![d.sign(s.key("met-2"))]).await.unwrap();

    let mut admin = s.client("met-police", "admin-1", &["agency_admin"]).await;
    let revoke = |agency: &str, key: &str| {
        EventDraft::new(
            &format!("agency-{agency}"),
            &pb::SigningKeyRevoked { key_id: key.into(), agency_id: agency.into(), reason: "laptop lost".into() },
        )
        .author("met-police", "admin-1", "agency_admin")
        .legal_basis("ACCORD-REGISTRY", "key compromise")
        .subject("key", key)
    };
    // Not another agency's key.
    let err = admin
        .ledger()
        .append(pb::AppendRequest { events: vec![revoke("kent-police", "kent-1").sign(s.key("met-1"))] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("an agency may revoke only its own keys"), "{}", err.message());
    // An offender manager may not revoke.
    let om_revoke = revoke("met-police", "met-2").author("met-police", "pc-1", "offender_manager");
    let err = c.ledger().append(pb::AppendRequest { events: vec![om_revoke.sign(s.key("met-1"))] }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let r = admin.append(vec![revoke("met-police", "met-2").sign(s.key("met-1"))]).await.unwrap();
    let (d, _) = nominal_registered("met-police", "pc-1");
    let err = c.ledger().append(pb::AppendRequest { events: vec![d.sign(s.key("met-2"))] }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains(&format!("signing key met-2 was revoked at position {}", r[0].position)),
        "{}",
        err.message()
    );
    // The earlier event is still there and still verifies.
    let e = s.store().event_at(before[0].position).await.unwrap();
    accord_domain::signing::verify_body(&s.key("met-2").signing_key().verifying_key(), &e.body, &e.signature).unwrap();
    let report = accord_server::verify::verify(s.store(), None, |_| {}).await.unwrap();
    assert_eq!(report.events, log_size(&s).await);
}

async fn a_restart_keeps_the_log_and_records_the_registry_once(mut s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    let (d, nominal) = nominal_registered("met-police", "pc-1");
    c.append(vec![d.no_stream().sign(s.key("met-1"))]).await.unwrap();
    let size = log_size(&s).await;
    s.restart().await;
    assert_eq!(log_size(&s).await, size, "restarting appended registry records again");
    let mut c = s.client("probation-london", "coord-1", &["mappa_coordinator"]).await;
    let r = c
        .append(vec![
            mappa_level_set("probation-london", "coord-1", &nominal, 2).expect_version(0).sign(s.key("prob-1")),
        ])
        .await
        .unwrap();
    assert_eq!((r[0].position, r[0].stream_version), (size, 1));
    accord_server::verify::verify(s.store(), None, |_| {}).await.unwrap();
}

async fn health_and_reflection_answer(s: TestServer) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let channel = tonic::transport::Channel::from_shared(s.endpoint.clone()).unwrap().connect().await.unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = h
        .check(tonic_health::pb::HealthCheckRequest { service: "accord.v1.Ledger".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);

    // What grpcurl does first: list the services, then fetch the Ledger's descriptor.
    let mut refl = ServerReflectionClient::new(channel);
    let asks = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("accord.v1.Ledger".into())),
        },
    ];
    let mut answers = refl.server_reflection_info(futures::stream::iter(asks)).await.unwrap().into_inner();
    match answers.next().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => {
            assert!(l.service.iter().any(|s| s.name == "accord.v1.Ledger"), "{l:?}")
        }
        other => panic!("{other:?}"),
    }
    match answers.next().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(f) => assert!(!f.file_descriptor_proto.is_empty()),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

/// A graceful stop is not held open by a client following the log: its stream ends UNAVAILABLE.
async fn shutdown_ends_open_subscriptions(s: TestServer) {
    let mut c = s.client("met-police", "pc-1", OM).await;
    let mut sub = c.ledger().subscribe(pb::SubscribeRequest { from_position: 0 }).await.unwrap().into_inner();
    let size = log_size(&s).await;
    for _ in 0..size {
        sub.next().await.unwrap().unwrap();
    }
    tokio::time::timeout(std::time::Duration::from_secs(20), s.stop())
        .await
        .expect("stop is not held open by a subscriber");
    match sub.next().await {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{}", status.message()),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

accord_e2e::on_both_backends!(
    append_read_and_subscribe_in_order,
    agencies_read_only_their_own_records,
    every_rejection_rule_has_its_status_and_writes_nothing,
    retries_are_idempotent_and_reused_ids_are_refused,
    racing_writers_on_one_stream_get_exactly_one_winner,
    proofs_verify_on_the_client,
    an_agency_revokes_its_own_key,
    a_restart_keeps_the_log_and_records_the_registry_once,
    health_and_reflection_answer,
    shutdown_ends_open_subscriptions,
);
