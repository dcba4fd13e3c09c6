//! The read models through the real gRPC server, on both backends: DOMAIN.md §7's Operation
//! Encompass scenario (2) and sex-work liaison with consent (4), each asserting what every role
//! sees and what it must not; live delivery; as-of queries; corrections; and that the stored read
//! models, a fold of the log and a rebuild from zero are byte-identical.

use std::time::Duration;

use accord_client::{Client, EventDraft};
use accord_e2e::{
    TestServer, consent_recorded, encompass_acknowledgement as ack, encompass_notification, now_secs, query,
    query_as_of, record_corrected, support_referral, try_append,
};
use accord_proto::v1::{self as pb, ReadModel};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

type Items = tonic::Streaming<pb::ViewItem>;

async fn items(c: &mut Client, model: ReadModel) -> Vec<pb::ViewItem> {
    query(c, model).await.expect("query").items
}

fn notification(i: &pb::ViewItem) -> &pb::Notification {
    match &i.content {
        Some(pb::view_item::Content::Notification(n)) => n,
        other => panic!("not a notification: {other:?}"),
    }
}

fn referral(i: &pb::ViewItem) -> &pb::Referral {
    match &i.content {
        Some(pb::view_item::Content::Referral(r)) => r,
        other => panic!("not a referral: {other:?}"),
    }
}

async fn subscribe(c: &mut Client, model: ReadModel, after: Option<u64>) -> Items {
    c.views()
        .subscribe(pb::SubscribeViewRequest { model: model as i32, after_position: after })
        .await
        .expect("subscribe")
        .into_inner()
}

async fn next(s: &mut Items) -> pb::ViewItem {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an item arrives within 10 s")
        .expect("the stream stays open")
        .expect("no error")
}

/// Nothing more arrives within a short wait.
async fn quiet(s: &mut Items) {
    if let Ok(Some(x)) = tokio::time::timeout(Duration::from_millis(600), s.next()).await {
        panic!("nothing should arrive, got {x:?}");
    }
}

