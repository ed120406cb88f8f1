//! `/schemas/events`, "View Payload Schema": the base schema, each event's `data` field
//! by field with a real example, and how to verify a delivery's signature.
//!
//! The examples are built by the engine's own payload function
//! (`domain::event::job_event_payload`) from a sample job and run, so they cannot drift
//! from what receivers get; field types are read off those examples. [`event_docs`] is
//! the one place that knows where the schema comes from: once the API serves JSON
//! Schemas generated from the payload types, point it at those.

use super::{Ctx, Failure};
use chrono::{DateTime, Utc};
use cronflow_jobs::domain::{
    CommandTarget, EventType, Job, JobId, JobSpec, Run, RunId, RunOrigin, RunState, Schedule, Target,
    event::{event_kind, job_event_payload},
    job::{CatchUpPolicy, Environment, JobName, OverlapPolicy, Tags},
};
use maud::{Markup, html};
use poem::{Request, Response};
use serde_json::Value;

/// One event type as documented.
pub(super) struct EventDoc {
    pub(super) event_type: &'static str,
    pub(super) when: &'static str,
    /// A payload as CronFlow builds it.
    pub(super) example: Value,
    /// `data`'s fields: name, JSON type, meaning.
    pub(super) fields: Vec<(String, String, &'static str)>,
}

/// What each `data` field means.
const FIELD_DOCS: [(&str, &str); 31] = [
    (
        "late_after_seconds",
        "The job's late_after_seconds: how long after its slot a run is late.",
    ),
    ("started_at", "When the run started."),
    (
        "running_for_ms",
        "How long it had been going when the watchdog saw it.",
    ),
    ("threshold_ms", "How long it was expected to take at most."),
    (
        "basis",
        "Where that came from: expected_duration (the job's setting) or recent_runs (twice the p95 of its last 20 completed runs, at least 10 s).",
    ),
    (
        "origin",
        "What asked for the skipped run: schedule, catch_up or manual.",
    ),
    (
        "active_run_id",
        "The run still going that made the overlap policy skip this one.",
    ),
    ("missed_count", "How many slots of the downtime did not run."),
    ("first_slot", "The first slot that did not run."),
    ("last_slot", "The last slot that did not run."),
    (
        "catch_up",
        "The job's catch-up policy, which left these slots out: none, latest or all.",
    ),
    (
        "consecutive_failures",
        "Final runs in a row that failed or timed out.",
    ),
    ("alert_after_failures", "The job's threshold for this alert."),
    (
        "last_run_id",
        "The run that reached the threshold; its own job.failed or job.timed_out has the details.",
    ),
    ("last_state", "How that run ended: failed or timed_out."),
    (
        "failures_before",
        "Final runs in a row that had failed before this completed one.",
    ),
    ("run_id", "The run (`run_…`); open it at /runs/{run_id}."),
    ("attempt", "1 for the first attempt, 2 for the first retry, …"),
    ("duration_ms", "Wall time of the run."),
    (
        "next_run_at",
        "The job's next scheduled fire time (null while paused).",
    ),
    (
        "scheduled_for",
        "The slot this run belongs to; null for a manual run.",
    ),
    (
        "lateness_ms",
        "Start minus scheduled time; null for a manual run.",
    ),
    (
        "output",
        "The tail of the captured output (stdout and stderr), at most 4 KiB.",
    ),
    (
        "error_code",
        "Exit code (128 + n for signal n) or the HTTP status.",
    ),
    ("message", "What went wrong."),
    ("stack_trace", "The tail of stderr of a failed command."),
    ("retries", "How many retries came before this attempt."),
    ("max_retries", "Retries the job allows."),
    ("will_retry", "Whether another attempt follows."),
    ("timeout_seconds", "The timeout the run exceeded."),
    ("webhook_id", "The subscription the test was sent to."),
];

const BASE_FIELDS: [(&str, &str, &str); 5] = [
    (
        "event",
        "string",
        "Event type: job.completed, job.failed, job.timed_out, job.skipped, job.missed, job.late, job.overran, job.failing, job.recovered or webhook.test.",
    ),
    (
        "timestamp",
        "string (ISO 8601, UTC)",
        "Server time when the event was written.",
    ),
    ("job_id", "string", "The job's unique identifier (wf_…)."),
    ("environment", "string", "production or staging."),
    ("data", "object", "Event-specific payload, below."),
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc))
}

