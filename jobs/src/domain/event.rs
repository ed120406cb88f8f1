//! Events and their payload: exactly the webhook body of the product page, built once
//! when the run's final state is stored, and sent byte for byte later.
//!
//! ```json
//! { "event": "job.failed", "timestamp": "2024-03-15T08:42:11Z", "job_id": "wf_8x9k2m4p",
//!   "environment": "production",
//!   "data": { "error_code": 500, "message": "...", "retries": 3, ... } }
//! ```
//! Five top-level fields, always; everything else under `data`. Every event's `data`
//! has `run_id`, `attempt`, `duration_ms`, `next_run_at`, and `scheduled_for` and
//! `lateness_ms` (both null for a manual trigger).

use super::{Job, Run, RunState};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// How much of a run's output an event carries (its tail); the run keeps more.
pub const EVENT_OUTPUT_TAIL: usize = 4 * 1024;

/// Kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A run finished successfully.
    JobCompleted,
    /// A run failed (each failed attempt; `data.will_retry` says if another follows).
    JobFailed,
    /// A run exceeded its timeout and was stopped.
    JobTimedOut,
    /// Sent by a user from the webhook's "send test" button.
    WebhookTest,
}

impl EventType {
    /// The wire name (`job.completed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobCompleted => "job.completed",
            EventType::JobFailed => "job.failed",
            EventType::JobTimedOut => "job.timed_out",
            EventType::WebhookTest => "webhook.test",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::JobCompleted,
            Self::JobFailed,
            Self::JobTimedOut,
            Self::WebhookTest,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// The event a run's final state produces; `None` for states without one
    /// (`cancelled`, `skipped`, `missed`).
    pub fn for_state(state: RunState) -> Option<Self> {
        match state {
            RunState::Completed => Some(Self::JobCompleted),
            RunState::Failed => Some(Self::JobFailed),
            RunState::TimedOut => Some(Self::JobTimedOut),
            _ => None,
        }
    }
}

/// RFC 3339 in UTC with a `Z`, milliseconds only when present (`2024-03-15T08:42:11Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The payload for the final state of `run` of `job`. `will_retry` says whether a retry
/// attempt follows a failure; `next_run_at` is the job's next scheduled fire time.
pub fn job_event_payload(
    kind: EventType,
    job: &Job,
    run: &Run,
    will_retry: bool,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Value {
    let output = run.output.as_deref().map(|o| tail(o, EVENT_OUTPUT_TAIL));
    let mut data = json!({
        "run_id": run.id.as_str(),
        "attempt": run.attempt,
        "duration_ms": run.duration_ms,
        "next_run_at": next_run_at.map(format_time),
        "scheduled_for": run.scheduled_for.map(format_time),
        "lateness_ms": run.lateness_ms,
    });
    let extra = match kind {
        EventType::JobCompleted => json!({ "output": output }),
        EventType::JobFailed => json!({
            "error_code": run.exit_code,
            "message": run.error,
            "stack_trace": run.stack_trace,
            "retries": run.attempt.saturating_sub(1),
            "max_retries": job.spec.max_retries,
            "will_retry": will_retry,
        }),
        EventType::JobTimedOut => json!({
            "timeout_seconds": job.spec.timeout_seconds,
            "output": output,
        }),
        EventType::WebhookTest => json!({}),
    };
    if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
        d.extend(e);
    }
    json!({
        "event": kind.as_str(),
        "timestamp": format_time(now),
        "job_id": job.id.as_str(),
        "environment": job.spec.environment.as_str(),
        "data": data,
    })
}
