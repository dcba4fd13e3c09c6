//! An access record names the trace its call belongs to when the server records traces, also
//! when the caller sent no `traceparent` (the server then starts the trace): an auditor can go
//! from an access to its trace, and an operator from a trace to its access record. Its own test
//! binary: it installs a process-wide tracing subscriber with an OpenTelemetry layer, as the
//! server does when it exports traces (no exporter here: the spans only need ids). The same
//! subscriber checks that each call's span carries its gRPC status.

use accord_e2e::{Backend, TestServer, encompass_notification, query};
use accord_proto::v1::{self as pb, ReadModel};
use opentelemetry::trace::TracerProvider as _;
use prost::Message as _;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;

/// The gRPC status recorded on each `rpc` span, with the span's name (`service/method`).
#[derive(Clone, Default)]
struct Statuses(Arc<Mutex<Vec<(String, i64)>>>);

struct RpcName(String);

#[derive(Default)]
struct Fields {
    name: Option<String>,
    code: Option<i64>,
}

impl tracing::field::Visit for Fields {
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "rpc.grpc.status_code" {
            self.code = Some(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "otel.name" {
            self.name = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Statuses {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "rpc" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(RpcName(f.name.unwrap_or_default()));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = Fields::default();
        values.record(&mut f);
        if let (Some(code), Some(span)) = (f.code, ctx.span(id)) {
            let name = span.extensions().get::<RpcName>().map(|n| n.0.clone()).unwrap_or_default();
            self.0.lock().unwrap().push((name, code));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_record_names_the_trace_the_server_started() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("accord-e2e"));
    let statuses = Statuses::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel).with(statuses.clone()))
        .expect("one subscriber");

    let s = TestServer::start(Backend::Sqlite).await.expect("SQLite needs no setup");
    let mut police = s.client("met-police", "do-1", &["disclosure_officer"]).await;
    let (n, _) = encompass_notification("met-police", "do-1", "st-marys-school", "100234");
    police.append(vec![n.sign(s.key("met-1"))]).await.expect("notification");
    let mut dsl = s.client("st-marys-school", "dsl-1", &["dsl"]).await;
    query(&mut dsl, ReadModel::SchoolInbox).await.expect("inbox");
    query(&mut dsl, ReadModel::SchoolInbox).await.expect("inbox again");

    let mut dpo = s.client("st-marys-school", "dpo-1", &["auditor"]).await;
    let req = pb::ListAccessesRequest { agency: "st-marys-school".into(), user: "dsl-1".into(), ..Default::default() };
    let mut stream = dpo.audit().list_accesses(req).await.expect("list accesses").into_inner();
    let mut trace_ids = Vec::new();
    while let Some(e) = stream.message().await.expect("stream") {
        let r = pb::AccessRecord::decode(e.record_bytes.as_slice()).expect("a record");
        trace_ids.push(r.trace_id);
    }
    assert_eq!(trace_ids.len(), 2, "both reads are on record");
    for id in &trace_ids {
        assert_eq!(id.len(), 32, "{id:?}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id:?}");
        assert_ne!(id, &"0".repeat(32));
    }
    assert_ne!(trace_ids[0], trace_ids[1], "each call is its own trace");

    // Each call's span carries its gRPC status: from the trailers of an answer (unary or
    // streamed), from the headers of a refusal.
    dsl.set_purpose(None).unwrap();
    let refused = query(&mut dsl, ReadModel::SchoolInbox).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let recorded = statuses.0.lock().unwrap().clone();
    let of = |name: &str| recorded.iter().filter(|(n, _)| n == name).map(|(_, c)| *c).collect::<Vec<_>>();
    assert_eq!(of("accord.v1.Ledger/Append"), vec![0], "{recorded:?}");
    assert_eq!(of("accord.v1.Views/Query"), vec![0, 0, 3], "{recorded:?}");
    assert_eq!(of("accord.v1.Audit/ListAccesses"), vec![0], "{recorded:?}");
    s.stop().await;
}
