//! The `Views` gRPC service: each caller's read models, filtered field group by field group
//! through the sharing policy's `view` decision for the calling user.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use accord_auth::{Authenticator, Principal};
use accord_domain::Timestamp;
use accord_ledger::access::{self, AccessLog, Call, Disclosed, Replayed};
use accord_ledger::convert::timestamp_pb;
use accord_policy::{Actor, AgencyFacts, Policy, RecordFacts};
use accord_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::projection::{Case, Content, Disclosure, Entry, Item, Model, Rel, State};
use crate::{Error, Projector};

const MAX_LIMIT: u32 = 1000;
/// The service name recorded in access records.
const SERVICE: &str = "accord.v1.Views";

/// The Views service.
#[derive(Clone)]
pub struct Views {
    projector: Arc<Projector>,
    access: AccessLog,
    auth: Arc<Authenticator>,
    stopping: tokio::sync::watch::Receiver<bool>,
    limits: DisclosureLimits,
}

impl Views {
    /// The service over `projector`'s read models. Subscriptions end with UNAVAILABLE when
    /// `stopping` turns true.
    pub fn new(
        projector: Arc<Projector>,
        auth: Arc<Authenticator>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let access = AccessLog::new(projector.store().clone());
        Self { projector, access, auth, stopping, limits: DisclosureLimits::default() }
    }

    /// Recording into `access` instead of the store's access log (benchmarks only: see
    /// [`AccessLog::unrecorded_for_benchmarks`]).
    #[doc(hidden)]
    pub fn with_access_log(mut self, access: AccessLog) -> Self {
        self.access = access;
        self
    }

    /// With the disclosure schemes' configurable time limits.
    pub fn with_limits(mut self, limits: DisclosureLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::views_server::ViewsServer<Self> {
        pb::views_server::ViewsServer::new(self)
    }

    /// Authenticates a reader and checks its stated purpose, noting the caller in `call`.
    fn reader<T>(&self, req: &Request<T>, call: &mut Call) -> Result<Principal, Status> {
        let who = accord_ledger::authenticate(&self.auth, req, Some(&mut *call))
            .map_err(|e| Status::from(accord_ledger::Error::from(e)))?;
        call.require_purpose()?;
        Ok(who)
    }

    /// Brings the policy history up to the log's current size (so a read never uses a policy
    /// that has been replaced) and returns that size.
    async fn current_policy(&self) -> Result<u64, Status> {
        let log_size = self.projector.store().log_size().await.map_err(|e| status(e.into()))?;
        self.projector.sharing().in_force_at(log_size).await.map_err(|e| status(e.into()))?;
        Ok(log_size)
    }

    fn viewer<'a>(&self, who: &'a Principal, state: &State, at: Timestamp) -> Viewer<'a> {
        Viewer::of(who, &self.projector, state, at, self.limits)
    }

    /// The projector behind this service.
    pub fn projector(&self) -> &Arc<Projector> {
        &self.projector
    }

    /// The disclosure-scheme time limits the answers are computed with.
    pub fn limits(&self) -> DisclosureLimits {
        self.limits
    }
}

fn status(e: Error) -> Status {
    match e {
        Error::Store(s) => Status::from(accord_ledger::Error::Store(s)),
        Error::Corrupt(m) => {
            tracing::error!(error = %m, "read models unavailable");
            Status::internal("the read models cannot be built; the server logged the cause")
        }
    }
}

fn model(m: i32) -> Result<Model, Status> {
    Ok(match pb::ReadModel::try_from(m) {
        Ok(pb::ReadModel::SchoolInbox) => Model::SchoolInbox,
        Ok(pb::ReadModel::NotificationsSent) => Model::NotificationsSent,
        Ok(pb::ReadModel::ReferralInbox) => Model::ReferralInbox,
        Ok(pb::ReadModel::ReferralsSent) => Model::ReferralsSent,
        Ok(pb::ReadModel::AgencyRecords) => Model::AgencyRecords,
        Ok(pb::ReadModel::MappaCases) => Model::MappaCases,
        Ok(pb::ReadModel::DisclosureRegister) => Model::DisclosureRegister,
        _ => {
            return Err(Status::invalid_argument(format!(
                "model: must be one of READ_MODEL_SCHOOL_INBOX, READ_MODEL_NOTIFICATIONS_SENT, READ_MODEL_REFERRAL_INBOX, READ_MODEL_REFERRALS_SENT, READ_MODEL_AGENCY_RECORDS, READ_MODEL_MAPPA_CASES, READ_MODEL_DISCLOSURE_REGISTER; found {m}"
            )));
        }
    })
}

