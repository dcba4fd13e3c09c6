//! DOMAIN.md §7 scenario 1 through the real gRPC server, on both backends: a category 1 nominal
//! managed at MAPPA level 2. Police and probation record, probation refers, the coordinator sets
//! the level and holds a meeting with children's social care, actions go to the police and to
//! children's social care, and an address is corrected later. Each role's MAPPA joint view is
//! asserted for what it must show and what it must not.

use std::collections::BTreeSet;
use std::time::Duration;

use accord_client::{Client, EventDraft};
use accord_e2e::{TestServer, nominal_registered, now_secs, query, query_as_of, record_corrected, try_append};
use accord_proto::v1::{self as pb, ReadModel};
use tokio_stream::StreamExt;
use tonic::Code;

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: secs, nanos: 0 })
}

fn on_nominal(d: EventDraft, nominal: &str, agency: &str, user: &str, role: &str) -> EventDraft {
    d.author(agency, user, role).legal_basis("CJA2003-s325", "MAPPA: joint management").subject("nominal", nominal)
}

fn at(d: EventDraft, secs: i64) -> EventDraft {
    d.with(|b| b.occurred_at = ts(secs))
}

async fn cases(c: &mut Client) -> Vec<pb::MappaCase> {
    query(c, ReadModel::MappaCases)
        .await
        .expect("query")
        .items
        .into_iter()
        .map(|i| match i.content {
            Some(pb::view_item::Content::MappaCase(c)) => c,
            other => panic!("not a case: {other:?}"),
        })
        .collect()
}

fn sections(c: &pb::MappaCase) -> BTreeSet<&str> {
    c.entries.iter().map(|e| e.section.as_str()).collect()
}

fn entry<'c>(c: &'c pb::MappaCase, section: &str) -> &'c pb::CaseEntry {
    c.entries.iter().find(|e| e.section == section).unwrap_or_else(|| panic!("no {section} entry in {c:?}"))
}

/// Every field value the case shows, to search for what must never appear.
fn all_text(c: &pb::MappaCase) -> String {
    c.entries.iter().flat_map(|e| e.fields.values().cloned()).collect::<Vec<_>>().join(" | ")
}

