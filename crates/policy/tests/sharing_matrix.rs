//! The default sharing agreements against DOMAIN.md §5's sharing matrix: each allowed row and its
//! nearest forbidden neighbour, a property test that no decision exceeds what the matrix allows,
//! adoption refusals, and policy versions taking effect at their position.

use std::collections::BTreeSet;

use accord_domain::payload::AgencyKind;
use accord_domain::{Role, SensitivityTag};
use accord_policy::{
    Actor, AgencyFacts, History, Policy, RecordFacts, RecordKind, Relation, SCHEMA_VERSION, ViewDef, default_policy,
    parse_views, record_kind,
};
use proptest::prelude::*;

fn agency(id: &'static str, kind: AgencyKind) -> AgencyFacts<'static> {
    AgencyFacts { id, kind, governs_policy: false }
}

const MET: AgencyFacts<'static> = AgencyFacts { id: "met-police", kind: AgencyKind::Police, governs_policy: false };
const KENT: AgencyFacts<'static> = AgencyFacts { id: "kent-police", kind: AgencyKind::Police, governs_policy: false };
const PROBATION: AgencyFacts<'static> =
    AgencyFacts { id: "probation-london", kind: AgencyKind::Probation, governs_policy: false };

fn roles(names: &[&str]) -> Vec<Role> {
    names.iter().map(|r| Role::parse(*r).unwrap()).collect()
}

fn record(event_type: &'static str, author: AgencyFacts<'static>) -> RecordFacts<'static> {
    RecordFacts { event_type, kind: record_kind(event_type), author, tags: &[] }
}

fn groups(p: &Policy, who: AgencyFacts<'_>, role: &str, rec: RecordFacts<'_>, rel: Relation) -> BTreeSet<String> {
    let r = roles(&[role]);
    p.view(&Actor { agency: who, user: "u-1", roles: &r }, &rec, rel).field_groups.clone()
}

fn set(gs: &[&str]) -> BTreeSet<String> {
    gs.iter().map(|g| (*g).to_owned()).collect()
}

const CASE: Relation =
    Relation { authored: false, addressed: false, case_member: true, mappa_panel: false, consent_in_scope: false };
const PANEL: Relation =
    Relation { authored: false, addressed: false, case_member: false, mappa_panel: true, consent_in_scope: false };
const AUTHORED: Relation =
    Relation { authored: true, addressed: false, case_member: false, mappa_panel: false, consent_in_scope: false };
const ADDRESSED: Relation =
    Relation { authored: false, addressed: true, case_member: false, mappa_panel: false, consent_in_scope: false };
const NONE: Relation =
    Relation { authored: false, addressed: false, case_member: false, mappa_panel: false, consent_in_scope: false };

#[test]
fn nominal_and_notification_column() {
    let p = default_policy(0);
    let nominal = record("accord.v1.NominalRegistered", MET);
    let all = set(&["identity", "flags", "notification", "address", "orders", "financial"]);
    assert_eq!(groups(&p, MET, "offender_manager", nominal, AUTHORED), all);
    assert_eq!(groups(&p, KENT, "ppro", nominal, CASE), all);
    // probation: bank and card details only when needed
    assert_eq!(
        groups(&p, PROBATION, "probation_om", nominal, CASE),
        set(&["identity", "flags", "notification", "address", "orders"])
    );
    assert_eq!(groups(&p, MET, "solo", nominal, AUTHORED), set(&["flags"]));
    assert_eq!(groups(&p, PROBATION, "vlo", nominal, CASE), set(&["identity"]));
    assert_eq!(
        groups(&p, PROBATION, "mappa_coordinator", nominal, PANEL),
        set(&["identity", "flags", "notification", "orders"])
    );
    let cs = agency("camden-cs", AgencyKind::ChildrensServices);
    assert_eq!(groups(&p, cs, "dtc_rep", nominal, PANEL), set(&["identity"]));
    // nearest forbidden neighbours
    assert!(groups(&p, KENT, "offender_manager", nominal, NONE).is_empty(), "another force, not on the case");
    assert!(groups(&p, cs, "dtc_rep", nominal, CASE).is_empty(), "duty to co-operate needs the MAPPA panel");
    let school = agency("st-marys", AgencyKind::School);
    assert!(groups(&p, school, "dsl", nominal, PANEL).is_empty(), "a school never sees a nominal");
    assert!(groups(&p, MET, "auditor", nominal, AUTHORED).is_empty(), "auditors see content only via investigations");
    assert!(groups(&p, MET, "janitor", nominal, AUTHORED).is_empty(), "unknown roles carry no rights");
    assert!(groups(&p, MET, "offender_manager", nominal, AUTHORED).contains("financial"));
    assert!(!groups(&p, PROBATION, "probation_om", nominal, CASE).contains("financial"));
}