fn limit(l: u32) -> Result<usize, Status> {
    match l {
        0 => Ok(100),
        1..=MAX_LIMIT => Ok(l as usize),
        _ => Err(Status::invalid_argument(format!("limit: must be 0 to {MAX_LIMIT}, found {l}"))),
    }
}

fn ts(micros: i64) -> Option<prost_types::Timestamp> {
    Some(timestamp_pb(Timestamp(micros)))
}

/// The field groups an item's content has, and the group each correctable field belongs to.
fn groups_of(content: &Content) -> &'static [&'static str] {
    match content {
        Content::Notification(_) => &["notification", "acknowledgement"],
        Content::Referral(_) => &["referral", "safe_contact", "consent"],
        Content::Disclosure(_) => &["application", "checks", "decision", "content", "progress"],
        Content::Record(_) | Content::Case(_) => &[],
    }
}

fn field_group(content: &Content, field: &str) -> &'static str {
    match content {
        Content::Notification(_) => "notification",
        Content::Referral(_) if field.starts_with("safe_contact") => "safe_contact",
        Content::Referral(_) => "referral",
        Content::Record(_) | Content::Case(_) | Content::Disclosure(_) => "",
    }
}

/// Time limits of the disclosure schemes.
#[derive(Debug, Clone, Copy)]
pub struct DisclosureLimits {
    /// Clare's Law: the whole process, in days (28 or 35: guidance differs, so it is set).
    pub dvds_days: u32,
}

impl Default for DisclosureLimits {
    fn default() -> Self {
        Self { dvds_days: 28 }
    }
}

const DAY: i64 = 86_400_000_000;

fn disclosure(
    d: &Disclosure,
    shown: impl Fn(&str) -> bool,
    now: i64,
    limits: DisclosureLimits,
) -> pb::DisclosureApplication {
    let late = |done: Option<i64>, limit: i64| done.unwrap_or(now) - d.received_at > limit;
    let total = match d.scheme.as_str() {
        "csods" => Some(45 * DAY),
        "dvds_right_to_ask" | "dvds_right_to_know" => Some(i64::from(limits.dvds_days) * DAY),
        _ => None,
    };
    let fields = d
        .groups
        .iter()
        .filter(|(g, _)| shown(g))
        .flat_map(|(_, f)| f.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    pb::DisclosureApplication {
        application_id: d.application_id.clone(),
        scheme: d.scheme.clone(),
        stage: d.stage.clone(),
        applicant_status: match d.stage.as_str() {
            "received" => "received",
            "closed" => "complete",
            _ => "in progress",
        }
        .into(),
        received_at: ts(d.received_at),
        checks_completed_at: d.checks_at.and_then(ts),
        verified_at: d.verified_at.and_then(ts),
        decided_at: d.decided_at.and_then(ts),
        closed_at: d.closed_at.and_then(ts),
        immediate_risk: shown("checks") && d.immediate_risk,
        checks_late: late(d.checks_at, DAY),
        verification_late: d.scheme == "csods" && late(d.verified_at, 10 * DAY),
        overdue: total.is_some_and(|t| late(d.closed_at, t)),
        fields,
    }
}

/// What one user may see of the items of one read model.
struct Viewer<'a> {
    principal: &'a Principal,
    policy: Option<Arc<Policy>>,
    at: Timestamp,
    limits: DisclosureLimits,
}

impl<'a> Viewer<'a> {
    /// `who` reading `state`: under the policy in force at the log size the state reflects (an
    /// answer never mixes a state with a policy from another position), at `at`.
    fn of(who: &'a Principal, projector: &Projector, state: &State, at: Timestamp, limits: DisclosureLimits) -> Self {
        Viewer { principal: who, policy: projector.sharing().known_at(state.next_position), at, limits }
    }

