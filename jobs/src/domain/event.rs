//! Events and their payload: exactly the webhook body of the product page, built once
//! when the run's final state is stored, and sent byte for byte later.
//!
//! ```json
//! { "event": "job.failed", "timestamp": "2024-03-15T08:42:11Z", "job_id": "wf_8x9k2m4p",
//!   "environment": "production",
//!   "data": { "error_code": 500, "message": "...", "retries": 3, ... } }
//! ```
//! Five top-level fields, always; everything else under `data`. The `data` of a run's
//! end (`job.completed`, `job.failed`, `job.timed_out`) has `run_id`, `attempt`,
//! `duration_ms`, `next_run_at`, and `scheduled_for` and `lateness_ms` (both null for a
//! manual trigger). The ledger's events (`job.skipped`, `job.missed`), the watchdog's
//! (`job.late`, `job.overran`) and a job's streak events (`job.failing`,
//! `job.recovered`) carry their own.
//!
//! # Payload schemas
//! Each event type's payload is a Rust type ([`Event`] around its `data` type), and its
//! JSON Schema is derived from that same type (schemars), so schema and payload cannot
//! drift: the API serves the schemas and names them in its OpenAPI document, and the
//! end-to-end tests validate every delivery against them. Every property is listed as
//! required (a missing value is sent as `null`), and no other property is allowed, at
//! the top level and in `data`: a new field is a change of the schema too.
//!
//! Adding an event type is one `data` type implementing [`EventData`] and one line in
//! [`EVENT_KINDS`] (plus its [`EventType`] variant).

use super::{
    CommandTarget, Environment, Job, JobId, JobSpec, Run, RunId, RunOrigin, RunState, Schedule, Target,
    WebhookId,
    job::{JobName, Tags},
};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde::Serialize;
use serde_json::Value;
use std::{borrow::Cow, collections::BTreeMap};

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
    /// The job's final runs failed `alert_after_failures` times in a row (once a streak).
    JobFailing,
    /// The first completed run after a streak that sent `job.failing`.
    JobRecovered,
    /// A slot (or a manual trigger) the overlap policy `skip` did not run.
    JobSkipped,
    /// A stretch of downtime whose slots the catch-up policy did not run (one event per
    /// stretch).
    JobMissed,
    /// A slot's run had not started `late_after_seconds` after it (the watchdog).
    JobLate,
    /// A run went on past its expected duration (the watchdog).
    JobOverran,
}

impl EventType {
    /// The wire name (`job.completed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobCompleted => "job.completed",
            EventType::JobFailed => "job.failed",
            EventType::JobTimedOut => "job.timed_out",
            EventType::WebhookTest => "webhook.test",
            EventType::JobFailing => "job.failing",
            EventType::JobRecovered => "job.recovered",
            EventType::JobSkipped => "job.skipped",
            EventType::JobMissed => "job.missed",
            EventType::JobLate => "job.late",
            EventType::JobOverran => "job.overran",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::JobCompleted,
            Self::JobFailed,
            Self::JobTimedOut,
            Self::WebhookTest,
            Self::JobFailing,
            Self::JobRecovered,
            Self::JobSkipped,
            Self::JobMissed,
            Self::JobLate,
            Self::JobOverran,
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

/// A webhook body: the five fields every event has, and its `data`.
#[derive(Debug, Clone, Serialize)]
pub struct Event<D> {
    /// The event type's wire name.
    pub event: &'static str,
    /// When the event happened (RFC 3339, UTC).
    pub timestamp: String,
    /// The job it is about (`wf_…`); `null` for `webhook.test`.
    pub job_id: Option<String>,
    /// The job's environment (`production` or `staging`).
    pub environment: &'static str,
    /// What happened; its shape depends on `event`.
    pub data: D,
}

impl<D: EventData> Event<D> {
    fn new(job_id: Option<&JobId>, environment: Environment, now: DateTime<Utc>, data: D) -> Self {
        Event {
            event: D::TYPE.as_str(),
            timestamp: format_time(now),
            job_id: job_id.map(|id| id.as_str().to_owned()),
            environment: environment.as_str(),
            data,
        }
    }

