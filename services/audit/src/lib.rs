//! The `accord.v1.Audit` gRPC service (DESIGN.md §6): auditors ask the access log who accessed a
//! subject or a record, what a user or an agency accessed, which attempts were denied, and replay
//! any recorded access to prove what was shown. Only principals holding the `auditor` role may
//! call it, and every call — granted or denied — is itself recorded in the access log.

use std::pin::Pin;
use std::sync::Arc;

use accord_auth::{Authenticator, Principal};
use accord_domain::{AgencyId, Role, UserId};
use accord_ledger::access::{self, AccessLog, Call, Disclosed};
use accord_proto::v1 as pb;
use accord_store::{AccessFilter, RecordedAccess, Store};
use accord_views::{DisclosureLimits, Projector, Replayed};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The service name recorded in access records.
const SERVICE: &str = "accord.v1.Audit";
/// The role that may read the access log.
pub const AUDITOR_ROLE: &str = "auditor";
/// Access records fetched (and recorded as one run) per page of a listing.
const PAGE: u32 = 500;

/// The Audit service.
#[derive(Clone)]
pub struct Audit {
    store: Store,
    access: AccessLog,
    auth: Arc<Authenticator>,
    projector: Arc<Projector>,
    limits: DisclosureLimits,
}

fn store_status(e: accord_store::Error) -> Status {
    Status::from(accord_ledger::Error::Store(e))
}

