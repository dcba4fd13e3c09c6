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

use crate::projection::{Content, Item, Model, State};
use crate::{Error, Projector};

const MAX_LIMIT: u32 = 1000;

/// The Views service.
#[derive(Clone)]
pub struct Views {
    projector: Arc<Projector>,
    auth: Arc<Authenticator>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Views {
    /// The service over `projector`'s read models. Subscriptions end with UNAVAILABLE when
    /// `stopping` turns true.
    pub fn new(
        projector: Arc<Projector>,
        auth: Arc<Authenticator>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self { projector, auth, stopping }
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
        _ => {
            return Err(Status::invalid_argument(format!(
                "model: must be one of READ_MODEL_SCHOOL_INBOX, READ_MODEL_NOTIFICATIONS_SENT, READ_MODEL_REFERRAL_INBOX, READ_MODEL_REFERRALS_SENT, READ_MODEL_AGENCY_RECORDS; found {m}"
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
        Content::Record(_) => &[],
    }
}

fn field_group(content: &Content, field: &str) -> &'static str {
    match content {
        Content::Notification(_) => "notification",
        Content::Referral(_) if field.starts_with("safe_contact") => "safe_contact",
        Content::Referral(_) => "referral",
        Content::Record(_) => "",
    }
}

/// What one user may see of the items of one read model.
struct Viewer<'a> {
    principal: &'a Principal,
    policy: Option<Arc<Policy>>,
    at: Timestamp,
}

impl Viewer<'_> {
    /// The item as the user may see it, or `None` when the policy lets the user see none of it.
    fn render(&self, state: &State, id: &str, item: &Item) -> Option<pb::ViewItem> {
        let policy = self.policy.as_deref()?;
        let me = self.principal.agency.as_str();
        let actor = Actor {
            agency: AgencyFacts { id: me, kind: state.agency_kind(me)?, governs_policy: false },
            user: self.principal.user.as_str(),
            roles: &self.principal.roles,
        };
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
            Content::Record(r) => pb::view_item::Content::Record(pb::AgencyRecord {
                event_id: r.event_id.clone(),
                stream: r.stream.clone(),
                occurred_at: ts(r.occurred_at),
                superseded_by: r.superseded_by.clone(),
            }),
        };
        let corrections = item
            .corrections
            .iter()
            .map(|c| pb::Correction {
                position: c.position,
                event_id: c.event_id.clone(),
                fields: c
                    .fields
                    .iter()
                    .filter(|(f, _)| {
                        let g = field_group(&item.content, f);
                        g.is_empty() || shown(g)
                    })
                    .map(|(f, v)| (f.clone(), v.clone()))
                    .collect(),
                reason: c.reason.clone(),
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

/// The items of `model` the caller's agency holds in `state`, changed after `after`, as the
/// caller may see them; at most `limit`.
fn select(
    state: &State,
    viewer: &Viewer<'_>,
    model: Model,
    after: Option<u64>,
    limit: usize,
    keep: impl Fn(&Item) -> bool,
) -> Vec<pb::ViewItem> {
    state
        .items(model, viewer.principal.agency.as_str(), after)
        .filter(|(_, item)| keep(item))
        .filter_map(|(id, item)| viewer.render(state, id, item))
        .take(limit)
        .collect()
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<pb::ViewItem, Status>> + Send>>;

#[tonic::async_trait]
impl pb::views_server::Views for Views {
    async fn query(&self, req: Request<pb::QueryViewRequest>) -> Result<Response<pb::QueryViewResponse>, Status> {
        let who = self.authenticate(&req)?;
        let r = req.into_inner();
        let model = model(r.model)?;
        let limit = limit(r.limit)?;
        let sharing = self.projector.sharing();
        let log_size = self.projector.store().log_size().await.map_err(|e| status(e.into()))?;
        let (items, size, policy) = match r.as_of_position {
            Some(p) if p >= log_size => {
                return Err(Status::out_of_range(format!(
                    "as_of_position: must be below the log size {log_size}, found {p}"
                )));
            }
            Some(p) => {
                let state = self.projector.as_of(p).await.map_err(status)?;
                let policy = sharing.in_force_at(p + 1).await.map_err(|e| status(e.into()))?;
                let viewer = Viewer { principal: &who, policy: policy.clone(), at: now() };
                (select(&state, &viewer, model, r.after_position, limit, |_| true), p + 1, policy)
            }
            None => {
                let policy = sharing.in_force_at(log_size).await.map_err(|e| status(e.into()))?;
                let viewer = Viewer { principal: &who, policy: policy.clone(), at: now() };
                self.projector
                    .read(log_size, |state| {
                        (
                            select(state, &viewer, model, r.after_position, limit, |_| true),
                            state.next_position,
                            policy.clone(),
                        )
                    })
                    .await
                    .map_err(status)?
            }
        };
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
                let viewer = Viewer { principal: &who, policy, at: now() };
                let batch =
                    match projector.read(0, |s| select(s, &viewer, model, after, MAX_LIMIT as usize, |_| true)).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    };
                let full = batch.len() == MAX_LIMIT as usize;
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
        let viewer = Viewer { principal: &who, policy: policy.clone(), at };
        let overdue = |item: &Item| matches!(&item.content, Content::Notification(n) if n.acknowledged.is_none() && n.deadline < at.micros());
        let (items, size) = self
            .projector
            .read(log_size, |state| {
                (
                    select(state, &viewer, Model::NotificationsSent, None, MAX_LIMIT as usize, overdue),
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