    /// The payload as JSON: object keys in sorted order, as stored and signed.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an event payload is plain data")
    }
}

/// The `data` of one event type.
pub trait EventData: Serialize + JsonSchema {
    /// Its event type.
    const TYPE: EventType;
    /// The name of the whole event's schema (`JobCompletedEvent`).
    const SCHEMA_NAME: &'static str;
    /// What the event means, for the schema's description.
    const DESCRIPTION: &'static str;
    /// A real example: what the payload builder makes for a sample job and run.
    fn example() -> Value;
}

impl<D: EventData> JsonSchema for Event<D> {
    fn schema_name() -> Cow<'static, str> {
        D::SCHEMA_NAME.into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let job_id = if D::TYPE == EventType::WebhookTest {
            json_schema!({ "type": "null", "description": "Always null: a test event is about no job." })
        } else {
            json_schema!({
                "type": "string",
                "pattern": "^wf_[0-9a-z]{1,64}$",
                "description": "The job the event is about.",
            })
        };
        json_schema!({
            "title": D::SCHEMA_NAME,
            "description": D::DESCRIPTION,
            "type": "object",
            "required": ["event", "timestamp", "job_id", "environment", "data"],
            "properties": {
                "event": { "type": "string", "const": D::TYPE.as_str() },
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the event happened (RFC 3339, UTC).",
                },
                "job_id": job_id,
                "environment": {
                    "type": "string",
                    "enum": Environment::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                    "description": "The job's environment (a test event: the subscription's filter, or `production`).",
                },
                "data": generator.subschema_for::<D>(),
            },
            "additionalProperties": false,
        })
    }
}

/// What every job event's `data` says about the run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFacts {
    /// The run (`run_…`).
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub run_id: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Wall time from start to end.
    pub duration_ms: Option<i64>,
    /// The job's next scheduled fire time (null while paused).
    #[schemars(extend("format" = "date-time"))]
    pub next_run_at: Option<String>,
    /// The slot the run belongs to; null for a manual trigger.
    #[schemars(extend("format" = "date-time"))]
    pub scheduled_for: Option<String>,
    /// Start minus scheduled time; null for a manual trigger.
    pub lateness_ms: Option<i64>,
}

/// `data` of `job.completed`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobCompletedData {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub run: RunFacts,
    /// The tail of the run's output (stdout and stderr together), at most 4 KiB.
    pub output: Option<String>,
}

/// `data` of `job.failed`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFailedData {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub run: RunFacts,
    /// Exit code (128 + n for signal n) or HTTP status; null if the run never got one.
    pub error_code: Option<i32>,
    /// What went wrong.
    pub message: Option<String>,
    /// The stderr tail of a failed command.
    pub stack_trace: Option<String>,
    /// Retries made before this attempt (`attempt` − 1).
    pub retries: u32,
    /// The job's retry budget.
    pub max_retries: u32,
    /// Whether another attempt follows.
    pub will_retry: bool,
}

/// `data` of `job.timed_out`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTimedOutData {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub run: RunFacts,
    /// The job's timeout.
    pub timeout_seconds: u32,
    /// The tail of the run's output before it was stopped, at most 4 KiB.
    pub output: Option<String>,
}

/// `data` of `webhook.test`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTestData {
    /// The subscription the test was sent to (`wh_…`).
    #[schemars(extend("pattern" = "^wh_[0-9a-z]{1,64}$"))]
    pub webhook_id: String,
    /// A fixed text.
    pub message: String,
}

/// `data` of `job.failing`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFailingData {
    /// Final runs in a row that failed or timed out.
    pub consecutive_failures: u32,
    /// The job's threshold (`alert_after_failures`).
    pub alert_after_failures: u32,
    /// The run that reached it (`run_…`); its own `job.failed` or `job.timed_out` event
    /// has the details.
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub last_run_id: String,
    /// How that run ended: `failed` or `timed_out`.
    pub last_state: String,
}

