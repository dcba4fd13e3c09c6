//! The projection's OpenTelemetry instruments (no-ops until the server installs an exporting
//! meter provider).

use std::sync::LazyLock;

use accord_domain::Timestamp;
use opentelemetry::metrics::{Counter, Histogram};

struct Instruments {
    applied: Counter<u64>,
    lag: Histogram<f64>,
    behind: Histogram<u64>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter("accord-views");
    Instruments {
        applied: meter
            .u64_counter("accord.projection.applied")
            .with_description("Events applied to the read models")
            .build(),
        lag: meter
            .f64_histogram("accord.projection.lag")
            .with_unit("s")
            .with_description("From an event's commit to the read models' commit of the batch holding it (newest event of each batch)")
            .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0])
            .build(),
        behind: meter
            .u64_histogram("accord.projection.behind")
            .with_description("Events in the log not yet projected, after each batch")
            .build(),
    }
});

/// A projection batch of `events` committed, the newest recorded at `newest`, `behind` events
/// still to project.
pub(crate) fn batch(events: u64, newest: Option<Timestamp>, behind: u64) {
    let i = &*INSTRUMENTS;
    i.applied.add(events, &[]);
    if let Some(t) = newest {
        let lag = (Timestamp::now().micros() - t.micros()).max(0) as f64 / 1e6;
        i.lag.record(lag, &[]);
    }
    i.behind.record(behind, &[]);
}
