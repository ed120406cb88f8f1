//! Publishing the load of a delivery scenario with `Store::publish_events`, which stores
//! events and their deliveries and queues them as a finished run would. The payloads are
//! those of a `job.completed` event; `timestamp` is the moment the batch is published
//! (with sub-millisecond digits), so the latency measured at the sink covers the
//! publishing transaction, the queue, the attempt and the HTTP exchange. Backlogs are
//! published as fast as the store takes them, in calls of about 500 deliveries (500
//! events to one subscription, 5 events to 100); steady loads every 10 ms, as many
//! events as are due by then. A publish call that fails (on SQLite, `database is
//! locked`) publishes nothing (it is one transaction); it is counted and retried, and 10
//! failures in a row fail the scenario.

use chrono::{DateTime, Utc};
use cronflow_jobs::{
    Store,
    domain::{EventType, RunId, event::format_time},
    store::NewEvent,
};
use serde_json::json;
use std::time::{Duration, Instant};

/// Deliveries a backlog publish call queues (events per call: this / subscriptions).
const DELIVERIES_PER_CALL: usize = 500;
/// How often steady loads publish.
const TICK: Duration = Duration::from_millis(10);
/// Publish calls that may fail in a row (each is retried) before a scenario fails.
const PUBLISH_ATTEMPTS: usize = 10;
/// The environment of the events.
const ENVIRONMENT: &str = "production";

/// How a scenario publishes its events.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    /// All at once, as fast as the store takes them.
    Backlog { events: usize },
    /// `per_sec` events a second for `secs` seconds.
    Steady { per_sec: f64, secs: u64 },
}

impl Load {
    pub(crate) fn events(self) -> usize {
        match self {
            Load::Backlog { events } => events,
            Load::Steady { per_sec, secs } => (per_sec * secs as f64).round() as usize,
        }
    }
}

/// A `job.completed` event stamped `now`, shaped like one of a finished run.
pub(crate) fn bench_event(now: DateTime<Utc>) -> NewEvent {
    let payload = json!({
        "event": EventType::JobCompleted.as_str(),
        "timestamp": format_time(now),
        "job_id": null,
        "environment": ENVIRONMENT,
        "data": {
            "run_id": RunId::generate().as_str(),
            "attempt": 1,
            "duration_ms": 3,
            "next_run_at": null,
            "scheduled_for": null,
            "lateness_ms": null,
            "output": "ok\n",
        },
    });
    NewEvent {
        kind: EventType::JobCompleted,
        job_id: None,
        environment: ENVIRONMENT.into(),
        payload,
    }
}

/// Publishes `count` events stamped now, in one call.
async fn publish_now(store: &Store, count: usize) -> Result<(), cronflow_jobs::StoreError> {
    let now = Utc::now();
    let events: Vec<NewEvent> = (0..count).map(|_| bench_event(now)).collect();
    store.publish_events(&events, now).await?;
    Ok(())
}

/// Counts failed publish calls, which are retried (with a fresh timestamp), and gives
/// up after [`PUBLISH_ATTEMPTS`] failures in a row.
#[derive(Debug, Default)]
struct PublishErrors {
    total: usize,
    in_a_row: usize,
}

impl PublishErrors {
    fn note(&mut self, result: Result<(), cronflow_jobs::StoreError>) -> anyhow::Result<bool> {
        match result {
            Ok(()) => {
                self.in_a_row = 0;
                Ok(true)
            }
            Err(e) => {
                self.total += 1;
                self.in_a_row += 1;
                if self.total == 1 {
                    eprintln!("bench: publishing failed ({e}); retrying");
                }
                if self.in_a_row >= PUBLISH_ATTEMPTS {
                    return Err(anyhow::Error::new(e)
                        .context(format!("{PUBLISH_ATTEMPTS} publish calls in a row failed")));
                }
                Ok(false)
            }
        }
    }
}

/// Publishes the load; returns how many publish calls failed (and were retried).
pub(crate) async fn publish(store: &Store, load: Load, subscriptions: usize) -> anyhow::Result<usize> {
    let mut errors = PublishErrors::default();
    match load {
        Load::Backlog { events } => {
            let per_call = (DELIVERIES_PER_CALL / subscriptions.max(1)).max(1);
            let mut left = events;
            while left > 0 {
                let n = left.min(per_call);
                if errors.note(publish_now(store, n).await)? {
                    left -= n;
                }
            }
        }
        Load::Steady { per_sec, .. } => {
            let total = load.events();
            let start = Instant::now();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut published = 0;
            while published < total {
                tick.tick().await;
                // As many as are due by now: a slow or failed call makes the next batch
                // larger rather than the rate lower.
                let due = ((start.elapsed().as_secs_f64() * per_sec) as usize).min(total);
                if due > published && errors.note(publish_now(store, due - published).await)? {
                    published = due;
                }
            }
        }
    }
    Ok(errors.total)
}

#[cfg(test)]
mod tests {
    use super::Load;

    #[test]
    fn steady_loads_publish_rate_times_seconds() {
        assert_eq!(
            Load::Steady {
                per_sec: 100.0,
                secs: 5
            }
            .events(),
            500
        );
        assert_eq!(Load::Backlog { events: 7 }.events(), 7);
    }
}