/// `data` of `job.recovered`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRecoveredData {
    /// The completed run (`run_…`).
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub run_id: String,
    /// Final runs in a row that had failed before it.
    pub failures_before: u32,
}

/// `data` of `job.skipped`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSkippedData {
    /// The ledger row of the skipped slot (`run_…`, state `skipped`).
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub run_id: String,
    /// The slot that was skipped; null for a manual trigger.
    #[schemars(extend("format" = "date-time"))]
    pub scheduled_for: Option<String>,
    /// What asked for the run: `schedule`, `catch_up` or `manual`.
    pub origin: String,
    /// The run still going (scheduled or running) that made the policy skip it.
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub active_run_id: String,
}

/// `data` of `job.missed`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobMissedData {
    /// The ledger row of the stretch (`run_…`, state `missed`).
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub run_id: String,
    /// How many slots of the stretch did not run.
    pub missed_count: u64,
    /// The first of them.
    #[schemars(extend("format" = "date-time"))]
    pub first_slot: String,
    /// The last of them.
    #[schemars(extend("format" = "date-time"))]
    pub last_slot: String,
    /// The job's catch-up policy, which chose not to run them: `none`; `latest` (the
    /// newest slot of the stretch ran, unless one after the downtime was on time); or
    /// `all` (only its newest 100 slots ran).
    pub catch_up: String,
}

impl EventData for JobSkippedData {
    const TYPE: EventType = EventType::JobSkipped;
    const SCHEMA_NAME: &'static str = "JobSkippedEvent";
    const DESCRIPTION: &'static str = "A slot (or a manual trigger) was not run because the job's previous run was still going (overlap policy `skip`).";
    fn example() -> Value {
        let (job, run) = streak_example();
        let active = RunId::parse("run_mbx2k6z9p0a1b2c3d4e5").expect("a valid example id");
        job_skipped_payload(
            &job,
            &run,
            Some(example_time(0)),
            RunOrigin::Schedule,
            &active,
            example_time(0),
        )
    }
}

impl EventData for JobMissedData {
    const TYPE: EventType = EventType::JobMissed;
    const SCHEMA_NAME: &'static str = "JobMissedEvent";
    const DESCRIPTION: &'static str = "Slots of a stretch of downtime were not run (catch-up policy `none`, or `latest` for all but the last): one event per stretch.";
    fn example() -> Value {
        let (job, run) = streak_example();
        let missed = MissedSlots {
            count: 9,
            first: example_time(-9 * 3600),
            last: example_time(-3600),
        };
        job_missed_payload(&job, &run, &missed, "latest", example_time(0))
    }
}

/// `data` of `job.late`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobLateData {
    /// The slot whose run has not started.
    #[schemars(extend("format" = "date-time"))]
    pub scheduled_for: String,
    /// The job's `late_after_seconds`: how long after its slot a run is late.
    pub late_after_seconds: u32,
    /// The slot's run, waiting to start (`run_…`); null when the scheduler had not fired
    /// the slot at all.
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub run_id: Option<String>,
}

/// `data` of `job.overran`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobOverranData {
    /// The run still going (`run_…`).
    #[schemars(extend("pattern" = "^run_[0-9a-z]{1,64}$"))]
    pub run_id: String,
    /// When it started.
    #[schemars(extend("format" = "date-time"))]
    pub started_at: String,
    /// How long it had been going when the watchdog saw it.
    pub running_for_ms: i64,
    /// How long it was expected to take at most.
    pub threshold_ms: i64,
    /// Where that came from: `expected_duration` (the job's setting) or `recent_runs`
    /// (twice the 95th percentile of its last 20 completed runs, at least 10 s).
    pub basis: String,
    /// The job's timeout, which will stop the run.
    pub timeout_seconds: u32,
}

impl EventData for JobLateData {
    const TYPE: EventType = EventType::JobLate;
    const SCHEMA_NAME: &'static str = "JobLateEvent";
    const DESCRIPTION: &'static str = "A slot's run had not started `late_after_seconds` after it: the scheduler or the workers are down, stuck or behind. Sent once per slot by the watchdog every CronFlow process runs.";
    fn example() -> Value {
        let (job, run) = streak_example();
        job_late_payload(&job, example_time(0), 60, Some(&run), example_time(61))
    }
}

