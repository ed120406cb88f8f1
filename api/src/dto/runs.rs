//! Runs: what the run routes return (a run, a page of a job's runs).

use chrono::{DateTime, Utc};
use cronflow_jobs::domain::{self, Run};
use poem_openapi::{Enum, Object};

mirror_enum!(
    /// Where a run is: `scheduled` → `running` → `completed` | `failed` | `timed_out`;
    /// `queued` waits for the previous run (overlap `queue`); `cancelled` by a user;
    /// `skipped` (overlap `skip`) and `missed` (downtime) record slots that did not run.
    RunState => domain::RunState { Scheduled, Queued, Running, Completed, Failed, TimedOut, Skipped, Cancelled, Missed }
);
mirror_enum!(
    /// Why a run exists: its `schedule`, a `catch_up` after downtime, a `manual`
    /// trigger, or a `retry` of a failed attempt.
    RunOrigin => domain::RunOrigin { Schedule, CatchUp, Manual, Retry }
);
/// One run of a job (or a ledger row for slots that did not run).
#[derive(Debug, Object)]
#[oai(rename = "Run")]
pub(crate) struct RunOut {
    /// `run_…`.
    id: String,
    job_id: String,
    state: RunState,
    origin: RunOrigin,
    /// 1 for the first attempt, 2 for the first retry, ...
    attempt: u32,
    /// The slot it belongs to; absent for a manual trigger.
    #[oai(skip_serializing_if_is_none)]
    scheduled_for: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    started_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    finished_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    duration_ms: Option<i64>,
    /// Start minus scheduled time.
    #[oai(skip_serializing_if_is_none)]
    lateness_ms: Option<i64>,
    /// Exit code (128 + n for signal n) or HTTP status.
    #[oai(skip_serializing_if_is_none)]
    exit_code: Option<i32>,
    /// stdout and stderr together, at most 64 KiB: head and tail kept, the cut marked.
    /// Only in `GET /v1/runs/{id}`.
    #[oai(skip_serializing_if_is_none)]
    output: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    error: Option<String>,
    /// The stderr tail of a failed command.
    #[oai(skip_serializing_if_is_none)]
    stack_trace: Option<String>,
    /// `missed` rows: how many slots the stretch held, from `scheduled_for` to `missed_last`.
    #[oai(skip_serializing_if_is_none)]
    missed_count: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    missed_last: Option<DateTime<Utc>>,
}

impl RunOut {
    /// The API view of a run; `with_output` includes the captured output.
    pub(crate) fn new(run: Run, with_output: bool) -> Self {
        RunOut {
            id: run.id.to_string(),
            job_id: run.job_id.to_string(),
            state: run.state.into(),
            origin: run.origin.into(),
            attempt: run.attempt,
            scheduled_for: run.scheduled_for,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: run.duration_ms,
            lateness_ms: run.lateness_ms,
            exit_code: run.exit_code,
            output: run.output.filter(|_| with_output),
            error: run.error,
            stack_trace: run.stack_trace,
            missed_count: run.missed_count,
            missed_last: run.missed_last,
        }
    }
}

/// One page of runs, newest first.
#[derive(Debug, Object)]
#[oai(rename = "RunList")]
pub(crate) struct RunList {
    pub(crate) items: Vec<RunOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}