#[test]
fn risk_and_mappa_columns() {
    let p = default_policy(0);
    let risk = record("accord.v1.RiskAssessmentRecorded", PROBATION);
    let level = record("accord.v1.MappaLevelSet", PROBATION);
    assert_eq!(groups(&p, MET, "offender_manager", risk, CASE), set(&["summary", "detail", "plan", "victim_safety"]));
    assert_eq!(groups(&p, PROBATION, "vlo", risk, AUTHORED), set(&["victim_safety"]));
    assert_eq!(groups(&p, MET, "swlo", risk, CASE), set(&["summary"]));
    assert_eq!(groups(&p, MET, "solo", level, PANEL), set(&["level", "minutes_redacted", "actions"]));
    assert!(groups(&p, MET, "offender_manager", level, CASE).is_empty(), "MAPPA records only to the panel");
    let housing = agency("camden-housing", AgencyKind::Housing);
    assert_eq!(groups(&p, housing, "dtc_rep", level, PANEL), set(&["level", "minutes_redacted", "own_actions"]));
    assert!(!groups(&p, housing, "dtc_rep", level, PANEL).contains("minutes"), "dtc reads redacted minutes only");
    assert!(groups(&p, housing, "dtc_rep", level, NONE).is_empty(), "not on the panel");
    assert!(groups(&p, housing, "offender_manager", level, PANEL).is_empty(), "police role at a housing agency");
}

#[test]
fn disclosure_and_encompass_columns() {
    let p = default_policy(0);
    let decided = record("accord.v1.DisclosureDecided", MET);
    assert_eq!(
        groups(&p, MET, "ppro", decided, AUTHORED),
        set(&["application", "checks", "decision", "content", "progress"])
    );
    assert!(groups(&p, KENT, "ppro", decided, NONE).is_empty(), "own force only");
    assert_eq!(groups(&p, PROBATION, "probation_om", decided, CASE), set(&["application", "decision", "progress"]));
    let school = agency("st-marys", AgencyKind::School);
    let other_school = agency("st-johns", AgencyKind::School);
    assert_eq!(groups(&p, school, "dsl", decided, ADDRESSED), set(&["content"]), "as a disclosure recipient");

    let note = record("accord.v1.EncompassNotificationSent", MET);
    assert_eq!(groups(&p, school, "dsl", note, ADDRESSED), set(&["notification", "acknowledgement", "school_support"]));
    assert_eq!(
        groups(&p, school, "smlo", note, ADDRESSED),
        set(&["notification", "acknowledgement", "school_support"])
    );
    assert!(groups(&p, other_school, "dsl", note, NONE).is_empty(), "another school's pupil");
    assert!(groups(&p, school, "dsl", note, CASE).is_empty(), "a school receives only what is addressed to it");
    assert!(groups(&p, MET, "offender_manager", note, CASE).is_empty(), "Encompass is not for offender managers");
    let cs = agency("camden-cs", AgencyKind::ChildrensServices);
    assert!(!groups(&p, cs, "dtc_rep", note, ADDRESSED).is_empty(), "children's social care: own notifications");
    assert!(groups(&p, cs, "dtc_rep", note, NONE).is_empty());
}