impl EventData for JobOverranData {
    const TYPE: EventType = EventType::JobOverran;
    const SCHEMA_NAME: &'static str = "JobOverranEvent";
    const DESCRIPTION: &'static str =
        "A run is still going past its expected duration (before its timeout). Sent once per run.";
    fn example() -> Value {
        let (job, run) = streak_example();
        let overran = Overran {
            started_at: example_time(0),
            threshold_ms: 60_000,
            basis: "expected_duration",
        };
        job_overran_payload(&job, &run, &overran, example_time(61))
    }
}

/// The payload of `job.late`: `slot` of `job`, whose run (`run`, if the slot was fired)
/// had not started `late_after_seconds` after it.
pub fn job_late_payload(
    job: &EventJob,
    slot: DateTime<Utc>,
    late_after_seconds: u32,
    run: Option<&RunId>,
    now: DateTime<Utc>,
) -> Value {
    let data = JobLateData {
        scheduled_for: format_time(slot),
        late_after_seconds,
        run_id: run.map(|r| r.as_str().to_owned()),
    };
    Event::new(Some(&job.id), job.environment, now, data).to_json()
}

/// What the watchdog saw of a run that overran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overran {
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Its threshold.
    pub threshold_ms: i64,
    /// Where the threshold came from (`domain::watch::OverranBasis::as_str`).
    pub basis: &'static str,
}

/// The payload of `job.overran`: `run` of `job` is still going at `now`.
pub fn job_overran_payload(job: &EventJob, run: &RunId, overran: &Overran, now: DateTime<Utc>) -> Value {
    let data = JobOverranData {
        run_id: run.as_str().to_owned(),
        started_at: format_time(overran.started_at),
        running_for_ms: (now - overran.started_at).num_milliseconds(),
        threshold_ms: overran.threshold_ms,
        basis: overran.basis.to_owned(),
        timeout_seconds: job.timeout_seconds,
    };
    Event::new(Some(&job.id), job.environment, now, data).to_json()
}

/// A stretch of slots that did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedSlots {
    /// How many.
    pub count: u64,
    /// The first.
    pub first: DateTime<Utc>,
    /// The last.
    pub last: DateTime<Utc>,
}

/// The payload of `job.skipped`: `run` (the `skipped` ledger row, for `slot`, asked for
/// by `origin`) did not run because `active` was still going.
pub fn job_skipped_payload(
    job: &EventJob,
    run: &RunId,
    slot: Option<DateTime<Utc>>,
    origin: RunOrigin,
    active: &RunId,
    now: DateTime<Utc>,
) -> Value {
    let data = JobSkippedData {
        run_id: run.as_str().to_owned(),
        scheduled_for: slot.map(format_time),
        origin: origin.as_str().to_owned(),
        active_run_id: active.as_str().to_owned(),
    };
    Event::new(Some(&job.id), job.environment, now, data).to_json()
}

/// The payload of `job.missed`: `run` (the `missed` ledger row) records `missed`, left
/// out by the job's catch-up policy `catch_up`.
pub fn job_missed_payload(
    job: &EventJob,
    run: &RunId,
    missed: &MissedSlots,
    catch_up: &str,
    now: DateTime<Utc>,
) -> Value {
    let data = JobMissedData {
        run_id: run.as_str().to_owned(),
        missed_count: missed.count,
        first_slot: format_time(missed.first),
        last_slot: format_time(missed.last),
        catch_up: catch_up.to_owned(),
    };
    Event::new(Some(&job.id), job.environment, now, data).to_json()
}

impl EventData for JobFailingData {
    const TYPE: EventType = EventType::JobFailing;
    const SCHEMA_NAME: &'static str = "JobFailingEvent";
    const DESCRIPTION: &'static str = "The job's final runs failed (or timed out) `alert_after_failures` times in a row: sent once a streak.";
    fn example() -> Value {
        let (job, run) = streak_example();
        job_failing_payload(&job, 3, 3, &run, RunState::Failed, example_time(11))
    }
}

