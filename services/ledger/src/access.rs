//! The access log's recorder (DPA 2018 s.62; DESIGN.md §6): one [`pb::AccessRecord`] per gRPC
//! call that touches personal data, granted or denied, written through the store's access-log
//! writer (group commit) before the answer leaves the server.
//!
//! Every service that serves personal data follows the same shape: [`Call::start`] when the
//! request arrives (metadata, caller address, purpose, the request bytes for a replay), then
//! [`AccessLog::granted`] with what the answer disclosed and the answer itself — which fails the
//! call, returning no data, when the record cannot be written (fail closed) — or
//! [`AccessLog::denied`] with the refusal.

use accord_auth::Principal;
use accord_domain::{EventId, Timestamp};
use accord_proto::v1 as pb;
use accord_store::{AccessEntry, Store};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::convert::timestamp_pb;

/// The metadata key of the purpose a reader states (required on reads).
pub const PURPOSE_HEADER: &str = "accord-purpose";
/// The metadata key of the legal basis a reader states (optional).
pub const LEGAL_BASIS_HEADER: &str = "accord-legal-basis";
/// The metadata key of the client's request id (optional).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
const PURPOSE_MIN: usize = 3;
const PURPOSE_MAX: usize = 1000;
const LEGAL_BASIS_MAX: usize = 100;
const REQUEST_ID_MAX: usize = 200;

/// What the server knows about a call before answering it.
#[derive(Debug, Clone)]
pub struct Call {
    service: &'static str,
    method: &'static str,
    at: Timestamp,
    purpose: Result<String, String>,
    legal_basis: Result<String, String>,
    request_id: String,
    trace_id: String,
    client_address: String,
    client_certificate: String,
    request: Vec<u8>,
    who: Option<Principal>,
}

/// The RFC 8705 thumbprint of the client certificate `req`'s connection presented over mutual
/// TLS (the first peer certificate is the client's own).
pub fn client_certificate<T>(req: &Request<T>) -> Option<String> {
    req.peer_certs().and_then(|c| c.first().map(|c| accord_auth::certificate_thumbprint(c)))
}

fn header<T>(req: &Request<T>, key: &str) -> Option<Result<String, ()>> {
    req.metadata().get(key).map(|v| v.to_str().map(|s| s.trim().to_owned()).map_err(|_| ()))
}

/// The OpenTelemetry trace id of the current span, as 32 lower-case hex digits; `None` when no
/// OpenTelemetry layer records the span. (With a ratio sampler a trace may be named that was
/// not exported.)
fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
}

impl Call {
    /// The call `req` to `service`/`method`, arriving now. `request` is the request message as
    /// received when the call is a read that an auditor may replay (empty for writes).
    pub fn start<T>(req: &Request<T>, service: &'static str, method: &'static str, request: Vec<u8>) -> Call {
        let purpose = match header(req, PURPOSE_HEADER) {
            None => Err(format!(
                "{PURPOSE_HEADER} metadata: every read must state its purpose (why you need this data, \
                 {PURPOSE_MIN} to {PURPOSE_MAX} printable ASCII characters); it is recorded in the access log"
            )),
            Some(Err(())) => Err(format!("{PURPOSE_HEADER} metadata: must be printable ASCII")),
            Some(Ok(p)) if p.len() < PURPOSE_MIN || p.len() > PURPOSE_MAX || !printable(&p) => Err(format!(
                "{PURPOSE_HEADER} metadata: must be {PURPOSE_MIN} to {PURPOSE_MAX} printable ASCII characters, found {} characters",
                p.len()
            )),
            Some(Ok(p)) => Ok(p),
        };
        let legal_basis = match header(req, LEGAL_BASIS_HEADER) {
            None => Ok(String::new()),
            Some(Ok(b)) if b.len() <= LEGAL_BASIS_MAX && printable(&b) => Ok(b),
            Some(_) => {
                Err(format!("{LEGAL_BASIS_HEADER} metadata: at most {LEGAL_BASIS_MAX} printable ASCII characters"))
            }
        };
        let request_id = match header(req, REQUEST_ID_HEADER) {
            Some(Ok(id)) if !id.is_empty() && id.len() <= REQUEST_ID_MAX && printable(&id) => id,
            _ => EventId::new().to_string(),
        };
        // The RPC's span (telemetry's `rpc_span`) carries the same id as the access record.
        tracing::Span::current().record("request_id", request_id.as_str());
        // The trace the RPC's span belongs to when traces are exported (the caller's when it
        // sent a `traceparent`, else the one the server started); otherwise the caller's W3C
        // trace context, `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, if any.
        let trace_id = current_trace_id().unwrap_or_else(|| match header(req, "traceparent") {
            Some(Ok(t)) => t
                .split('-')
                .nth(1)
                .filter(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase)
                .unwrap_or_default(),
            _ => String::new(),
        });
        Call {
            service,
            method,
            at: Timestamp::now(),
            purpose,
            legal_basis,
            request_id,
            trace_id,
            client_address: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
            client_certificate: client_certificate(req).unwrap_or_default(),
            request,
            who: None,
        }
    }

