//! `accord demo`: seeds a small, anonymised, realistic story through the real gRPC API of a
//! running server (the one README's first command starts) and prints what each user sees — and
//! what they do not. Everything goes through the same calls an agency's system would make: events
//! signed with the agencies' demo keys (`deploy/dev/*.key`), bearer tokens minted with the
//! development issuer key, a stated purpose on every read (so every read is in the access log).
//!
//! The story follows DOMAIN.md §7: a nominal managed at MAPPA level 2 (scenario 1), an Operation
//! Encompass notification to two schools with one escalation (2), a support referral made with
//! consent (4), and an auditor asking who looked at a child's record (5).

use std::collections::BTreeMap;
use std::path::PathBuf;

use accord_auth::DevIssuer;
use accord_client::{AgencyKey, Client, EventDraft};
use accord_proto::v1 as pb;
use anyhow::Context;
use ed25519_dalek::pkcs8::DecodePrivateKey;

/// Where the demo runs and with what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server.
    pub endpoint: String,
    /// The development issuer key the server trusts (`--dev-issuer-key`).
    pub dev_issuer_key: PathBuf,
    /// The token audience.
    pub audience: String,
    /// The folder holding the demo agencies' secret keys.
    pub keys: PathBuf,
}

/// The demo's agencies' signing keys: (agency, key id).
const KEYS: &[(&str, &str)] = &[
    ("met-police", "met-police-demo"),
    ("probation-london", "probation-london-demo"),
    ("london-mappa", "london-mappa-demo"),
    ("st-marys-school", "st-marys-school-demo"),
];

const PURPOSE: &str = "accord demo: walking through the safeguarding scenarios";

struct Demo {
    opts: Options,
    issuer: DevIssuer,
    keys: BTreeMap<&'static str, AgencyKey>,
    out: Vec<String>,
    /// The ids of the notifications, referrals and nominals this run created.
    created: std::collections::BTreeSet<String>,
}

/// Runs the story against `opts.endpoint`; returns the report to print.
pub async fn run(opts: Options) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(&opts.dev_issuer_key).with_context(|| {
        format!(
            "reading the development issuer key {} (start the server with --dev-issuer-key {0} first, \
             and run the demo from the same directory)",
            opts.dev_issuer_key.display()
        )
    })?;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", opts.dev_issuer_key.display()))?;
    let issuer = DevIssuer::new(key)?;
    let mut keys = BTreeMap::new();
    for (agency, key_id) in KEYS {
        let path = opts.keys.join(format!("{key_id}.key"));
        let key = AgencyKey::from_pem_file(&path, key_id).with_context(|| {
            format!("the demo key of {agency} ({}): run from the repository root or pass --keys", path.display())
        })?;
        keys.insert(*agency, key);
    }
    let mut d = Demo { opts, issuer, keys, out: Vec::new(), created: Default::default() };
    d.mappa().await.context("scenario 1 (MAPPA)")?;
    let child = d.encompass().await.context("scenario 2 (Operation Encompass)")?;
    d.referral().await.context("scenario 4 (support referral with consent)")?;
    d.audit(&child).await.context("scenario 5 (an auditor asks who saw the child's record)")?;
    d.say("");
    d.say("Every read above stated its purpose and is in the access log; `accord verify` proves both logs.");
    Ok(d.out.join("\n") + "\n")
}

impl Demo {
    fn say(&mut self, line: impl Into<String>) {
        self.out.push(line.into());
    }

    async fn user(&self, agency: &str, user: &str, role: &str) -> anyhow::Result<Client> {
        let token = self.issuer.mint(&self.opts.audience, agency, user, &[role], 3600)?;
        let c = Client::connect(&self.opts.endpoint, &token)
            .await
            .with_context(|| format!("connecting to {} (is `accord serve` running?)", self.opts.endpoint))?;
        c.set_purpose(Some(PURPOSE))?;
        Ok(c)
    }

    async fn append(&self, c: &mut Client, agency: &str, drafts: Vec<EventDraft>) -> anyhow::Result<Vec<pb::Receipt>> {
        let key = &self.keys[agency];
        let events = drafts.iter().map(|d| d.sign(key)).collect();
        c.append(events).await.with_context(|| format!("appending as {agency}"))
    }