impl EventData for JobRecoveredData {
    const TYPE: EventType = EventType::JobRecovered;
    const SCHEMA_NAME: &'static str = "JobRecoveredEvent";
    const DESCRIPTION: &'static str =
        "The first completed run after a failure streak that sent `job.failing`.";
    fn example() -> Value {
        let (job, run) = streak_example();
        job_recovered_payload(&job, &run, 4, example_time(11))
    }
}

/// The sample job and run of the streak events' examples.
fn streak_example() -> (EventJob, RunId) {
    let job = EventJob {
        id: JobId::parse("wf_8x9k2m4p").expect("a valid example id"),
        environment: Environment::Production,
        max_retries: 3,
        timeout_seconds: 300,
    };
    let run = RunId::parse("run_mbx2k7f0qa1b2c3d4e5").expect("a valid example id");
    (job, run)
}

/// The payload of `job.failing`: `streak` final runs of `job` in a row failed, the
/// last being `run` (ended in `state`), against the job's threshold `alert_after`.
pub fn job_failing_payload(
    job: &EventJob,
    streak: u32,
    alert_after: u32,
    run: &RunId,
    state: RunState,
    now: DateTime<Utc>,
) -> Value {
    let data = JobFailingData {
        consecutive_failures: streak,
        alert_after_failures: alert_after,
        last_run_id: run.as_str().to_owned(),
        last_state: state.as_str().to_owned(),
    };
    Event::new(Some(&job.id), job.environment, now, data).to_json()
}

/// The payload of `job.recovered`: `run` completed after `failures_before` failures.
pub fn job_recovered_payload(job: &EventJob, run: &RunId, failures_before: u32, now: DateTime<Utc>) -> Value {
    let data = JobRecoveredData {
        run_id: run.as_str().to_owned(),
        failures_before,
    };
    Event::new(Some(&job.id), job.environment, now, data).to_json()
}

impl EventData for JobCompletedData {
    const TYPE: EventType = EventType::JobCompleted;
    const SCHEMA_NAME: &'static str = "JobCompletedEvent";
    const DESCRIPTION: &'static str = "A run finished successfully.";
    fn example() -> Value {
        job_example(RunState::Completed)
    }
}

impl EventData for JobFailedData {
    const TYPE: EventType = EventType::JobFailed;
    const SCHEMA_NAME: &'static str = "JobFailedEvent";
    const DESCRIPTION: &'static str =
        "A run failed (sent for each failed attempt; `data.will_retry` says if another follows).";
    fn example() -> Value {
        job_example(RunState::Failed)
    }
}

impl EventData for JobTimedOutData {
    const TYPE: EventType = EventType::JobTimedOut;
    const SCHEMA_NAME: &'static str = "JobTimedOutEvent";
    const DESCRIPTION: &'static str = "A run exceeded its timeout and was stopped.";
    fn example() -> Value {
        job_example(RunState::TimedOut)
    }
}

impl EventData for WebhookTestData {
    const TYPE: EventType = EventType::WebhookTest;
    const SCHEMA_NAME: &'static str = "WebhookTestEvent";
    const DESCRIPTION: &'static str =
        "Sent on demand to check a subscription (`POST /v1/webhooks/{id}/test`).";
    fn example() -> Value {
        let id = WebhookId::parse("wh_mbx2k7f0q4n8r1s5t9v3").expect("a valid example id");
        webhook_test_payload(&id, Environment::Production, example_time(0))
    }
}

/// One registered event type: its schema and a real example.
#[derive(Debug, Clone, Copy)]
pub struct EventKind {
    /// The event type.
    pub event_type: EventType,
    /// Its schema's name in the OpenAPI document (`JobCompletedEvent`).
    pub schema_name: &'static str,
    schema: fn(&mut SchemaGenerator) -> Schema,
    /// Registers the schema (and those it refers to) as definitions of the generator.
    define: fn(&mut SchemaGenerator) -> Schema,
    example: fn() -> Value,
}