    /// When the call arrived: the instant a read model's answer is computed for (deadlines,
    /// overdue flags), recorded so a replay computes the same answer.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// The thumbprint of the client certificate the call's connection presented, if any.
    pub fn client_certificate(&self) -> Option<&str> {
        Some(self.client_certificate.as_str()).filter(|c| !c.is_empty())
    }

    /// The caller, once authenticated.
    pub fn authenticated(&mut self, who: &Principal) {
        self.who = Some(who.clone());
    }

    /// The purpose the caller stated, or INVALID_ARGUMENT naming the metadata to send.
    pub fn require_purpose(&self) -> Result<&str, Status> {
        if let Err(m) = &self.legal_basis {
            return Err(Status::invalid_argument(m.clone()));
        }
        self.purpose.as_deref().map_err(|m| Status::invalid_argument(m.clone()))
    }

    /// The same call with another request message (for a streamed run of messages: the request
    /// that run answers, with its resume position).
    pub fn with_request(&self, request: Vec<u8>) -> Call {
        Call { request, at: Timestamp::now(), ..self.clone() }
    }
}

/// What an answer disclosed (or what a write recorded).
#[derive(Debug, Clone, Default)]
pub struct Disclosed {
    /// What the call did with personal data (`pb::AccessAction` values).
    pub actions: Vec<i32>,
    /// The data subjects concerned.
    pub subjects: Vec<pb::Subject>,
    /// The records returned or written.
    pub records: Vec<pb::RecordRef>,
    /// The agencies that received data.
    pub recipients: Vec<String>,
    /// The log size the answer reflected (or after the write).
    pub log_size: u64,
    /// The sharing policy version decisions were made under.
    pub policy_version: u64,
    /// The deciding policies.
    pub policy_ids: Vec<String>,
    /// For a stream: the index of the run's first message.
    pub stream_index: u64,
    /// Purpose and legal basis of a write, taken from its events (reads state them in metadata).
    pub stated: Option<(String, String)>,
    /// Views answers: the Clare's Law target they were computed with.
    pub dvds_target_days: u32,
}

impl Disclosed {
    /// Adds `a` once.
    pub fn action(&mut self, a: pb::AccessAction) {
        if !self.actions.contains(&(a as i32)) {
            self.actions.push(a as i32);
        }
    }

    /// Adds a subject once.
    pub fn subject(&mut self, kind: &str, id: &str) {
        if id.is_empty() || self.subjects.iter().any(|s| s.kind == kind && s.id == id) {
            return;
        }
        self.subjects.push(pb::Subject { kind: kind.to_owned(), id: id.to_owned() });
    }

    /// Adds a recipient agency once.
    pub fn recipient(&mut self, agency: &str) {
        if !agency.is_empty() && !self.recipients.iter().any(|r| r == agency) {
            self.recipients.push(agency.to_owned());
        }
    }

    /// Adds deciding policy ids once each.
    pub fn policies<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>) {
        for id in ids {
            if !self.policy_ids.contains(id) {
                self.policy_ids.push(id.clone());
            }
        }
    }
}

/// SHA-256 of a message's encoding: the digest of a unary answer.
pub fn digest<M: Message>(m: &M) -> [u8; 32] {
    Sha256::digest(m.encode_to_vec()).into()
}

/// The digest of a run of streamed messages: SHA-256 over each message's encoding, each preceded
/// by its length as a 4-byte big-endian integer (as gRPC frames them, without the flag byte).
pub fn stream_digest<'a, M: Message + 'a>(messages: impl IntoIterator<Item = &'a M>) -> [u8; 32] {
    Sha256::digest(framed(messages.into_iter().map(Message::encode_to_vec))).into()
}

