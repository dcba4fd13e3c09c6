//! Logs, traces and metrics.
//!
//! Log lines go to stderr as human text or JSON (`--log-format`), filtered by `--log`. When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every `tracing` span (one per RPC, store call, policy
//! evaluation and projection batch) is also exported as an OpenTelemetry trace, and the metrics
//! the crates count (appends and group-commit sizes, projection lag, access-log writes, denied
//! requests) are exported every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s), both over
//! OTLP/gRPC. The exporter reads the standard `OTEL_*` variables (endpoint, headers, timeout,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`). Without the endpoint nothing is exported
//! and no exporter is built.
//!
//! An incoming `traceparent` (W3C trace context) becomes the parent of the RPC's span, so a
//! client's trace continues through Accord.

use anyhow::Context as _;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::LogFormat;

/// The installed exporters; [`Telemetry::shutdown`] flushes them.
#[must_use = "call shutdown() before exiting so the last spans and metrics are exported"]
pub struct Telemetry {
    exporting: Option<Exporting>,
}

struct Exporting {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    // The exporters' gRPC channel runs on this runtime: the SDK's batch processor and metric
    // reader export from their own threads, which have no Tokio reactor of their own.
    runtime: tokio::runtime::Runtime,
}

/// Whether traces and metrics will be exported (the OTLP endpoint is set).
pub fn exporting() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty())
}

/// Installs the global subscriber: log lines in `format` filtered by `filter`, plus — when
/// `export` (the server, not the one-shot tools) and `OTEL_EXPORTER_OTLP_ENDPOINT` is set — OTLP
/// export of traces and metrics.
pub fn init(format: LogFormat, filter: &str, export: bool) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter).with_context(|| format!("the log filter `{filter}`"))?;
    use std::io::IsTerminal as _;
    let lines =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    // The log filter governs log lines only; traces have their own filter below.
    let lines = match format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => {
            lines.json().with_current_span(true).with_span_list(false).flatten_event(true).with_filter(filter).boxed()
        }
    };
    let (exporting, traces) = if export && exporting() {
        let e = start_exporting()?;
        // Store calls and policy evaluations are exported inside the RPC or projection batch
        // that made them; on their own (the projector's and subscribers' idle polls) they would
        // be a stream of one-span traces that says nothing.
        //
        // Only spans are exported, at info and above, never log events: log lines carry users,
        // agencies and refusal reasons, which stay in the server's own logs and out of a
        // collector that may be run by someone else. Span fields are ids, counts, methods and
        // policy versions, never personal data.
        let nested_only = tracing_subscriber::filter::dynamic_filter_fn(|meta, cx| {
            meta.is_span()
                && *meta.level() <= tracing::Level::INFO
                && (!(meta.name().starts_with("store.") || meta.name().starts_with("policy."))
                    || cx.lookup_current().is_some())
        });
        let layer = tracing_opentelemetry::layer().with_tracer(e.tracer.tracer("accord")).with_filter(nested_only);
        (Some(e), Some(layer))
    } else {
        (None, None)
    };
    tracing_subscriber::registry().with(lines).with(traces).try_init().context("installing the log subscriber")?;
    if exporting.is_some() {
        tracing::info!(
            endpoint = %std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
            "exporting traces and metrics over OTLP/gRPC"
        );
    }
    Ok(Telemetry { exporting })
}

fn start_exporting() -> anyhow::Result<Exporting> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .context("starting the OTLP export runtime")?;
    let _entered = runtime.enter();
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    if !named {
        resource = resource.with_service_name("accord");
    }
    let resource = resource.build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("building the OTLP span exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let tracer = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .build()
        .context("building the OTLP metric exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let meter = SdkMeterProvider::builder().with_periodic_exporter(metrics).with_resource(resource).build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_meter_provider(meter.clone());
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    drop(_entered);
    Ok(Exporting { tracer, meter, runtime })
}

impl Telemetry {
    /// Exports what is buffered and stops the exporters. Call outside any Tokio runtime.
    pub fn shutdown(self) {
        if let Some(e) = self.exporting {
            if let Err(err) = e.tracer.shutdown() {
                tracing::warn!(error = %err, "flushing traces at exit");
            }
            if let Err(err) = e.meter.shutdown() {
                tracing::warn!(error = %err, "flushing metrics at exit");
            }
            e.runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// The span of one gRPC call (tonic's `trace_fn`): named after the method, as OpenTelemetry's
/// RPC conventions ask, and the child of the caller's `traceparent` if it sent one.
pub fn rpc_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    // Health probes (a Kubernetes kubelet every few seconds) are not worth a trace each.
    if path.starts_with("/grpc.health.v1.Health/") {
        return tracing::Span::none();
    }
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        // Filled by the access recorder with the id it records (the caller's valid
        // `x-request-id`, or one it made up), so a trace and an access record find each other.
        request_id = tracing::field::Empty,
        // Filled by [`GrpcStatusLayer`] when the status is known.
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    if req.headers().contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(req.headers())));
        let _ = span.set_parent(parent);
    }
    span
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Records each call's gRPC status on its span (`rpc.grpc.status_code`; `otel.status_code` ERROR
/// for the codes OpenTelemetry's RPC conventions count as server errors, with the message): from
/// the response headers of a trailers-only response (how an error is answered), else from the
/// trailers that end the body (a success, or a stream that failed midway). The span is then kept
/// open until the body ends, so a stream's span covers the whole stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatusLayer;

impl<S> tower_layer::Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;

    fn layer(&self, inner: S) -> GrpcStatus<S> {
        GrpcStatus(inner)
    }
}

/// The service [`GrpcStatusLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct GrpcStatus<S>(S);

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower_service::Service<http::Request<B>> for GrpcStatus<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<StatusBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let response = self.0.call(req);
        Box::pin(async move {
            // Polled inside the RPC's span (tonic enters it around the service's future). If
            // the future is dropped before it answers (the client went away, or tonic's deadline
            // answered for it outside this layer), the span says CANCELLED.
            let mut pending = Unanswered(Some(tracing::Span::current()));
            let (parts, body) = response.await?.into_parts();
            if let Some(code) = parts.headers.get("grpc-status")
                && let Some(span) = pending.0.take()
            {
                record_status(&span, code, parts.headers.get("grpc-message"));
            }
            Ok(http::Response::from_parts(parts, StatusBody { inner: body, span: pending }))
        })
    }
}

/// The RPC's span while it waits for its status; records CANCELLED if the call ends without one
/// (dropped before answering, or its body dropped before the trailers).
#[derive(Debug)]
pub struct Unanswered(Option<tracing::Span>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            span.record("rpc.grpc.status_code", 1);
        }
    }
}

/// A response body that records the status its trailers carry on the RPC's span (CANCELLED if
/// it is dropped before them: the client cancelled or went away).
#[derive(Debug)]
pub struct StatusBody<B> {
    inner: B,
    /// The span, while still waiting for its status.
    span: Unanswered,
}

impl<B: http_body::Body + Unpin> http_body::Body for StatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = trailers.get("grpc-status")
            && let Some(span) = self.span.0.take()
        {
            record_status(&span, code, trailers.get("grpc-message"));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn record_status(span: &tracing::Span, code: &http::HeaderValue, message: Option<&http::HeaderValue>) {
    let Some(code) = code.to_str().ok().and_then(|c| c.parse::<i32>().ok()) else { return };
    span.record("rpc.grpc.status_code", code);
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "ERROR");
        // Percent-encoded as gRPC sends it; the messages of these codes name no personal data.
        if let Some(m) = message.and_then(|m| m.to_str().ok()) {
            span.record("otel.status_message", m);
        }
    }
}