async fn mappa_level_2_category_1(mut s: TestServer) {
    let met = s.key("met-1");
    let mut om = s.client("met-police", "om-1", &["offender_manager"]).await;
    let mut probation = s.client("probation-london", "pom-1", &["probation_om"]).await;
    let mut coordinator = s.client("london-mappa", "coord-1", &["mappa_coordinator"]).await;
    let mut csc = s.client("london-csc", "sw-1", &["dtc_rep"]).await;
    let now = now_secs();

    // Police register the nominal, the initial notification (with the home address), an SHPO
    // and a licence whose exclusion zone reveals the victim's home (tagged victim_location).
    let (reg, nominal) = nominal_registered("met-police", "om-1");
    let notification = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::NotificationRequirementUpdated {
                nominal_id: nominal.clone(),
                kind: "initial".into(),
                changed_fields: [("home_address".to_owned(), "14 Elm Road, London E1".to_owned())].into(),
                notified_at: ts(now - 3600),
                due_by: ts(now + 2 * 86_400),
                status: "on_time".into(),
            },
        ),
        &nominal,
        "met-police",
        "om-1",
        "offender_manager",
    );
    let shpo = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::OrderRecorded {
                nominal_id: nominal.clone(),
                order_id: uuid::Uuid::now_v7().to_string(),
                order_type: "shpo".into(),
                prohibitions: vec!["unsupervised contact with children under 16".into()],
                positive_requirements: vec!["notify any new relationship within 3 days".into()],
                start_date: "2026-01-10".into(),
                end_date: String::new(),
                court: "Snaresbrook Crown Court".into(),
            },
        ),
        &nominal,
        "met-police",
        "om-1",
        "offender_manager",
    );
    let exclusion = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::OrderRecorded {
                nominal_id: nominal.clone(),
                order_id: uuid::Uuid::now_v7().to_string(),
                order_type: "licence".into(),
                prohibitions: vec!["must not enter Acacia Avenue, where the victim lives".into()],
                positive_requirements: vec![],
                start_date: "2026-01-10".into(),
                end_date: "2027-01-09".into(),
                court: "Parole Board".into(),
            },
        ),
        &nominal,
        "met-police",
        "om-1",
        "offender_manager",
    )
    .with(|b| b.sensitivity = vec![pb::SensitivityTag::VictimLocation as i32]);
    let police_risk = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::RiskAssessmentRecorded {
                nominal_id: nominal.clone(),
                tool: "rm2000".into(),
                levels: [("overall".to_owned(), "high".to_owned())].into(),
                factors: vec!["grooming behaviour".into()],
                assessor: "om-1".into(),
                next_review: "2027-01-10".into(),
                summary: "high risk to children".into(),
                victim_safety: "keep away from the victim's route to work".into(),
            },
        ),
        &nominal,
        "met-police",
        "om-1",
        "offender_manager",
    );
    let recorded = try_append(
        &mut om,
        vec![reg.sign(met), notification.sign(met), shpo.sign(met), exclusion.sign(met), police_risk.sign(met)],
    )
    .await
    .expect("police record");
    let notification_event = recorded[1].event_id.clone();

    // Events about an unregistered nominal are refused.
    let stray = uuid::Uuid::now_v7().to_string();
    let err = try_append(
        &mut om,
        vec![
            on_nominal(
                EventDraft::new(
                    &format!("nominal-{stray}"),
                    &pb::MappaReferralMade {
                        nominal_id: stray.clone(),
                        category: 1,
                        level_requested: 2,
                        referrer: "om-1".into(),
                        reason: "x".into(),
                    },
                ),
                &stray,
                "met-police",
                "om-1",
                "offender_manager",
            )
            .sign(met),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    // A MAPPA level outside 1-3 is refused by validation.
    let bad = accord_e2e::mappa_level_set("london-mappa", "coord-1", &nominal, 4);
    let err = try_append(&mut coordinator, vec![bad.sign(s.key("mappa-1"))]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("MAPPA level must be 1 to 3"), "{}", err.message());

    // Probation assesses and refers to MAPPA.
    let prob = s.key("prob-1");
    let oasys = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::RiskAssessmentRecorded {
                nominal_id: nominal.clone(),
                tool: "oasys_rosh".into(),
                levels: [("children".to_owned(), "very_high".to_owned()), ("public".to_owned(), "medium".to_owned())]
                    .into(),
                factors: vec!["new relationship with a mother of two".into()],
                assessor: "pom-1".into(),
                next_review: "2026-12-20".into(),
                summary: "very high risk to the partner's children".into(),
                victim_safety: String::new(),
            },
        ),
        &nominal,
        "probation-london",
        "pom-1",
        "probation_om",
    );
    let referral = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::MappaReferralMade {
                nominal_id: nominal.clone(),
                category: 1,
                level_requested: 2,
                referrer: "pom-1".into(),
                reason: "new relationship with a woman who has two young children".into(),
            },
        ),
        &nominal,
        "probation-london",
        "pom-1",
        "probation_om",
    );
    let referred =
        try_append(&mut probation, vec![oasys.sign(prob), referral.sign(prob)]).await.expect("probation records");

    // Before MAPPA management, children's social care holds nothing.
    assert!(cases(&mut csc).await.is_empty());
    let mut probation_live = probation
        .views()
        .subscribe(pb::SubscribeViewRequest {
            model: ReadModel::MappaCases as i32,
            after_position: Some(referred[1].position),
        })
        .await
        .unwrap()
        .into_inner();

    // The coordinator sets level 2, holds the meeting and assigns actions: one to children's
    // social care, overdue (agreed ten days ago, due five days ago), one to the police.
    let mkey = s.key("mappa-1");
    let level = accord_e2e::mappa_level_set("london-mappa", "coord-1", &nominal, 2);
    let meeting_id = uuid::Uuid::now_v7().to_string();
    let meeting = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::MappaMeetingHeld {
                nominal_id: nominal.clone(),
                meeting_id: meeting_id.clone(),
                meeting_type: "initial".into(),
                level: 2,
                chair: "coord-1".into(),
                attendees: vec![
                    pb::MappaAttendee { agency: "met-police".into(), role: "offender_manager".into() },
                    pb::MappaAttendee { agency: "probation-london".into(), role: "probation_om".into() },
                    pb::MappaAttendee { agency: "london-csc".into(), role: "dtc_rep".into() },
                ],
                minutes: "Full minutes: intelligence from the police about the partner's ex-husband".into(),
                minutes_redacted: "Redacted minutes: safeguarding plan for the partner's children".into(),
                disclosure_decision: "disclose to the new partner (necessary and proportionate)".into(),
                next_review: "2027-02-01".into(),
            },
        ),
        &nominal,
        "london-mappa",
        "coord-1",
        "mappa_coordinator",
    );
    let csc_action = uuid::Uuid::now_v7().to_string();
    let police_action = uuid::Uuid::now_v7().to_string();
    let assign = |action: &str, owner: &str, role: &str, what: &str, occurred: i64, due: i64| {
        at(
            on_nominal(
                EventDraft::new(
                    &format!("nominal-{nominal}"),
                    &pb::ActionAssigned {
                        nominal_id: nominal.clone(),
                        action_id: action.into(),
                        meeting_id: meeting_id.clone(),
                        owner_agency: owner.into(),
                        owner_role: role.into(),
                        description: what.into(),
                        due: ts(due),
                    },
                ),
                &nominal,
                "london-mappa",
                "coord-1",
                "mappa_coordinator",
            ),
            occurred,
        )
    };
    let a1 = assign(
        &csc_action,
        "london-csc",
        "dtc_rep",
        "visit the partner's children",
        now - 10 * 86_400,
        now - 5 * 86_400,
    );
    let a2 = assign(
        &police_action,
        "met-police",
        "offender_manager",
        "disclose to the new partner",
        now - 60,
        now + 2 * 86_400,
    );
    let managed =
        try_append(&mut coordinator, vec![level.sign(mkey), meeting.sign(mkey), a1.sign(mkey), a2.sign(mkey)])
            .await
            .expect("MAPPA management");

    // The police complete their action; children's social care cannot complete the police's.
    let complete = |agency: &str, user: &str, role: &str, action: &str| {
        on_nominal(
            EventDraft::new(
                &format!("nominal-{nominal}"),
                &pb::ActionCompleted {
                    nominal_id: nominal.clone(),
                    action_id: action.into(),
                    outcome: "disclosed in person on Tuesday".into(),
                },
            ),
            &nominal,
            agency,
            user,
            role,
        )
    };
    let err =
        try_append(&mut csc, vec![complete("london-csc", "sw-1", "dtc_rep", &police_action).sign(s.key("csc-1"))])
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    try_append(&mut om, vec![complete("met-police", "om-1", "offender_manager", &police_action).sign(met)])
        .await
        .expect("completed");

    // The coordinator's caseload: level 2, category 1, the panel, the next review, one overdue
    // action (children's social care's); no address (the coordination view has none), and
    // never the victim's location.
    let c = cases(&mut coordinator).await;
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!((c.nominal_id.as_str(), c.level, c.category), (nominal.as_str(), 2, 1));
    assert_eq!(c.next_review, "2027-02-01");
    assert_eq!(c.overdue_actions, 1);
    assert_eq!(c.lead_agency, "met-police");
    let panel: BTreeSet<&str> = c.panel.iter().map(String::as_str).collect();
    assert_eq!(panel, BTreeSet::from(["london-csc", "london-mappa", "met-police", "probation-london"]));
    assert_eq!(
        sections(c),
        BTreeSet::from(["identity", "notification", "order", "risk", "referral", "level", "meeting", "action"])
    );
    let n = entry(c, "notification");
    assert!(!n.fields.contains_key("home_address") && n.redacted_groups.contains(&"address".to_owned()), "{n:?}");
    assert_eq!(entry(c, "identity").source_agency, "met-police");
    assert!(entry(c, "meeting").fields["minutes"].starts_with("Full minutes"));
    assert_eq!(c.latest_risks.len(), 2, "one per agency and tool");
    assert!(!all_text(c).contains("Acacia"), "the victim's location never reaches the coordinator");
    assert_eq!(c.entries.iter().filter(|e| e.section == "order").count(), 1, "the tagged licence is withheld");

    // Caseload filters.
    let filtered = |r: pb::QueryViewRequest| {
        let mut coordinator = coordinator.clone();
        async move {
            coordinator
                .views()
                .query(pb::QueryViewRequest { model: ReadModel::MappaCases as i32, ..r })
                .await
                .unwrap()
                .into_inner()
                .items
                .len()
        }
    };
    assert_eq!(filtered(pb::QueryViewRequest { mappa_level: Some(2), ..Default::default() }).await, 1);
    assert_eq!(filtered(pb::QueryViewRequest { mappa_level: Some(3), ..Default::default() }).await, 0);
    assert_eq!(filtered(pb::QueryViewRequest { mappa_category: Some(4), ..Default::default() }).await, 0);
    assert_eq!(filtered(pb::QueryViewRequest { overdue_actions_only: true, ..Default::default() }).await, 1);
    assert_eq!(
        filtered(pb::QueryViewRequest { next_review_before: "2027-03-01".into(), ..Default::default() }).await,
        1
    );
    assert_eq!(
        filtered(pb::QueryViewRequest { next_review_before: "2027-01-01".into(), ..Default::default() }).await,
        0
    );

    // The police offender manager sees everything the police and probation recorded, the home
    // address included, but not the victim-location licence.
    let p = &cases(&mut om).await[0];
    assert_eq!(entry(p, "notification").fields["home_address"], "14 Elm Road, London E1");
    assert!(entry(p, "risk").fields.contains_key("victim_safety"));
    assert!(!all_text(p).contains("Acacia"));
    let police_done =
        p.entries.iter().find(|e| e.section == "action" && e.fields["owner_agency"] == "met-police").unwrap();
    assert!(police_done.completed && !police_done.overdue);

    // Children's social care (duty to co-operate): identity, risk summaries, the level, the
    // redacted minutes and its own action only.
    let k = &cases(&mut csc).await[0];
    assert_eq!(sections(k), BTreeSet::from(["identity", "risk", "level", "meeting", "action"]));
    let id = entry(k, "identity");
    assert!(id.fields.contains_key("names") && !id.fields.contains_key("index_offence"), "{id:?}");
    for r in k.entries.iter().filter(|e| e.section == "risk") {
        assert!(r.fields.contains_key("levels"));
        assert!(!r.fields.contains_key("factors") && !r.fields.contains_key("victim_safety"), "{r:?}");
    }
    let m = entry(k, "meeting");
    assert!(m.fields.contains_key("minutes_redacted") && !m.fields.contains_key("minutes"), "{m:?}");
    assert!(!m.fields.contains_key("disclosure_decision"));
    let actions: Vec<&pb::CaseEntry> = k.entries.iter().filter(|e| e.section == "action").collect();
    assert_eq!(actions.len(), 1, "only its own action");
    assert_eq!(actions[0].fields["owner_agency"], "london-csc");
    assert!(actions[0].overdue);
    assert!(!all_text(k).contains("14 Elm Road") && !all_text(k).contains("Acacia"));

    // Agencies not on the case see nothing of it.
    for (agency, user, role) in [
        ("kent-police", "om-9", "offender_manager"),
        ("st-marys-school", "dsl-1", "dsl"),
        ("solace-isva", "isva-1", "isva"),
    ] {
        let mut c = s.client(agency, user, &[role]).await;
        assert!(cases(&mut c).await.is_empty(), "{agency}");
    }

    // As of the referral, children's social care held nothing; the police held the case.
    let cases_model = accord_views::Model::MappaCases;
    assert!(query_as_of(&s, "london-csc", "sw-1", &["dtc_rep"], cases_model, referred[1].position).await.is_empty());
    let om_then = query_as_of(&s, "met-police", "om-1", &["offender_manager"], cases_model, referred[1].position).await;
    assert_eq!(om_then.len(), 1);
    assert_eq!(query_as_of(&s, "london-csc", "sw-1", &["dtc_rep"], cases_model, managed[1].position).await.len(), 1);

    // The police correct the address; probation, which received it, is told.
    let fix = record_corrected(
        "met-police",
        "om-1",
        "offender_manager",
        &format!("nominal-{nominal}"),
        &notification_event,
        &[("changed_fields.home_address", "41 Elm Road, London E1")],
    );
    let fixed = try_append(&mut om, vec![fix.sign(met)]).await.expect("corrected");
    let mut last = None;
    while let Ok(Some(Ok(item))) = tokio::time::timeout(Duration::from_secs(5), probation_live.next()).await {
        let done = item.position == fixed[0].position;
        last = Some(item);
        if done {
            break;
        }
    }
    let told = last.expect("probation is told");
    assert_eq!(told.position, fixed[0].position);
    let Some(pb::view_item::Content::MappaCase(pc)) = &told.content else { panic!() };
    let n = entry(pc, "notification");
    assert_eq!(n.fields["home_address"], "41 Elm Road, London E1");
    assert_eq!(n.corrections.len(), 1);
    assert_eq!(n.corrections[0].fields["changed_fields.home_address"], "41 Elm Road, London E1");
    // The coordinator is told too, but the correction does not show the address to them.
    let c = &cases(&mut coordinator).await[0];
    let n = entry(c, "notification");
    assert_eq!(n.updated_position, fixed[0].position);
    assert!(n.corrections.is_empty(), "a correction of nothing the coordinator may see is not shown: {n:?}");

    let token = s.token("london-csc", "sw-1", &["dtc_rep"]);
    accord_e2e::assert_rebuilds_identically(&mut s, |endpoint| {
        let token = token.clone();
        async move { cases(&mut accord_e2e::connect(&endpoint, &token).await).await }
    })
    .await;
}

