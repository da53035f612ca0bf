//! Prometheus metrics: the series the contract names, through the `metrics` facade (recorded where
//! things happen: pushes and runs in `sync`, requests in `gradient`) and exposed by
//! `metrics-exporter-prometheus`. Gauges that describe the store (connectors by state, last success
//! per connector) are set from the store at each scrape.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::ConnectorState;
use crate::store::ledger::ConnectorRow;

/// Renders the exposition.
#[derive(Clone)]
pub struct Exposition(PrometheusHandle);

impl Exposition {
    /// Installs the process-wide recorder (once; a second call returns None).
    pub fn install() -> Option<Exposition> {
        PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
            .ok()?
            .install_recorder()
            .ok()
            .map(Exposition)
    }

    /// The text exposition, after setting the store-derived gauges from `connectors`.
    pub fn render(&self, connectors: &[ConnectorRow]) -> String {
        use strum::IntoEnumIterator;
        for state in ConnectorState::iter() {
            let n = connectors.iter().filter(|c| c.state == state).count();
            metrics::gauge!("gradient_connector_connectors", "state" => state.as_str())
                .set(n as f64);
        }
        for c in connectors {
            if let Some(at) = c.last_success_at {
                metrics::gauge!("gradient_connector_last_success_timestamp_seconds", "connector" => c.id.clone())
                    .set(at as f64 / 1000.0);
            }
        }
        self.0.render()
    }
}

/// Describes every series once (HELP lines).
pub fn describe() {
    metrics::describe_gauge!(
        "gradient_connector_connectors",
        "connectors by state (connected, token_rejected, disconnected, unverified)"
    );
    metrics::describe_counter!(
        "gradient_connector_pushes_total",
        "pairs recorded, by outcome (pushed, unmapped, failed, rejected, skipped_disabled)"
    );
    metrics::describe_counter!(
        "gradient_connector_runs_total",
        "finished runs, by outcome (ok, partial, failed, interrupted)"
    );
    metrics::describe_gauge!(
        "gradient_connector_last_success_timestamp_seconds",
        "end of the last run in which the connector pushed without failures (unix seconds)"
    );
    metrics::describe_counter!(
        "gradient_connector_gradient_requests_total",
        "requests to Gradient, by HTTP status (or `error` when none came back)"
    );
    metrics::describe_histogram!(
        "gradient_connector_gradient_request_duration_seconds",
        metrics::Unit::Seconds,
        "duration of requests to Gradient"
    );
    zero_series();
}

/// Every labelled series the daemon can write, present from the start at 0: a dashboard or an
/// alert on `failed` or `unmapped` has a series before the first one happens (`rate()` and
/// `increase()` need the 0 it starts from).
fn zero_series() {
    use crate::domain::{PairOutcome, RunOutcome};
    use strum::IntoEnumIterator;
    for o in PairOutcome::iter() {
        metrics::counter!("gradient_connector_pushes_total", "outcome" => o.as_str()).increment(0);
    }
    for o in RunOutcome::iter() {
        metrics::counter!("gradient_connector_runs_total", "outcome" => o.as_str()).increment(0);
    }
    for state in ConnectorState::iter() {
        metrics::gauge!("gradient_connector_connectors", "state" => state.as_str()).set(0.0);
    }
    metrics::counter!("gradient_connector_store_write_failures_total").increment(0);
    metrics::counter!("gradient_connector_api_connections_refused_total").increment(0);
    metrics::gauge!("gradient_connector_api_connections").increment(0.0);
}
