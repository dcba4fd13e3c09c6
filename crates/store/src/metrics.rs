//! The store's OpenTelemetry instruments. They come from the global meter provider, which is a
//! no-op until the server installs an exporting one (`OTEL_EXPORTER_OTLP_ENDPOINT`), so tests and
//! tools pay nothing.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

struct Instruments {
    appended: Counter<u64>,
    round_items: Histogram<u64>,
    round_seconds: Histogram<f64>,
    failed_rounds: Counter<u64>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter("accord-store");
    Instruments {
        appended: meter
            .u64_counter("accord.log.appended")
            .with_description("Entries committed to a log (log=events: events; log=access: access records)")
            .build(),
        round_items: meter
            .u64_histogram("accord.log.group_commit.size")
            .with_description(
                "Entries submitted per group-commit round (one transaction; resends and refusals included)",
            )
            .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0])
            .build(),
        round_seconds: meter
            .f64_histogram("accord.log.group_commit.duration")
            .with_unit("s")
            .with_description("Time from a round's start (its first request taken from the queue) to its answer")
            .with_boundaries(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
            .build(),
        failed_rounds: meter
            .u64_counter("accord.log.group_commit.failed")
            .with_description("Rounds whose transaction failed (nothing of them was recorded)")
            .build(),
    }
});

/// One group-commit round of `log` ("events" or "access") answered.
pub(crate) fn round(log: &'static str, items: usize, committed: usize, seconds: f64, failed: bool) {
    let i = &*INSTRUMENTS;
    let attrs = [KeyValue::new("log", log)];
    i.round_items.record(items as u64, &attrs);
    i.round_seconds.record(seconds, &attrs);
    if committed > 0 {
        i.appended.add(committed as u64, &attrs);
    }
    if failed {
        i.failed_rounds.add(1, &attrs);
    }
}