/// Recording about a nominal is not a way onto its case; the panel loses the joint view when the
/// level falls; corrections show only what the user may see; only a role that may write a record
/// may correct it.
async fn the_case_is_who_registration_and_meetings_name(s: TestServer) {
    let met = s.key("met-1");
    let mut om = s.client("met-police", "om-1", &["offender_manager"]).await;
    let mut kent = s.client("kent-police", "om-9", &["offender_manager", "mappa_coordinator"]).await;
    let mut coordinator = s.client("london-mappa", "coord-1", &["mappa_coordinator"]).await;
    let mut csc = s.client("london-csc", "sw-1", &["dtc_rep"]).await;
    let now = now_secs();
    let (reg, nominal) = nominal_registered("met-police", "om-1");
    let bank = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::NotificationRequirementUpdated {
                nominal_id: nominal.clone(),
                kind: "bank_card".into(),
                changed_fields: [("account_number".to_owned(), "12345678".to_owned())].into(),
                notified_at: ts(now - 60),
                due_by: ts(now + 86_400),
                status: "on_time".into(),
            },
        ),
        &nominal,
        "met-police",
        "om-1",
        "offender_manager",
    );
    let r = try_append(&mut om, vec![reg.clone().sign(met), bank.sign(met)]).await.unwrap();

    // Kent is not on the case: it cannot record about the nominal, register it again, or put
    // itself on a panel by setting a level.
    let kent_key = s.key("kent-1");
    let risk = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::RiskAssessmentRecorded {
                nominal_id: nominal.clone(),
                tool: "rm2000".into(),
                levels: [("overall".to_owned(), "low".to_owned())].into(),
                assessor: "om-9".into(),
                next_review: "2027-01-01".into(),
                ..Default::default()
            },
        ),
        &nominal,
        "kent-police",
        "om-9",
        "offender_manager",
    );
    let err = try_append(&mut kent, vec![risk.sign(kent_key)]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("is not on nominal"), "{}", err.message());
    let again = reg.author("kent-police", "om-9", "offender_manager");
    let err = try_append(&mut kent, vec![again.sign(kent_key)]).await.unwrap_err();
    assert!(matches!(err.code(), Code::Aborted | Code::AlreadyExists), "{err:?}");
    let level = accord_e2e::mappa_level_set("kent-police", "om-9", &nominal, 2);
    let err = try_append(&mut kent, vec![level.sign(kent_key)]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(cases(&mut kent).await.is_empty(), "kent holds nothing of the nominal");

    // A correction of the bank details: the offender manager sees the new value; a victim
    // liaison officer of the same force sees neither the record's nor the correction's values.
    let fix = record_corrected(
        "met-police",
        "om-1",
        "offender_manager",
        &format!("nominal-{nominal}"),
        &r[1].event_id,
        &[("changed_fields.account_number", "87654321")],
    );
    // A disclosure officer of the same force may not write notification records, so may not
    // correct them either.
    let mut officer = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let by_officer = record_corrected(
        "met-police",
        "do-1",
        "disclosure_officer",
        &format!("nominal-{nominal}"),
        &r[1].event_id,
        &[("changed_fields.account_number", "0")],
    );
    let err = try_append(&mut officer, vec![by_officer.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    try_append(&mut om, vec![fix.sign(met)]).await.expect("corrected");
    let mine = &cases(&mut om).await[0];
    assert_eq!(entry(mine, "notification").fields["account_number"], "87654321");
    let mut solo = s.client("met-police", "solo-1", &["solo"]).await;
    let records = query(&mut solo, ReadModel::AgencyRecords).await.unwrap().items;
    for rec in &records {
        for c in &rec.corrections {
            assert!(c.fields.is_empty() && c.reason.is_empty(), "records list corrections by position only: {c:?}");
        }
    }
    let probation_view = &cases(&mut s.client("probation-london", "pom-1", &["probation_om"]).await).await[0];
    assert!(!all_text(probation_view).contains("8765"), "probation's view has no financial group");

    // MAPPA level 2 with children's social care on the panel, then back to level 1: the panel's
    // duty-to-co-operate agency no longer holds anything of the nominal.
    let mkey = s.key("mappa-1");
    let meeting = on_nominal(
        EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::MappaMeetingHeld {
                nominal_id: nominal.clone(),
                meeting_id: uuid::Uuid::now_v7().to_string(),
                meeting_type: "initial".into(),
                level: 2,
                chair: "coord-1".into(),
                attendees: vec![pb::MappaAttendee { agency: "london-csc".into(), role: "dtc_rep".into() }],
                minutes: "m".into(),
                minutes_redacted: "r".into(),
                disclosure_decision: String::new(),
                next_review: "2027-01-01".into(),
            },
        ),
        &nominal,
        "london-mappa",
        "coord-1",
        "mappa_coordinator",
    );
    try_append(
        &mut coordinator,
        vec![accord_e2e::mappa_level_set("london-mappa", "coord-1", &nominal, 2).sign(mkey), meeting.sign(mkey)],
    )
    .await
    .unwrap();
    assert_eq!(cases(&mut csc).await.len(), 1);
    try_append(&mut coordinator, vec![accord_e2e::mappa_level_set("london-mappa", "coord-1", &nominal, 1).sign(mkey)])
        .await
        .unwrap();
    assert!(cases(&mut csc).await.is_empty(), "off MAPPA management, the panel holds nothing");
    assert_eq!(cases(&mut om).await.len(), 1, "the case still does");
}

accord_e2e::on_both_backends!(mappa_level_2_category_1, the_case_is_who_registration_and_meetings_name);
