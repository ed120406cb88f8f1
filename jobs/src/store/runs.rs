//! Runs, the scheduler's ledger, and the event outbox.
//!
//! Every state change of a run happens in one transaction with its consequences: the
//! scheduler inserts runs and pushes their queue tasks together; a finishing run writes
//! its final state, its event, its retry and the release of a queued successor together.
//! A crash between two statements therefore loses nothing and duplicates nothing.

use super::{
    Change, ChangedBy, Store,
    db::{Statement, Tx},
    jobs::{JobRow, job_columns},
    queue,
    webhooks::{NewEventRow, deliveries_for, fan_out_hooks, insert_deliveries, insert_events},
};
use crate::domain::{
    Cursor, Environment, EventId, EventType, Job, JobId, OverlapPolicy, Page, PageRequest, Run, RunId,
    RunOrigin, RunState,
    event::{
        EventJob, MissedSlots, job_event_payload, job_failing_payload, job_missed_payload,
        job_recovered_payload, job_skipped_payload,
    },
    firing::{plan_slots, retries, retry_delay, start_state},
    job::failing_alert_due,
};
use crate::{StoreError, ValidationError};
use chrono::{DateTime, Duration, Utc};

/// Due jobs handled per scheduler transaction.
pub const FIRE_BATCH: i64 = 256;

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
    /// When the tasks of the runs fired ahead of their slots become due, earliest first
    /// (each time once): whoever runs the worker wakes it then.
    pub due_ahead: Vec<DateTime<Utc>>,
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

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn time(v: i64) -> Result<DateTime<Utc>, StoreError> {
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

/// An event about a job, stored and fanned out with the change that caused it
/// ([`store_events`]).
pub(super) struct RunEvent {
    id: EventId,
    kind: EventType,
    job_id: JobId,
    /// The run it is about; `None` for events about a streak of runs.
    run_id: Option<RunId>,
    environment: String,
    payload: String,
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

impl RunEvent {
    pub(super) fn new(
        kind: EventType,
        job: &EventJob,
        run_id: Option<RunId>,
        payload: &serde_json::Value,
    ) -> Self {
        RunEvent {
            id: EventId::generate(),
            kind,
            job_id: job.id.clone(),
            run_id,
            environment: job.environment.as_str().to_owned(),
            payload: payload.to_string(),
        }
    }
}

/// Stores `events` inside `tx` and queues a delivery of each to every subscription that
/// wants it (the subscriptions read inside `tx`, only when there is an event). Returns
/// whether any delivery was queued.
pub(super) async fn store_events(
    tx: &mut Tx,
    mut events: Vec<RunEvent>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if events.is_empty() {
        return Ok(false);
    }
    let hooks = fan_out_hooks(tx).await?;
    let rows: Vec<NewEventRow<'_>> = events
        .iter_mut()
        .map(|e| NewEventRow {
            id: e.id.as_str(),
            job_id: Some(e.job_id.as_str()),
            run_id: e.run_id.as_ref().map(RunId::as_str),
            kind: e.kind,
            payload: std::mem::take(&mut e.payload),
        })
        .collect();
    insert_events(tx, &rows, now).await?;
    let deliveries: Vec<_> = events
        .iter()
        .flat_map(|e| deliveries_for(&hooks, e.id.as_str(), e.kind, e.job_id.as_str(), &e.environment))
        .collect();
    Ok(insert_deliveries(tx, deliveries, now).await? > 0)
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

/// Inserts `run` for `job_id` unless its (job, slot, attempt) exists; returns whether
/// it was inserted.
async fn insert_run(tx: &mut Tx, job_id: &str, run: &NewRun, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "INSERT INTO runs (id, job_id, scheduled_for, origin, state, attempt, created_at, \
             missed_count, missed_last, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING",
            &[
                run.id.as_str().into(),
                job_id.into(),
                run.scheduled_for.map(ms).into(),
                run.origin.as_str().into(),
                run.state.as_str().into(),
                i64::from(run.attempt).into(),
                ms(now).into(),
                run.missed.map(|m| m.0).into(),
                run.missed.map(|m| ms(m.1)).into(),
                run.state.is_final().then(|| ms(now)).into(),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// The job's oldest unfinished run (scheduled, queued or running), which its overlap
/// policy must respect; always `None` for overlap `allow`, which needs no look.
async fn active_run(tx: &mut Tx, job: &Job) -> Result<Option<RunId>, StoreError> {
    if job.spec.overlap_policy == OverlapPolicy::Allow {
        return Ok(None);
    }
    let id: Option<(String,)> = tx
        .fetch_optional(
            "SELECT id FROM runs WHERE job_id = $1 AND state IN ('scheduled', 'queued', 'running') \
             ORDER BY created_at, id LIMIT 1",
            &[job.id.as_str().into()],
        )
        .await?;
    id.map(|(id,)| RunId::parse(&id).ok_or_else(|| StoreError::Corrupt(format!("run id {id}"))))
        .transpose()
}

/// The `job.skipped` event of `run`, skipped because `active` was going.
fn skipped_event(job: &Job, run: &NewRun, active: &RunId, now: DateTime<Utc>) -> RunEvent {
    let facts = EventJob::from(job);
    let payload = job_skipped_payload(&facts, &run.id, run.scheduled_for, run.origin, active, now);
    RunEvent::new(EventType::JobSkipped, &facts, Some(run.id.clone()), &payload)
}

/// If `job` queues overlapping runs and none of its runs is scheduled or running any
/// more, moves its oldest queued run to `scheduled` and adds it to `pushed`.
async fn release_queued(
    tx: &mut Tx,
    job: &Job,
    pushed: &mut Vec<(String, Option<DateTime<Utc>>)>,
) -> Result<(), StoreError> {
    if job.spec.overlap_policy != OverlapPolicy::Queue {
        return Ok(());
    }
    let (busy,): (bool,) = tx
        .fetch_one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 AND state IN ('scheduled', 'running'))",
            &[job.id.as_str().into()],
        )
        .await?;
    if busy {
        return Ok(());
    }
    let next: Option<(String,)> = tx
        .fetch_optional(
            "SELECT id FROM runs WHERE job_id = $1 AND state = 'queued' ORDER BY created_at, id LIMIT 1",
            &[job.id.as_str().into()],
        )
        .await?;
    if let Some((id,)) = next {
        tx.execute(
            "UPDATE runs SET state = 'scheduled' WHERE id = $1",
            &[(&id).into()],
        )
        .await?;
        pushed.push((id, None));
    }
    Ok(())
}

/// The job with this id, read inside `tx`.
async fn job_in(tx: &mut Tx, id: &JobId) -> Result<Option<Job>, StoreError> {
    let row: Option<JobRow> = tx
        .fetch_optional(
            concat!("SELECT ", job_columns!(), " FROM scheduled_jobs WHERE id = $1"),
            &[id.as_str().into()],
        )
        .await?;
    row.map(Job::try_from).transpose()
}

/// Moves `job`'s failure streak on after its run `run` ended for good in `state`, inside
/// `tx` (under the job row's lock, so concurrent batches count every run), keeping
/// `job`'s copy in step. Returns the event that calls for, if any: `job.failing` when the
/// streak reaches the job's threshold (`domain::job::failing_alert_due`), `job.recovered`
/// when a completed run ends an alerted streak.
async fn update_streak(
    tx: &mut Tx,
    job: &mut Job,
    run: &Run,
    state: RunState,
    now: DateTime<Utc>,
) -> Result<Option<(EventType, serde_json::Value)>, StoreError> {
    let id = job.id.as_str();
    match state {
        RunState::Failed | RunState::TimedOut => {
            let (streak, alerted): (i64, bool) = tx
                .fetch_one(
                    "UPDATE scheduled_jobs SET failure_streak = failure_streak + 1 WHERE id = $1 \
                     RETURNING failure_streak, failure_alerted",
                    &[id.into()],
                )
                .await?;
            job.failure_streak = u32::try_from(streak).unwrap_or(u32::MAX);
            job.failure_alerted = alerted;
            let threshold = job.spec.alert_after_failures;
            if !failing_alert_due(job.failure_streak, threshold, alerted) {
                return Ok(None);
            }
            tx.execute(
                "UPDATE scheduled_jobs SET failure_alerted = TRUE WHERE id = $1",
                &[id.into()],
            )
            .await?;
            job.failure_alerted = true;
            let payload = job_failing_payload(
                &EventJob::from(&*job),
                job.failure_streak,
                threshold,
                &run.id,
                state,
                now,
            );
            Ok(Some((EventType::JobFailing, payload)))
        }
        // A job that alerts is always checked; others only when its copy shows a streak.
        RunState::Completed
            if job.spec.alert_after_failures > 0 || job.failure_streak > 0 || job.failure_alerted =>
        {
            // The no-op update takes the row's lock and reads what it holds.
            let (before, alerted): (i64, bool) = tx
                .fetch_one(
                    "UPDATE scheduled_jobs SET failure_streak = failure_streak WHERE id = $1 \
                     RETURNING failure_streak, failure_alerted",
                    &[id.into()],
                )
                .await?;
            if before == 0 && !alerted {
                return Ok(None);
            }
            tx.execute(
                "UPDATE scheduled_jobs SET failure_streak = 0, failure_alerted = FALSE WHERE id = $1",
                &[id.into()],
            )
            .await?;
            (job.failure_streak, job.failure_alerted) = (0, false);
            let before = u32::try_from(before).unwrap_or(u32::MAX);
            Ok(alerted.then(|| {
                let payload = job_recovered_payload(&EventJob::from(&*job), &run.id, before, now);
                (EventType::JobRecovered, payload)
            }))
        }
        _ => Ok(None),
    }
}

/// What the deletion of job `id` kept for the events of its last runs, read inside `tx`.
async fn deleted_job_in(tx: &mut Tx, id: &JobId) -> Result<Option<EventJob>, StoreError> {
    let row: Option<(String, i64, i64)> = tx
        .fetch_optional(
            "SELECT environment, max_retries, timeout_seconds FROM deleted_jobs WHERE id = $1",
            &[id.as_str().into()],
        )
        .await?;
    row.map(|(environment, max_retries, timeout_seconds)| {
        event_job(id.as_str(), &environment, max_retries, timeout_seconds)
    })
    .transpose()
}

/// What an event says of a job, from its stored columns (the job's row, or what its
/// deletion kept).
pub(super) fn event_job(
    id: &str,
    environment: &str,
    max_retries: i64,
    timeout_seconds: i64,
) -> Result<EventJob, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: {what}"));
    Ok(EventJob {
        id: JobId::parse(id).ok_or_else(|| corrupt("id"))?,
        environment: Environment::parse(environment).ok_or_else(|| corrupt("environment"))?,
        max_retries: u32::try_from(max_retries).map_err(|_| corrupt("max_retries"))?,
        timeout_seconds: u32::try_from(timeout_seconds).map_err(|_| corrupt("timeout_seconds"))?,
    })
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
        let mut tx = self.begin().await?;
        let due_jobs = format!(
            "{}{}",
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= $3 AND NOT paused ",
                "AND (next_fire_at <= $1 OR overlap_policy = 'allow') ORDER BY next_fire_at LIMIT $2"
            ),
            tx.dialect().skip_locked
        );
        let rows: Vec<JobRow> = tx
            .fetch_all(due_jobs, &[ms(now).into(), FIRE_BATCH.into(), ms(ahead).into()])
            .await?;
        let (mut to_push, mut early) = (Vec::new(), Vec::new());
        let mut events = Vec::new();
        for row in rows {
            let job = Job::try_from(row)?;
            let Some(first_due) = job.next_run_at else {
                continue;
            };
            report.jobs += 1;
            let until = if job.spec.overlap_policy == OverlapPolicy::Allow {
                ahead
            } else {
                now
            };
            let plan = plan_slots(&job, first_due, now, until);
            let job_id = job.id.as_str();
            if let Some((first, last, count)) = plan.missed {
                let mut row = NewRun::new(Some(first), RunOrigin::Schedule, RunState::Missed, 1);
                row.missed = Some((count, last));
                if insert_run(&mut tx, job_id, &row, now).await? {
                    report.missed += 1;
                    let facts = EventJob::from(&job);
                    let missed = MissedSlots {
                        count: u64::try_from(count).unwrap_or(0),
                        first,
                        last,
                    };
                    let payload =
                        job_missed_payload(&facts, &row.id, &missed, job.spec.catch_up.as_str(), now);
                    events.push(RunEvent::new(
                        EventType::JobMissed,
                        &facts,
                        Some(row.id),
                        &payload,
                    ));
                }
            }
            let mut active = if plan.fire.is_empty() {
                None
            } else {
                active_run(&mut tx, &job).await?
            };
            for (slot, origin) in plan.fire {
                let state = start_state(job.spec.overlap_policy, active.is_some());
                let run = NewRun::new(Some(slot), origin, state, 1);
                if !insert_run(&mut tx, job_id, &run, now).await? {
                    report.duplicates += 1;
                    continue;
                }
                match (state, &active) {
                    (RunState::Skipped, Some(going)) => {
                        report.skipped += 1;
                        events.push(skipped_event(&job, &run, going, now));
                    }
                    (RunState::Scheduled, _) => {
                        report.fired += 1;
                        if slot > now {
                            early.push((run.id.to_string(), slot));
                        } else {
                            to_push.push((run.id.to_string(), None));
                        }
                        active = Some(run.id);
                    }
                    _ => {
                        report.fired += 1;
                        active = Some(run.id);
                    }
                }
            }
            tx.execute(
                "UPDATE scheduled_jobs SET next_fire_at = $2 WHERE id = $1 AND next_fire_at = $3",
                &[job_id.into(), plan.next.map(ms).into(), ms(first_due).into()],
            )
            .await?;
        }
        queue::push_runs(&mut tx, &to_push).await?;
        queue::push_runs_ahead(&mut tx, &early).await?;
        let delivering = store_events(&mut tx, events, now).await?;
        let lead = queue::run_lead(self.backend());
        tx.commit().await?;
        if !to_push.is_empty() {
            self.changed(Change::RunsPushed);
        }
        if delivering {
            self.changed(Change::DeliveriesPushed);
        }
        report.due_ahead = early.iter().map(|(_, slot)| *slot - lead).collect();
        report.due_ahead.sort();
        report.due_ahead.dedup();
        Ok(report)
    }

    /// When the next scheduler pass is due: the earliest next fire time of any active job,
    /// `lookahead` earlier for jobs with overlap `allow` (see [`Store::fire_due_ahead`]).
    pub async fn next_due_at(&self, lookahead: Duration) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (v,): (Option<i64>,) = self
            .reader()
            .fetch_one(
                "SELECT MIN(CASE WHEN overlap_policy = 'allow' THEN next_fire_at - $1 ELSE next_fire_at END) \
                 FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND NOT paused",
                &[lookahead.num_milliseconds().into()],
            )
            .await?;
        v.map(time).transpose()
    }

    /// "Run now": a manual run of the job, outside its schedule (overlap policy applies:
    /// with `skip` and a run in progress, the new run is recorded as `skipped`).
    pub async fn trigger_run(
        &self,
        job_id: &JobId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Run, RunError> {
        let job = self.get_job(job_id).await?.ok_or(RunError::NotFound)?;
        let mut tx = self.begin().await?;
        let active = active_run(&mut tx, &job).await?;
        let state = start_state(job.spec.overlap_policy, active.is_some());
        let run = NewRun::new(None, RunOrigin::Manual, state, 1);
        let _ = insert_run(&mut tx, job_id.as_str(), &run, now).await?;
        let mut events = Vec::new();
        match (state, &active) {
            (RunState::Scheduled, _) => queue::push_runs(&mut tx, &[(run.id.to_string(), None)]).await?,
            (RunState::Skipped, Some(going)) => events.push(skipped_event(&job, &run, going, now)),
            _ => {}
        }
        let delivering = store_events(&mut tx, events, now).await?;
        by.record(&mut tx, "job", Some(job_id.as_str()), now).await?;
        tx.commit().await?;
        self.changed(Change::RunsPushed);
        if delivering {
            self.changed(Change::DeliveriesPushed);
        }
        self.get_run(&run.id).await?.ok_or(RunError::NotFound)
    }

    /// The run with this id.
    pub async fn get_run(&self, id: &RunId) -> Result<Option<Run>, StoreError> {
        let row: Option<RunRow> = self
            .reader()
            .fetch_optional(
                concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"),
                &[id.as_str().into()],
            )
            .await?;
        row.map(Run::try_from).transpose()
    }

    /// The job's runs, newest first (including `skipped` and `missed` ledger rows).
    pub async fn list_runs(&self, job_id: &JobId, page: &PageRequest) -> Result<Page<Run>, StoreError> {
        // `runs_by_job` is in listing order; the cursor is a row value, an index bound.
        let mut s = Statement::new(concat!("SELECT ", run_columns!(), " FROM runs WHERE job_id = "));
        s.bind(job_id.as_str()).in_where().keyset_page("", page, true);
        let rows: Vec<RunRow> = self.reader().fetch_built(s).await?;
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
    /// cancelled, gone) are read afterwards, which is rare. Runs whose job was deleted
    /// are finished `cancelled`, all in one transaction.
    pub async fn start_runs(
        &self,
        run_ids: &[RunId],
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StartOutcome>, StoreError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut s = Statement::new("UPDATE runs SET state = 'running', started_at = ");
        s.bind(ms(now))
            .push(", worker = ")
            .bind(worker)
            .push(", lateness_ms = CASE WHEN scheduled_for IS NULL THEN NULL ELSE ")
            .bind(ms(now))
            .push(" - scheduled_for END WHERE state = 'scheduled' AND id IN ")
            .list(run_ids.iter().map(RunId::as_str))
            .push(concat!(" RETURNING ", run_columns!()));
        let start = self.writer().fetch_built::<RunRow>(s);
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
        let mut job_gone = Vec::new();
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
                    job_gone.push((id.clone(), result));
                    out.push(StartOutcome::Nothing);
                }
            }
        }
        self.finish_runs(&job_gone, now, Duration::zero()).await?;
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
        let dialect = match self.backend() {
            super::Backend::Sqlite => &super::db::SQLITE,
            super::Backend::Postgres => &super::db::POSTGRES,
        };
        let mut s = Statement::new("WITH v (id, pgid, pgid_start) AS (");
        s.values(&groups, |row, (id, pgid, start)| {
            row.bind(id.as_str())
                .bind(i64::from(*pgid))
                .bind(start.and_then(|s| i64::try_from(s).ok()));
        });
        // Postgres locks the rows in id order first (`Dialect::lock_group_runs`).
        s.push(")")
            .push(dialect.lock_group_runs)
            .push(" UPDATE runs SET pgid = v.pgid, pgid_start = v.pgid_start, boot_id = ")
            .bind(boot_id)
            .push(" FROM v")
            .push(dialect.join_locked_group_runs)
            .push(" WHERE runs.id = v.id AND runs.state = 'running'");
        self.writer().run(s).await?;
        Ok(())
    }

    /// The recorded process group of a running run: its id, the boot id, and its
    /// leader's start time (if it could be read).
    pub async fn process_group_of(
        &self,
        run_id: &RunId,
    ) -> Result<Option<(u32, String, Option<u64>)>, StoreError> {
        let row: Option<(Option<i64>, Option<String>, Option<i64>)> = self
            .reader()
            .fetch_optional(
                "SELECT pgid, boot_id, pgid_start FROM runs WHERE id = $1",
                &[run_id.as_str().into()],
            )
            .await?;
        Ok(match row {
            Some((Some(pgid), Some(boot), start)) => u32::try_from(pgid)
                .ok()
                .map(|p| (p, boot, start.and_then(|s| u64::try_from(s).ok()))),
            _ => None,
        })
    }

    /// Whether a user asked to cancel the running run.
    pub async fn cancel_requested(&self, run_id: &RunId) -> Result<bool, StoreError> {
        let v: Option<(bool,)> = self
            .reader()
            .fetch_optional(
                "SELECT cancel_requested FROM runs WHERE id = $1",
                &[run_id.as_str().into()],
            )
            .await?;
        Ok(v.is_some_and(|(v,)| v))
    }

    /// Cancels a run: one not started yet ends `cancelled` at once; a running one is
    /// flagged, and its worker stops the process group and records `cancelled`.
    pub async fn cancel_run(
        &self,
        run_id: &RunId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Run, RunError> {
        let run = self.get_run(run_id).await?.ok_or(RunError::NotFound)?;
        if run.state.is_final() {
            return Err(RunError::AlreadyFinal(run.state.as_str()));
        }
        let mut tx = self.begin().await?;
        let n = tx
            .execute(
                "UPDATE runs SET state = 'cancelled', finished_at = $2, error = 'cancelled by a user' \
                 WHERE id = $1 AND state IN ('scheduled', 'queued')",
                &[run_id.as_str().into(), ms(now).into()],
            )
            .await?;
        let mut pushed = Vec::new();
        if n == 0 {
            tx.execute(
                "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running'",
                &[run_id.as_str().into()],
            )
            .await?;
        } else if let Some(job) = job_in(&mut tx, &run.job_id).await? {
            release_queued(&mut tx, &job, &mut pushed).await?;
            queue::push_runs(&mut tx, &pushed).await?;
        }
        by.record(&mut tx, "run", Some(run_id.as_str()), now).await?;
        tx.commit().await?;
        if !pushed.is_empty() {
            self.changed(Change::RunsPushed);
        }
        self.get_run(run_id).await?.ok_or(RunError::NotFound)
    }

    /// Writes running runs' final states, each together with its event, its retry (if
    /// the job allows one; see `domain::firing::retry_delay`) and the start of the
    /// oldest queued run of its job, all in one transaction (one commit for the batch).
    /// A run no longer running (another worker already recovered it) is left as it is.
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
        let mut tx = self.begin().await?;
        let lock = tx.dialect().lock_queue_jobs_of_runs;
        if !lock.is_empty() {
            let mut s = Statement::new(lock);
            s.list(batch.iter().map(|(id, _)| id.as_str()))
                .push(") ORDER BY id FOR UPDATE");
            tx.run(s).await?;
        }
        let mut jobs: std::collections::HashMap<JobId, Option<(EventJob, Option<Job>)>> =
            std::collections::HashMap::new();
        let mut pushed = Vec::new();
        // The events of the batch, stored and fanned out after the loop.
        let mut events: Vec<RunEvent> = Vec::new();
        for (run_id, result) in batch.iter().copied() {
            let run: Option<RunRow> = tx
                .fetch_optional(
                    concat!(
                        "UPDATE runs SET state = $2, finished_at = $3, duration_ms = $4, exit_code = $5, \
                         output = $6, error = $7, stack_trace = $8, pgid = NULL \
                         WHERE id = $1 AND state IN ('running', 'scheduled') RETURNING ",
                        run_columns!()
                    ),
                    &[
                        run_id.as_str().into(),
                        result.state.as_str().into(),
                        ms(now).into(),
                        result.duration_ms.into(),
                        result.exit_code.map(i64::from).into(),
                        result.output.as_deref().into(),
                        result.error.as_deref().into(),
                        result.stack_trace.as_deref().into(),
                    ],
                )
                .await?;
            let Some(run) = run.map(Run::try_from).transpose()? else {
                continue;
            };
            if !jobs.contains_key(&run.job_id) {
                let job = match job_in(&mut tx, &run.job_id).await? {
                    Some(job) => Some((EventJob::from(&job), Some(job))),
                    None => deleted_job_in(&mut tx, &run.job_id)
                        .await?
                        .map(|facts| (facts, None)),
                };
                jobs.insert(run.job_id.clone(), job);
            }
            let Some(Some((facts, live))) = jobs.get_mut(&run.job_id) else {
                continue;
            };
            // A deleted job's run is not retried and has no next run.
            let will_retry = live
                .as_ref()
                .is_some_and(|job| retries(result.state, run.attempt, job.spec.max_retries));
            if let Some(kind) = EventType::for_state(result.state) {
                let next = live.as_ref().and_then(|job| job.next_run_at);
                let payload = job_event_payload(kind, facts, &run, will_retry, next, now);
                events.push(RunEvent::new(kind, facts, Some(run.id.clone()), &payload));
            }
            let Some(job) = live else {
                continue;
            };
            if !will_retry
                && let Some((kind, payload)) = update_streak(&mut tx, job, &run, result.state, now).await?
            {
                events.push(RunEvent::new(kind, facts, None, &payload));
            }
            let job = &*job;
            if will_retry {
                let delay = retry_delay(retry_base, run.attempt);
                let retry = NewRun::new(
                    run.scheduled_for,
                    RunOrigin::Retry,
                    RunState::Scheduled,
                    run.attempt + 1,
                );
                // A manual run's retries share its NULL slot; the key allows it.
                let _ = insert_run(&mut tx, job.id.as_str(), &retry, now).await?;
                pushed.push((retry.id.to_string(), Some(now + delay)));
            } else {
                release_queued(&mut tx, job, &mut pushed).await?;
            }
        }
        queue::push_runs(&mut tx, &pushed).await?;
        let delivering = store_events(&mut tx, events, now).await?;
        tx.commit().await?;
        if !pushed.is_empty() {
            self.changed(Change::RunsPushed);
        }
        if delivering {
            self.changed(Change::DeliveriesPushed);
        }
        Ok(())
    }

    /// Events in creation order (the outbox), one page at a time.
    pub async fn list_events(&self, page: &PageRequest) -> Result<Page<(String, String)>, StoreError> {
        let (after_ms, after_id) = page
            .after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<(String, String, i64)> = self
            .reader()
            .fetch_all(
                "SELECT id, payload, created_at FROM events \
                 WHERE created_at > $1 OR (created_at = $1 AND id > $2) ORDER BY created_at, id LIMIT $3",
                &[
                    after_ms.into(),
                    after_id.into(),
                    (i64::from(page.limit) + 1).into(),
                ],
            )
            .await?;
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
