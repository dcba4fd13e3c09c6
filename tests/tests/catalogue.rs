//! The rest of DOMAIN.md §4's catalogue through the real gRPC server, on both backends: each
//! event is accepted from a role the default policy lets write it, and nonsense is refused with a
//! precise status naming the field. Erasure keeps metadata and drops content from read models.

use accord_client::{Catalogued, Client, EventDraft};
use accord_e2e::{TestServer, encompass_notification, nominal_registered, now_secs, query, try_append};
use accord_proto::v1::{self as pb, ReadModel};
use tonic::Code;

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn draft<P: Catalogued>(stream: &str, payload: &P, agency: &str, user: &str, role: &str) -> EventDraft {
    EventDraft::new(stream, payload).author(agency, user, role).legal_basis("DPA2018-s35", "law enforcement")
}

async fn refused(c: &mut Client, e: pb::SignedEvent, code: Code, want: &str) {
    let err = try_append(c, vec![e]).await.expect_err(want);
    assert_eq!(err.code(), code, "{want}: {}", err.message());
    assert!(err.message().contains(want), "{:?} lacks {want:?}", err.message());
}

async fn the_rest_of_the_catalogue(s: TestServer) {
    let met = s.key("met-1");
    let mut om = s.client("met-police", "om-1", &["offender_manager"]).await;
    let mut solo = s.client("met-police", "solo-1", &["solo"]).await;
    let mut officer = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let mut coordinator = s.client("london-mappa", "coord-1", &["mappa_coordinator"]).await;
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let mut auditor = s.client("london-mappa", "aud-1", &["auditor"]).await;
    let now = now_secs();
    let ts = |secs: i64| Some(prost_types::Timestamp { seconds: secs, nanos: 0 });

    // A risk management plan: accepted; one with no section refused.
    let (reg, nominal) = nominal_registered("met-police", "om-1");
    try_append(&mut om, vec![reg.sign(met)]).await.unwrap();
    let plan = |sections: bool| {
        draft(
            &format!("nominal-{nominal}"),
            &pb::RiskManagementPlanUpdated {
                nominal_id: nominal.clone(),
                plan_id: new_id(),
                version: 1,
                supervision: if sections { "weekly home visits".into() } else { String::new() },
                monitoring_and_control: String::new(),
                interventions: String::new(),
                victim_safety: String::new(),
                actions: vec![],
            },
            "met-police",
            "om-1",
            "offender_manager",
        )
        .subject("nominal", &nominal)
    };
    try_append(&mut om, vec![plan(true).sign(met)]).await.expect("plan");
    refused(&mut om, plan(false).sign(met), Code::InvalidArgument, "payload.supervision").await;

    // Minutes can be distributed only for a meeting that was held.
    let minutes = draft(
        &format!("nominal-{nominal}"),
        &pb::MinutesDistributed { nominal_id: nominal.clone(), meeting_id: new_id(), redaction_profile: "full".into() },
        "london-mappa",
        "coord-1",
        "mappa_coordinator",
    )
    .subject("nominal", &nominal)
    .addressee("probation-london");
    refused(&mut coordinator, minutes.sign(s.key("mappa-1")), Code::FailedPrecondition, "no meeting").await;

    // A domestic abuse incident with its children; a child's impossible date of birth refused.
    let incident = new_id();
    let child = new_id();
    let da = |dob: &str| {
        draft(
            &format!("incident-{incident}"),
            &pb::DomesticAbuseIncidentRecorded {
                incident_id: incident.clone(),
                incident_ref: "MPS-DA-2026-0099".into(),
                occurred: ts(now - 3600),
                location: "the family home".into(),
                children: vec![pb::IncidentChild {
                    child_id: child.clone(),
                    name: "Child C".into(),
                    date_of_birth: dob.into(),
                    present: true,
                    whereabouts: "in the kitchen".into(),
                    voice_of_child: String::new(),
                }],
            },
            "met-police",
            "do-1",
            "disclosure_officer",
        )
        .subject("child", &child)
        .no_stream()
    };
    refused(&mut officer, da("2016-02-30").sign(met), Code::InvalidArgument, "payload.children[0].date_of_birth").await;
    try_append(&mut officer, vec![da("2016-02-28").sign(met)]).await.expect("incident");

    // A school records silent support for a notification addressed to it, not for another's.
    let (note, nid) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let (other, other_id) = encompass_notification("met-police", "do-1", "st-johns-school", "100235");
    try_append(&mut officer, vec![note.sign(met), other.sign(met)]).await.unwrap();
    let support = |id: &str| {
        draft(
            &format!("encompass-{id}"),
            &pb::SchoolSupportRecorded {
                notification_id: id.into(),
                support_type: "silent".into(),
                support_given: "class teacher keeps a quiet eye; lunchtime check-in".into(),
                shared_with: vec![],
            },
            "st-marys-school",
            "dsl-1",
            "dsl",
        )
        .subject("child", &child)
        .regime(pb::Regime::UkGdpr)
    };
    try_append(&mut dsl, vec![support(&nid).sign(s.key("school-1"))]).await.expect("support recorded");
    refused(&mut dsl, support(&other_id).sign(s.key("school-1")), Code::PermissionDenied, "not addressed").await;

    // Intelligence with anonymised reporter; naming a reporter while anonymised is refused.
    let intel = |anonymised: bool, reporter: &str| {
        let id = new_id();
        draft(
            &format!("intelligence-{id}"),
            &pb::IntelligenceShared {
                intelligence_id: id.clone(),
                source_agency: "solace-isva".into(),
                offender_descriptors: vec!["white van, Kent plates".into(), "calls himself Dave".into()],
                reporter_anonymised: anonymised,
                reporter_id: reporter.into(),
            },
            "met-police",
            "solo-1",
            "solo",
        )
        .subject("person", &child)
        .no_stream()
    };
    try_append(&mut solo, vec![intel(true, "").sign(met)]).await.expect("intelligence");
    refused(&mut solo, intel(true, &new_id()).sign(met), Code::InvalidArgument, "payload.reporter_id").await;

    // An incident and the victim's contact details (which must carry the victim_location tag).
    let victim = new_id();
    let inc = new_id();
    let report = draft(
        &format!("incident-{inc}"),
        &pb::IncidentRecorded {
            incident_id: inc.clone(),
            incident_ref: "MPS-SA-2026-0007".into(),
            victim_id: victim.clone(),
            offence_type: "sexual_assault".into(),
            officer: "solo-1".into(),
        },
        "met-police",
        "solo-1",
        "solo",
    )
    .subject("victim", &victim)
    .no_stream();
    try_append(&mut solo, vec![report.sign(met)]).await.expect("incident recorded");
    let contact = draft(
        &format!("victim-{victim}"),
        &pb::VictimContactDetailsRecorded {
            victim_id: victim.clone(),
            address: "Flat 3, 9 Acacia Avenue".into(),
            safe_contact_method: "mobile, text first".into(),
        },
        "met-police",
        "solo-1",
        "solo",
    )
    .subject("victim", &victim);
    refused(&mut solo, contact.clone().sign(met), Code::InvalidArgument, "SENSITIVITY_TAG_VICTIM_LOCATION").await;
    let tagged = contact.with(|b| b.sensitivity = vec![pb::SensitivityTag::VictimLocation as i32]);
    try_append(&mut solo, vec![tagged.sign(met)]).await.expect("victim contact recorded");
    // An offender manager of the same force cannot write them.
    let om_contact = draft(
        &format!("victim-{victim}"),
        &pb::VictimContactDetailsRecorded {
            victim_id: victim.clone(),
            address: "x".into(),
            safe_contact_method: "x".into(),
        },
        "met-police",
        "om-1",
        "offender_manager",
    )
    .subject("victim", &victim)
    .with(|b| b.sensitivity = vec![pb::SensitivityTag::VictimLocation as i32]);
    refused(&mut om, om_contact.sign(met), Code::PermissionDenied, "may not append").await;

    // An access investigation is opened before it is closed.
    let inv = new_id();
    let close = draft(
        &format!("investigation-{inv}"),
        &pb::AccessInvestigationClosed { investigation_id: inv.clone(), findings: "no misuse".into() },
        "london-mappa",
        "aud-1",
        "auditor",
    )
    .subject("user", "met-police/om-1");
    refused(&mut auditor, close.clone().sign(s.key("mappa-1")), Code::FailedPrecondition, "is open").await;
    let open = draft(
        &format!("investigation-{inv}"),
        &pb::AccessInvestigationOpened {
            investigation_id: inv.clone(),
            user_investigated: "met-police/om-1".into(),
            purpose: "monitoring flagged a consultation outside allocation".into(),
        },
        "london-mappa",
        "aud-1",
        "auditor",
    )
    .subject("user", "met-police/om-1")
    .no_stream();
    try_append(&mut auditor, vec![open.sign(s.key("mappa-1")), close.sign(s.key("mappa-1"))])
        .await
        .expect("investigation");

    // Retention: erase the first notification's content. The school's inbox keeps the item's
    // metadata, without content; the force's record says it was erased.
    let mut admin = s.client("met-police", "admin-1", &["agency_admin"]).await;
    let review = new_id();
    let notification_event = query(&mut officer, ReadModel::AgencyRecords)
        .await
        .unwrap()
        .items
        .into_iter()
        .find_map(|i| match i.content {
            Some(pb::view_item::Content::Record(r)) if r.stream == format!("encompass-{nid}") => Some(r.event_id),
            _ => None,
        })
        .expect("the notification's record");
    let reviewed = draft(
        &format!("retention-{review}"),
        &pb::RetentionReviewed {
            review_id: review.clone(),
            retention_group: "mopi_group_3".into(),
            decision: "erase".into(),
            next_review: String::new(),
            event_ids: vec![notification_event.clone()],
        },
        "met-police",
        "admin-1",
        "agency_admin",
    )
    .subject("agency", "met-police")
    .no_stream();
    let erased = draft(
        &format!("retention-{review}"),
        &pb::RecordErased {
            review_id: review.clone(),
            event_id: notification_event.clone(),
            reason: "MoPI group 3 review: no longer necessary".into(),
        },
        "met-police",
        "admin-1",
        "agency_admin",
    )
    .subject("agency", "met-police");
    try_append(&mut admin, vec![reviewed.sign(met), erased.sign(met)]).await.expect("erased");
    let inbox = query(&mut dsl, ReadModel::SchoolInbox).await.unwrap().items;
    let item = inbox.iter().find(|i| i.item_id == nid).expect("the item stays");
    let Some(pb::view_item::Content::Notification(n)) = &item.content else { panic!() };
    assert!(n.erased);
    assert!(n.circumstances.is_empty() && n.child.as_ref().is_none_or(|c| c.name.is_empty()), "{n:?}");
    let records = query(&mut officer, ReadModel::AgencyRecords).await.unwrap().items;
    assert!(records.iter().any(|i| matches!(&i.content,
        Some(pb::view_item::Content::Record(r)) if r.event_id == notification_event && !r.erased_by.is_empty())));
    // Another agency cannot erase the force's records.
    let mut school_admin = s.client("st-marys-school", "admin-2", &["agency_admin"]).await;
    let foreign = draft(
        &format!("retention-{}", new_id()),
        &pb::RecordErased { review_id: review.clone(), event_id: notification_event, reason: "x".into() },
        "st-marys-school",
        "admin-2",
        "agency_admin",
    )
    .subject("agency", "st-marys-school");
    let foreign = foreign.with(|b| {
        let mut p = <pb::RecordErased as prost::Message>::decode(b.payload.as_slice()).unwrap();
        p.review_id = b.stream.trim_start_matches("retention-").to_owned();
        b.payload = prost::Message::encode_to_vec(&p);
    });
    refused(&mut school_admin, foreign.sign(s.key("school-1")), Code::PermissionDenied, "erases only its own").await;
}

accord_e2e::on_both_backends!(the_rest_of_the_catalogue);
