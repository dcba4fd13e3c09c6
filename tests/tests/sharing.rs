//! Sharing policy end to end: the default agreements adopted on first start, adoption by a
//! governing agency's admin only, validation failures refused with the validator's message, and a
//! policy change taking effect at its position and not before. Both backends.

use accord_e2e::{TestServer, mappa_level_set, nominal_registered, policy_adopted, try_append};
use accord_proto::v1 as pb;
use tonic::Code;

async fn log_size(s: &TestServer) -> u64 {
    s.store().log_size().await.unwrap()
}

async fn the_default_policy_is_adopted_once_on_first_start(mut s: TestServer) {
    let adoptions = s.store().policy_adoptions(None).await.unwrap();
    assert_eq!(adoptions.len(), 1, "one default adoption");
    assert_eq!(adoptions[0].event_type, "accord.v1.PolicyAdopted");
    assert_eq!(adoptions[0].author_agency, "accord");
    s.restart().await;
    assert_eq!(s.store().policy_adoptions(None).await.unwrap().len(), 1, "a restart adopts nothing new");
    // Anyone can read the adopted policy: it is a registry record.
    let mut school = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    let page = school
        .ledger()
        .read_stream(pb::ReadStreamRequest { stream: "accord-policy".into(), from_version: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].position, adoptions[0].position);
}

async fn only_a_governing_agency_admin_adopts_policy(s: TestServer) {
    let text = accord_policy::DEFAULT_POLICIES;
    let before = log_size(&s).await;
    let mut met_admin = s.client("met-police", "admin-1", &["agency_admin"]).await;
    let err = try_append(&mut met_admin, vec![policy_adopted("met-police", "admin-1", text).sign(s.key("met-1"))])
        .await
        .expect_err("met-police does not govern policy");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("may not append accord.v1.PolicyAdopted"), "{}", err.message());
    // Authorised before the policy text is even compiled: a broken policy from a non-governing
    // admin is refused for who sent it, not for what it says.
    let err = try_append(
        &mut met_admin,
        vec![policy_adopted("met-police", "admin-1", "@id(\"x\") permit (").sign(s.key("met-1"))],
    )
    .await
    .expect_err("not allowed to adopt");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    let mut coordinator = s.client("london-mappa", "coord-1", &["mappa_coordinator"]).await;
    let err = try_append(
        &mut coordinator,
        vec![
            policy_adopted("london-mappa", "coord-1", text)
                .author("london-mappa", "coord-1", "mappa_coordinator")
                .sign(s.key("mappa-1")),
        ],
    )
    .await
    .expect_err("a coordinator is not an admin");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(log_size(&s).await, before, "nothing written");

    let mut admin = s.client("london-mappa", "admin-1", &["agency_admin"]).await;
    let r = try_append(&mut admin, vec![policy_adopted("london-mappa", "admin-1", text).sign(s.key("mappa-1"))])
        .await
        .unwrap();
    let adoptions = s.store().policy_adoptions(None).await.unwrap();
    assert_eq!(adoptions.last().unwrap().position, r[0].position);
}

async fn a_policy_that_does_not_validate_is_refused_with_the_validator_message(s: TestServer) {
    let mut admin = s.client("london-mappa", "admin-1", &["agency_admin"]).await;
    let before = log_size(&s).await;
    let cases: &[(&str, &str)] = &[
        (
            r#"@id("typo") permit (principal, action == Accord::Action::"receive", resource) when { principal.knd == "police" };"#,
            "do not validate against schema version 1",
        ),
        (r#"permit (principal, action == Accord::Action::"receive", resource);"#, "@id"),
        (r#"@id("x") permit (principal, action == "#, "do not parse"),
        (
            r#"@id("x") permit (principal, action == Accord::Action::"view", resource == Accord::View::"made.up.v1");"#,
            "names view \"made.up.v1\"",
        ),
    ];
    for (text, want) in cases {
        let err = try_append(&mut admin, vec![policy_adopted("london-mappa", "admin-1", text).sign(s.key("mappa-1"))])
            .await
            .expect_err(text);
        assert_eq!(err.code(), Code::InvalidArgument, "{text}: {}", err.message());
        assert!(err.message().contains(want), "{text}: {:?} lacks {want:?}", err.message());
        assert!(err.message().starts_with("events[0].body.payload."), "{}", err.message());
    }
    // An adoption must end its request: what follows it would be checked under the old policy.
    let err = try_append(
        &mut admin,
        vec![
            policy_adopted("london-mappa", "admin-1", accord_policy::DEFAULT_POLICIES).sign(s.key("mappa-1")),
            policy_adopted("london-mappa", "admin-1", accord_policy::DEFAULT_POLICIES).sign(s.key("mappa-1")),
        ],
    )
    .await
    .expect_err("adoption not last");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("must be the last event of its request"), "{}", err.message());
    assert_eq!(log_size(&s).await, before, "nothing written");
}

async fn a_policy_change_takes_effect_at_its_position_and_not_before(s: TestServer) {
    let met = s.key("met-1");
    let mut om = s.client("met-police", "pc-1", &["offender_manager"]).await;
    let (reg, nominal) = nominal_registered("met-police", "pc-1");
    try_append(&mut om, vec![reg.sign(met)]).await.unwrap();

    // Under the default policy a police offender manager may not set the MAPPA level.
    let level = || mappa_level_set("met-police", "pc-1", &nominal, 2).author("met-police", "pc-1", "offender_manager");
    let err = try_append(&mut om, vec![level().sign(met)]).await.expect_err("not yet allowed");
    assert_eq!(err.code(), Code::PermissionDenied);

    // The governing body allows it from now on, and forbids offender managers registering nominals.
    let text = format!(
        "{}\n@id(\"append.police.om_sets_level\") permit (principal in Accord::Role::\"offender_manager\", action == Accord::Action::\"append\", resource) when {{ resource.event_type == \"accord.v1.MappaLevelSet\" }};\n\
         @id(\"append.freeze_registrations\") forbid (principal in Accord::Role::\"offender_manager\", action == Accord::Action::\"append\", resource) when {{ resource.event_type == \"accord.v1.NominalRegistered\" }};",
        accord_policy::DEFAULT_POLICIES
    );
    let mut admin = s.client("london-mappa", "admin-1", &["agency_admin"]).await;
    let adopted = try_append(&mut admin, vec![policy_adopted("london-mappa", "admin-1", &text).sign(s.key("mappa-1"))])
        .await
        .unwrap();

    let set = try_append(&mut om, vec![level().sign(met)]).await.expect("allowed after the adoption");
    assert!(set[0].position > adopted[0].position);
    let err = try_append(&mut om, vec![nominal_registered("met-police", "pc-1").0.sign(met)])
        .await
        .expect_err("now forbidden");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("append.freeze_registrations"), "the deciding forbid is named: {}", err.message());
    assert!(err.message().contains(&format!("version {}", adopted[0].position)), "{}", err.message());

    let adoptions = s.store().policy_adoptions(None).await.unwrap();
    assert_eq!(adoptions.len(), 2);
    assert!(adoptions[0].position < set[0].position && adopted[0].position == adoptions[1].position);
}