#[test]
fn victim_contact_and_consent_columns() {
    let p = default_policy(0);
    let contact = record("accord.v1.VictimContactDetailsRecorded", MET);
    assert_eq!(groups(&p, MET, "solo", contact, AUTHORED), set(&["victim_contact"]));
    assert_eq!(groups(&p, PROBATION, "vlo", contact, ADDRESSED), set(&["victim_contact"]));
    assert!(groups(&p, PROBATION, "vlo", contact, CASE).is_empty(), "managing the offender is not a reason");
    // Any record tagged with a victim's location: not for offender-facing roles.
    let tagged =
        RecordFacts { tags: &[SensitivityTag::VictimLocation], ..record("accord.v1.RiskAssessmentRecorded", MET) };
    assert!(groups(&p, MET, "offender_manager", tagged, AUTHORED).is_empty(), "tagged victim_location");
    assert_eq!(groups(&p, MET, "solo", tagged, AUTHORED), set(&["summary"]));
    let both = roles(&["solo", "offender_manager"]);
    let seen = p.view(&Actor { agency: MET, user: "u-1", roles: &both }, &contact, AUTHORED);
    assert!(seen.field_groups.is_empty(), "a user who also faces the offender: {:?}", seen.policy_ids);
    for offender_facing in ["offender_manager", "ppro", "mappa_coordinator", "disclosure_officer"] {
        assert!(groups(&p, MET, offender_facing, contact, AUTHORED).is_empty(), "{offender_facing}");
    }
    assert!(groups(&p, PROBATION, "probation_om", contact, CASE).is_empty());
    let isva = agency("rape-crisis", AgencyKind::SupportService);
    let consented = Relation { addressed: true, consent_in_scope: true, ..NONE };
    assert_eq!(groups(&p, isva, "isva", contact, consented), set(&["victim_contact"]));
    assert!(groups(&p, isva, "isva", contact, ADDRESSED).is_empty(), "consent withdrawn or never given");

    let referral = record("accord.v1.SupportReferralMade", MET);
    assert_eq!(groups(&p, isva, "support_worker", referral, consented), set(&["consent", "referral", "safe_contact"]));
    assert!(groups(&p, isva, "support_worker", referral, ADDRESSED).is_empty(), "outside the consent scope");
    let other = agency("other-service", AgencyKind::SupportService);
    assert!(
        groups(&p, other, "isva", referral, Relation { consent_in_scope: true, ..NONE }).is_empty(),
        "not addressed"
    );
    assert_eq!(groups(&p, MET, "swlo", referral, AUTHORED), set(&["consent", "referral", "safe_contact"]));
}

#[test]
fn receive_follows_the_hard_rules() {
    let p = default_policy(0);
    let nominal = record("accord.v1.NominalRegistered", MET);
    assert!(p.receive(&PROBATION, &nominal, CASE).allowed);
    assert!(!p.receive(&PROBATION, &nominal, NONE).allowed);
    let d = p.receive(&KENT, &nominal, NONE);
    assert_eq!(d.policy_ids, vec!["default-deny"]);
    let school = agency("st-marys", AgencyKind::School);
    let d = p.receive(&school, &nominal, Relation { mappa_panel: true, case_member: true, ..NONE });
    assert!(!d.allowed);
    assert_eq!(d.policy_ids, vec!["receive.school.only_own_pupils"], "the forbid decides");
    let service = agency("rape-crisis", AgencyKind::SupportService);
    let referral = record("accord.v1.SupportReferralMade", MET);
    assert!(p.receive(&service, &referral, Relation { addressed: true, consent_in_scope: true, ..NONE }).allowed);
    let withdrawn = p.receive(&service, &referral, ADDRESSED);
    assert!(!withdrawn.allowed);
    assert_eq!(withdrawn.policy_ids, vec!["receive.support_service.consent_required"]);
    let key = record("accord.v1.SigningKeyRegistered", agency("accord", AgencyKind::System));
    assert!(p.receive(&school, &key, NONE).allowed, "registry records are for everyone");
    let allowed = p.receive(&MET, &nominal, AUTHORED);
    assert_eq!(allowed.policy_ids, vec!["receive.authored"]);
    assert_eq!(allowed.policy_version, 0);
}

