//! Runs, the scheduler's ledger, and the event outbox.
//!
//! Every state change of a run happens in one transaction with its consequences: the
//! scheduler inserts runs and pushes their queue tasks together; a finishing run writes
//! its final state, its event, its retry and the release of a queued successor together.
//! A crash between two statements therefore loses nothing and duplicates nothing.

use super::{
    Store,
    jobs::{JobRow, job_columns},
    webhooks::{deliveries_for, insert_deliveries},
    with_pool, with_tx, with_writer,
};
use crate::domain::{
    CatchUpPolicy, Cursor, EventId, EventType, Job, JobId, OverlapPolicy, Page, PageRequest, Run, RunId,
    RunOrigin, RunState, event::job_event_payload,
};
use crate::{StoreError, ValidationError};
use chrono::{DateTime, Duration, Utc};

/// A slot older than this when the scheduler sees it counts as missed during downtime
/// (and falls to the job's catch-up policy) rather than merely late.
pub const MISFIRE_GRACE: Duration = Duration::seconds(10);
/// `catch_up = all` runs at most this many missed slots per stretch (the newest ones);
/// older ones are recorded as missed. Bounds the burst after a long outage.
pub const MAX_CATCH_UP_RUNS: usize = 100;
/// Slots are enumerated one by one up to this many per job and pass; beyond it (a
/// per-second schedule after a day of downtime) the rest is skipped in one step and
/// the missed row's count is a lower bound.
const MAX_SLOTS_SCANNED: usize = 100_000;
/// Due jobs handled per scheduler transaction.
pub const FIRE_BATCH: i64 = 256;
/// How long after a slot fired ahead of time the worker is woken (the queue compares due
/// times in whole seconds of the database's clock; a wake a hair early would find nothing).
const WAKE_MARGIN: std::time::Duration = std::time::Duration::from_millis(2);

/// Why a run operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such run (or job, for a trigger).
    #[error("not found")]
    NotFound,
    /// The run is already over.
    #[error("the run is already {0}")]
    AlreadyFinal(&'static str),
    /// Bad input.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        RunError::Store(e.into())
    }
}

/// What one scheduler pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FireReport {
    /// Runs created (scheduled or queued).
    pub fired: usize,
    /// Slots recorded as `skipped` (overlap policy).
    pub skipped: usize,
    /// `missed` rows written (one per stretch of downtime).
    pub missed: usize,
    /// Slots another scheduler had already taken (the unique key said no).
    pub duplicates: usize,
    /// Jobs looked at.
    pub jobs: usize,
}

/// What a worker should do with a run task.
#[derive(Debug)]
pub enum StartOutcome {
    /// The run is now `running`: execute it.
    Start(Box<(Run, Job)>),
    /// The run was already `running`: its worker died. Recover it.
    Orphaned(Box<Run>),
    /// Nothing to do (cancelled, already finished, or its job is gone).
    Nothing,
}

/// How a run ended, as the runner reports it.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// `completed`, `failed`, `timed_out` or `cancelled`.
    pub state: RunState,
    /// Exit code (128 + n for signal n) or HTTP status.
    pub exit_code: Option<i32>,
    /// Bounded combined output.
    pub output: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// The stderr tail of a failed command.
    pub stack_trace: Option<String>,
    /// Wall time.
    pub duration_ms: i64,
}

macro_rules! run_columns {
    () => {
        "id, job_id, scheduled_for, origin, state, attempt, created_at, started_at, finished_at, \
         duration_ms, lateness_ms, exit_code, output, error, stack_trace, missed_count, missed_last"
    };
}

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    id: String,
    job_id: String,
    scheduled_for: Option<i64>,
    origin: String,
    state: String,
    attempt: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
    lateness_ms: Option<i64>,
    exit_code: Option<i64>,
    output: Option<String>,
    error: Option<String>,
    stack_trace: Option<String>,
    missed_count: Option<i64>,
    missed_last: Option<i64>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;

    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("run {}: {what}", r.id));
        Ok(Run {
            id: RunId::parse(&r.id).ok_or_else(|| corrupt("id"))?,
            job_id: JobId::parse(&r.job_id).ok_or_else(|| corrupt("job_id"))?,
            scheduled_for: r.scheduled_for.map(time).transpose()?,
            origin: RunOrigin::parse(&r.origin).ok_or_else(|| corrupt("origin"))?,
            state: RunState::parse(&r.state).ok_or_else(|| corrupt("state"))?,
            attempt: u32::try_from(r.attempt).map_err(|_| corrupt("attempt"))?,
            created_at: time(r.created_at)?,
            started_at: r.started_at.map(time).transpose()?,
            finished_at: r.finished_at.map(time).transpose()?,
            duration_ms: r.duration_ms,
            lateness_ms: r.lateness_ms,
            exit_code: r.exit_code.and_then(|c| i32::try_from(c).ok()),
            output: r.output,
            error: r.error,
            stack_trace: r.stack_trace,
            missed_count: r.missed_count,
            missed_last: r.missed_last.map(time).transpose()?,
        })
    }
}