    fn policy_version(&self) -> u64 {
        self.policy.as_ref().map_or(0, |p| p.version())
    }

    /// A joint view entry as the user may see it: the field groups of the views the policy lets
    /// the user use on it (an action's `own_actions` only where the user's agency owns it).
    fn render_entry(&self, state: &State, actor: &Actor<'_>, x: &Entry, rel: Rel) -> Option<pb::CaseEntry> {
        let policy = self.policy.as_deref()?;
        let tags = x.sensitivity();
        let author =
            AgencyFacts { id: &x.source_agency, kind: state.agency_kind(&x.source_agency)?, governs_policy: false };
        let record = RecordFacts { event_type: &x.event_type, kind: x.record_kind(), author, tags: &tags };
        let d = policy.view(actor, &record, rel.relation());
        let own = x.section == "action" && x.owner == actor.agency.id;
        let shown =
            |g: &str| d.field_groups.contains(g) || (g == "actions" && own && d.field_groups.contains("own_actions"));
        if !x.groups.keys().any(|g| shown(g)) {
            return None;
        }
        let mut fields = std::collections::BTreeMap::new();
        let mut redacted = Vec::new();
        for (g, f) in &x.groups {
            if shown(g) {
                fields.extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
            } else {
                redacted.push(g.clone());
            }
        }
        let visible_field = |name: &str| {
            let name = name.strip_prefix("changed_fields.").unwrap_or(name);
            x.groups.iter().any(|(g, f)| shown(g) && f.contains_key(name))
        };
        let corrections = x
            .corrections
            .iter()
            .filter_map(|c| {
                let fields: std::collections::BTreeMap<String, String> =
                    c.fields.iter().filter(|(f, _)| visible_field(f)).map(|(f, v)| (f.clone(), v.clone())).collect();
                // The entry's update position still tells the user it changed; what changed and
                // why only where they may see it.
                (!fields.is_empty()).then(|| pb::Correction {
                    position: c.position,
                    event_id: c.event_id.clone(),
                    fields,
                    reason: c.reason.clone(),
                })
            })
            .collect();
        Some(pb::CaseEntry {
            section: x.section.clone(),
            position: x.position,
            updated_position: x.updated,
            event_id: x.event_id.clone(),
            event_type: x.event_type.clone(),
            source_agency: x.source_agency.clone(),
            fields,
            redacted_groups: redacted,
            corrections,
            due: x.due.and_then(ts),
            overdue: x.section == "action" && !x.flag && x.due.is_some_and(|d| d < self.at.micros()),
            late: x.section == "notification" && x.flag,
            completed: x.section == "action" && x.flag,
            views: d.views.clone(),
        })
    }

    fn render_case(&self, state: &State, actor: &Actor<'_>, case: &Case) -> Option<pb::MappaCase> {
        let entries: Vec<pb::CaseEntry> =
            case.entries.iter().filter_map(|(x, rel)| self.render_entry(state, actor, x, *rel)).collect();
        if entries.is_empty() {
            return None;
        }
        let field = |section: &str, name: &str| {
            entries.iter().rev().filter(|e| e.section == section).find_map(|e| e.fields.get(name).cloned())
        };
        let level = entries
            .iter()
            .rev()
            .find(|e| (e.section == "level" || e.section == "meeting") && e.fields.contains_key("level"))
            .and_then(|e| e.fields["level"].parse().ok())
            .unwrap_or(0);
        let mut latest: Vec<pb::CaseEntry> = Vec::new();
        for e in entries.iter().filter(|e| e.section == "risk") {
            let key = (e.source_agency.clone(), e.fields.get("tool").cloned());
            latest.retain(|l| (l.source_agency.clone(), l.fields.get("tool").cloned()) != key);
            latest.push(e.clone());
        }
        Some(pb::MappaCase {
            nominal_id: case.nominal_id.clone(),
            lead_agency: case.lead_agency.clone(),
            panel: case.panel.clone(),
            category: field("identity", "mappa_category").and_then(|c| c.parse().ok()).unwrap_or(0),
            level,
            next_review: field("meeting", "next_review").unwrap_or_default(),
            overdue_actions: entries.iter().filter(|e| e.overdue).count() as u32,
            late_notifications: entries.iter().filter(|e| e.late).count() as u32,
            latest_risks: latest,
            entries,
        })
    }

