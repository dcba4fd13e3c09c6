//! DOMAIN.md §7 scenario 3 (Sarah's Law) through the real gRPC server, on both backends: a
//! grandmother applies about her daughter's new partner; checks and verification run within their
//! limits; the decision is to disclose to the mother, not the applicant; the applicant learns only
//! that the application is complete. The disclosure register is asserted for the handling force,
//! for probation on the subject's case, and for agencies that must see nothing.

use accord_client::{Client, EventDraft};
use accord_e2e::{TestServer, nominal_registered, now_secs, query, try_append};
use accord_proto::v1::{self as pb, ReadModel};
use tonic::Code;

const DAY: i64 = 86_400;

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: secs, nanos: 0 })
}

fn on_application<P: accord_client::Catalogued>(id: &str, payload: &P, applicant: &str) -> EventDraft {
    EventDraft::new(&format!("disclosure-{id}"), payload)
        .author("met-police", "ppro-1", "ppro")
        .legal_basis("CSODS-2011", "Child Sex Offender Disclosure Scheme application")
        .subject("applicant", applicant)
}

async fn register(c: &mut Client) -> Vec<pb::DisclosureApplication> {
    query(c, ReadModel::DisclosureRegister)
        .await
        .expect("query")
        .items
        .into_iter()
        .map(|i| match i.content {
            Some(pb::view_item::Content::Disclosure(d)) => d,
            other => panic!("not a disclosure: {other:?}"),
        })
        .collect()
}

fn request(id: &str, applicant: &str, nominal: &str, received: i64) -> pb::DisclosureRequested {
    pb::DisclosureRequested {
        application_id: id.into(),
        scheme: "csods".into(),
        applicant_id: applicant.into(),
        applicant_name: "Margaret Example".into(),
        applicant_relationship: "maternal grandmother".into(),
        subject_description: "her daughter's new partner".into(),
        subject_nominal_id: nominal.into(),
        persons_at_risk: vec!["two grandchildren aged 4 and 7".into()],
        received_at: ts(received),
    }
}