#[test]
fn append_rows_and_their_neighbours() {
    let p = default_policy(0);
    let admin_gov = AgencyFacts { id: "mappa-london", kind: AgencyKind::MappaUnit, governs_policy: true };
    let school = agency("st-marys", AgencyKind::School);
    let la = agency("camden-la", AgencyKind::LocalAuthority);
    let service = agency("rape-crisis", AgencyKind::SupportService);
    #[rustfmt::skip]
    let table: &[(AgencyFacts<'_>, &str, &str, &[AgencyKind], bool)] = &[
        (MET, "offender_manager", "accord.v1.NominalRegistered", &[], true),
        (MET, "offender_manager", "accord.v1.MappaLevelSet", &[], false),
        (PROBATION, "offender_manager", "accord.v1.NominalRegistered", &[], false),
        (MET, "ppro", "accord.v1.NominalRegistered", &[], true),
        (PROBATION, "mappa_coordinator", "accord.v1.MappaLevelSet", &[], true),
        (school, "mappa_coordinator", "accord.v1.MappaLevelSet", &[], false),
        (PROBATION, "mappa_coordinator", "accord.v1.NominalRegistered", &[], false),
        (MET, "disclosure_officer", "accord.v1.EncompassNotificationSent", &[AgencyKind::School], true),
        (MET, "disclosure_officer", "accord.v1.EncompassNotificationSent", &[AgencyKind::LocalAuthority], true),
        (MET, "disclosure_officer", "accord.v1.EncompassNotificationSent", &[AgencyKind::School, AgencyKind::Health], false),
        (MET, "disclosure_officer", "accord.v1.EncompassNotificationSent", &[], false),
        (MET, "solo", "accord.v1.EncompassNotificationSent", &[AgencyKind::School], false),
        (school, "dsl", "accord.v1.EncompassNotificationAcknowledged", &[], true),
        (la, "dsl", "accord.v1.EncompassNotificationAcknowledged", &[], false),
        (school, "dsl", "accord.v1.NominalRegistered", &[], false),
        (MET, "swlo", "accord.v1.SupportReferralMade", &[AgencyKind::SupportService], true),
        (MET, "swlo", "accord.v1.SupportReferralMade", &[AgencyKind::Police], false),
        (service, "isva", "accord.v1.SupportReferralAccepted", &[], true),
        (service, "isva", "accord.v1.SupportReferralMade", &[], false),
        (MET, "agency_admin", "accord.v1.SigningKeyRevoked", &[], true),
        (MET, "agency_admin", "accord.v1.SigningKeyRegistered", &[], false),
        (MET, "agency_admin", "accord.v1.PolicyAdopted", &[], false),
        (admin_gov, "agency_admin", "accord.v1.PolicyAdopted", &[], true),
        (admin_gov, "mappa_coordinator", "accord.v1.PolicyAdopted", &[], false),
        (MET, "unknown_role", "accord.v1.NominalRegistered", &[], false),
        (MET, "offender_manager", "accord.v1.NotAType", &[], false),
    ];
    for (who, role, ty, to, allowed) in table {
        let r = roles(&[role]);
        let actor = Actor { agency: *who, user: "u-1", roles: &r };
        let d = p.append(&actor, &RecordFacts { event_type: ty, kind: record_kind(ty), author: *who, tags: &[] }, to);
        assert_eq!(d.allowed, *allowed, "{role}@{} {ty} to {to:?}: {:?}", who.id, d.policy_ids);
        assert!(!d.policy_ids.is_empty());
    }
}

// ---- adoption ----

fn views() -> Vec<ViewDef> {
    parse_views(accord_policy::DEFAULT_VIEWS).unwrap()
}

fn refused(text: &str, views: Vec<ViewDef>) -> String {
    Policy::compile(1, SCHEMA_VERSION, text, views).expect_err("must be refused").to_string()
}

#[test]
fn adoption_refuses_what_does_not_validate() {
    let typo = r#"@id("t") permit (principal, action == Accord::Action::"receive", resource) when { principal.knd == "police" };"#;
    let msg = refused(typo, views());
    assert!(msg.contains("do not validate") && msg.contains("knd"), "{msg}");

    let wrong_type = r#"@id("t") permit (principal, action == Accord::Action::"receive", resource) when { context.authored == "yes" };"#;
    assert!(refused(wrong_type, views()).contains("do not validate"));

    let no_id = r#"permit (principal, action == Accord::Action::"receive", resource);"#;
    assert!(refused(no_id, views()).contains("@id"));

    let twice = r#"@id("a") permit (principal, action == Accord::Action::"receive", resource);
                   @id("a") forbid (principal, action == Accord::Action::"receive", resource);"#;
    assert!(refused(twice, views()).contains("more than one"));

    let syntax = r#"@id("a") permit (principal, action == Accord::Action::"receive", resource"#;
    assert!(refused(syntax, views()).contains("do not parse"));

    let unknown_view =
        r#"@id("a") permit (principal, action == Accord::Action::"view", resource == Accord::View::"made.up.v1");"#;
    assert!(refused(unknown_view, views()).contains("made.up.v1"));

    let mut bad_views = views();
    bad_views[0].record_kind = "nominals".into();
    assert!(refused(accord_policy::DEFAULT_POLICIES, bad_views).contains("record_kind"));
    let mut dup = views();
    dup.push(dup[0].clone());
    assert!(refused(accord_policy::DEFAULT_POLICIES, dup).contains("more than once"));

    let e = Policy::compile(1, 2, accord_policy::DEFAULT_POLICIES, views()).unwrap_err().to_string();
    assert!(e.contains("schema version 1, found 2"), "{e}");
}

#[test]
fn a_policy_change_takes_effect_at_its_position_and_not_before() {
    let mut h = History::new();
    assert!(h.in_force_at(0).is_none(), "before any adoption nothing is allowed");
    h.adopt(default_policy(3)).unwrap();
    // At position 10 a stricter policy: schools receive nothing at all.
    let strict = format!(
        "{}\n@id(\"receive.school.nothing\") forbid (principal, action == Accord::Action::\"receive\", resource) when {{ principal.kind == \"school\" }};",
        accord_policy::DEFAULT_POLICIES
    );
    h.adopt(Policy::compile(10, SCHEMA_VERSION, &strict, views()).unwrap()).unwrap();
    assert!(h.adopt(default_policy(10)).is_err(), "adoptions come in log order");

    let school = agency("st-marys", AgencyKind::School);
    let note = record("accord.v1.EncompassNotificationSent", MET);
    assert!(h.in_force_at(3).is_none(), "the adopting event itself is not governed by what it adopts");
    for (position, allowed) in [(4, true), (10, true), (11, false), (500, false)] {
        let p = h.in_force_at(position).unwrap();
        let d = p.receive(&school, &note, ADDRESSED);
        assert_eq!(d.allowed, allowed, "at position {position}: {:?}", d.policy_ids);
        assert_eq!(d.policy_version, if position <= 10 { 3 } else { 10 });
    }
    assert_eq!(h.current().unwrap().version(), 10);
}

// ---- the property: nothing beyond the matrix ----

const ROLES: &[&str] = &[
    "offender_manager",
    "ppro",
    "solo",
    "swlo",
    "disclosure_officer",
    "probation_om",
    "vlo",
    "mappa_coordinator",
    "dtc_rep",
    "dsl",
    "smlo",
    "isva",
    "idva",
    "support_worker",
    "auditor",
    "agency_admin",
    "janitor",
];

const EVENT_TYPES: &[&str] = &[
    "accord.v1.NominalRegistered",
    "accord.v1.EncompassNotificationAcknowledged",
    "accord.v1.SchoolSupportRecorded",
    "accord.v1.RecordCorrected",
    "accord.v1.OrderRecorded",
    "accord.v1.RiskAssessmentRecorded",
    "accord.v1.RiskManagementPlanUpdated",
    "accord.v1.MappaLevelSet",
    "accord.v1.MinutesDistributed",
    "accord.v1.DisclosureDecided",
    "accord.v1.DisclosureMade",
    "accord.v1.EncompassNotificationSent",
    "accord.v1.VictimContactDetailsRecorded",
    "accord.v1.ConsentRecorded",
    "accord.v1.SupportReferralMade",
    "accord.v1.IntelligenceShared",
    "accord.v1.AccessInvestigationOpened",
    "accord.v1.SigningKeyRegistered",
    "accord.v1.Unknown",
];

/// The most an agency may receive, written from DOMAIN.md §5's hard rules independently of the
/// Cedar text.
fn matrix_receive(kind: AgencyKind, rec: RecordKind, rel: Relation) -> bool {
    use AgencyKind as A;
    if rel.authored || rec == RecordKind::Registry {
        return true;
    }
    match kind {
        A::School => rel.addressed && matches!(rec, RecordKind::Encompass | RecordKind::Disclosure),
        A::SupportService => {
            rel.consent_in_scope && rel.addressed && matches!(rec, RecordKind::Support | RecordKind::VictimContact)
        }
        _ => match rec {
            RecordKind::Nominal | RecordKind::Risk => {
                rel.mappa_panel
                    || rel.case_member && matches!(kind, A::Police | A::Probation | A::Prison | A::MappaUnit)
            }
            RecordKind::Mappa => rel.mappa_panel,
            RecordKind::VictimContact => rel.addressed && matches!(kind, A::Police | A::Probation),
            RecordKind::Encompass => rel.addressed && matches!(kind, A::LocalAuthority | A::ChildrensServices),
            RecordKind::Disclosure => {
                rel.addressed
                    || (rel.case_member || rel.mappa_panel) && matches!(kind, A::Police | A::Probation | A::MappaUnit)
            }
            RecordKind::Intelligence => kind == A::Police && rel.case_member,
            _ => false,
        },
    }
}

/// The agency kinds a role is exercised in (DOMAIN.md §2).
fn role_home(role: &str, kind: AgencyKind) -> bool {
    use AgencyKind as A;
    match role {
        "offender_manager" | "ppro" | "solo" | "swlo" | "disclosure_officer" => kind == A::Police,
        "probation_om" | "vlo" => kind == A::Probation,
        "mappa_coordinator" => matches!(kind, A::Police | A::Probation | A::Prison | A::MappaUnit),
        "dtc_rep" => matches!(
            kind,
            A::ChildrensServices | A::Housing | A::Health | A::YouthJustice | A::LocalAuthority | A::Prison
        ),
        "dsl" | "smlo" => matches!(kind, A::School | A::LocalAuthority),
        "isva" | "idva" | "support_worker" => kind == A::SupportService,
        _ => true,
    }
}

/// Roles that face offenders: a user holding one never sees a victim's contact details.
const OFFENDER_FACING: &[&str] =
    &["offender_manager", "ppro", "probation_om", "mappa_coordinator", "dtc_rep", "disclosure_officer", "dsl", "smlo"];

/// The most field groups a role at an agency of `kind` may see of a record (the matrix's
/// F/P/O/–, with O's "addressed to or owned by the caller" conditions), independently of the
/// Cedar text. Empty means nothing at all.
fn matrix_view(role: &str, kind: AgencyKind, rec: RecordKind, rel: Relation) -> &'static [&'static str] {
    const NOMINAL_ALL: &[&str] = &["identity", "flags", "notification", "address", "orders", "financial"];
    const RISK_ALL: &[&str] = &["summary", "detail", "plan", "victim_safety"];
    const MAPPA_ALL: &[&str] = &["referral", "level", "minutes", "actions", "victim_items"];
    const DISCLOSURE_ALL: &[&str] = &["application", "checks", "decision", "content", "progress"];
    const ENCOMPASS: &[&str] = &["notification", "acknowledgement", "school_support"];
    use RecordKind as K;
    if rec == K::Registry {
        return &["registry"];
    }
    if !role_home(role, kind) {
        return &[];
    }
    let own = rel.authored;
    let to_me = rel.addressed;
    match (role, rec) {
        ("offender_manager" | "ppro", K::Nominal) => NOMINAL_ALL,
        ("offender_manager" | "ppro", K::Risk) => RISK_ALL,
        ("offender_manager" | "ppro", K::Mappa) => MAPPA_ALL,
        ("offender_manager" | "ppro" | "disclosure_officer", K::Disclosure) if own => DISCLOSURE_ALL,
        ("offender_manager" | "ppro" | "solo" | "swlo", K::Intelligence) => &["incident", "intelligence"],
        ("disclosure_officer", K::Intelligence) if own => &["incident", "intelligence"],
        ("solo" | "swlo", K::Nominal) => &["flags"],
        ("solo" | "swlo", K::Risk) => &["summary"],
        ("solo" | "swlo", K::Mappa) => &["level", "minutes_redacted", "actions"],
        ("solo" | "swlo", K::VictimContact) if own => &["victim_contact"],
        ("solo" | "swlo", K::Support) if own => &["consent", "referral", "safe_contact"],
        ("vlo", K::VictimContact) => &["victim_contact"],
        ("isva" | "idva" | "support_worker", K::VictimContact) if to_me && rel.consent_in_scope => &["victim_contact"],
        ("isva" | "idva" | "support_worker", K::Support) if to_me && rel.consent_in_scope => {
            &["consent", "referral", "safe_contact"]
        }
        ("disclosure_officer", K::Encompass) if own => ENCOMPASS,
        ("probation_om", K::Nominal) => &["identity", "flags", "notification", "address", "orders"],
        ("probation_om" | "mappa_coordinator", K::Risk) => RISK_ALL,
        ("probation_om" | "mappa_coordinator", K::Mappa) => MAPPA_ALL,
        ("probation_om" | "mappa_coordinator", K::Disclosure) => &["application", "decision", "progress"],
        ("vlo", K::Nominal) => &["identity"],
        ("vlo", K::Risk) => &["victim_safety"],
        ("vlo", K::Mappa) => &["level", "victim_items"],
        ("mappa_coordinator", K::Nominal) => &["identity", "flags", "notification", "orders"],
        ("dtc_rep", K::Nominal) => &["identity"],
        ("dtc_rep", K::Risk) => &["summary"],
        ("dtc_rep", K::Mappa) => &["level", "minutes_redacted", "own_actions"],
        ("dtc_rep", K::Encompass) if to_me && kind == AgencyKind::ChildrensServices => ENCOMPASS,
        ("dsl" | "smlo", K::Encompass) if to_me => ENCOMPASS,
        ("dsl" | "smlo", K::Disclosure) if to_me => &["content"],
        ("dsl" | "smlo", K::Support) if own => &["referral"],
        ("agency_admin", K::Governance) if own => &["governance"],
        _ => &[],
    }
}