impl EventKind {
    const fn of<D: EventData>() -> Self {
        EventKind {
            event_type: D::TYPE,
            schema_name: D::SCHEMA_NAME,
            schema: |g| g.root_schema_for::<Event<D>>(),
            define: |g| g.subschema_for::<Event<D>>(),
            example: D::example,
        }
    }

    /// The standalone JSON Schema (2020-12) of the whole payload.
    pub fn json_schema(&self) -> Value {
        let mut generator = payload_settings(SchemaSettings::draft2020_12()).into_generator();
        (self.schema)(&mut generator).to_value()
    }

    /// The schema as OpenAPI 3.0 components: the event's own (under `schema_name`) and
    /// the types it refers to (its `data`), by name.
    pub fn openapi_components(&self) -> BTreeMap<String, Value> {
        let mut generator = payload_settings(SchemaSettings::openapi3()).into_generator();
        (self.define)(&mut generator);
        generator.take_definitions(true).into_iter().collect()
    }

    /// A real payload of this type.
    pub fn example(&self) -> Value {
        (self.example)()
    }
}

/// Every event type CronFlow sends, in documentation order.
pub const EVENT_KINDS: [EventKind; 10] = [
    EventKind::of::<JobCompletedData>(),
    EventKind::of::<JobFailedData>(),
    EventKind::of::<JobTimedOutData>(),
    EventKind::of::<JobSkippedData>(),
    EventKind::of::<JobMissedData>(),
    EventKind::of::<JobLateData>(),
    EventKind::of::<JobOverranData>(),
    EventKind::of::<JobFailingData>(),
    EventKind::of::<JobRecoveredData>(),
    EventKind::of::<WebhookTestData>(),
];

/// The registered kind of `event_type`.
pub fn event_kind(event_type: EventType) -> Option<&'static EventKind> {
    EVENT_KINDS.iter().find(|k| k.event_type == event_type)
}

/// Schemas describe what CronFlow writes: every property is required, `null` included.
fn payload_settings(settings: SchemaSettings) -> SchemaSettings {
    settings.with(|s| s.contract = schemars::generate::Contract::Serialize)
}

/// What a job event says of its job. Kept for a job deleted while one of its runs went
/// on (`Store::delete_job`), so that run's event is still written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventJob {
    /// The job's id.
    pub id: JobId,
    /// Its environment (subscriptions filter on it).
    pub environment: Environment,
    /// Its retries (`job.failed` reports them).
    pub max_retries: u32,
    /// Its timeout (`job.timed_out` reports it).
    pub timeout_seconds: u32,
}

impl From<&Job> for EventJob {
    fn from(job: &Job) -> Self {
        EventJob {
            id: job.id.clone(),
            environment: job.spec.environment,
            max_retries: job.spec.max_retries,
            timeout_seconds: job.spec.timeout_seconds,
        }
    }
}

