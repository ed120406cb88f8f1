//! Runs: one execution attempt of a job, and the scheduler's ledger of every slot.

use super::ids::{JobId, RunId};
use super::job::text_enum;
use chrono::{DateTime, Utc};

text_enum!(
    /// Where a run is in its life. Stored as text with a CHECK constraint.
    ///
    /// `scheduled → running → completed | failed | timed_out`, or `cancelled` from any
    /// non-final state. `queued`, `skipped` and `missed` come from the overlap and
    /// catch-up policies.
    RunState {
        /// Created by the scheduler, a manual trigger or a retry, with its queue task
        /// pushed in the same transaction; a worker moves it to `running`.
        Scheduled = "scheduled",
        /// Due while the previous run of its job (overlap policy `queue`) was still
        /// going; no task yet. When that run ends, the worker ending it moves the oldest
        /// queued run to `scheduled` and pushes its task.
        Queued = "queued",
        /// A worker is executing it. It leaves this state when the target ends, times
        /// out or is cancelled; if its worker dies, the recovering worker fails it.
        Running = "running",
        /// Final: exit status 0, or a 2xx answer.
        Completed = "completed",
        /// Final: non-zero exit, a signal, a spawn error, a non-2xx answer, or its
        /// worker died. A retry (if the job allows one) is a new run with `attempt + 1`.
        Failed = "failed",
        /// Final: ran past the job's timeout and was stopped.
        TimedOut = "timed_out",
        /// Final: the slot came while the previous run was going (overlap `skip`).
        Skipped = "skipped",
        /// Final: a user cancelled it.
        Cancelled = "cancelled",
        /// Final: a stretch of slots lost to downtime that the catch-up policy did not
        /// fill; `missed_count` says how many, from `scheduled_for` to `missed_last`.
        Missed = "missed",
    } default Scheduled
);

impl RunState {
    /// Whether the run is over (nothing will change it any more).
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Scheduled | RunState::Queued | RunState::Running)
    }
}

text_enum!(
    /// Why a run exists.
    RunOrigin {
        /// Its slot came due.
        Schedule = "schedule",
        /// It stands in for slots missed while no scheduler ran.
        CatchUp = "catch_up",
        /// A user asked for it ("run now").
        Manual = "manual",
        /// The previous attempt failed and the job allows retries.
        Retry = "retry",
    } default Schedule
);

/// A stored run.
#[derive(Debug, Clone)]
pub struct Run {
    /// `run_…`.
    pub id: RunId,
    /// Its job.
    pub job_id: JobId,
    /// The slot it belongs to; `None` for a manual trigger (and its retries).
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Why it exists.
    pub origin: RunOrigin,
    /// Where it is in its life.
    pub state: RunState,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
    /// When a worker started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time from start to end.
    pub duration_ms: Option<i64>,
    /// Start minus scheduled time, for scheduled runs.
    pub lateness_ms: Option<i64>,
    /// Command exit code (128 + n for signal n) or HTTP status.
    pub exit_code: Option<i32>,
    /// Captured output (stdout and stderr together), bounded, head and tail kept.
    pub output: Option<String>,
    /// What went wrong, for humans.
    pub error: Option<String>,
    /// The stderr tail of a failed command.
    pub stack_trace: Option<String>,
    /// For `missed` rows: how many slots, and the last of them.
    pub missed_count: Option<i64>,
    /// Last missed slot.
    pub missed_last: Option<DateTime<Utc>>,
}