fn shared() -> &'static Policy {
    static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| default_policy(0))
}

fn arb_relation() -> impl Strategy<Value = Relation> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d, e)| Relation {
        authored: a,
        addressed: b,
        case_member: c,
        mappa_panel: d,
        consent_in_scope: e,
    })
}

fn arb_kind() -> impl Strategy<Value = AgencyKind> {
    prop::sample::select(AgencyKind::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_decision_exceeds_the_matrix(
        role_picks in prop::collection::vec(prop::sample::select(ROLES), 1..3),
        kind in arb_kind(),
        governs in any::<bool>(),
        author_kind in arb_kind(),
        same_agency in any::<bool>(),
        event_type in prop::sample::select(EVENT_TYPES),
        rel in arb_relation(),
        tags in prop::collection::vec(prop::sample::select(vec![
            SensitivityTag::VictimLocation, SensitivityTag::Health, SensitivityTag::Child,
        ]), 0..2),
    ) {
        let p = shared();
        let who = AgencyFacts { id: "a-1", kind, governs_policy: governs };
        let author = if same_agency { who } else { AgencyFacts { id: "a-2", kind: author_kind, governs_policy: false } };
        let rel = if same_agency { Relation { authored: true, ..rel } } else { rel };
        let rec = RecordFacts { event_type, kind: record_kind(event_type), author, tags: &tags };
        let r = roles(&role_picks);
        let received = p.receive(&who, &rec, rel);
        prop_assert!(!received.allowed || matrix_receive(kind, rec.kind, rel),
            "{kind:?} received {event_type} as {rel:?} by {:?}", received.policy_ids);
        let seen = p.view(&Actor { agency: who, user: "u-1", roles: &r }, &rec, rel);
        prop_assert!(seen.field_groups.is_empty() || received.allowed, "a view without receive");
        let mut most: BTreeSet<String> = BTreeSet::new();
        for role in &role_picks {
            most.extend(matrix_view(role, kind, rec.kind, rel).iter().map(|g| (*g).to_owned()));
        }
        prop_assert!(seen.field_groups.is_subset(&most),
            "{role_picks:?} at {kind:?} saw {:?} of {event_type} as {rel:?} (at most {most:?}) by {:?}",
            seen.field_groups, seen.policy_ids);
        // A victim's contact details (or anything tagged with her location) never reach a user
        // holding an offender-facing role.
        let victim_location = rec.kind == RecordKind::VictimContact || tags.contains(&SensitivityTag::VictimLocation);
        if victim_location && role_picks.iter().any(|r| OFFENDER_FACING.contains(r)) {
            prop_assert!(seen.field_groups.is_empty(), "{role_picks:?} saw victim contact details");
        }
    }

    #[test]
    fn no_append_outside_the_roles_of_domain_section_2(
        role in prop::sample::select(ROLES),
        kind in arb_kind(),
        governs in any::<bool>(),
        event_type in prop::sample::select(EVENT_TYPES),
        addressees in prop::collection::vec(arb_kind(), 0..3),
    ) {
        let p = shared();
        let who = AgencyFacts { id: "a-1", kind, governs_policy: governs };
        let r = roles(&[role]);
        let d = p.append(&Actor { agency: who, user: "u-1", roles: &r }, &RecordFacts { event_type, kind: record_kind(event_type), author: who, tags: &[] }, &addressees);
        if d.allowed {
            prop_assert!(role_home(role, kind) || role == "agency_admin" || role == "auditor", "{role} at {kind:?} wrote {event_type}");
            prop_assert!(role != "janitor");
            if event_type == "accord.v1.EncompassNotificationSent" {
                prop_assert!(!addressees.is_empty() && addressees.iter().all(|k| matches!(k, AgencyKind::School | AgencyKind::LocalAuthority)));
            }
            if event_type == "accord.v1.SupportReferralMade" {
                prop_assert!(!addressees.is_empty() && addressees.iter().all(|k| *k == AgencyKind::SupportService));
            }
        }
    }
}

/// A policy that fails to evaluate refuses (a skipped forbid must not let a permit through), and
/// the decision names the failure and the failed policy, not the permits that matched.
#[test]
fn a_policy_that_fails_to_evaluate_refuses_and_is_named() {
    let text = format!(
        "{}\n@id(\"broken-forbid\")\nforbid(principal, action, resource) when {{ 9223372036854775807 + 1 > 0 }};\n",
        accord_policy::DEFAULT_POLICIES
    );
    let p = Policy::compile(1, SCHEMA_VERSION, &text, views()).expect("validates: the error is only at evaluation");
    let r = roles(&["offender_manager"]);
    let d = p.append(&Actor { agency: MET, user: "u-1", roles: &r }, &record("accord.v1.NominalRegistered", MET), &[]);
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, vec!["broken-forbid".to_owned(), "evaluation-error".to_owned()]);
    assert!(!d.errors.is_empty());
}
