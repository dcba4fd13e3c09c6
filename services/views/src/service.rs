//! The `Views` gRPC service: each caller's read models, filtered field group by field group
//! through the sharing policy's `view` decision for the calling user.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use accord_auth::{Authenticator, Principal};
use accord_domain::Timestamp;
use accord_ledger::convert::timestamp_pb;
use accord_policy::{Actor, AgencyFacts, Policy, RecordFacts};
use accord_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::projection::{Case, Content, Disclosure, Entry, Item, Model, Rel, State};
use crate::{Error, Projector};

const MAX_LIMIT: u32 = 1000;

/// The Views service.
#[derive(Clone)]
pub struct Views {
    projector: Arc<Projector>,
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
        Self { projector, auth, stopping, limits: DisclosureLimits::default() }
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

    fn authenticate<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let header = req.metadata().get("authorization").map(|v| v.to_str().unwrap_or(""));
        self.auth.authenticate(header).map_err(|e| Status::from(accord_ledger::Error::from(e)))
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

fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
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

impl Viewer<'_> {
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
        let mut fields = std::collections::HashMap::new();
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
                let fields: std::collections::HashMap<String, String> =
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
                let fields: std::collections::HashMap<String, String> = c
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

/// What `principal` would have been answered for `model` just after log `position`, under the
/// sharing policy then in force: the replay the audit service (issue 5) builds on. Not exposed to
/// callers (see `views.proto`). Returns the items and the policy version that decided them.
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
    let version = policy.as_ref().map_or(0, |p| p.version());
    let viewer = Viewer { principal, policy, at, limits };
    Ok((select(&state, &viewer, model, Order::After(None), usize::MAX, |_| true, &|_| true), version))
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<pb::ViewItem, Status>> + Send>>;

#[tonic::async_trait]
impl pb::views_server::Views for Views {
    async fn query(&self, req: Request<pb::QueryViewRequest>) -> Result<Response<pb::QueryViewResponse>, Status> {
        let who = self.authenticate(&req)?;
        let r = req.into_inner();
        let model = model(r.model)?;
        let limit = limit(r.limit)?;
        let shown = case_filter(&r)?;
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
        let sharing = self.projector.sharing();
        let log_size = self.projector.store().log_size().await.map_err(|e| status(e.into()))?;
        let policy = sharing.in_force_at(log_size).await.map_err(|e| status(e.into()))?;
        let viewer = Viewer { principal: &who, policy: policy.clone(), at: now(), limits: self.limits };
        let (items, size) = self
            .projector
            .read(log_size, |state| {
                (select(state, &viewer, model, order, limit, |_| true, &shown), state.next_position)
            })
            .await
            .map_err(status)?;
        tracing::info!(
            agency = %who.agency, user = %who.user, model = model.as_str(), items = items.len(), log_size = size,
            "read model queried"
        );
        Ok(Response::new(pb::QueryViewResponse {
            items,
            log_size: size,
            policy_version: policy.map_or(0, |p| p.version()),
        }))
    }

    type SubscribeStream = ItemStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeViewRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let who = self.authenticate(&req)?;
        let r = req.into_inner();
        let model = model(r.model)?;
        let mut after = r.after_position;
        let limits = self.limits;
        let projector = Arc::clone(&self.projector);
        let mut stopping = self.stopping.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut applied = projector.watch_applied();
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
                let policy = match projector.sharing().in_force_at(next).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(status(e.into()))).await;
                        return;
                    }
                };
                let viewer = Viewer { principal: &who, policy, at: now(), limits };
                let batch = match projector
                    .read(0, |s| {
                        select(s, &viewer, model, Order::After(after), MAX_LIMIT as usize, |_| true, &|_| true)
                    })
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let full = batch.len() >= MAX_LIMIT as usize;
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
        let who = self.authenticate(&req)?;
        let r = req.into_inner();
        let at = match r.at {
            Some(t) => {
                accord_ledger::convert::timestamp("at", Some(t)).map_err(|e| Status::invalid_argument(e.to_string()))?
            }
            None => now(),
        };
        let log_size = self.projector.store().log_size().await.map_err(|e| status(e.into()))?;
        let policy = self.projector.sharing().in_force_at(log_size).await.map_err(|e| status(e.into()))?;
        let viewer = Viewer { principal: &who, policy: policy.clone(), at, limits: self.limits };
        let overdue = |item: &Item| matches!(&item.content, Content::Notification(n) if n.acknowledged.is_none() && n.deadline < at.micros());
        let (items, size) = self
            .projector
            .read(log_size, |state| {
                (
                    select(
                        state,
                        &viewer,
                        Model::NotificationsSent,
                        Order::After(None),
                        MAX_LIMIT as usize,
                        overdue,
                        &|_| true,
                    ),
                    state.next_position,
                )
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::QueryViewResponse {
            items,
            log_size: size,
            policy_version: policy.map_or(0, |p| p.version()),
        }))
    }
}