    /// The item as the user may see it, or `None` when the policy lets the user see none of it.
    fn render(&self, state: &State, id: &str, item: &Item) -> Option<pb::ViewItem> {
        let policy = self.policy.as_deref()?;
        let me = self.principal.agency.as_str();
        let actor = Actor {
            agency: AgencyFacts { id: me, kind: state.agency_kind(me)?, governs_policy: false },
            user: self.principal.user.as_str(),
            roles: &self.principal.roles,
        };
        if let Content::Case(case) = &item.content {
            let case = self.render_case(state, &actor, case)?;
            return Some(pb::ViewItem {
                item_id: id.to_owned(),
                position: item.position,
                record_position: item.record_position,
                source_agency: item.source_agency.clone(),
                event_type: item.event_type.clone(),
                policy_ids: item.receive_policy_ids.clone(),
                content: Some(pb::view_item::Content::MappaCase(case)),
                ..Default::default()
            });
        }
        let author_kind = state.agency_kind(&item.source_agency)?;
        let tags = item.sensitivity();
        let record = RecordFacts {
            event_type: &item.event_type,
            kind: item.record_kind(),
            author: AgencyFacts { id: &item.source_agency, kind: author_kind, governs_policy: false },
            tags: &tags,
        };
        let d = policy.view(&actor, &record, item.rel.relation());
        if !d.allowed() {
            return None;
        }
        let shown = |g: &str| d.field_groups.contains(g);
        let redacted: Vec<String> =
            groups_of(&item.content).iter().filter(|g| !shown(g)).map(|g| (*g).to_owned()).collect();
        let content = match &item.content {
            Content::Notification(n) => {
                let mut out = pb::Notification {
                    notification_id: n.notification_id.clone(),
                    addressee: n.addressee.clone(),
                    sent_at: ts(n.sent_at),
                    deadline: ts(n.deadline),
                    overdue: n.acknowledged.is_none() && n.deadline < self.at.micros(),
                    erased: n.erased,
                    ..Default::default()
                };
                if shown("notification") {
                    out.incident_ref = n.incident_ref.clone();
                    out.child = Some(pb::EncompassChild {
                        child_id: n.child_id.clone(),
                        name: n.child_name.clone(),
                        date_of_birth: n.child_date_of_birth.clone(),
                        present: n.child_present,
                        whereabouts: n.child_whereabouts.clone(),
                        voice_of_child: n.child_voice.clone(),
                    });
                    out.establishment_urn = n.establishment_urn.clone();
                    out.local_authority = n.local_authority.clone();
                    out.recipient_role = n.recipient_role.clone();
                    out.incident_summary = n.incident_summary.clone();
                    out.circumstances = n.circumstances.clone();
                }
                if shown("acknowledgement")
                    && let Some(a) = &n.acknowledged
                {
                    out.acknowledged = true;
                    out.acknowledged_by = a.by.clone();
                    out.acknowledged_at = ts(a.at);
                    out.acknowledgement_position = a.position;
                }
                pb::view_item::Content::Notification(out)
            }
            Content::Referral(r) => {
                let mut out = pb::Referral {
                    referral_id: r.referral_id.clone(),
                    from_agency: r.from_agency.clone(),
                    addressee: r.addressee.clone(),
                    referred_at: ts(r.referred_at),
                    status: r.status.clone(),
                    erased: r.erased,
                    ..Default::default()
                };
                if shown("referral") {
                    out.subject_id = r.subject_id.clone();
                    out.contact_name = r.contact_name.clone();
                    out.needs = r.needs.clone();
                    out.allocated_to = r.allocated_to.clone();
                    out.decline_reason = r.decline_reason.clone();
                }
                if shown("safe_contact") {
                    out.safe_contact_method = r.safe_contact_method.clone();
                    out.safe_contact_details = r.safe_contact_details.clone();
                }
                if shown("consent") {
                    out.consent_id = r.consent_id.clone();
                }
                // That consent was withdrawn is always told: it is why nothing more arrives.
                out.consent_withdrawn = r.consent_withdrawn_at.is_some();
                out.consent_withdrawn_position = r.consent_withdrawn_at.unwrap_or(0);
                pb::view_item::Content::Referral(out)
            }
            Content::Case(_) => return None,
            Content::Disclosure(d) => {
                pb::view_item::Content::Disclosure(disclosure(d, shown, self.at.micros(), self.limits))
            }
            Content::Record(r) => pb::view_item::Content::Record(pb::AgencyRecord {
                event_id: r.event_id.clone(),
                stream: r.stream.clone(),
                occurred_at: ts(r.occurred_at),
                superseded_by: r.superseded_by.clone(),
                erased_by: r.erased_by.clone().unwrap_or_default(),
            }),
        };
        let corrections = item
            .corrections
            .iter()
            .filter_map(|c| {
                if matches!(item.content, Content::Record(_)) {
                    // An agency's own records list their corrections by position only: the values
                    // belong to the corrected record's field groups, shown in its read model.
                    return Some(pb::Correction {
                        position: c.position,
                        event_id: c.event_id.clone(),
                        ..Default::default()
                    });
                }
                let fields: std::collections::BTreeMap<String, String> = c
                    .fields
                    .iter()
                    .filter(|(f, _)| {
                        let g = field_group(&item.content, f);
                        !g.is_empty() && shown(g)
                    })
                    .map(|(f, v)| (f.clone(), v.clone()))
                    .collect();
                // A correction of nothing the user may see is not shown, nor its reason.
                (!fields.is_empty()).then(|| pb::Correction {
                    position: c.position,
                    event_id: c.event_id.clone(),
                    fields,
                    reason: c.reason.clone(),
                })
            })
            .collect();
        let mut policy_ids: BTreeSet<String> = item.receive_policy_ids.iter().cloned().collect();
        policy_ids.extend(d.policy_ids.iter().cloned());
        Some(pb::ViewItem {
            item_id: id.to_owned(),
            position: item.position,
            record_position: item.record_position,
            source_agency: item.source_agency.clone(),
            event_type: item.event_type.clone(),
            views: d.views.clone(),
            redacted_groups: redacted,
            policy_ids: policy_ids.into_iter().collect(),
            corrections,
            content: Some(content),
        })
    }
}