/// A sample job and one finished run of it in `state`.
fn sample(state: RunState) -> Option<(Job, Run)> {
    let spec = JobSpec {
        name: JobName::parse("nightly-report").ok()?,
        schedule: Schedule::parse("0 2 * * *", "Europe/Berlin").ok()?,
        target: Target::Command(
            CommandTarget::parse(vec!["./report.sh".into()], Default::default(), None).ok()?,
        ),
        timeout_seconds: 300,
        max_retries: 3,
        environment: Environment::Production,
        overlap_policy: OverlapPolicy::Skip,
        catch_up: CatchUpPolicy::Latest,
        tags: Tags::default(),
        watch: Default::default(),
        alert_after_failures: 3,
    };
    let job = Job {
        id: JobId::parse("wf_8x9k2m4p")?,
        spec,
        paused: false,
        next_run_at: Some(at("2024-03-16T01:00:00Z")),
        created_at: at("2024-03-01T00:00:00Z"),
        updated_at: at("2024-03-01T00:00:00Z"),
        failure_streak: 0,
        failure_alerted: false,
    };
    let failed = state == RunState::Failed;
    let run = Run {
        id: RunId::parse("run_0mk3x9q2a7f4k8d1pz")?,
        job_id: job.id.clone(),
        scheduled_for: Some(at("2024-03-15T01:00:00Z")),
        origin: RunOrigin::Schedule,
        state,
        attempt: if failed { 4 } else { 1 },
        created_at: at("2024-03-15T01:00:00Z"),
        started_at: Some(at("2024-03-15T01:00:00.012Z")),
        finished_at: Some(at("2024-03-15T01:05:00.012Z")),
        duration_ms: Some(if state == RunState::TimedOut {
            300_000
        } else {
            4_210
        }),
        lateness_ms: Some(12),
        exit_code: failed.then_some(500),
        output: Some("report: 1,204 rows written\n".into()),
        error: failed.then(|| "Database connection pool exhausted".into()),
        stack_trace: failed.then(|| "Error: pool exhausted\n    at connect (db.js:42)\n".into()),
        missed_count: None,
        missed_last: None,
    };
    Some((job, run))
}