async fn an_adoption_by_another_instance_governs_this_one_at_once(s: TestServer) {
    // Two instances on one database, as two replicas: this one has read the default policy.
    let (other, running) = s.second_instance().await;
    let met = s.key("met-1");
    let mut om = s.client("met-police", "pc-1", &["offender_manager"]).await;
    try_append(&mut om, vec![nominal_registered("met-police", "pc-1").0.sign(met)]).await.expect("allowed by default");

    // The other instance adopts a policy that forbids what this one would still allow.
    let text = format!(
        "{}\n@id(\"append.freeze_registrations\") forbid (principal in Accord::Role::\"offender_manager\", action == Accord::Action::\"append\", resource) when {{ resource.event_type == \"accord.v1.NominalRegistered\" }};",
        accord_policy::DEFAULT_POLICIES
    );
    let mut admin = s.client_at(&other, "london-mappa", "admin-1", &["agency_admin"]).await;
    try_append(&mut admin, vec![policy_adopted("london-mappa", "admin-1", &text).sign(s.key("mappa-1"))])
        .await
        .unwrap();

    // This instance checked under the old policy would allow it; the sequencer sees the newer
    // adoption under the log lock, and the re-check under the new policy refuses.
    let before = log_size(&s).await;
    let err = try_append(&mut om, vec![nominal_registered("met-police", "pc-1").0.sign(met)])
        .await
        .expect_err("the new policy is in force everywhere");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("append.freeze_registrations"), "{}", err.message());
    assert_eq!(log_size(&s).await, before, "nothing written");

    // And the other way: a permission the other instance grants is usable here at once (a
    // refusal under a replaced policy is checked again under the one in force).
    let (reg, nominal) = nominal_registered("met-police", "pc-2");
    let mut om2 = s.client("met-police", "pc-2", &["offender_manager"]).await;
    let level = mappa_level_set("met-police", "pc-2", &nominal, 2).author("met-police", "pc-2", "offender_manager");
    let err = try_append(&mut om2, vec![reg.sign(met), level.clone().sign(met)]).await.expect_err("frozen");
    assert_eq!(err.code(), Code::PermissionDenied);
    let text = format!(
        "{}\n@id(\"append.police.om_sets_level\") permit (principal in Accord::Role::\"offender_manager\", action == Accord::Action::\"append\", resource) when {{ resource.event_type == \"accord.v1.MappaLevelSet\" }};",
        accord_policy::DEFAULT_POLICIES
    );
    try_append(&mut admin, vec![policy_adopted("london-mappa", "admin-1", &text).sign(s.key("mappa-1"))])
        .await
        .unwrap();
    let (reg, nominal) = nominal_registered("met-police", "pc-2");
    try_append(&mut om2, vec![reg.sign(met)]).await.expect("registrations allowed again");
    let level = mappa_level_set("met-police", "pc-2", &nominal, 2).author("met-police", "pc-2", "offender_manager");
    try_append(&mut om2, vec![level.sign(met)]).await.expect("the new permission applies here at once");
    running.stop().await.unwrap();
}

accord_e2e::on_both_backends!(
    an_adoption_by_another_instance_governs_this_one_at_once,
    the_default_policy_is_adopted_once_on_first_start,
    only_a_governing_agency_admin_adopts_policy,
    a_policy_that_does_not_validate_is_refused_with_the_validator_message,
    a_policy_change_takes_effect_at_its_position_and_not_before,
);