/// Where a query starts and which way it reads.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// Oldest change first, after a position.
    After(Option<u64>),
    /// Newest change first, before a position.
    NewestBefore(Option<u64>),
}

/// The items of `model` the caller's agency holds in `state`, in `order`, as the caller may see
/// them; at most `limit`.
fn select(
    state: &State,
    viewer: &Viewer<'_>,
    model: Model,
    order: Order,
    limit: usize,
    keep: impl Fn(&Item) -> bool,
    shown: &(dyn Fn(&pb::ViewItem) -> bool + Sync),
) -> Vec<pb::ViewItem> {
    let agency = viewer.principal.agency.as_str();
    let items: Box<dyn Iterator<Item = (&str, &Item)>> = match order {
        Order::After(after) => Box::new(state.items(model, agency, after)),
        Order::NewestBefore(before) => Box::new(state.items_newest_first(model, agency, before)),
    };
    let mut out: Vec<pb::ViewItem> = Vec::new();
    for i in items.filter(|(_, item)| keep(item)).filter_map(|(id, item)| viewer.render(state, id, item)) {
        if !shown(&i) {
            continue;
        }
        // A page never ends inside one position's items (one event can change several items of
        // one agency), so resuming after the last position received skips nothing.
        if out.len() >= limit && out.last().is_none_or(|last| last.position != i.position) {
            break;
        }
        out.push(i);
    }
    out
}