/// Every event type's documentation.
pub(super) fn event_docs() -> Vec<EventDoc> {
    [
        (EventType::JobCompleted, RunState::Completed, "A scheduled task finished successfully: its duration, output tail and next run time."),
        (EventType::JobFailed, RunState::Failed, "A task exited non-zero, was killed by a signal, threw, or its HTTP target answered non-2xx: the error, stack trace and retry count."),
        (EventType::JobTimedOut, RunState::TimedOut, "A run exceeded its timeout (default 300 s) and was stopped."),
        (EventType::JobSkipped, RunState::Skipped, "A slot (or a manual trigger) was not run because the job's previous run was still going (overlap policy skip)."),
        (EventType::JobMissed, RunState::Missed, "Slots of a stretch of downtime were not run (catch-up policy none, latest, or all past its limit): one event per stretch, with the count and the first and last slot."),
        (EventType::JobLate, RunState::Scheduled, "A slot's run had not started late_after_seconds after it (default 60): the scheduler or the workers are down, stuck or behind. Sent once per slot by the watchdog every CronFlow process runs."),
        (EventType::JobOverran, RunState::Running, "A run is still going past its expected duration (expected_duration_seconds, or twice the p95 of its recent runs), before its timeout. Sent once per run."),
        (EventType::JobFailing, RunState::Failed, "A job's final runs (after their retries) failed or timed out alert_after_failures times in a row: sent once a streak."),
        (EventType::JobRecovered, RunState::Completed, "The first completed run after a streak that sent job.failing."),
    ]
    .into_iter()
    .filter_map(|(kind, state, when)| {
        let example = match kind {
            EventType::JobFailing | EventType::JobRecovered | EventType::JobSkipped | EventType::JobMissed | EventType::JobLate | EventType::JobOverran => {
                event_kind(kind)?.example()
            }
            _ => {
                let (job, run) = sample(state)?;
                job_event_payload(kind, &(&job).into(), &run, false, job.next_run_at, at("2024-03-15T01:05:00Z"))
            }
        };
        let fields = example["data"]
            .as_object()
            .map(|data| {
                data.iter()
                    .map(|(name, value)| {
                        let doc = FIELD_DOCS.iter().find(|(n, _)| n == name).map_or("", |(_, d)| *d);
                        let nullable = matches!(name.as_str(), "next_run_at" | "scheduled_for" | "lateness_ms" | "output" | "stack_trace" | "error_code" | "message");
                        let ty = json_type(value);
                        let ty = if nullable && ty != "null" { format!("{ty} or null") } else { ty.to_owned() };
                        (name.clone(), ty, doc)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(EventDoc {
            event_type: kind.as_str(),
            when,
            example,
            fields,
        })
    })
    .collect()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn verify_section() -> Markup {
    html! {
        section.card #verify {
            h2 { "Verifying a delivery" }
            p {
                "Each request carries " code { "X-CronFlow-Signature: sha256=<hex>" } ": the lowercase hex "
                "HMAC-SHA256 of the raw request body, keyed with the subscription's secret (its UTF-8 bytes). "
                "Compute it over the body exactly as received (before any JSON parsing) and compare in constant time. "
                "During a secret rotation the header holds one comma-separated entry per active secret: accept "
                "the request if any matches."
            }
            pre.output { "expected = hex(hmac_sha256(secret, raw_body))\nvalid = any(constant_time_eq(\"sha256=\" + expected, entry)\n            for entry in header.split(\",\"))" }
            p {
                "The " code { "webhook-id" } ", " code { "webhook-timestamp" } " and " code { "webhook-signature" }
                " headers follow the Standard Webhooks specification, so its official libraries verify deliveries "
                "too (and refuse stale timestamps, which stops replays)."
            }
            p {
                code { "X-CronFlow-Idempotency-Key" } " is the same on every retry and replay of a delivery: store it "
                "and ignore a payload whose key you have already processed."
            }
        }
    }
}

/// `/schemas/events`.
pub(super) async fn page(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let docs = event_docs();
    let body = html! {
        h1 { "Payload Schema" }
        p {
            "Every webhook request has a JSON body with exactly these five fields; the event's own fields are under "
            code { "data" } ". The JSON Schemas are served by the API at "
            a href="/v1/schemas/events" { code { "/v1/schemas/events" } } " (with an API key, like every /v1 route)."
        }
        nav.toc aria-label="Events" {
            ul {
                li { a href="#base" { "Base schema" } }
                @for d in &docs { li { a href={ "#" (d.event_type) } { code { (d.event_type) } } } }
                li { a href="#verify" { "Verifying a delivery" } }
            }
        }
        section.card #base {
            h2 { "Base schema" }
            (field_table(BASE_FIELDS.iter().map(|(n, t, d)| ((*n).to_owned(), (*t).to_owned(), *d))))
        }
        @for d in &docs {
            section.card id=(d.event_type) {
                h2 { code { (d.event_type) } }
                p { (d.when) }
                h3 { code { "data" } }
                (field_table(d.fields.iter().map(|(n, t, doc)| (n.clone(), t.clone(), *doc))))
                h3 { "Example" }
                pre.output tabindex="0" { (pretty(&d.example)) }
                p.small {
                    a href={ "/v1/schemas/events/" (d.event_type) } { "JSON Schema of " code { (d.event_type) } }
                }
            }
        }
        (verify_section())
    };
    cx.render("Payload Schema", body).await
}

fn field_table(rows: impl Iterator<Item = (String, String, &'static str)>) -> Markup {
    html! {
        div.table-wrap {
            table.list.fields {
                (super::layout::head_row(&["Field", "Type", "Meaning"], false))
                tbody {
                    @for (name, ty, doc) in rows {
                        tr { td { code { (name) } } td { (ty) } td { (doc) } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_event_is_documented_with_every_field_of_its_real_payload() {
        let docs = event_docs();
        assert_eq!(docs.len(), 9);
        for d in &docs {
            assert_eq!(d.example["event"], d.event_type);
            let keys: Vec<&String> = d.example.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 5, "{keys:?}");
            for (name, _, doc) in &d.fields {
                assert!(!doc.is_empty(), "{} has no description of {name}", d.event_type);
            }
        }
        let failed = docs.iter().find(|d| d.event_type == "job.failed").unwrap();
        assert!(
            failed
                .fields
                .iter()
                .any(|(n, t, _)| n == "error_code" && t.starts_with("integer"))
        );
    }
}