/// A run row about to be inserted.
struct NewRun {
    id: RunId,
    scheduled_for: Option<DateTime<Utc>>,
    origin: RunOrigin,
    state: RunState,
    attempt: u32,
    missed: Option<(i64, DateTime<Utc>)>,
}

impl NewRun {
    fn new(scheduled_for: Option<DateTime<Utc>>, origin: RunOrigin, state: RunState, attempt: u32) -> Self {
        NewRun {
            id: RunId::generate(),
            scheduled_for,
            origin,
            state,
            attempt,
            missed: None,
        }
    }
}

/// Inserts `$run` for `$job_id` unless its (job, slot, attempt) exists; evaluates to
/// whether it was inserted.
macro_rules! insert_run {
    ($tx:expr, $job_id:expr, $run:expr, $now:expr) => {{
        let r: &NewRun = $run;
        sqlx::query(
            "INSERT INTO runs (id, job_id, scheduled_for, origin, state, attempt, created_at, \
             missed_count, missed_last, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING",
        )
        .bind(r.id.as_str())
        .bind($job_id)
        .bind(r.scheduled_for.map(ms))
        .bind(r.origin.as_str())
        .bind(r.state.as_str())
        .bind(i64::from(r.attempt))
        .bind(ms($now))
        .bind(r.missed.map(|m| m.0))
        .bind(r.missed.map(|m| ms(m.1)))
        .bind(r.state.is_final().then(|| ms($now)))
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1
    }};
}

/// Whether the job has an unfinished run (scheduled, queued or running) that its
/// overlap policy must respect; always `false` for overlap `allow`, which needs no look.
macro_rules! has_active_run {
    ($tx:expr, $job:expr) => {{
        let job: &Job = $job;
        if job.spec.overlap_policy == OverlapPolicy::Allow {
            false
        } else {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 AND state IN ('scheduled', 'queued', 'running'))",
            )
            .bind(job.id.as_str())
            .fetch_one(&mut *$tx)
            .await?
        }
    }};
}

/// The slots of `job` that are due at `now`, and what to do with them.
struct Plan {
    /// Slots to run, oldest first, with their origin.
    fire: Vec<(DateTime<Utc>, RunOrigin)>,
    /// A stretch of slots not run: (first, last, count).
    missed: Option<(DateTime<Utc>, DateTime<Utc>, i64)>,
    /// The job's next fire time after this pass.
    next: Option<DateTime<Utc>>,
}

/// Decides, from the job's first due slot, which slots run (those due by `until`, which
/// is `now` or, ahead of time, later) and which are recorded as missed, following its
/// catch-up policy.
fn plan(job: &Job, first_due: DateTime<Utc>, now: DateTime<Utc>, until: DateTime<Utc>) -> Plan {
    let schedule = &job.spec.schedule;
    let mut slots = vec![first_due];
    let mut next = schedule.next_after(first_due);
    while let Some(t) = next.filter(|t| *t <= until) {
        if slots.len() >= MAX_SLOTS_SCANNED {
            // Jump past the rest of the outage in one step.
            next = schedule.next_after(now);
            break;
        }
        slots.push(t);
        next = schedule.next_after(t);
    }
    let cut = now - MISFIRE_GRACE;
    let split = slots.partition_point(|t| *t < cut);
    let (stale, on_time) = slots.split_at(split);
    let mut fire: Vec<_> = on_time.iter().map(|t| (*t, RunOrigin::Schedule)).collect();
    let kept: &[DateTime<Utc>] = match job.spec.catch_up {
        CatchUpPolicy::None => &[],
        CatchUpPolicy::Latest if on_time.is_empty() => &stale[stale.len().saturating_sub(1)..],
        CatchUpPolicy::Latest => &[],
        CatchUpPolicy::All => &stale[stale.len().saturating_sub(MAX_CATCH_UP_RUNS)..],
    };
    let dropped = &stale[..stale.len() - kept.len()];
    let mut catch_up: Vec<_> = kept.iter().map(|t| (*t, RunOrigin::CatchUp)).collect();
    catch_up.append(&mut fire);
    let missed = match (dropped.first(), dropped.last()) {
        (Some(first), Some(last)) => {
            let count = dropped.len() as i64;
            Some((*first, *last, count))
        }
        _ => None,
    };
    Plan {
        fire: catch_up,
        missed,
        next,
    }
}