impl Audit {
    /// The service over `projector`'s log (for replays), authenticating with `auth`; `limits`
    /// are the Views service's, so a replay computes what it computed.
    pub fn new(projector: Arc<Projector>, auth: Arc<Authenticator>, limits: DisclosureLimits) -> Self {
        let store = projector.store().clone();
        Self { access: AccessLog::new(store.clone()), store, auth, projector, limits }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::audit_server::AuditServer<Self> {
        pb::audit_server::AuditServer::new(self)
    }

    /// Authenticates an auditor and checks the stated purpose, noting the caller in `call`.
    fn auditor<T>(&self, req: &Request<T>, call: &mut Call) -> Result<Principal, Status> {
        let who = accord_ledger::authenticate(&self.auth, req, Some(&mut *call))
            .map_err(|e| Status::from(accord_ledger::Error::from(e)))?;
        let auditor = Role::parse(AUDITOR_ROLE.to_owned()).expect("a valid role name");
        if !who.has_role(&auditor) {
            return Err(Status::permission_denied(format!(
                "the access log is for auditors only: user {} of agency {} does not hold the `{AUDITOR_ROLE}` role",
                who.user, who.agency
            )));
        }
        call.require_purpose()?;
        Ok(who)
    }

    /// The access record `id`, if `auditor`'s agency is party to it (NOT_FOUND otherwise, as
    /// for an unknown id: an auditor learns nothing of other agencies' accesses).
    async fn by_id(&self, auditor: &Principal, id: &str) -> Result<pb::AccessEntry, Status> {
        let uuid = uuid::Uuid::parse_str(id)
            .map_err(|_| Status::invalid_argument(format!("access_id: not a UUID: {id:?}")))?;
        let not_found = || Status::not_found(format!("no access record {id} that your agency is party to"));
        let found =
            entry(self.store.access_by_id(uuid.as_bytes()).await.map_err(store_status)?.ok_or_else(not_found)?)?;
        let party = access::party_key(auditor.agency.as_str());
        let record = found.record.as_ref().ok_or_else(not_found)?;
        if !access::entry(record).items.contains(&party) {
            return Err(not_found());
        }
        Ok(found)
    }
}

impl Audit {
    /// Whether `id` names an access investigation that `auditor`'s agency opened into `user` and
    /// has not closed (`Ok(Err(why))` when not).
    async fn investigation(
        &self,
        auditor: &Principal,
        user: &Principal,
        id: &str,
    ) -> Result<Result<(), String>, Status> {
        use accord_domain::payload::Payload;
        if id.is_empty() {
            return Ok(Err("content is shown only within an open access investigation: give investigation_id".into()));
        }
        let agency = auditor.agency.as_str().to_owned();
        // Everything recorded so far, the auditor's own latest events included.
        let size = self.store.log_size().await.map_err(store_status)?;
        let positions = self
            .projector
            .read(size, |s| {
                s.items(accord_views::Model::AgencyRecords, &agency, None)
                    .filter(|(_, i)| i.event_type.starts_with("accord.v1.AccessInvestigation"))
                    .map(|(_, i)| i.record_position)
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (mut opened, mut closed) = (None, false);
        for p in positions {
            let e = self.store.event_at(p).await.map_err(store_status)?;
            let body =
                accord_ledger::convert::event_body("body", &e.body).map_err(|e| Status::data_loss(e.to_string()))?;
            match accord_ledger::convert::payload("body", &body).map_err(|e| Status::data_loss(e.to_string()))? {
                Payload::AccessInvestigationOpened(o) if o.investigation_id == id => opened = Some(o.user_investigated),
                Payload::AccessInvestigationClosed(c) if c.investigation_id == id => closed = true,
                _ => {}
            }
        }
        let full = format!("{}/{}", user.agency, user.user);
        Ok(match opened {
            None => Err(format!("your agency has opened no access investigation {id}")),
            Some(_) if closed => Err(format!("access investigation {id} is closed")),
            Some(u) if u == full || u == user.user.as_str() => Ok(()),
            Some(u) => Err(format!("access investigation {id} concerns {u}, not {full}")),
        })
    }
}

impl Audit {
    /// An audit replay of an auditor's own query: the same request, by the same auditor, over the
    /// access log as it stood then (it is immutable below that size).
    async fn replay_own(&self, who: &Principal, record: &pb::AccessRecord) -> Result<Replayed, Status> {
        let bad = |e: prost::DecodeError| Status::data_loss(format!("the recorded request does not decode: {e}"));
        match record.method.as_str() {
            "ListAccesses" => {
                let r = pb::ListAccessesRequest::decode(record.request.as_slice()).map_err(bad)?;
                let mut f = filter(who, &r)?;
                f.limit = u32::try_from(r.limit).unwrap_or(PAGE);
                let mut page = self.store.accesses(&f).await.map_err(store_status)?;
                page.retain(|a| a.position < record.log_size);
                let entries = page.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?;
                Ok(Replayed::Stream("accord.v1.AccessEntry", entries.iter().map(Message::encode_to_vec).collect()))
            }
            "GetAccess" => {
                let r = pb::GetAccessRequest::decode(record.request.as_slice()).map_err(bad)?;
                let found = self.by_id(who, &r.access_id).await?;
                Ok(Replayed::Unary("accord.v1.AccessEntry", found.encode_to_vec()))
            }
            m => Err(Status::unimplemented(format!(
                "replay of {SERVICE}/{m} is not supported: it replays another access, which can be replayed itself"
            ))),
        }
    }
}

/// The wire form of a stored access record. A record that does not decode is reported as data
/// loss: the log holds it, but the server cannot read it.
fn entry(a: RecordedAccess) -> Result<pb::AccessEntry, Status> {
    let record = pb::AccessRecord::decode(a.record.as_slice())
        .map_err(|e| Status::data_loss(format!("access record at position {} does not decode: {e}", a.position)))?;
    Ok(pb::AccessEntry {
        access_position: a.position,
        record: Some(record),
        record_bytes: a.record,
        leaf_hash: a.leaf_hash.0.to_vec(),
    })
}

/// What an auditor's answer disclosed: the access records returned (as items of the access log)
/// and the subjects and records they name.
fn audited(entries: &[pb::AccessEntry], log_size: u64) -> Disclosed {
    let mut d = Disclosed { log_size, ..Default::default() };
    d.action(pb::AccessAction::Consultation);
    for e in entries {
        let Some(r) = &e.record else { continue };
        d.records.push(pb::RecordRef {
            position: e.access_position,
            model: access::ACCESS_LOG_MODEL.to_owned(),
            item_id: r.access_id.clone(),
            source_agency: String::new(),
        });
        for s in &r.subjects {
            d.subject(&s.kind, &s.id);
        }
    }
    d
}

fn time(field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<accord_domain::Timestamp>, Status> {
    t.map(|t| accord_ledger::convert::timestamp(field, Some(t)).map_err(|e| Status::invalid_argument(e.to_string())))
        .transpose()
}

/// The store filter of a listing request by an auditor of `auditor`'s agency.
fn filter(auditor: &Principal, r: &pb::ListAccessesRequest) -> Result<AccessFilter, Status> {
    let item = r.record_position.map(access::position_key);
    let subject = match &r.subject {
        Some(s) if s.kind.is_empty() || s.id.is_empty() => {
            return Err(Status::invalid_argument("subject: needs both kind and id (for example `child`, `c-123`)"));
        }
        Some(s) => Some(access::subject_key(&s.kind, &s.id)),
        None => None,
    };
    if !r.user.is_empty() && r.agency.is_empty() {
        return Err(Status::invalid_argument("agency: required with user (user ids are per agency)"));
    }
    let (from, to) = (time("from", r.from)?, time("to", r.to)?);
    if let (Some(f), Some(t)) = (from, to)
        && t <= f
    {
        return Err(Status::invalid_argument("to: must be after from"));
    }
    Ok(AccessFilter {
        party: Some(access::party_key(auditor.agency.as_str())),
        agency: (!r.agency.is_empty()).then(|| r.agency.clone()),
        user: (!r.user.is_empty()).then(|| r.user.clone()),
        subject,
        item,
        denied_only: r.denied_only,
        from,
        to,
        after_position: r.after_access_position,
        limit: PAGE,
    })
}

/// The caller an access record names, to replay the access as them.
fn principal(record: &pb::AccessRecord) -> Result<Principal, Status> {
    let who = record.who.as_ref().ok_or_else(|| {
        Status::failed_precondition(
            "the access was refused before its caller was authenticated: there is no answer to replay",
        )
    })?;
    let bad = |e: accord_domain::Error| Status::data_loss(format!("the recorded caller is malformed: {e}"));
    Ok(Principal {
        agency: AgencyId::parse(who.agency.clone()).map_err(bad)?,
        user: UserId::parse(who.user.clone()).map_err(bad)?,
        roles: who.roles.iter().map(|r| Role::parse(r.clone())).collect::<Result<_, _>>().map_err(bad)?,
        token_id: (!who.token_id.is_empty()).then(|| who.token_id.clone()),
        issuer: who.issuer.clone(),
    })
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::AccessEntry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_server::Audit for Audit {
    type ListAccessesStream = EntryStream;

    async fn list_accesses(
        &self,
        req: Request<pb::ListAccessesRequest>,
    ) -> Result<Response<Self::ListAccessesStream>, Status> {
        let mut call = Call::start(&req, SERVICE, "ListAccesses", req.get_ref().encode_to_vec());
        let checked = self.auditor(&req, &mut call).and_then(|who| filter(&who, req.get_ref()));
        let mut filter = match checked {
            Ok(f) => f,
            Err(s) => return Err(self.access.denied(&call, s).await),
        };
        let limit = req.get_ref().limit;
        // The listing ends at the access log's size when it was asked for: its own records (and
        // everyone else's reads meanwhile) do not keep it going.
        let end = match self.store.access_log_size().await {
            Ok(n) => n,
            Err(e) => return Err(self.access.denied(&call, store_status(e)).await),
        };
        let (store, access) = (self.store.clone(), self.access.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                if limit > 0 {
                    filter.limit = u32::try_from((limit - sent).min(u64::from(PAGE))).unwrap_or(PAGE);
                }
                let page = match store.accesses(&filter).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                };
                let mut more = page.len() as u32 == filter.limit;
                let page: Vec<_> = page.into_iter().filter(|a| a.position < end).collect();
                more &= page.last().is_some_and(|a| a.position + 1 < end);
                let entries = match page.into_iter().map(entry).collect::<Result<Vec<_>, _>>() {
                    Ok(e) => e,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                // The auditor's own reading is recorded, page by page, before each page is sent
                // (the first page even when nothing matched).
                if !entries.is_empty() || sent == 0 {
                    // The request this page answers: resumed after the last record sent, at
                    // most the page's size, over the log as it stood at `end`.
                    let run = call.with_request(
                        pb::ListAccessesRequest {
                            after_access_position: filter.after_position,
                            limit: u64::from(filter.limit),
                            ..req.get_ref().clone()
                        }
                        .encode_to_vec(),
                    );
                    let mut d = audited(&entries, end);
                    d.stream_index = sent;
                    if let Err(s) = access.granted(&run, d, access::stream_digest(&entries)).await {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                }
                for e in entries {
                    filter.after_position = Some(e.access_position);
                    sent += 1;
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if !more || (limit > 0 && sent >= limit) {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_access(&self, req: Request<pb::GetAccessRequest>) -> Result<Response<pb::AccessEntry>, Status> {
        let mut call = Call::start(&req, SERVICE, "GetAccess", req.get_ref().encode_to_vec());
        let outcome = async {
            let auditor = self.auditor(&req, &mut call)?;
            let found = self.by_id(&auditor, &req.get_ref().access_id).await?;
            let size = self.store.access_log_size().await.map_err(store_status)?;
            let d = audited(std::slice::from_ref(&found), size);
            Ok((found, d))
        }
        .await;
        self.access.finish(&call, outcome).await
    }

    async fn replay_access(
        &self,
        req: Request<pb::ReplayAccessRequest>,
    ) -> Result<Response<pb::ReplayAccessResponse>, Status> {
        let mut call = Call::start(&req, SERVICE, "ReplayAccess", req.get_ref().encode_to_vec());
        let outcome = async {
            let auditor = self.auditor(&req, &mut call)?;
            let found = self.by_id(&auditor, &req.get_ref().access_id).await?;
            let record = found.record.clone().unwrap_or_default();
            if record.outcome != pb::AccessOutcome::Granted as i32 {
                return Err(Status::failed_precondition(format!(
                    "access {} was denied ({}): nothing was shown, so there is nothing to replay",
                    record.access_id, record.denial_code
                )));
            }
            let who = principal(&record)?;
            let replayed = match record.service.as_str() {
                "accord.v1.Views" => accord_views::replay(&self.projector, &who, &record, self.limits).await?,
                "accord.v1.Ledger" => accord_ledger::replay(&self.store, &who, &record).await?,
                SERVICE => self.replay_own(&who, &record).await?,
                s => {
                    return Err(Status::unimplemented(format!(
                        "replay of {s}/{} is not supported: the records it returned are listed in the access record ({} of them) and are immutable in the event log",
                        record.method,
                        record.records.len()
                    )));
                }
            };
            let (response_type, response) = match replayed {
                Replayed::Unary(t, bytes) => (t, bytes),
                Replayed::Stream(t, messages) => (t, access::framed(messages)),
            };
            let digest: [u8; 32] = Sha256::digest(&response).into();
            let size = self.store.access_log_size().await.map_err(store_status)?;
            let mut d = audited(std::slice::from_ref(&found), size);
            // The content is what the caller's agency was shown: its own auditors see it (and the
            // replay records that they did); another party's auditor gets the proof only.
            let own = record.who.as_ref().is_some_and(|w| w.agency == auditor.agency.as_str());
            let matches = digest.as_slice() == record.response_sha256.as_slice();
            let withheld = if !matches {
                "the re-built answer differs from the one recorded".to_owned()
            } else if !own {
                format!("the answer was given to another agency ({}), not yours", who.agency)
            } else {
                match self.investigation(&auditor, &who, &req.get_ref().investigation_id).await? {
                    Ok(()) => String::new(),
                    Err(why) => why,
                }
            };
            let response = if withheld.is_empty() {
                d.records.extend(record.records.iter().cloned());
                response
            } else {
                Vec::new()
            };
            let answer = pb::ReplayAccessResponse {
                digest_matches: matches,
                access: Some(found),
                response_type: response_type.to_owned(),
                response,
                response_sha256: digest.to_vec(),
                withheld,
            };
            Ok((answer, d))
        }
        .await;
        self.access.finish(&call, outcome).await
    }
}