    /// What `who` sees of `model` from this run of the story (items of earlier runs against
    /// the same database are counted, not shown).
    async fn view(&mut self, who: &str, c: &mut Client, model: pb::ReadModel) -> anyhow::Result<Vec<pb::ViewItem>> {
        let req = pb::QueryViewRequest { model: model as i32, newest_first: true, limit: 1000, ..Default::default() };
        let items = c.views().query(req).await?.into_inner().items;
        let (mine, earlier): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| self.mine(i));
        let earlier =
            if earlier.is_empty() { String::new() } else { format!(" (and {} from earlier runs)", earlier.len()) };
        self.say(format!("  {who} — {} item(s) in {}{earlier}", mine.len(), model.as_str_name()));
        for i in &mine {
            let line = describe(i);
            self.say(format!("      {line}"));
        }
        Ok(mine)
    }

    /// Whether a read-model item is about a record this run created.
    fn mine(&self, i: &pb::ViewItem) -> bool {
        use pb::view_item::Content;
        let id = match &i.content {
            Some(Content::Notification(n)) => &n.notification_id,
            Some(Content::Referral(r)) => &r.referral_id,
            Some(Content::MappaCase(m)) => &m.nominal_id,
            Some(Content::Disclosure(d)) => &d.application_id,
            _ => return false,
        };
        self.created.contains(id)
    }

    async fn mappa(&mut self) -> anyhow::Result<()> {
        self.say("1. MAPPA: a registered sex offender managed at level 2, category 1");
        let mut om = self.user("met-police", "om-2093", "offender_manager").await?;
        let mut probation = self.user("probation-london", "pom-118", "probation_om").await?;
        let mut coordinator = self.user("london-mappa", "coord-7", "mappa_coordinator").await?;
        let mut dsl = self.user("st-marys-school", "dsl-mh", "dsl").await?;
        let nominal = uuid::Uuid::now_v7().to_string();
        self.created.insert(nominal.clone());
        let registered = EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::NominalRegistered {
                nominal_id: nominal.clone(),
                visor_ref: "VISOR-DEMO-0412".into(),
                pnc_ref: "09/771234K".into(),
                names: vec!["Nominal A (anonymised)".into()],
                aliases: vec![],
                date_of_birth: "1979-06-14".into(),
                mappa_category: 1,
                lead_agency: "met-police".into(),
                nominal_manager: "om-2093".into(),
                index_offence: "sexual assault of a child under 13".into(),
                notification_period_end: None,
                co_managing_agencies: vec!["probation-london".into()],
            },
        )
        .author("met-police", "om-2093", "offender_manager")
        .legal_basis("DPA2018-s35", "management of a registered sexual offender")
        .subject("nominal", &nominal)
        .no_stream();
        let r = self.append(&mut om, "met-police", vec![registered]).await?;
        self.say(format!("  police register the nominal (log position {})", r[0].position));
        let level = EventDraft::new(
            &format!("nominal-{nominal}"),
            &pb::MappaLevelSet {
                nominal_id: nominal.clone(),
                level: 2,
                decided_by: "coord-7".into(),
                rationale: "active multi-agency management needed: access to children through a new partner".into(),
            },
        )
        .author("london-mappa", "coord-7", "mappa_coordinator")
        .legal_basis("CJA2003-s325", "MAPPA level 2 management")
        .subject("nominal", &nominal);
        let r = self.append(&mut coordinator, "london-mappa", vec![level]).await?;
        self.say(format!("  the MAPPA coordinator sets level 2 (log position {})", r[0].position));
        self.view("MAPPA coordinator coord-7", &mut coordinator, pb::ReadModel::MappaCases).await?;
        self.view("police offender manager om-2093", &mut om, pb::ReadModel::MappaCases).await?;
        self.view("probation officer pom-118", &mut probation, pb::ReadModel::MappaCases).await?;
        let seen = self.view("St Mary's DSL (not on the case)", &mut dsl, pb::ReadModel::MappaCases).await?;
        anyhow::ensure!(seen.is_empty(), "a school must not see a MAPPA case it is not party to");
        self.say("");
        Ok(())
    }

    /// Returns the St Mary's pupil's child id.
    async fn encompass(&mut self) -> anyhow::Result<String> {
        self.say("2. Operation Encompass: police attended a domestic abuse incident on Saturday night; two children, two schools");
        let mut police = self.user("met-police", "do-4411", "disclosure_officer").await?;
        let mut marys = self.user("st-marys-school", "dsl-mh", "dsl").await?;
        let mut johns = self.user("st-johns-school", "dsl-rk", "dsl").await?;
        let now = now_secs();
        let deadline = now + 36 * 3600;
        let mut ids = Vec::new();
        let mut drafts = Vec::new();
        for (school, urn, name, dob, whereabouts) in [
            (
                "st-marys-school",
                "100234",
                "Child A (anonymised)",
                "2017-02-11",
                "asleep upstairs, woken by the shouting",
            ),
            ("st-johns-school", "137022", "Child B (anonymised)", "2012-09-30", "in the kitchen when officers arrived"),
        ] {
            let id = uuid::Uuid::now_v7().to_string();
            let child = uuid::Uuid::now_v7().to_string();
            drafts.push(
                EventDraft::new(
                    &format!("encompass-{id}"),
                    &pb::EncompassNotificationSent {
                        notification_id: id.clone(),
                        incident_ref: "MPS-DA-DEMO-0193".into(),
                        child: Some(pb::EncompassChild {
                            child_id: child.clone(),
                            name: name.into(),
                            date_of_birth: dob.into(),
                            present: true,
                            whereabouts: whereabouts.into(),
                            voice_of_child: "said they were scared and did not want to go to school".into(),
                        }),
                        establishment_urn: urn.into(),
                        local_authority: String::new(),
                        recipient_role: "dsl".into(),
                        incident_summary:
                            "Saturday 23:10, the family home; verbal and physical argument between the adults".into(),
                        circumstances: "One adult arrested; the other adult and the children stayed at the address"
                            .into(),
                        deadline: Some(prost_types::Timestamp { seconds: deadline, nanos: 0 }),
                    },
                )
                .author("met-police", "do-4411", "disclosure_officer")
                .legal_basis("DAA2021-s49A", "Operation Encompass notification")
                .subject("child", &child)
                .addressee(school)
                .no_stream(),
            );
            self.created.insert(id.clone());
            ids.push((id, child));
        }
        let r = self.append(&mut police, "met-police", drafts).await?;
        self.say(format!(
            "  police notify each school's DSL (log positions {} and {}), deadline before school starts",
            r[0].position, r[1].position
        ));
        let seen = self.view("St Mary's DSL dsl-mh", &mut marys, pb::ReadModel::SchoolInbox).await?;
        anyhow::ensure!(
            seen.iter().all(|i| !describe(i).contains("Child B")),
            "St Mary's must not see St John's pupil"
        );
        let seen = self.view("St John's DSL dsl-rk", &mut johns, pb::ReadModel::SchoolInbox).await?;
        anyhow::ensure!(
            seen.iter().all(|i| !describe(i).contains("Child A")),
            "St John's must not see St Mary's pupil"
        );
        let ack = EventDraft::new(
            &format!("encompass-{}", ids[0].0),
            &pb::EncompassNotificationAcknowledged {
                notification_id: ids[0].0.clone(),
                acknowledged_by: "dsl-mh".into(),
            },
        )
        .author("st-marys-school", "dsl-mh", "dsl")
        .legal_basis("DAA2021-s49A", "acknowledge an Operation Encompass notification")
        .subject("agency", "st-marys-school")
        .regime(pb::Regime::UkGdpr);
        self.append(&mut marys, "st-marys-school", vec![ack]).await?;
        self.say("  St Mary's DSL acknowledges; St John's does not");
        let at = prost_types::Timestamp { seconds: deadline + 60, nanos: 0 };
        let esc = police.views().escalations(pb::EscalationsRequest { at: Some(at) }).await?.into_inner().items;
        let esc: Vec<_> = esc.into_iter().filter(|i| self.mine(i)).collect();
        self.say(format!("  police escalations a minute after the deadline: {}", esc.len()));
        for i in &esc {
            let line = describe(i);
            self.say(format!("      {line}"));
        }
        self.say("");
        Ok(ids.swap_remove(0).1)
    }

    async fn referral(&mut self) -> anyhow::Result<()> {
        self.say("4. Sex-work liaison: a woman reports an assault and consents to a referral to an ISVA service");
        let mut swlo = self.user("met-police", "swlo-5", "swlo").await?;
        let mut isva = self.user("solace-isva", "isva-2", "isva").await?;
        let mut other = self.user("safer-streets", "sw-9", "support_worker").await?;
        let person = uuid::Uuid::now_v7().to_string();
        let consent = uuid::Uuid::now_v7().to_string();
        let referral = uuid::Uuid::now_v7().to_string();
        self.created.insert(referral.clone());
        let drafts = vec![
            EventDraft::new(
                &format!("consent-{consent}"),
                &pb::ConsentRecorded {
                    consent_id: consent.clone(),
                    subject_id: person.clone(),
                    data: vec!["contact_details".into(), "needs".into()],
                    recipients: vec!["solace-isva".into()],
                    purposes: vec!["support after a sexual assault".into()],
                    given_by: "the person herself".into(),
                    method: "written".into(),
                    expires_at: None,
                },
            )
            .author("met-police", "swlo-5", "swlo")
            .legal_basis("UKGDPR-6-1-a", "consent to a support referral")
            .subject("person", &person)
            .regime(pb::Regime::UkGdpr)
            .no_stream(),
            EventDraft::new(
                &format!("referral-{referral}"),
                &pb::SupportReferralMade {
                    referral_id: referral.clone(),
                    consent_id: consent.clone(),
                    subject_id: person.clone(),
                    contact_name: "R (first name only)".into(),
                    needs: vec!["ISVA support through the investigation".into(), "sexual health appointment".into()],
                    safe_contact_method: "text only, after 6pm".into(),
                    safe_contact_details: "07700 900461".into(),
                },
            )
            .author("met-police", "swlo-5", "swlo")
            .legal_basis("UKGDPR-6-1-a", "support referral with consent")
            .subject("person", &person)
            .addressee("solace-isva")
            .regime(pb::Regime::UkGdpr)
            .no_stream(),
        ];
        let r = self.append(&mut swlo, "met-police", drafts).await?;
        self.say(format!(
            "  the liaison officer records consent and refers (log positions {} and {})",
            r[0].position, r[1].position
        ));
        self.view("ISVA isva-2 (named in the consent)", &mut isva, pb::ReadModel::ReferralInbox).await?;
        let seen = self.view("Safer Streets (not in the consent)", &mut other, pb::ReadModel::ReferralInbox).await?;
        anyhow::ensure!(seen.is_empty(), "a service outside the consent must see nothing");
        self.say("");
        Ok(())
    }

    async fn audit(&mut self, child: &str) -> anyhow::Result<()> {
        self.say("5. An auditor at the police force asks who looked at Child A's notification, and why");
        let mut auditor = self.user("met-police", "aud-3", "auditor").await?;
        let req = pb::ListAccessesRequest {
            subject: Some(pb::Subject { kind: "child".into(), id: child.into() }),
            ..Default::default()
        };
        let mut lines = Vec::new();
        let n = crate::audit_cli::list(&mut auditor, req, |a| lines.push(crate::audit_cli::describe(a))).await?;
        for l in lines.iter().flat_map(|l| l.lines()) {
            self.say(format!("      {l}"));
        }
        self.say(format!("  {n} recorded access(es) to the child's record; the auditor's own query is recorded too"));
        Ok(())
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// One line about a read-model item: what it is, whose record, what was withheld.
fn describe(i: &pb::ViewItem) -> String {
    use pb::view_item::Content;
    let what = match &i.content {
        Some(Content::Notification(n)) => format!(
            "Encompass notification about {} (URN {}), {}{}",
            n.child.as_ref().map(|c| c.name.as_str()).filter(|s| !s.is_empty()).unwrap_or("[withheld]"),
            n.establishment_urn,
            if n.acknowledged { format!("acknowledged by {}", n.acknowledged_by) } else { "not acknowledged".into() },
            if n.overdue { ", OVERDUE" } else { "" }
        ),
        Some(Content::Referral(r)) => format!(
            "referral from {} for {}: needs {}; contact {}",
            r.from_agency,
            if r.contact_name.is_empty() { "[withheld]" } else { &r.contact_name },
            r.needs.join(", "),
            if r.safe_contact_method.is_empty() { "[withheld]" } else { &r.safe_contact_method }
        ),
        Some(Content::MappaCase(m)) => format!(
            "MAPPA case {}: level {}, category {}, lead {}, panel [{}], {} entries",
            &m.nominal_id[m.nominal_id.len().saturating_sub(8)..],
            m.level,
            m.category,
            m.lead_agency,
            m.panel.join(", "),
            m.entries.len()
        ),
        Some(Content::Disclosure(d)) => {
            format!("disclosure application {} ({}): {}", d.application_id, d.scheme, d.stage)
        }
        Some(Content::Record(r)) => format!("own record {r:?}").chars().take(100).collect(),
        None => "item".to_owned(),
    };
    let withheld = if i.redacted_groups.is_empty() {
        String::new()
    } else {
        format!(" — withheld from this user: {}", i.redacted_groups.join(", "))
    };
    format!("{what} [source {}, position {}]{withheld}", i.source_agency, i.record_position)
}
