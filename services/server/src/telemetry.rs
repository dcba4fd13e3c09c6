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
