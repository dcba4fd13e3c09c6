//! Operation Encompass notifications through the real gRPC server: the catalogue's validation and
//! the sharing policy's append rules (who may send, to whom, who acknowledges), on both backends.

use accord_client::{Client, EventDraft};
use accord_e2e::{TestServer, encompass_notification, try_append};
use accord_proto::v1 as pb;
use prost::Message;
use tonic::Code;

/// Edits the payload of a draft notification.
fn edit(d: EventDraft, f: impl FnOnce(&mut pb::EncompassNotificationSent)) -> EventDraft {
    d.with(|b| {
        let mut p = pb::EncompassNotificationSent::decode(b.payload.as_slice()).unwrap();
        f(&mut p);
        b.payload = p.encode_to_vec();
    })
}

async fn refused(c: &mut Client, e: pb::SignedEvent, code: Code, want: &str) {
    let err = try_append(c, vec![e]).await.expect_err(want);
    assert_eq!(err.code(), code, "{want}: {}", err.message());
    assert!(err.message().contains(want), "{:?} lacks {want:?}", err.message());
}

async fn police_notify_a_school_and_the_school_acknowledges(s: TestServer) {
    let met = s.key("met-1");
    let mut officer = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let (note, id) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let r = try_append(&mut officer, vec![note.sign(met)]).await.expect("police notify the school");
    assert_eq!(r[0].stream_version, 0);

    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let ack = EventDraft::new(
        &format!("encompass-{id}"),
        &pb::EncompassNotificationAcknowledged { notification_id: id.clone(), acknowledged_by: "dsl-1".into() },
    )
    .author("st-marys-school", "dsl-1", "dsl")
    .legal_basis("DAA2021-s49A", "acknowledge an Operation Encompass notification")
    .subject("agency", "st-marys-school")
    .regime(pb::Regime::UkGdpr)
    .expect_version(0);
    let r = try_append(&mut dsl, vec![ack.sign(s.key("school-1"))]).await.expect("the DSL acknowledges");
    assert_eq!(r[0].stream_version, 1);

    // A school does not send notifications.
    let (from_school, _) = encompass_notification("st-marys-school", "dsl-1", "st-johns-school", "100235");
    let from_school = from_school.author("st-marys-school", "dsl-1", "dsl");
    refused(&mut dsl, from_school.sign(s.key("school-1")), Code::PermissionDenied, "default-deny").await;
}

async fn notifications_go_only_to_schools_and_local_authorities(s: TestServer) {
    let met = s.key("met-1");
    let mut officer = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let before = s.store().log_size().await.unwrap();

    let (to_probation, _) = encompass_notification("met-police", "do-1", "probation-london", "100234");
    refused(
        &mut officer,
        to_probation.sign(met),
        Code::PermissionDenied,
        "append.encompass.to_schools_and_local_authorities_only",
    )
    .await;

    let (to_nobody, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let to_nobody = to_nobody.with(|b| b.addressees.clear());
    refused(&mut officer, to_nobody.sign(met), Code::InvalidArgument, "exactly one school or local authority").await;

    let (unknown, _) = encompass_notification("met-police", "do-1", "no-such-school", "100234");
    refused(&mut officer, unknown.sign(met), Code::InvalidArgument, "agency no-such-school is not registered").await;

    let (no_recipient, _) = encompass_notification("met-police", "do-1", "st-marys-school", "");
    refused(&mut officer, no_recipient.sign(met), Code::InvalidArgument, "establishment's URN or").await;

    let (both, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let both = edit(both, |p| p.local_authority = "Camden".into());
    refused(&mut officer, both.sign(met), Code::InvalidArgument, "not both").await;

    let (late, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let late = edit(late, |p| p.deadline = Some(prost_types::Timestamp { seconds: 1_000, nanos: 0 }));
    refused(&mut officer, late.sign(met), Code::InvalidArgument, "payload.deadline").await;

    let (no_child, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    let no_child = edit(no_child, |p| p.child = None);
    refused(&mut officer, no_child.sign(met), Code::InvalidArgument, "payload.child").await;

    // An offender manager is not the force's notifying officer.
    let mut om = s.client("met-police", "pc-1", &["offender_manager"]).await;
    let (by_om, _) = encompass_notification("met-police", "pc-1", "st-marys-school", "100234");
    let by_om = by_om.author("met-police", "pc-1", "offender_manager");
    refused(&mut om, by_om.sign(met), Code::PermissionDenied, "may not append accord.v1.EncompassNotificationSent")
        .await;

    assert_eq!(s.store().log_size().await.unwrap(), before, "nothing written");
}

accord_e2e::on_both_backends!(
    police_notify_a_school_and_the_school_acknowledges,
    notifications_go_only_to_schools_and_local_authorities,
);