/// Encoded messages, each preceded by its length as a 4-byte big-endian integer: what
/// [`stream_digest`] hashes.
pub fn framed(encodings: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for bytes in encodings {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The index keys of a record: `kind:id` per subject, `pos:N` per record position (`access:N`
/// for the access records an auditor was shown), `party:<agency>` per party (see
/// `accord_store::AccessFilter`).
pub fn subject_key(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// The pseudo read model under which an auditor's answer lists the access records it returned.
pub const ACCESS_LOG_MODEL: &str = "access_log";

/// The index key of a log position.
pub fn position_key(position: u64) -> String {
    format!("pos:{position}")
}

/// The index key of an agency that is party to an access: the caller's agency, the agencies
/// whose records it touched (the controllers) and the recipients. An auditor sees the accesses
/// their agency is party to.
pub fn party_key(agency: &str) -> String {
    format!("party:{agency}")
}

/// A re-built answer (an audit replay).
#[derive(Debug, Clone)]
pub enum Replayed {
    /// One response message of this type, encoded.
    Unary(&'static str, Vec<u8>),
    /// A run of streamed messages of this type, each encoded.
    Stream(&'static str, Vec<Vec<u8>>),
}

/// Writes access records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    store: Store,
    recording: bool,
}

/// What a caller is told when its access cannot be recorded.
pub fn unrecorded() -> Status {
    Status::unavailable(
        "the access could not be recorded in the access log, so no data is returned (DPA 2018 s.62); try again later",
    )
}

impl AccessLog {
    /// Records into `store`'s access log (its writer must be started).
    pub fn new(store: Store) -> Self {
        Self { store, recording: true }
    }

    /// A recorder that records nothing: only for the benchmark that measures what the access
    /// log costs (BENCHMARKS.md). No command-line flag, variable or file setting reaches it.
    #[doc(hidden)]
    pub fn unrecorded_for_benchmarks(store: Store) -> Self {
        Self { store, recording: false }
    }

    fn record(call: &Call, d: Disclosed, outcome: Result<[u8; 32], &Status>) -> pb::AccessRecord {
        let who = call.who.as_ref();
        let (purpose, legal_basis) = match d.stated {
            Some(s) => s,
            None => (call.purpose.clone().unwrap_or_default(), call.legal_basis.clone().unwrap_or_default()),
        };
        let (outcome, denial_code, denial_reason, digest) = match outcome {
            Ok(digest) => (pb::AccessOutcome::Granted, String::new(), String::new(), digest.to_vec()),
            Err(s) => {
                use tonic::Code::*;
                let failed = matches!(s.code(), Internal | Unavailable | DataLoss | Unknown | DeadlineExceeded);
                let outcome = if failed { pb::AccessOutcome::Failed } else { pb::AccessOutcome::Denied };
                (outcome, format!("{:?}", s.code()), s.message().to_owned(), Vec::new())
            }
        };
        pb::AccessRecord {
            access_id: EventId::new().to_string(),
            at: Some(timestamp_pb(call.at)),
            who: who.map(|p| pb::Accessor {
                agency: p.agency.to_string(),
                user: p.user.to_string(),
                roles: p.roles.iter().map(|r| r.to_string()).collect(),
                token_id: p.token_id.clone().unwrap_or_default(),
                issuer: p.issuer.clone(),
            }),
            service: call.service.to_owned(),
            method: call.method.to_owned(),
            actions: d.actions,
            purpose,
            legal_basis,
            subjects: d.subjects,
            records: d.records,
            recipients: d.recipients,
            log_size: d.log_size,
            policy_version: d.policy_version,
            policy_ids: d.policy_ids,
            outcome: outcome as i32,
            denial_code,
            denial_reason,
            request_id: call.request_id.clone(),
            trace_id: call.trace_id.clone(),
            client_address: call.client_address.clone(),
            client_certificate: call.client_certificate.clone(),
            response_sha256: digest,
            request: call.request.clone(),
            stream_index: d.stream_index,
            dvds_target_days: d.dvds_target_days,
        }
    }

    async fn write(&self, record: pb::AccessRecord) -> Result<u64, accord_store::Error> {
        if !self.recording {
            return Ok(0);
        }
        Ok(self.store.record_access(vec![entry(&record)]).await?[0])
    }

    /// The access record of an append by `call`'s caller, for the store to write in the append's
    /// own transaction ([`Store::append_recorded`]): `written` is what the events disclose,
    /// gathered before appending; the receipts add the records written, the log size and the
    /// answer's digest (the [`pb::AppendResponse`] the caller is sent). `None` when this
    /// recorder records nothing (benchmarks only).
    pub fn for_append(&self, call: &Call, written: Disclosed) -> Option<accord_store::AppendRecord> {
        if !self.recording {
            return None;
        }
        let call = call.clone();
        let agency = call.who.as_ref().map(|w| w.agency.to_string()).unwrap_or_default();
        Some(std::sync::Arc::new(move |receipts: &[accord_store::Receipt]| {
            let mut d = written.clone();
            for r in receipts {
                d.records.push(pb::RecordRef {
                    position: r.position,
                    source_agency: agency.clone(),
                    ..Default::default()
                });
                d.log_size = d.log_size.max(r.position + 1);
            }
            let answer = append_response(receipts);
            entry(&Self::record(&call, d, Ok(digest(&answer))))
        }))
    }

    /// Records a granted call whose answer has digest `digest` ([`digest`] or [`stream_digest`]).
    /// Only when this returns `Ok` may the answer be sent: otherwise the caller gets UNAVAILABLE
    /// and no data.
    pub async fn granted(&self, call: &Call, d: Disclosed, digest: [u8; 32]) -> Result<(), Status> {
        let record = Self::record(call, d, Ok(digest));
        match self.write(record).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, service = call.service, method = call.method, "access record not written: answer withheld");
                Err(unrecorded())
            }
        }
    }

    /// Records a refused call and returns the status to send. If even the refusal cannot be
    /// recorded, the refusal is still sent (it discloses nothing) and the failure is logged.
    pub async fn denied(&self, call: &Call, status: Status) -> Status {
        self.denied_under(call, Disclosed::default(), status).await
    }

    /// Records a denied call with what is known of the decision (the sharing policy's version
    /// and the deciding policies, when a policy refused); returns `status`.
    pub async fn denied_under(&self, call: &Call, decided: Disclosed, status: Status) -> Status {
        DENIED.add(
            1,
            &[
                opentelemetry::KeyValue::new("rpc.service", call.service),
                opentelemetry::KeyValue::new("rpc.method", call.method),
                opentelemetry::KeyValue::new("rpc.grpc.status_code", status.code() as i64),
            ],
        );
        let record = Self::record(call, decided, Err(&status));
        if let Err(e) = self.write(record).await {
            tracing::error!(error = %e, service = call.service, method = call.method, "denied access not recorded");
        }
        status
    }

    /// Records the outcome of a unary call: `Ok((answer, disclosed))` is recorded as granted
    /// (and withheld if that fails), `Err(status)` as denied.
    pub async fn finish<M: Message>(
        &self,
        call: &Call,
        outcome: Result<(M, Disclosed), Status>,
    ) -> Result<tonic::Response<M>, Status> {
        match outcome {
            Ok((answer, d)) => {
                self.granted(call, d, digest(&answer)).await?;
                Ok(tonic::Response::new(answer))
            }
            Err(s) => Err(self.denied(call, s).await),
        }
    }
}

/// The answer to an append: its receipts, in order.
pub fn append_response(receipts: &[accord_store::Receipt]) -> pb::AppendResponse {
    pb::AppendResponse { receipts: receipts.iter().cloned().map(crate::convert::receipt).collect() }
}

/// Refused and failed calls, by service, method and status (an OpenTelemetry counter; a no-op
/// until the server installs an exporting meter provider).
static DENIED: std::sync::LazyLock<opentelemetry::metrics::Counter<u64>> = std::sync::LazyLock::new(|| {
    opentelemetry::global::meter("accord-ledger")
        .u64_counter("accord.requests.denied")
        .with_description("Calls refused or failed (each is also an access record with outcome DENIED or FAILED)")
        .build()
});

/// The store entry of a record: its encoding and the index keys copied from it.
pub fn entry(record: &pb::AccessRecord) -> AccessEntry {
    let (agency, user) = record.who.as_ref().map(|w| (w.agency.clone(), w.user.clone())).unwrap_or_default();
    let mut items = Vec::new();
    if !agency.is_empty() {
        items.push(party_key(&agency));
    }
    for r in &record.records {
        // An auditor's answer lists access-log positions, not event positions.
        // Records are indexed by log position only: an item id names a record position too,
        // and every index row costs the access log's writer (see BENCHMARKS.md).
        items.push(if r.model == ACCESS_LOG_MODEL {
            format!("access:{}", r.position)
        } else {
            position_key(r.position)
        });
        if !r.source_agency.is_empty() {
            items.push(party_key(&r.source_agency));
        }
    }
    items.extend(record.recipients.iter().map(|r| party_key(r)));
    items.sort();
    items.dedup();
    let access_id = uuid::Uuid::parse_str(&record.access_id).map(|u| *u.as_bytes()).unwrap_or_default();
    AccessEntry {
        access_id,
        at: crate::convert::timestamp("at", record.at).unwrap_or(Timestamp(0)),
        agency,
        user,
        granted: record.outcome == pb::AccessOutcome::Granted as i32,
        subjects: record.subjects.iter().map(|s| subject_key(&s.kind, &s.id)).collect(),
        items,
        record: record.encode_to_vec(),
    }
}