/// The payload for the final state of `run` of `job`. `will_retry` says whether a retry
/// attempt follows a failure; `next_run_at` is the job's next scheduled fire time.
/// (`webhook.test` is not a job event: its payload comes from [`webhook_test_payload`].)
pub fn job_event_payload(
    kind: EventType,
    job: &EventJob,
    run: &Run,
    will_retry: bool,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Value {
    let output = run
        .output
        .as_deref()
        .map(|o| tail(o, EVENT_OUTPUT_TAIL).to_owned());
    let facts = RunFacts {
        run_id: run.id.as_str().to_owned(),
        attempt: run.attempt,
        duration_ms: run.duration_ms,
        next_run_at: next_run_at.map(format_time),
        scheduled_for: run.scheduled_for.map(format_time),
        lateness_ms: run.lateness_ms,
    };
    let (id, env) = (Some(&job.id), job.environment);
    match kind {
        EventType::JobCompleted => {
            Event::new(id, env, now, JobCompletedData { run: facts, output }).to_json()
        }
        EventType::JobFailed => Event::new(
            id,
            env,
            now,
            JobFailedData {
                run: facts,
                error_code: run.exit_code,
                message: run.error.clone(),
                stack_trace: run.stack_trace.clone(),
                retries: run.attempt.saturating_sub(1),
                max_retries: job.max_retries,
                will_retry,
            },
        )
        .to_json(),
        EventType::JobTimedOut => Event::new(
            id,
            env,
            now,
            JobTimedOutData {
                run: facts,
                timeout_seconds: job.timeout_seconds,
                output,
            },
        )
        .to_json(),
        // Not events of one run's end: built by their own functions.
        EventType::WebhookTest
        | EventType::JobFailing
        | EventType::JobRecovered
        | EventType::JobSkipped
        | EventType::JobMissed
        | EventType::JobLate
        | EventType::JobOverran => Value::Null,
    }
}

/// The payload of a `webhook.test` event sent to subscription `webhook_id`.
pub fn webhook_test_payload(webhook_id: &WebhookId, environment: Environment, now: DateTime<Utc>) -> Value {
    let data = WebhookTestData {
        webhook_id: webhook_id.as_str().to_owned(),
        message: "This is a test event from CronFlow.".to_owned(),
    };
    Event::new(None, environment, now, data).to_json()
}

/// A fixed instant for examples, `seconds` after 2024-03-15T08:42:00Z.
fn example_time(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 15, 8, 42, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::seconds(seconds)
}

/// The payload the builder makes when a sample scheduled run ends in `state`.
fn job_example(state: RunState) -> Value {
    let sample = || -> Result<(Job, Run), crate::ValidationError> {
        let spec = JobSpec {
            name: JobName::parse("nightly-report")?,
            schedule: Schedule::parse("42 8 * * *", "UTC")?,
            target: Target::Command(CommandTarget::parse(
                vec!["sh".into(), "-c".into(), "./report.sh".into()],
                BTreeMap::new(),
                None,
            )?),
            timeout_seconds: 300,
            max_retries: 3,
            environment: Environment::Production,
            overlap_policy: Default::default(),
            catch_up: Default::default(),
            tags: Tags::parse(Vec::new())?,
            watch: Default::default(),
            alert_after_failures: 3,
        };
        let job_id = JobId::parse("wf_8x9k2m4p").expect("a valid example id");
        let failed = state == RunState::Failed;
        let job = Job {
            id: job_id.clone(),
            spec,
            paused: false,
            next_run_at: Some(example_time(86_400)),
            created_at: example_time(-86_400),
            updated_at: example_time(-86_400),
            failure_streak: 0,
            failure_alerted: false,
        };
        let run = Run {
            id: RunId::parse("run_mbx2k7f0qa1b2c3d4e5").expect("a valid example id"),
            job_id,
            scheduled_for: Some(example_time(0)),
            origin: RunOrigin::Schedule,
            state,
            attempt: if failed { 2 } else { 1 },
            created_at: example_time(0),
            started_at: Some(example_time(0)),
            finished_at: Some(example_time(11)),
            duration_ms: Some(11_204),
            lateness_ms: Some(3),
            exit_code: failed.then_some(1),
            output: Some("report: 1204 rows written\n".into()),
            error: failed.then(|| "exited with status 1".into()),
            stack_trace: failed.then(|| "Error: Database connection pool exhausted\n".into()),
            missed_count: None,
            missed_last: None,
        };
        Ok((job, run))
    };
    let Ok((job, run)) = sample() else {
        return Value::Null;
    };
    let kind = EventType::for_state(state).unwrap_or(EventType::JobCompleted);
    job_event_payload(
        kind,
        &EventJob::from(&job),
        &run,
        state == RunState::Failed,
        job.next_run_at,
        example_time(11),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_has_a_schema_and_an_example_of_its_own_type() {
        for kind in EVENT_KINDS {
            let schema = kind.json_schema();
            let example = kind.example();
            assert_eq!(example["event"], kind.event_type.as_str());
            assert_eq!(schema["properties"]["event"]["const"], kind.event_type.as_str());
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(required, ["event", "timestamp", "job_id", "environment", "data"]);
            assert_eq!(schema["additionalProperties"], false);
            assert_eq!(example.as_object().unwrap().len(), 5, "{example}");
        }
    }
}