async fn sarahs_law_disclosure_to_the_mother(mut s: TestServer) {
    let met = s.key("met-1");
    let now = now_secs();
    let mut om = s.client("met-police", "om-1", &["offender_manager"]).await;
    let mut ppro = s.client("met-police", "ppro-1", &["ppro"]).await;
    let mut probation = s.client("probation-london", "pom-1", &["probation_om"]).await;

    // The partner is a registered nominal the police and probation manage.
    let (reg, nominal) = nominal_registered("met-police", "om-1");
    try_append(&mut om, vec![reg.sign(met)]).await.unwrap();
    let oasys = EventDraft::new(
        &format!("nominal-{nominal}"),
        &pb::RiskAssessmentRecorded {
            nominal_id: nominal.clone(),
            tool: "oasys_rosh".into(),
            levels: [("children".to_owned(), "high".to_owned())].into(),
            factors: vec![],
            assessor: "pom-1".into(),
            next_review: "2027-03-01".into(),
            summary: String::new(),
            victim_safety: String::new(),
        },
    )
    .author("probation-london", "pom-1", "probation_om")
    .legal_basis("OMA2007-s14", "offender management")
    .subject("nominal", &nominal);
    try_append(&mut probation, vec![oasys.sign(s.key("prob-1"))]).await.unwrap();

    // The application, received five days ago; checks within 24 hours; verified face to face
    // after three days; the decision: disclose to the children's mother.
    let id = uuid::Uuid::now_v7().to_string();
    let applicant = uuid::Uuid::now_v7().to_string();
    let received = now - 5 * DAY;
    let content = "a".repeat(64);
    let opened = on_application(&id, &request(&id, &applicant, &nominal, received), &applicant).no_stream();
    let checks = on_application(
        &id,
        &pb::DisclosureChecksCompleted {
            application_id: id.clone(),
            completed_at: ts(received + 20 * 3600),
            immediate_risk: false,
            findings: "previous convictions for sexual offences against children".into(),
        },
        &applicant,
    );
    let verified = on_application(
        &id,
        &pb::ApplicantVerified {
            application_id: id.clone(),
            verified_at: ts(received + 3 * DAY),
            method: "face_to_face".into(),
            notes: String::new(),
        },
        &applicant,
    );
    let decided = on_application(
        &id,
        &pb::DisclosureDecided {
            application_id: id.clone(),
            decision: "disclose".into(),
            decision_maker: "DI Example (decision maker)".into(),
            rationale: "necessary and proportionate to protect the two children".into(),
            recipient: "the children's mother".into(),
            content_sha256: content.clone(),
        },
        &applicant,
    );
    try_append(&mut ppro, vec![opened.sign(met), checks.sign(met), verified.sign(met), decided.sign(met)])
        .await
        .expect("application handled");

    // A disclosure of other content than agreed is refused.
    let made = |hash: &str| {
        on_application(
            &id,
            &pb::DisclosureMade {
                application_id: id.clone(),
                recipient: "the children's mother".into(),
                discloser: "ppro-1".into(),
                content_sha256: hash.into(),
                undertaking_signed: true,
            },
            &applicant,
        )
    };
    let err = try_append(&mut ppro, vec![made(&"b".repeat(64)).sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("differs from the content the decision agreed"), "{}", err.message());
    let closed = on_application(
        &id,
        &pb::DisclosureApplicationClosed {
            application_id: id.clone(),
            outcome_told_to_applicant: "the application is complete".into(),
        },
        &applicant,
    );
    try_append(&mut ppro, vec![made(&content).sign(met), closed.sign(met)]).await.expect("disclosed and closed");
    // Nothing moves a closed application on.
    let again = made(&content);
    let err = try_append(&mut ppro, vec![again.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is closed"), "{}", err.message());

    // The handling force sees it all, within its limits.
    let r = register(&mut ppro).await;
    assert_eq!(r.len(), 1);
    let d = &r[0];
    assert_eq!((d.stage.as_str(), d.scheme.as_str()), ("closed", "csods"));
    assert!(!d.checks_late && !d.verification_late && !d.overdue, "{d:?}");
    assert_eq!(d.fields["recipient"], "the children's mother");
    assert_eq!(d.fields["content_sha256"], content);
    assert_eq!(d.fields["findings"], "previous convictions for sexual offences against children");
    // The applicant is told only that it is complete.
    assert_eq!(d.applicant_status, "complete");

    // Probation, on the subject's case, sees the application and the decision but not the
    // checks' findings or the disclosed content.
    let p = register(&mut probation).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].fields["decision"], "disclose");
    assert!(!p[0].fields.contains_key("findings") && !p[0].fields.contains_key("content_sha256"), "{:?}", p[0]);
    let items = query(&mut probation, ReadModel::DisclosureRegister).await.unwrap().items;
    assert_eq!(items[0].redacted_groups, ["checks", "content"]);

    // Nobody else holds it.
    for (agency, user, role) in [
        ("kent-police", "ppro-9", "ppro"),
        ("st-marys-school", "dsl-1", "dsl"),
        ("solace-isva", "isva-1", "isva"),
        ("london-csc", "sw-1", "dtc_rep"),
    ] {
        let mut c = s.client(agency, user, &[role]).await;
        assert!(register(&mut c).await.is_empty(), "{agency}");
    }

    // An application received three days ago with no checks yet is flagged late.
    let late_id = uuid::Uuid::now_v7().to_string();
    let late = on_application(&late_id, &request(&late_id, &applicant, "", now - 3 * DAY), &applicant).no_stream();
    try_append(&mut ppro, vec![late.sign(met)]).await.unwrap();
    let r = register(&mut ppro).await;
    let l = r.iter().find(|d| d.application_id == late_id).unwrap();
    assert!(l.checks_late && !l.overdue && l.applicant_status == "received", "{l:?}");
    // It names no nominal, so probation does not hold it.
    assert_eq!(register(&mut probation).await.len(), 1);

    // Validation: an unknown scheme, a disclose decision without content, a nominal not registered.
    let bad_id = uuid::Uuid::now_v7().to_string();
    let mut bad = request(&bad_id, &applicant, "", now);
    bad.scheme = "neighbours_law".into();
    let err =
        try_append(&mut ppro, vec![on_application(&bad_id, &bad, &applicant).no_stream().sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("payload.scheme"), "{}", err.message());
    let unknown = request(&bad_id, &applicant, &uuid::Uuid::now_v7().to_string(), now);
    let err = try_append(&mut ppro, vec![on_application(&bad_id, &unknown, &applicant).no_stream().sign(met)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    let token = s.token("probation-london", "pom-1", &["probation_om"]);
    accord_e2e::assert_rebuilds_identically(&mut s, |endpoint| {
        let token = token.clone();
        async move { register(&mut accord_e2e::connect(&endpoint, &token).await).await }
    })
    .await;
}

accord_e2e::on_both_backends!(sarahs_law_disclosure_to_the_mother);