/// The caseload filters of a query, on the case as the caller sees it.
fn case_filter(r: &pb::QueryViewRequest) -> Result<impl Fn(&pb::ViewItem) -> bool + Sync + use<>, Status> {
    if !r.next_review_before.is_empty() {
        accord_domain::payload::Date::parse("next_review_before", &r.next_review_before)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let (level, category, overdue, before) =
        (r.mappa_level, r.mappa_category, r.overdue_actions_only, r.next_review_before.clone());
    Ok(move |i: &pb::ViewItem| match &i.content {
        Some(pb::view_item::Content::MappaCase(c)) => {
            level.is_none_or(|l| c.level == l)
                && category.is_none_or(|k| c.category == k)
                && (!overdue || c.overdue_actions > 0)
                && (before.is_empty() || (!c.next_review.is_empty() && c.next_review <= before))
        }
        _ => level.is_none() && category.is_none() && !overdue && before.is_empty(),
    })
}

/// The Query answer to `r` from `state`, as `viewer` may see it.
fn query_answer(state: &State, viewer: &Viewer<'_>, r: &pb::QueryViewRequest) -> Result<pb::QueryViewResponse, Status> {
    let model = model(r.model)?;
    let limit = limit(r.limit)?;
    let shown = case_filter(r)?;
    let order = match (r.newest_first, r.after_position, r.before_position) {
        (false, after, None) => Order::After(after),
        (true, None, before) => Order::NewestBefore(before),
        (false, _, Some(_)) => {
            return Err(Status::invalid_argument("before_position: only with newest_first"));
        }
        (true, Some(_), _) => {
            return Err(Status::invalid_argument(
                "after_position: not with newest_first (page backwards with before_position)",
            ));
        }
    };
    Ok(pb::QueryViewResponse {
        items: select(state, viewer, model, order, limit, |_| true, &shown),
        log_size: state.next_position,
        policy_version: viewer.policy_version(),
    })
}

/// The run of items a subscription sends after `after` from `state`.
fn subscription_batch(state: &State, viewer: &Viewer<'_>, model: Model, after: Option<u64>) -> Vec<pb::ViewItem> {
    select(state, viewer, model, Order::After(after), MAX_LIMIT as usize, |_| true, &|_| true)
}

/// The Escalations answer from `state` at `viewer.at`.
fn escalations_answer(state: &State, viewer: &Viewer<'_>) -> pb::QueryViewResponse {
    let at = viewer.at.micros();
    let overdue =
        |item: &Item| matches!(&item.content, Content::Notification(n) if n.acknowledged.is_none() && n.deadline < at);
    pb::QueryViewResponse {
        items: select(
            state,
            viewer,
            Model::NotificationsSent,
            Order::After(None),
            MAX_LIMIT as usize,
            overdue,
            &|_| true,
        ),
        log_size: state.next_position,
        policy_version: viewer.policy_version(),
    }
}

fn escalation_time(r: &pb::EscalationsRequest, default: Timestamp) -> Result<Timestamp, Status> {
    match r.at {
        Some(t) => {
            accord_ledger::convert::timestamp("at", Some(t)).map_err(|e| Status::invalid_argument(e.to_string()))
        }
        None => Ok(default),
    }
}

/// What an answer of read-model items disclosed, for its access record. Subjects are named as
/// the read models show them: a notification's `child`, a referral's `person`, a MAPPA case's
/// `nominal` (the records touched are listed for every item).
fn disclosed(who: &Principal, model: Model, items: &[pb::ViewItem], log_size: u64, policy_version: u64) -> Disclosed {
    let mut d = Disclosed { log_size, policy_version, ..Default::default() };
    d.action(pb::AccessAction::Consultation);
    if model == Model::MappaCases && !items.is_empty() {
        d.action(pb::AccessAction::Combination);
    }
    for i in items {
        let source = |agency: &str, d: &mut Disclosed| {
            if agency != who.agency.as_str() {
                d.action(pb::AccessAction::Disclosure);
                d.recipient(who.agency.as_str());
            }
        };
        source(&i.source_agency, &mut d);
        d.policies(&i.policy_ids);
        d.records.push(pb::RecordRef {
            position: i.record_position,
            model: model.as_str().to_owned(),
            item_id: i.item_id.clone(),
            source_agency: i.source_agency.clone(),
        });
        match &i.content {
            Some(pb::view_item::Content::Notification(n)) => {
                if let Some(c) = &n.child {
                    d.subject("child", &c.child_id);
                }
            }
            Some(pb::view_item::Content::Referral(r)) => d.subject("person", &r.subject_id),
            Some(pb::view_item::Content::MappaCase(c)) => {
                d.subject("nominal", &c.nominal_id);
                for e in c.entries.iter().chain(&c.latest_risks) {
                    source(&e.source_agency, &mut d);
                    if !d.records.iter().any(|r| r.position == e.position && r.item_id.is_empty()) {
                        d.records.push(pb::RecordRef {
                            position: e.position,
                            source_agency: e.source_agency.clone(),
                            ..Default::default()
                        });
                    }
                }
            }
            Some(pb::view_item::Content::Record(_) | pb::view_item::Content::Disclosure(_)) | None => {}
        }
    }
    d
}

/// What `principal` would have been answered for `model` just after log `position`, under the
/// sharing policy then in force (every item, oldest first). Not exposed to callers (see
/// `views.proto`). Returns the items and the policy version that decided them.
pub async fn answer_as_of(
    projector: &Projector,
    principal: &Principal,
    model: Model,
    position: u64,
    at: Timestamp,
    limits: DisclosureLimits,
) -> Result<(Vec<pb::ViewItem>, u64), Error> {
    let state = projector.as_of(position).await?;
    let policy = projector.sharing().in_force_at(position + 1).await?;
    let viewer = Viewer { principal, policy, at, limits };
    let version = viewer.policy_version();
    Ok((select(&state, &viewer, model, Order::After(None), usize::MAX, |_| true, &|_| true), version))
}

/// An audit replay: the answer a recorded Views call was given, re-built from the log prefix it
/// reflected (`record.log_size`), under the policy version it recorded, for the same caller,
/// request and instant. Returns the response's type name and its digest-ready encoding (for a
/// streamed run, the encodings of its messages).
pub async fn replay(
    projector: &Projector,
    who: &Principal,
    record: &pb::AccessRecord,
    limits: DisclosureLimits,
) -> Result<Replayed, Status> {
    use prost::Message as _;
    let at = accord_ledger::convert::timestamp("at", record.at).map_err(|e| Status::data_loss(e.to_string()))?;
    let state = match record.log_size {
        0 => State::default(),
        n => projector.as_of(n - 1).await.map_err(status)?,
    };
    let policy = match record.policy_version {
        0 => None,
        v => projector.sharing().in_force_at(v + 1).await.map_err(|e| status(e.into()))?,
    };
    if policy.as_ref().map_or(0, |p| p.version()) != record.policy_version {
        return Err(Status::failed_precondition(format!(
            "the access was decided under policy version {}, which the log does not hold as an adoption",
            record.policy_version
        )));
    }
    let in_force = projector.sharing().in_force_at(record.log_size).await.map_err(|e| status(e.into()))?;
    if in_force.as_ref().map_or(0, |p| p.version()) != record.policy_version {
        return Err(Status::failed_precondition(format!(
            "the access recorded policy version {} but the policy in force at log size {} is version {}: the answer was not given under the policy then in force",
            record.policy_version,
            record.log_size,
            in_force.map_or(0, |p| p.version())
        )));
    }
    let limits = match record.dvds_target_days {
        0 => limits,
        days => DisclosureLimits { dvds_days: days },
    };
    let viewer = Viewer { principal: who, policy, at, limits };
    let bad = |e: prost::DecodeError| Status::data_loss(format!("the recorded request does not decode: {e}"));
    Ok(match record.method.as_str() {
        "Query" => {
            let r = pb::QueryViewRequest::decode(record.request.as_slice()).map_err(bad)?;
            Replayed::Unary("accord.v1.QueryViewResponse", query_answer(&state, &viewer, &r)?.encode_to_vec())
        }
        "Escalations" => {
            let r = pb::EscalationsRequest::decode(record.request.as_slice()).map_err(bad)?;
            let viewer = Viewer { at: escalation_time(&r, at)?, ..viewer };
            Replayed::Unary("accord.v1.QueryViewResponse", escalations_answer(&state, &viewer).encode_to_vec())
        }
        "Subscribe" => {
            let r = pb::SubscribeViewRequest::decode(record.request.as_slice()).map_err(bad)?;
            let batch = subscription_batch(&state, &viewer, model(r.model)?, r.after_position);
            Replayed::Stream("accord.v1.ViewItem", batch.iter().map(|i| i.encode_to_vec()).collect())
        }
        m => return Err(Status::unimplemented(format!("replay of accord.v1.Views/{m} is not supported"))),
    })
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<pb::ViewItem, Status>> + Send>>;

#[tonic::async_trait]
impl pb::views_server::Views for Views {
    async fn query(&self, req: Request<pb::QueryViewRequest>) -> Result<Response<pb::QueryViewResponse>, Status> {
        let mut call = Call::start(&req, SERVICE, "Query", prost::Message::encode_to_vec(req.get_ref()));
        let outcome = async {
            let who = self.reader(&req, &mut call)?;
            let r = req.into_inner();
            let model = model(r.model)?;
            let log_size = self.current_policy().await?;
            let answer = self
                .projector
                .read(log_size, |state| query_answer(state, &self.viewer(&who, state, call.at()), &r))
                .await
                .map_err(status)??;
            tracing::info!(
                agency = %who.agency, user = %who.user, model = model.as_str(), items = answer.items.len(),
                log_size = answer.log_size, "read model queried"
            );
            let mut d = disclosed(&who, model, &answer.items, answer.log_size, answer.policy_version);
            d.dvds_target_days = self.limits.dvds_days;
            Ok((answer, d))
        }
        .await;
        self.access.finish(&call, outcome).await
    }

    type SubscribeStream = ItemStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeViewRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut call = Call::start(&req, SERVICE, "Subscribe", prost::Message::encode_to_vec(req.get_ref()));
        let (who, model) = match self.reader(&req, &mut call).and_then(|w| Ok((w, model(req.get_ref().model)?))) {
            Ok(x) => x,
            Err(s) => return Err(self.access.denied(&call, s).await),
        };
        let r = req.into_inner();
        let mut after = r.after_position;
        let limits = self.limits;
        let projector = Arc::clone(&self.projector);
        let access = self.access.clone();
        let mut stopping = self.stopping.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut applied = projector.watch_applied();
            let mut sent = 0u64;
            loop {
                if *stopping.borrow() {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the server is shutting down; resubscribe after the last position received",
                        )))
                        .await;
                    return;
                }
                let next = *applied.borrow_and_update();
                if let Err(e) = projector.sharing().in_force_at(next).await {
                    let _ = tx.send(Err(status(e.into()))).await;
                    return;
                }
                // The request this run of items answers: the subscription resumed after `after`.
                let run = call.with_request(prost::Message::encode_to_vec(&pb::SubscribeViewRequest {
                    model: r.model,
                    after_position: after,
                }));
                let answer = projector.read(0, |s| {
                    let viewer = Viewer::of(&who, &projector, s, run.at(), limits);
                    (subscription_batch(s, &viewer, model, after), s.next_position, viewer.policy_version())
                });
                let (batch, size, version) = match answer.await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let full = batch.len() >= MAX_LIMIT as usize;
                if !batch.is_empty() {
                    // One access record per run, written before the run leaves the server.
                    let mut d = disclosed(&who, model, &batch, size, version);
                    d.stream_index = sent;
                    d.dvds_target_days = limits.dvds_days;
                    if let Err(s) = access.granted(&run, d, access::stream_digest(&batch)).await {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                    sent += batch.len() as u64;
                }
                for item in batch {
                    after = Some(item.position);
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stopping.changed() => {}
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn escalations(
        &self,
        req: Request<pb::EscalationsRequest>,
    ) -> Result<Response<pb::QueryViewResponse>, Status> {
        let mut call = Call::start(&req, SERVICE, "Escalations", prost::Message::encode_to_vec(req.get_ref()));
        let outcome = async {
            let who = self.reader(&req, &mut call)?;
            let at = escalation_time(req.get_ref(), call.at())?;
            let log_size = self.current_policy().await?;
            let answer = self
                .projector
                .read(log_size, |state| escalations_answer(state, &self.viewer(&who, state, at)))
                .await
                .map_err(status)?;
            let mut d =
                disclosed(&who, Model::NotificationsSent, &answer.items, answer.log_size, answer.policy_version);
            d.dvds_target_days = self.limits.dvds_days;
            Ok((answer, d))
        }
        .await;
        self.access.finish(&call, outcome).await
    }
}