/// Waits (at most 10 s) until the server has committed read models covering the whole log.
async fn wait_committed(store: &accord_store::Store) {
    let size = store.log_size().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.view_checkpoint(accord_views::PROJECTION).await.unwrap() < size {
        assert!(std::time::Instant::now() < deadline, "the read models were not committed within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn with_deadline(d: EventDraft, deadline_secs: i64) -> EventDraft {
    d.with(|b| {
        let mut p = pb::EncompassNotificationSent::decode(b.payload.as_slice()).unwrap();
        p.deadline = Some(prost_types::Timestamp { seconds: deadline_secs, nanos: 0 });
        b.payload = p.encode_to_vec();
    })
}

/// Scenario 2: an incident on a Saturday night involves two children at two schools; each DSL is
/// notified with a Monday-morning deadline, sees only their own pupil, and acknowledges; the
/// unacknowledged one is escalated to the force at its deadline.
async fn operation_encompass_two_schools(s: TestServer) {
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let mut marys = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let mut johns = s.client("st-johns-school", "dsl-2", &["dsl"]).await;
    let mut marys_live = subscribe(&mut marys, ReadModel::SchoolInbox, None).await;
    let mut johns_live = subscribe(&mut johns, ReadModel::SchoolInbox, None).await;

    let monday = now_secs() + 30 * 3600;
    let (a, id_a) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let (b, id_b) = encompass_notification("met-police", "do-1", "st-johns-school", "100235");
    let b = with_deadline(b, monday).with(|b| {
        let mut p = pb::EncompassNotificationSent::decode(b.payload.as_slice()).unwrap();
        p.child.as_mut().unwrap().name = "Child B".into();
        b.payload = p.encode_to_vec();
    });
    let a = with_deadline(a, monday);
    let sent = try_append(&mut police, vec![a.sign(s.key("met-1")), b.sign(s.key("met-1"))]).await.expect("sent");

    // Each DSL sees exactly their own pupil, live and by query, with the deadline.
    let got_a = next(&mut marys_live).await;
    assert_eq!(got_a.item_id, id_a);
    assert_eq!(got_a.record_position, sent[0].position);
    assert_eq!(got_a.source_agency, "met-police");
    let n = notification(&got_a);
    assert_eq!(n.child.as_ref().unwrap().name, "Child A");
    assert_eq!(n.deadline.as_ref().unwrap().seconds, monday);
    assert!(!n.acknowledged && !n.overdue);
    assert!(got_a.redacted_groups.is_empty(), "the DSL sees the whole notification");
    assert!(got_a.policy_ids.iter().any(|p| p == "receive.encompass.addressee"), "{:?}", got_a.policy_ids);
    let got_b = next(&mut johns_live).await;
    assert_eq!(got_b.item_id, id_b);
    assert_eq!(notification(&got_b).child.as_ref().unwrap().name, "Child B");
    quiet(&mut marys_live).await;
    let inbox_a = items(&mut marys, ReadModel::SchoolInbox).await;
    assert_eq!(inbox_a.iter().map(|i| i.item_id.as_str()).collect::<Vec<_>>(), [id_a.as_str()]);
    let inbox_b = items(&mut johns, ReadModel::SchoolInbox).await;
    assert_eq!(inbox_b.iter().map(|i| i.item_id.as_str()).collect::<Vec<_>>(), [id_b.as_str()]);

    // Nobody else sees them: not a teacher without the DSL role, not probation, not a support
    // service; and a school holds nothing in the other read models.
    let mut teacher = s.client("st-marys-school", "teacher-1", &["teacher"]).await;
    assert!(items(&mut teacher, ReadModel::SchoolInbox).await.is_empty());
    let mut probation = s.client("probation-london", "om-1", &["probation_om"]).await;
    for m in [ReadModel::SchoolInbox, ReadModel::NotificationsSent, ReadModel::AgencyRecords] {
        assert!(items(&mut probation, m).await.is_empty(), "{m:?}");
    }
    let mut isva = s.client("solace-isva", "isva-1", &["isva"]).await;
    assert!(items(&mut isva, ReadModel::SchoolInbox).await.is_empty());
    assert!(items(&mut marys, ReadModel::NotificationsSent).await.is_empty());
    assert!(items(&mut marys, ReadModel::ReferralInbox).await.is_empty());

    // St Mary's acknowledges; St John's cannot acknowledge St Mary's notification.
    let refused = try_append(&mut johns, vec![ack("st-johns-school", "dsl-2", &id_a).sign(s.key("school-2"))])
        .await
        .expect_err("not addressed to St John's");
    assert_eq!(refused.code(), Code::PermissionDenied, "{}", refused.message());
    assert!(refused.message().contains("not addressed to agency st-johns-school"), "{}", refused.message());
    let acked = try_append(&mut marys, vec![ack("st-marys-school", "dsl-1", &id_a).sign(s.key("school-1"))])
        .await
        .expect("acknowledged");
    let updated = next(&mut marys_live).await;
    assert_eq!(updated.item_id, id_a);
    assert_eq!(updated.position, acked[0].position);
    let n = notification(&updated);
    assert!(n.acknowledged);
    assert_eq!(n.acknowledged_by, "dsl-1");
    assert_eq!(n.acknowledgement_position, acked[0].position);
    quiet(&mut johns_live).await;

    // The force sees both, with their status; at the deadline only St John's is escalated.
    let sent_view = items(&mut police, ReadModel::NotificationsSent).await;
    assert_eq!(sent_view.len(), 2);
    let acked_now: Vec<bool> = sent_view.iter().map(|i| notification(i).acknowledged).collect();
    assert_eq!(acked_now, [false, true], "St John's (unchanged) first, then St Mary's (acknowledged)");
    let escalations = |at: i64| pb::EscalationsRequest { at: Some(prost_types::Timestamp { seconds: at, nanos: 0 }) };
    let before = police.views().escalations(escalations(monday - 60)).await.unwrap().into_inner();
    assert!(before.items.is_empty());
    let after = police.views().escalations(escalations(monday + 60)).await.unwrap().into_inner();
    assert_eq!(after.items.iter().map(|i| i.item_id.as_str()).collect::<Vec<_>>(), [id_b.as_str()]);
    assert!(notification(&after.items[0]).overdue);
    // A school has nothing to escalate.
    assert!(johns.views().escalations(escalations(monday + 60)).await.unwrap().into_inner().items.is_empty());

    // As of just before the acknowledgement, St Mary's item was unacknowledged (the replay the
    // audit service builds on).
    let as_of = |p| query_as_of(&s, "st-marys-school", "dsl-1", &["dsl"], accord_views::Model::SchoolInbox, p);
    let then = as_of(acked[0].position - 1).await;
    assert_eq!(then.len(), 1);
    assert!(!notification(&then[0]).acknowledged);
    let now = as_of(acked[0].position).await;
    assert!(notification(&now[0]).acknowledged);

    // The force corrects St John's notification: St John's is told (the item comes again with
    // the new value and the correction); St Mary's sees nothing new.
    let fix = record_corrected(
        "met-police",
        "do-1",
        "disclosure_officer",
        &format!("encompass-{id_b}"),
        b_event_id(&sent, 1, &s).await.as_str(),
        &[("child.whereabouts", "at a neighbour's house")],
    );
    let fixed = try_append(&mut police, vec![fix.sign(s.key("met-1"))]).await.expect("corrected");
    let corrected = next(&mut johns_live).await;
    assert_eq!(corrected.position, fixed[0].position);
    assert_eq!(notification(&corrected).child.as_ref().unwrap().whereabouts, "at a neighbour's house");
    assert_eq!(corrected.corrections.len(), 1);
    assert_eq!(corrected.corrections[0].fields["child.whereabouts"], "at a neighbour's house");
    quiet(&mut marys_live).await;
    // The force's own record shows it was superseded.
    let records = items(&mut police, ReadModel::AgencyRecords).await;
    let original = records.iter().find(|r| r.record_position == sent[1].position).expect("the original record");
    match &original.content {
        Some(pb::view_item::Content::Record(r)) => assert_eq!(r.superseded_by.len(), 1),
        other => panic!("{other:?}"),
    }

    // Resuming a subscription after the last position received repeats nothing.
    drop(johns_live);
    let mut resumed = subscribe(&mut johns, ReadModel::SchoolInbox, Some(corrected.position)).await;
    quiet(&mut resumed).await;
    let mut from_start = subscribe(&mut johns, ReadModel::SchoolInbox, Some(0)).await;
    assert_eq!(next(&mut from_start).await.position, corrected.position, "one item, in its latest form");
}

/// The event id of the `i`th event of an append, read back from the log.
async fn b_event_id(receipts: &[pb::Receipt], i: usize, _s: &TestServer) -> String {
    receipts[i].event_id.clone()
}

async fn corrections_are_checked(s: TestServer) {
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let (a, id) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let r = try_append(&mut police, vec![a.sign(s.key("met-1"))]).await.unwrap();
    let stream = format!("encompass-{id}");
    let before = s.store().log_size().await.unwrap();

    let unknown = uuid::Uuid::now_v7().to_string();
    let e = record_corrected("met-police", "do-1", "disclosure_officer", &stream, &unknown, &[("circumstances", "x")]);
    let err = try_append(&mut police, vec![e.sign(s.key("met-1"))]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("no event") && err.message().contains("is recorded"), "{}", err.message());

    let e = record_corrected("met-police", "do-1", "disclosure_officer", &stream, &r[0].event_id, &[("deadline", "x")]);
    let err = try_append(&mut police, vec![e.sign(s.key("met-1"))]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("not a correctable field"), "{}", err.message());

    // Another agency cannot correct the force's record.
    let mut marys = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let e = record_corrected("st-marys-school", "dsl-1", "dsl", &stream, &r[0].event_id, &[("circumstances", "x")]);
    let err = try_append(&mut marys, vec![e.sign(s.key("school-1"))]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("corrects only its own records"), "{}", err.message());

    // A correction without supersedes.
    let e = record_corrected("met-police", "do-1", "disclosure_officer", &stream, "", &[("circumstances", "x")]);
    let err = try_append(&mut police, vec![e.sign(s.key("met-1"))]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("supersedes"), "{}", err.message());

    assert_eq!(s.store().log_size().await.unwrap(), before, "refusals write nothing");
}

/// Scenario 4: a sex worker reports an assault; consent is recorded for a referral to a support
/// service; the service accepts; consent is later withdrawn and nothing more flows.
async fn sex_work_liaison_with_consent(s: TestServer) {
    let met = s.key("met-1");
    let mut swlo = s.client("met-police", "swlo-1", &["swlo"]).await;
    let mut isva = s.client("solace-isva", "isva-1", &["isva"]).await;
    let mut other = s.client("safer-streets", "sw-1", &["support_worker"]).await;
    let mut isva_live = subscribe(&mut isva, ReadModel::ReferralInbox, None).await;
    let person = uuid::Uuid::now_v7().to_string();

    // A referral with no consent reference is refused by validation.
    let (no_consent, _) = support_referral("met-police", "swlo-1", "", &person, "solace-isva");
    let err = try_append(&mut swlo, vec![no_consent.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("consent"), "{}", err.message());
    // Nor under a consent never recorded.
    let (unknown, _) =
        support_referral("met-police", "swlo-1", &uuid::Uuid::now_v7().to_string(), &person, "solace-isva");
    let err = try_append(&mut swlo, vec![unknown.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    let (consent, consent_id) = consent_recorded("met-police", "swlo-1", &person, &["solace-isva"]);
    try_append(&mut swlo, vec![consent.clone().sign(met)]).await.expect("consent recorded");
    // A consent cannot be recorded twice (which would reset who holds what under it).
    let twice = consent.with(|b| b.event_id = uuid::Uuid::now_v7().to_string());
    let err = try_append(&mut swlo, vec![twice.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{}", err.message());
    // A consent that has expired covers nothing, whatever occurred_at a referral claims.
    let (old, old_id) = consent_recorded("met-police", "swlo-1", &person, &["solace-isva"]);
    let now = now_secs();
    let old = old.with(|b| {
        b.occurred_at = Some(prost_types::Timestamp { seconds: now - 10 * 86_400, nanos: 0 });
        let mut p = pb::ConsentRecorded::decode(b.payload.as_slice()).unwrap();
        p.expires_at = Some(prost_types::Timestamp { seconds: now - 5 * 86_400, nanos: 0 });
        b.payload = p.encode_to_vec();
    });
    try_append(&mut swlo, vec![old.sign(met)]).await.expect("an old consent");
    let (late, _) = support_referral("met-police", "swlo-1", &old_id, &person, "solace-isva");
    let late = late.with(|b| b.occurred_at = Some(prost_types::Timestamp { seconds: now - 7 * 86_400, nanos: 0 }));
    let err = try_append(&mut swlo, vec![late.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("has expired"), "{}", err.message());
    // Outside the consent scope: another service is not named.
    let (outside, _) = support_referral("met-police", "swlo-1", &consent_id, &person, "safer-streets");
    let err = try_append(&mut swlo, vec![outside.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("does not name safer-streets"), "{}", err.message());

    let (draft, referral_id) = support_referral("met-police", "swlo-1", &consent_id, &person, "solace-isva");
    let made = try_append(&mut swlo, vec![draft.sign(met)]).await.expect("referred");
    let got = next(&mut isva_live).await;
    assert_eq!(got.item_id, referral_id);
    assert_eq!(got.record_position, made[0].position);
    let r = referral(&got);
    assert_eq!((r.contact_name.as_str(), r.safe_contact_method.as_str()), ("Sam", "text only, after 6pm"));
    assert_eq!(r.safe_contact_details, "07700 900123");
    assert_eq!((r.status.as_str(), r.consent_id.as_str(), r.consent_withdrawn), ("open", consent_id.as_str(), false));
    assert!(got.policy_ids.iter().any(|p| p == "receive.support.addressee_with_consent"), "{:?}", got.policy_ids);

    // Nobody outside the consent sees it: not the other service, not a school, not an offender
    // manager in the same force.
    assert!(items(&mut other, ReadModel::ReferralInbox).await.is_empty());
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    assert!(items(&mut dsl, ReadModel::ReferralInbox).await.is_empty());
    let mut om = s.client("met-police", "om-1", &["offender_manager"]).await;
    assert!(items(&mut om, ReadModel::ReferralsSent).await.is_empty(), "an offender manager may not view it");

    // The service accepts; the referring officer sees it.
    let accept = EventDraft::new(
        &format!("referral-{referral_id}"),
        &pb::SupportReferralAccepted { referral_id: referral_id.clone(), allocated_to: "isva-1".into() },
    )
    .author("solace-isva", "isva-1", "isva")
    .legal_basis("UKGDPR-6-1-a", "accept a support referral")
    .subject("person", &person)
    .regime(pb::Regime::UkGdpr);
    // Another service cannot answer it.
    let wrong = accept.clone().author("safer-streets", "sw-1", "support_worker");
    let err = try_append(&mut other, vec![wrong.sign(s.key("safer-1"))]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    try_append(&mut isva, vec![accept.sign(s.key("solace-1"))]).await.expect("accepted");
    assert_eq!(referral(&next(&mut isva_live).await).status, "accepted");
    let mine = items(&mut swlo, ReadModel::ReferralsSent).await;
    assert_eq!(mine.len(), 1);
    assert_eq!((referral(&mine[0]).status.as_str(), referral(&mine[0]).allocated_to.as_str()), ("accepted", "isva-1"));

    // She withdraws consent: the service is told, and nothing more flows.
    let withdraw = EventDraft::new(
        &format!("consent-{consent_id}"),
        &pb::ConsentWithdrawn {
            consent_id: consent_id.clone(),
            withdrawn_by: "the person herself".into(),
            reason: String::new(),
        },
    )
    .author("met-police", "swlo-1", "swlo")
    .legal_basis("UKGDPR-7-3", "consent withdrawn")
    .subject("person", &person)
    .regime(pb::Regime::UkGdpr);
    let withdrawn = try_append(&mut swlo, vec![withdraw.sign(met)]).await.expect("withdrawn");
    let told = next(&mut isva_live).await;
    assert!(referral(&told).consent_withdrawn);
    assert_eq!(referral(&told).consent_withdrawn_position, withdrawn[0].position);

    let (again, _) = support_referral("met-police", "swlo-1", &consent_id, &person, "solace-isva");
    let err = try_append(&mut swlo, vec![again.sign(met)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("withdrawn"), "{}", err.message());
    // A correction after the withdrawal reaches the officer's own copy, not the service.
    let fix = record_corrected(
        "met-police",
        "swlo-1",
        "swlo",
        &format!("referral-{referral_id}"),
        &made[0].event_id,
        &[("safe_contact_details", "07700 900999")],
    );
    try_append(&mut swlo, vec![fix.sign(met)]).await.expect("corrected");
    quiet(&mut isva_live).await;
    let isva_view = items(&mut isva, ReadModel::ReferralInbox).await;
    assert_eq!(referral(&isva_view[0]).safe_contact_details, "07700 900123");
    let own = items(&mut swlo, ReadModel::ReferralsSent).await;
    assert_eq!(referral(&own[0]).safe_contact_details, "07700 900999");
}

/// The read models stored by the running server, a fold of the log and a rebuild from zero are
/// byte-identical; a restarted server serves the same items.
async fn rebuild_yields_identical_read_models(mut s: TestServer) {
    let met = s.key("met-1");
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    for (school, urn) in [("st-marys-school", "100234"), ("st-johns-school", "100235"), ("st-marys-school", "100234")] {
        let (n, _) = encompass_notification("met-police", "do-1", school, urn);
        try_append(&mut police, vec![n.sign(met)]).await.unwrap();
    }
    let mut swlo = s.client("met-police", "swlo-1", &["swlo"]).await;
    let person = uuid::Uuid::now_v7().to_string();
    let (consent, consent_id) = consent_recorded("met-police", "swlo-1", &person, &["solace-isva"]);
    let (draft, _) = support_referral("met-police", "swlo-1", &consent_id, &person, "solace-isva");
    try_append(&mut swlo, vec![consent.sign(met)]).await.unwrap();
    try_append(&mut swlo, vec![draft.sign(met)]).await.unwrap();
    // The stored rows page by (model, agency, item id) without loss or repetition (a restart
    // restores them page by page).
    // (A query first: it waits until the read models have caught up with the log.)
    query(&mut s.client("st-marys-school", "dsl-1", &["dsl"]).await, ReadModel::SchoolInbox).await.unwrap();
    // (Then the server commits them, at most `COMMIT_EVERY` after the last append.)
    wait_committed(s.store()).await;
    let all = s.store().view_rows_page(None, 1_000_000).await.unwrap();
    let mut paged = Vec::new();
    let mut after: Option<(String, String, String)> = None;
    loop {
        let page = s
            .store()
            .view_rows_page(after.as_ref().map(|(m, a, i)| (m.as_str(), a.as_str(), i.as_str())), 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.model.clone(), last.agency.clone(), last.item_id.clone()));
        paged.extend(page);
    }
    assert!(all.len() > 4);
    let keys = |v: &[accord_store::ViewRow]| {
        v.iter().map(|r| format!("{}|{}|{}", r.model, r.agency, r.item_id)).collect::<Vec<_>>()
    };
    assert_eq!(keys(&paged), keys(&all));
    assert_eq!(paged, all);

    // An inbox reads newest first, and pages backwards.
    let mut marys = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let newest = |before: Option<u64>| pb::QueryViewRequest {
        model: ReadModel::SchoolInbox as i32,
        newest_first: true,
        before_position: before,
        ..Default::default()
    };
    let all = marys.views().query(newest(None)).await.unwrap().into_inner().items;
    assert_eq!(all.len(), 2);
    assert!(all[0].position > all[1].position, "newest first");
    let older = marys.views().query(newest(Some(all[0].position))).await.unwrap().into_inner().items;
    assert_eq!(older.iter().map(|i| i.position).collect::<Vec<_>>(), [all[1].position]);
    let bad = pb::QueryViewRequest { after_position: Some(1), ..newest(None) };
    assert_eq!(marys.views().query(bad).await.unwrap_err().code(), Code::InvalidArgument);

    let token = s.token("st-marys-school", "dsl-1", &["dsl"]);
    accord_e2e::assert_rebuilds_identically(&mut s, |endpoint| {
        let token = token.clone();
        async move {
            let items = items(&mut accord_e2e::connect(&endpoint, &token).await, ReadModel::SchoolInbox).await;
            assert_eq!(items.len(), 2);
            items
        }
    })
    .await;
}

/// Resetting the read models drops every projection's checkpoint with the rows (an older
/// version's checkpoint left behind would claim rows that are gone), and the running server
/// folds its read models again from zero.
async fn a_reset_drops_every_checkpoint_and_the_server_folds_again(s: TestServer) {
    let met = s.key("met-1");
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let (n, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    try_append(&mut police, vec![n.sign(met)]).await.unwrap();
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    assert_eq!(items(&mut dsl, ReadModel::SchoolInbox).await.len(), 1);
    let store = s.store();
    let size = store.log_size().await.unwrap();
    // What an earlier projection version left: its checkpoint.
    assert!(store.commit_views("accord-views-v1", 0, size, Default::default()).await.unwrap());
    assert_eq!(store.view_checkpoint("accord-views-v1").await.unwrap(), size);

    store.reset_views().await.unwrap();
    assert_eq!(store.view_checkpoint("accord-views-v1").await.unwrap(), 0);
    assert!(store.view_rows_page(None, 10).await.unwrap().is_empty());

    // The server's next commit finds its checkpoint gone, reloads (nothing), and folds the log
    // again: the rows come back and the DSL still sees the notification.
    let (n, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    try_append(&mut police, vec![n.sign(met)]).await.unwrap();
    wait_committed(store).await;
    assert!(!store.view_rows_page(None, 10).await.unwrap().is_empty());
    assert_eq!(items(&mut dsl, ReadModel::SchoolInbox).await.len(), 2);
}

async fn queries_are_authenticated_and_checked(s: TestServer) {
    let endpoint = s.endpoint.clone();
    let mut anon = Client::connect(&endpoint, "not-a-token").await.unwrap();
    let err = query(&mut anon, ReadModel::SchoolInbox).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let err = dsl.views().query(pb::QueryViewRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("model"), "{}", err.message());
    let err = dsl
        .views()
        .query(pb::QueryViewRequest { model: ReadModel::SchoolInbox as i32, limit: 5000, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

accord_e2e::on_both_backends!(
    operation_encompass_two_schools,
    corrections_are_checked,
    sex_work_liaison_with_consent,
    rebuild_yields_identical_read_models,
    a_reset_drops_every_checkpoint_and_the_server_folds_again,
    queries_are_authenticated_and_checked,
);