/// If `$job` queues overlapping runs and none of its runs is scheduled or running any
/// more, moves its oldest queued run to `scheduled` and adds it to `$pushed`.
macro_rules! release_queued {
    ($tx:expr, $job:expr, $pushed:expr) => {{
        let job: &Job = $job;
        if job.spec.overlap_policy == OverlapPolicy::Queue {
            let busy: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 AND state IN ('scheduled', 'running'))",
            )
            .bind(job.id.as_str())
            .fetch_one(&mut *$tx)
            .await?;
            if !busy {
                let next: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE job_id = $1 AND state = 'queued' ORDER BY created_at, id LIMIT 1",
                )
                .bind(job.id.as_str())
                .fetch_optional(&mut *$tx)
                .await?;
                if let Some(id) = next {
                    sqlx::query("UPDATE runs SET state = 'scheduled' WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *$tx)
                        .await?;
                    $pushed.push((id, None));
                }
            }
        }
    }};
}

impl Store {
    /// One scheduler pass: for every job due at `now` (up to [`FIRE_BATCH`]), creates the
    /// runs its slots call for, pushes their tasks and moves its next fire time, all in
    /// one transaction. Safe to run from any number of processes at once: Postgres
    /// schedulers skip jobs another holds, and the unique (job, slot, attempt) key makes a
    /// slot fire once even if two passes raced.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<FireReport, StoreError> {
        self.fire_due_ahead(now, Duration::zero()).await
    }

    /// [`Store::fire_due`], and also the slots up to `lookahead` ahead of jobs with
    /// overlap `allow`: their runs are created now, and their tasks are queued to become
    /// due at the slot's time, when this process's worker is woken to take them. So the
    /// work of firing (planning, inserting, committing) is done before the slot, and a
    /// run starts within milliseconds of it. Only `allow` jobs are fired ahead, because
    /// for `skip` and `queue` whether a slot runs depends on what is running at its time.
    pub async fn fire_due_ahead(
        &self,
        now: DateTime<Utc>,
        lookahead: Duration,
    ) -> Result<FireReport, StoreError> {
        let mut report = FireReport::default();
        let ahead = now + lookahead;
        let (fired, future) = with_tx!(self, tx, q => {
            let rows: Vec<JobRow> = sqlx::query_as(q::DUE_JOBS_SQL)
                .bind(ms(now))
                .bind(FIRE_BATCH)
                .bind(ms(ahead))
                .fetch_all(&mut *tx)
                .await?;
            let (mut to_push, mut early) = (Vec::new(), Vec::new());
            for row in rows {
                let job = Job::try_from(row)?;
                let Some(first_due) = job.next_run_at else { continue };
                report.jobs += 1;
                let until = if job.spec.overlap_policy == OverlapPolicy::Allow { ahead } else { now };
                let plan = plan(&job, first_due, now, until);
                let job_id = job.id.as_str();
                if let Some((first, last, count)) = plan.missed {
                    let mut row = NewRun::new(Some(first), RunOrigin::Schedule, RunState::Missed, 1);
                    row.missed = Some((count, last));
                    if insert_run!(tx, job_id, &row, now) {
                        report.missed += 1;
                    }
                }
                let mut active = !plan.fire.is_empty() && has_active_run!(tx, &job);
                for (slot, origin) in plan.fire {
                    let state = match (job.spec.overlap_policy, active) {
                        (_, false) | (OverlapPolicy::Allow, true) => RunState::Scheduled,
                        (OverlapPolicy::Skip, true) => RunState::Skipped,
                        (OverlapPolicy::Queue, true) => RunState::Queued,
                    };
                    let run = NewRun::new(Some(slot), origin, state, 1);
                    if !insert_run!(tx, job_id, &run, now) {
                        report.duplicates += 1;
                        continue;
                    }
                    match state {
                        RunState::Skipped => report.skipped += 1,
                        RunState::Scheduled => {
                            report.fired += 1;
                            active = true;
                            if slot > now {
                                early.push((run.id.to_string(), slot));
                            } else {
                                to_push.push((run.id.to_string(), None));
                            }
                        }
                        _ => {
                            report.fired += 1;
                            active = true;
                        }
                    }
                }
                sqlx::query("UPDATE scheduled_jobs SET next_fire_at = $2 WHERE id = $1 AND next_fire_at = $3")
                    .bind(job_id)
                    .bind(plan.next.map(ms))
                    .bind(ms(first_due))
                    .execute(&mut *tx)
                    .await?;
            }
            q::push(&mut tx, &to_push).await?;
            q::push_ahead(&mut tx, &early).await?;
            let mut future: Vec<_> = early.iter().map(|(_, slot)| *slot - q::RUN_LEAD).collect();
            future.sort();
            future.dedup();
            (!to_push.is_empty(), future)
        });
        if fired {
            self.wake.notify_one();
        }
        for at in future {
            self.wake_runs_at(at);
        }
        Ok(report)
    }

    /// Wakes this process's run worker just after `at` (wall-clock time, which is what
    /// the queue compares task due times with), to take the tasks due then (on Postgres
    /// [`RUN_LEAD`](super::dialect::postgres::RUN_LEAD) before their slot).
    fn wake_runs_at(&self, at: DateTime<Utc>) {
        let wake = self.wake.clone();
        let delay = (at - Utc::now()).to_std().unwrap_or_default() + WAKE_MARGIN;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            wake.notify_one();
        });
    }

    /// When the next scheduler pass is due: the earliest next fire time of any active job,
    /// `lookahead` earlier for jobs with overlap `allow` (see [`Store::fire_due_ahead`]).
    pub async fn next_due_at(&self, lookahead: Duration) -> Result<Option<DateTime<Utc>>, StoreError> {
        let v: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(CASE WHEN overlap_policy = 'allow' THEN next_fire_at - $1 ELSE next_fire_at END)              FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND NOT paused")
            .bind(lookahead.num_milliseconds())
            .fetch_one(pool)
            .await)?;
        v.map(time).transpose()
    }

    /// "Run now": a manual run of the job, outside its schedule (overlap policy applies:
    /// with `skip` and a run in progress, the new run is recorded as `skipped`).
    pub async fn trigger_run(&self, job_id: &JobId, now: DateTime<Utc>) -> Result<Run, RunError> {
        let job = self.get_job(job_id).await?.ok_or(RunError::NotFound)?;
        let id = with_tx!(self, tx, q => {
            let active = has_active_run!(tx, &job);
            let state = match (job.spec.overlap_policy, active) {
                (_, false) | (OverlapPolicy::Allow, true) => RunState::Scheduled,
                (OverlapPolicy::Skip, true) => RunState::Skipped,
                (OverlapPolicy::Queue, true) => RunState::Queued,
            };
            let run = NewRun::new(None, RunOrigin::Manual, state, 1);
            let _ = insert_run!(tx, job_id.as_str(), &run, now);
            if state == RunState::Scheduled {
                q::push(&mut tx, &[(run.id.to_string(), None)]).await?;
            }
            run.id
        });
        self.wake.notify_one();
        self.get_run(&id).await?.ok_or(RunError::NotFound)
    }

    /// The run with this id.
    pub async fn get_run(&self, id: &RunId) -> Result<Option<Run>, StoreError> {
        let row: Option<RunRow> = with_pool!(self, pool => sqlx::query_as(
            concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await)?;
        row.map(Run::try_from).transpose()
    }

    /// The job's runs, newest first (including `skipped` and `missed` ledger rows).
    pub async fn list_runs(&self, job_id: &JobId, page: &PageRequest) -> Result<Page<Run>, StoreError> {
        let (before_ms, before_id) = page
            .after
            .as_ref()
            .map_or((i64::MAX, "~"), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<RunRow> = with_pool!(self, pool => sqlx::query_as(concat!(
            "SELECT ", run_columns!(), " FROM runs WHERE job_id = $1 ",
            "AND (created_at < $2 OR (created_at = $2 AND id < $3)) ",
            "ORDER BY created_at DESC, id DESC LIMIT $4"))
            .bind(job_id.as_str())
            .bind(before_ms)
            .bind(before_id)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await)?;
        let items = rows
            .into_iter()
            .map(Run::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, page.limit, |r| {
            Cursor::after(r.created_at, r.id.as_str())
        }))
    }

    /// Workers picked up the tasks of `run_ids`: moves those runs to `running` with one
    /// UPDATE that returns them, while their jobs are read beside it (another
    /// connection; a job does not change with its run's state), and says for each (in
    /// order) what to do. Runs the UPDATE did not take (already running elsewhere,
    /// cancelled, gone) are read afterwards, which is rare.
    pub async fn start_runs(
        &self,
        run_ids: &[RunId],
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StartOutcome>, StoreError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let start = async {
            with_writer!(self, pool => {
                let mut b = sqlx::QueryBuilder::new("UPDATE runs SET state = 'running', started_at = ");
                b.push_bind(ms(now))
                    .push(", worker = ")
                    .push_bind(worker)
                    .push(", lateness_ms = CASE WHEN scheduled_for IS NULL THEN NULL ELSE ")
                    .push_bind(ms(now))
                    .push(" - scheduled_for END WHERE state = 'scheduled' AND id IN ");
                super::push_list(&mut b, run_ids.iter().map(RunId::as_str));
                b.push(concat!(" RETURNING ", run_columns!()));
                b.build_query_as::<RunRow>().fetch_all(pool).await
            })
        };
        let ids: Vec<&str> = run_ids.iter().map(RunId::as_str).collect();
        let jobs = self.jobs_of_runs(&ids);
        let (started, jobs) = tokio::join!(start, jobs);
        let (started, jobs) = (started?, jobs?);
        let by_id = |rows: Vec<RunRow>| {
            rows.into_iter()
                .map(|row| Run::try_from(row).map(|run| (run.id.to_string(), run)))
                .collect::<Result<std::collections::HashMap<String, Run>, StoreError>>()
        };
        let mut started = by_id(started)?;
        let rest: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !started.contains_key(*id))
            .collect();
        let mut others = by_id(
            self.select_by_ids(
                concat!("SELECT ", run_columns!(), " FROM runs WHERE id IN "),
                &rest,
            )
            .await?,
        )?;
        let mut out = Vec::with_capacity(run_ids.len());
        for id in run_ids {
            let Some(run) = started.remove(id.as_str()) else {
                // Not taken: running elsewhere (a crashed worker's, to recover), or not
                // to run any more.
                out.push(match others.remove(id.as_str()) {
                    Some(run) if run.state == RunState::Running => StartOutcome::Orphaned(Box::new(run)),
                    _ => StartOutcome::Nothing,
                });
                continue;
            };
            match jobs.get(run.job_id.as_str()) {
                Some(job) => out.push(StartOutcome::Start(Box::new((run, job.clone())))),
                None => {
                    let result = RunResult {
                        state: RunState::Cancelled,
                        exit_code: None,
                        output: None,
                        error: Some("the job was deleted".into()),
                        stack_trace: None,
                        duration_ms: 0,
                    };
                    self.finish_runs(&[(id.clone(), result)], now, Duration::zero())
                        .await?;
                    out.push(StartOutcome::Nothing);
                }
            }
        }
        Ok(out)
    }

    /// Records the process groups of running commands (with their leaders' start times
    /// and the host boot they belong to), so a worker recovering a run after a crash can
    /// kill what is left of it, and only that.
    pub async fn record_process_groups(
        &self,
        groups: &[(RunId, u32, Option<u64>)],
        boot_id: &str,
    ) -> Result<(), StoreError> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut groups: Vec<&(RunId, u32, Option<u64>)> = groups.iter().collect();
        groups.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        with_writer!(self, pool, q => {
            let mut b = sqlx::QueryBuilder::new("WITH v (id, pgid, pgid_start) AS (");
            b.push_values(&groups, |mut row, (id, pgid, start)| {
                row.push_bind(id.as_str())
                    .push_bind(i64::from(*pgid))
                    .push_bind(start.and_then(|s| i64::try_from(s).ok()));
            });
            // Postgres locks the rows in id order first (`dialect::postgres::LOCK_GROUP_RUNS`).
            b.push(")")
                .push(q::LOCK_GROUP_RUNS)
                .push(" UPDATE runs SET pgid = v.pgid, pgid_start = v.pgid_start, boot_id = ")
                .push_bind(boot_id)
                .push(" FROM v")
                .push(q::JOIN_LOCKED_GROUP_RUNS)
                .push(" WHERE runs.id = v.id AND runs.state = 'running'");
            b.build().execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }
    /// The recorded process group of a running run: its id, the boot id, and its
    /// leader's start time (if it could be read).
    pub async fn process_group_of(
        &self,
        run_id: &RunId,
    ) -> Result<Option<(u32, String, Option<u64>)>, StoreError> {
        let row: Option<(Option<i64>, Option<String>, Option<i64>)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT pgid, boot_id, pgid_start FROM runs WHERE id = $1")
            .bind(run_id.as_str())
            .fetch_optional(pool)
            .await)?;
        Ok(match row {
            Some((Some(pgid), Some(boot), start)) => u32::try_from(pgid)
                .ok()
                .map(|p| (p, boot, start.and_then(|s| u64::try_from(s).ok()))),
            _ => None,
        })
    }

    /// Whether a user asked to cancel the running run.
    pub async fn cancel_requested(&self, run_id: &RunId) -> Result<bool, StoreError> {
        let v: Option<bool> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(run_id.as_str())
            .fetch_optional(pool)
            .await)?;
        Ok(v.unwrap_or(false))
    }

    /// Cancels a run: one not started yet ends `cancelled` at once; a running one is
    /// flagged, and its worker stops the process group and records `cancelled`.
    pub async fn cancel_run(&self, run_id: &RunId, now: DateTime<Utc>) -> Result<Run, RunError> {
        let run = self.get_run(run_id).await?.ok_or(RunError::NotFound)?;
        if run.state.is_final() {
            return Err(RunError::AlreadyFinal(run.state.as_str()));
        }
        let pushed = with_tx!(self, tx, q => {
            let n = sqlx::query(
                "UPDATE runs SET state = 'cancelled', finished_at = $2, error = 'cancelled by a user' \
                 WHERE id = $1 AND state IN ('scheduled', 'queued')")
                .bind(run_id.as_str())
                .bind(ms(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                sqlx::query("UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running'")
                    .bind(run_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                false
            } else {
                let job = sqlx::query_as::<_, JobRow>(concat!(
                    "SELECT ", job_columns!(), " FROM scheduled_jobs WHERE id = $1"))
                    .bind(run.job_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let mut pushed = Vec::new();
                if let Some(job) = job.map(Job::try_from).transpose()? {
                    release_queued!(tx, &job, pushed);
                }
                q::push(&mut tx, &pushed).await?;
                !pushed.is_empty()
            }
        });
        if pushed {
            self.wake.notify_one();
        }
        self.get_run(run_id).await?.ok_or(RunError::NotFound)
    }

    /// Writes running runs' final states, each together with its event, its retry (if
    /// the job allows one; after `retry_base × 2^(attempt-1)`, at most an hour) and the
    /// start of the oldest queued run of its job, all in one transaction (one commit for
    /// the batch). A run no longer running (another worker already recovered it) is left
    /// as it is.
    pub async fn finish_runs(
        &self,
        batch: &[(RunId, RunResult)],
        now: DateTime<Utc>,
        retry_base: Duration,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One order for every batch, so two batches lock shared rows in the same order.
        let mut batch: Vec<&(RunId, RunResult)> = batch.iter().collect();
        batch.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let pushed = with_tx!(self, tx, q => {
            if !q::LOCK_QUEUE_JOBS_OF_RUNS.is_empty() {
                let mut b = sqlx::QueryBuilder::new(q::LOCK_QUEUE_JOBS_OF_RUNS);
                super::push_list(&mut b, batch.iter().map(|(id, _)| id.as_str()));
                b.push(") ORDER BY id FOR UPDATE");
                b.build().execute(&mut *tx).await?;
            }
            let hooks = super::webhooks::enabled_hooks!(tx);
            let mut jobs: std::collections::HashMap<String, Option<Job>> = std::collections::HashMap::new();
            let mut pushed = Vec::new();
            // (event id, type, job id, environment) of each event, fanned out after the loop.
            let mut events: Vec<(EventId, EventType, String, String)> = Vec::new();
            for (run_id, result) in batch.iter().copied() {
                let run: Option<RunRow> = sqlx::query_as(concat!(
                    "UPDATE runs SET state = $2, finished_at = $3, duration_ms = $4, exit_code = $5, \
                     output = $6, error = $7, stack_trace = $8, pgid = NULL \
                     WHERE id = $1 AND state IN ('running', 'scheduled') RETURNING ", run_columns!()))
                    .bind(run_id.as_str())
                    .bind(result.state.as_str())
                    .bind(ms(now))
                    .bind(result.duration_ms)
                    .bind(result.exit_code.map(i64::from))
                    .bind(&result.output)
                    .bind(&result.error)
                    .bind(&result.stack_trace)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(run) = run.map(Run::try_from).transpose()? else {
                    continue;
                };
                if !jobs.contains_key(run.job_id.as_str()) {
                    let job = sqlx::query_as::<_, JobRow>(concat!(
                        "SELECT ", job_columns!(), " FROM scheduled_jobs WHERE id = $1"))
                        .bind(run.job_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    jobs.insert(run.job_id.to_string(), job.map(Job::try_from).transpose()?);
                }
                let Some(Some(job)) = jobs.get(run.job_id.as_str()) else {
                    continue;
                };
                let failed = matches!(result.state, RunState::Failed | RunState::TimedOut);
                let will_retry = failed && run.attempt <= job.spec.max_retries;
                if let Some(kind) = EventType::for_state(result.state) {
                    let payload = job_event_payload(kind, job, &run, will_retry, job.next_run_at, now);
                    let event_id = EventId::generate();
                    sqlx::query(
                        "INSERT INTO events (id, job_id, run_id, event_type, payload, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(event_id.as_str())
                    .bind(job.id.as_str())
                    .bind(run.id.as_str())
                    .bind(kind.as_str())
                    .bind(payload.to_string())
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await?;
                    events.push((event_id, kind, job.id.to_string(), job.spec.environment.as_str().to_owned()));
                }
                if will_retry {
                    let exp = 2_i32.saturating_pow(run.attempt.saturating_sub(1).min(20));
                    let delay = (retry_base * exp).min(Duration::hours(1));
                    let retry = NewRun::new(run.scheduled_for, RunOrigin::Retry, RunState::Scheduled, run.attempt + 1);
                    // A manual run's retries share its NULL slot; the key allows it.
                    let _ = insert_run!(tx, job.id.as_str(), &retry, now);
                    pushed.push((retry.id.to_string(), Some(now + delay)));
                } else {
                    release_queued!(tx, job, pushed);
                }
            }
            q::push(&mut tx, &pushed).await?;
            let deliveries: Vec<_> = events
                .iter()
                .flat_map(|(id, kind, job, env)| deliveries_for(&hooks, id.as_str(), *kind, job, env))
                .collect();
            insert_deliveries!(tx, q, &deliveries, now);
            (!pushed.is_empty(), !deliveries.is_empty())
        });
        if pushed.0 {
            self.wake.notify_one();
        }
        if pushed.1 {
            self.wake_deliveries.notify_one();
        }
        Ok(())
    }
    /// Events in creation order (the outbox), one page at a time.
    pub async fn list_events(&self, page: &PageRequest) -> Result<Page<(String, String)>, StoreError> {
        let (after_ms, after_id) = page
            .after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<(String, String, i64)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, payload, created_at FROM events \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) ORDER BY created_at, id LIMIT $3")
            .bind(after_ms)
            .bind(after_id)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await)?;
        let page = Page::from_rows(rows, page.limit, |(id, _, at)| Cursor {
            created_at_ms: *at,
            id: id.clone(),
        });
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|(id, payload, _)| (id, payload))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }
}
