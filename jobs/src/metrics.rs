//! Prometheus metrics, in a registry owned by the process (not a global), so several
//! applications in one test process keep separate figures.
//!
//! Counters and histograms are recorded where things happen (the runner, the delivery
//! worker); gauges that describe stored state (queue depth, waiting retries, DLQ size,
//! disabled endpoints) are read from the database when `/metrics` is scraped.

use crate::{Store, StoreError};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

/// Every metric CronFlow exports. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    runs: Family<StateLabel, Counter>,
    run_duration: Histogram,
    lateness: Histogram,
    attempts: Family<OutcomeLabel, Counter>,
    attempt_duration: Histogram,
    event_to_delivered: Histogram,
    retries_waiting: Gauge,
    held: Gauge,
    queue_depth: Family<QueueLabel, Gauge>,
    dlq_size: Gauge,
    disabled_endpoints: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        1800.0, 3600.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let m = Metrics {
            registry: Arc::default(),
            runs: Family::default(),
            run_duration: Histogram::new(seconds_buckets()),
            lateness: Histogram::new(seconds_buckets()),
            attempts: Family::default(),
            attempt_duration: Histogram::new(seconds_buckets()),
            event_to_delivered: Histogram::new(seconds_buckets()),
            retries_waiting: Gauge::default(),
            held: Gauge::default(),
            queue_depth: Family::default(),
            dlq_size: Gauge::default(),
            disabled_endpoints: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "cronflow_runs",
                "Runs that reached a final state, by state",
                m.runs.clone(),
            );
            r.register(
                "cronflow_run_duration_seconds",
                "Run durations",
                m.run_duration.clone(),
            );
            r.register(
                "cronflow_fire_lateness_seconds",
                "Start of a scheduled run minus its scheduled time",
                m.lateness.clone(),
            );
            r.register(
                "cronflow_delivery_attempts",
                "Webhook delivery attempts, by outcome (delivered or the error kind)",
                m.attempts.clone(),
            );
            r.register(
                "cronflow_delivery_attempt_duration_seconds",
                "Duration of webhook delivery attempts",
                m.attempt_duration.clone(),
            );
            r.register(
                "cronflow_event_to_delivered_seconds",
                "Time from an event to its successful delivery",
                m.event_to_delivered.clone(),
            );
            r.register(
                "cronflow_delivery_retries_waiting",
                "Deliveries waiting for a retry",
                m.retries_waiting.clone(),
            );
            r.register(
                "cronflow_deliveries_held",
                "Deliveries held for a disabled subscription (released when it is enabled again)",
                m.held.clone(),
            );
            r.register(
                "cronflow_queue_depth",
                "Tasks waiting in a queue",
                m.queue_depth.clone(),
            );
            r.register(
                "cronflow_dlq_size",
                "Dead, unacknowledged deliveries",
                m.dlq_size.clone(),
            );
            r.register(
                "cronflow_webhooks_disabled",
                "Webhook subscriptions that are disabled",
                m.disabled_endpoints.clone(),
            );
        }
        m
    }

    /// A run reached `state` after `duration_s`; `lateness_s` for scheduled runs.
    pub fn run_finished(&self, state: &str, duration_s: f64, lateness_s: Option<f64>) {
        self.runs
            .get_or_create(&StateLabel {
                state: state.to_owned(),
            })
            .inc();
        self.run_duration.observe(duration_s);
        if let Some(l) = lateness_s {
            self.lateness.observe(l.max(0.0));
        }
    }

    /// A delivery attempt ended with `outcome` after `duration_s`; `since_event_s` is set
    /// when it delivered.
    pub fn attempt_finished(&self, outcome: &str, duration_s: f64, since_event_s: Option<f64>) {
        self.attempts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.attempt_duration.observe(duration_s);
        if let Some(s) = since_event_s {
            self.event_to_delivered.observe(s.max(0.0));
        }
    }

    /// Refreshes the gauges from the database and renders the text exposition.
    pub async fn render(&self, store: &Store) -> Result<String, StoreError> {
        let g = store.gauges().await?;
        self.retries_waiting.set(g.retries_waiting);
        self.held.set(g.held);
        self.dlq_size.set(g.dlq_size);
        self.disabled_endpoints.set(g.disabled_webhooks);
        for (queue, depth) in g.queue_depth {
            self.queue_depth.get_or_create(&QueueLabel { queue }).set(depth);
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut out, &r).map_err(|e| StoreError::Corrupt(format!("metrics encoding: {e}")))?;
        Ok(out)
    }
}
