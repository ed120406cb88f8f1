//! The job catalogue: create, read, list, change, pause, resume and delete jobs.
//!
//! `next_fire_at` is the scheduler's source of truth: it is set here when a job is
//! created, resumed or rescheduled, and cleared while the job is paused.

use super::{
    Change, ChangedBy, Store,
    db::{Arg, Statement},
};
use crate::domain::{
    CatchUpPolicy, Cursor, Environment, Job, JobId, JobPatch, JobSpec, OverlapPolicy, Page, PageRequest,
    Schedule, Target,
    job::{JobName, Tags},
    watch::WatchSettings,
};
use crate::{StoreError, ValidationError};
use chrono::{DateTime, Utc};

/// Why a change to a job did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has this id.
    #[error("job not found")]
    NotFound,
    /// The change would make the job invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Store(e.into())
    }
}

/// The columns of `scheduled_jobs`, in the order of [`JobRow`] (a macro so queries stay
/// literals).
macro_rules! columns {
    () => {
        "id, name, schedule, timezone, target, timeout_seconds, max_retries, environment, \
         overlap_policy, catch_up, tags, alert_after_failures, late_after_seconds, expected_duration_seconds, \
         paused, next_fire_at, created_at, updated_at, failure_streak, failure_alerted"
    };
}

pub(super) use columns as job_columns;

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    name: String,
    schedule: String,
    timezone: String,
    target: String,
    timeout_seconds: i64,
    max_retries: i64,
    environment: String,
    overlap_policy: String,
    catch_up: String,
    tags: String,
    alert_after_failures: i64,
    late_after_seconds: i64,
    expected_duration_seconds: Option<i64>,
    paused: bool,
    next_fire_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    failure_streak: i64,
    failure_alerted: bool,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("job {}: {what}: {e}", r.id));
        let spec = JobSpec {
            name: JobName::parse(&r.name).map_err(|e| corrupt("name", &e))?,
            schedule: Schedule::parse(&r.schedule, &r.timezone).map_err(|e| corrupt("schedule", &e))?,
            target: serde_json::from_str::<Target>(&r.target).map_err(|e| corrupt("target", &e))?,
            timeout_seconds: u32::try_from(r.timeout_seconds).map_err(|e| corrupt("timeout", &e))?,
            max_retries: u32::try_from(r.max_retries).map_err(|e| corrupt("max_retries", &e))?,
            environment: Environment::parse(&r.environment)
                .ok_or_else(|| corrupt("environment", &r.environment))?,
            overlap_policy: OverlapPolicy::parse(&r.overlap_policy)
                .ok_or_else(|| corrupt("overlap_policy", &r.overlap_policy))?,
            catch_up: CatchUpPolicy::parse(&r.catch_up).ok_or_else(|| corrupt("catch_up", &r.catch_up))?,
            tags: serde_json::from_str::<Vec<String>>(&r.tags)
                .map_err(|e| corrupt("tags", &e))
                .and_then(|t| Tags::parse(t).map_err(|e| corrupt("tags", &e)))?,
            alert_after_failures: u32::try_from(r.alert_after_failures)
                .map_err(|e| corrupt("alert_after_failures", &e))?,
            watch: WatchSettings {
                late_after_seconds: u32::try_from(r.late_after_seconds)
                    .map_err(|e| corrupt("late_after_seconds", &e))?,
                expected_duration_seconds: r
                    .expected_duration_seconds
                    .map(u32::try_from)
                    .transpose()
                    .map_err(|e| corrupt("expected_duration_seconds", &e))?,
            },
        };
        Ok(Job {
            id: JobId::parse(&r.id).ok_or_else(|| corrupt("id", &r.id))?,
            spec,
            paused: r.paused,
            next_run_at: r.next_fire_at.map(from_ms).transpose()?,
            created_at: from_ms(r.created_at)?,
            updated_at: from_ms(r.updated_at)?,
            failure_streak: u32::try_from(r.failure_streak).map_err(|e| corrupt("failure_streak", &e))?,
            failure_alerted: r.failure_alerted,
        })
    }
}

fn target_json(t: &Target) -> String {
    // Serialising plain data to a String cannot fail.
    serde_json::to_string(t).unwrap_or_default()
}

fn tags_json(t: &Tags) -> String {
    serde_json::to_string(t.as_slice()).unwrap_or_default()
}

/// The job's id and definition, as `$1`–`$14` of its INSERT and UPDATE (the columns of
/// [`JobRow`] from `id` to `expected_duration_seconds`).
fn spec_args(job: &Job) -> Vec<Arg<'_>> {
    let s = &job.spec;
    vec![
        job.id.as_str().into(),
        s.name.as_str().into(),
        s.schedule.expr().into(),
        s.schedule.timezone().into(),
        target_json(&s.target).into(),
        i64::from(s.timeout_seconds).into(),
        i64::from(s.max_retries).into(),
        s.environment.as_str().into(),
        s.overlap_policy.as_str().into(),
        s.catch_up.as_str().into(),
        tags_json(&s.tags).into(),
        i64::from(s.alert_after_failures).into(),
        i64::from(s.watch.late_after_seconds).into(),
        s.watch.expected_duration_seconds.map(i64::from).into(),
    ]
}

impl Store {
    /// Stores a new job; it fires first at the schedule's next time after `now`.
    pub async fn create_job(
        &self,
        spec: JobSpec,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let job = Job {
            id: JobId::generate(),
            next_run_at: spec.schedule.next_after(now),
            spec,
            paused: false,
            created_at: now,
            updated_at: now,
            failure_streak: 0,
            failure_alerted: false,
        };
        let sql = concat!(
            "INSERT INTO scheduled_jobs (",
            columns!(),
            ") ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        );
        let mut args = spec_args(&job);
        args.extend([
            job.paused.into(),
            job.next_run_at.map(ms).into(),
            ms(job.created_at).into(),
            ms(job.updated_at).into(),
            0i64.into(),
            false.into(),
        ]);
        let mut tx = self.begin().await?;
        tx.execute(sql, &args).await?;
        by.record(&mut tx, "job", Some(job.id.as_str()), now).await?;
        tx.commit().await?;
        self.changed(Change::ScheduleChanged);
        Ok(job)
    }

    /// The job with this id, if any.
    pub async fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM scheduled_jobs WHERE id = $1");
        let row: Option<JobRow> = self.reader().fetch_optional(sql, &[id.as_str().into()]).await?;
        row.map(Job::try_from).transpose()
    }

    /// The jobs of the runs with these ids, by job id (in one query).
    pub(super) async fn jobs_of_runs(
        &self,
        run_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Job>, StoreError> {
        if run_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let mut s = Statement::new(concat!(
            "SELECT ",
            columns!(),
            " FROM scheduled_jobs WHERE id IN (SELECT job_id FROM runs WHERE id IN "
        ));
        s.list(run_ids.iter().copied()).push(")");
        let rows: Vec<JobRow> = self.reader().fetch_built(s).await?;
        rows.into_iter()
            .map(|r| Job::try_from(r).map(|j| (j.id.to_string(), j)))
            .collect()
    }

    /// Jobs in creation order, one page at a time.
    pub async fn list_jobs(&self, page: &PageRequest) -> Result<Page<Job>, StoreError> {
        let (after_ms, after_id) = page
            .after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()));
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM scheduled_jobs ",
            "WHERE created_at > $1 OR (created_at = $1 AND id > $2) ORDER BY created_at, id LIMIT $3"
        );
        let rows: Vec<JobRow> = self
            .reader()
            .fetch_all(
                sql,
                &[
                    after_ms.into(),
                    after_id.into(),
                    (i64::from(page.limit) + 1).into(),
                ],
            )
            .await?;
        let items = rows
            .into_iter()
            .map(Job::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, page.limit, |j| {
            Cursor::after(j.created_at, j.id.as_str())
        }))
    }

    /// Applies `patch` to a job. A changed schedule or time zone moves the next fire
    /// time to the new schedule's first slot after `now` (unless the job is paused).
    pub async fn update_job(
        &self,
        id: &JobId,
        patch: JobPatch,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Job, JobError> {
        let reschedule = patch.changes_schedule();
        let mut job = self.get_job(id).await?.ok_or(JobError::NotFound)?;
        job.spec = job.spec.patched(patch)?;
        if reschedule && !job.paused {
            job.next_run_at = job.spec.schedule.next_after(now);
        }
        job.updated_at = now;
        let sql = "UPDATE scheduled_jobs SET name = $2, schedule = $3, timezone = $4, target = $5, \
                   timeout_seconds = $6, max_retries = $7, environment = $8, overlap_policy = $9, \
                   catch_up = $10, tags = $11, alert_after_failures = $12, late_after_seconds = $13, \
                   expected_duration_seconds = $14, next_fire_at = $15, updated_at = $16 WHERE id = $1";
        let mut args = spec_args(&job);
        args.extend([job.next_run_at.map(ms).into(), ms(job.updated_at).into()]);
        let mut tx = self.begin().await?;
        let done = tx.execute(sql, &args).await?;
        if done == 0 {
            return Err(JobError::NotFound);
        }
        by.record(&mut tx, "job", Some(job.id.as_str()), now).await?;
        tx.commit().await?;
        self.changed(Change::ScheduleChanged);
        Ok(job)
    }

    /// Pauses (`true`) or resumes (`false`) a job. Pausing clears the next fire time;
    /// resuming sets it to the first slot after `now`, so paused slots are not caught up.
    /// Idempotent: pausing a paused job changes nothing.
    pub async fn set_job_paused(
        &self,
        id: &JobId,
        paused: bool,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Job, JobError> {
        let mut job = self.get_job(id).await?.ok_or(JobError::NotFound)?;
        if job.paused == paused {
            return Ok(job);
        }
        job.paused = paused;
        job.next_run_at = if paused {
            None
        } else {
            job.spec.schedule.next_after(now)
        };
        job.updated_at = now;
        let sql = "UPDATE scheduled_jobs SET paused = $2, next_fire_at = $3, updated_at = $4 WHERE id = $1";
        let mut tx = self.begin().await?;
        let done = tx
            .execute(
                sql,
                &[
                    job.id.as_str().into(),
                    paused.into(),
                    job.next_run_at.map(ms).into(),
                    ms(now).into(),
                ],
            )
            .await?;
        if done == 0 {
            return Err(JobError::NotFound);
        }
        by.record(&mut tx, "job", Some(job.id.as_str()), now).await?;
        tx.commit().await?;
        self.changed(Change::ScheduleChanged);
        Ok(job)
    }

    /// Deletes a job; `false` if there was none. Its runs stay (retention prunes them):
    /// one still going ends as usual and writes its event, from what the deletion keeps
    /// of the job (`deleted_jobs`); runs queued behind it are cancelled.
    pub async fn delete_job(
        &self,
        id: &JobId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let at = now.timestamp_millis();
        // What a run still going needs to write its event once the job is gone.
        tx.execute(
            "INSERT INTO deleted_jobs (id, environment, max_retries, timeout_seconds, deleted_at) \
             SELECT id, environment, max_retries, timeout_seconds, $2 FROM scheduled_jobs WHERE id = $1 \
             ON CONFLICT (id) DO NOTHING",
            &[id.as_str().into(), at.into()],
        )
        .await?;
        let n = tx
            .execute("DELETE FROM scheduled_jobs WHERE id = $1", &[id.as_str().into()])
            .await?;
        if n > 0 {
            // Runs waiting for a running one to end (overlap `queue`) will never start.
            tx.execute(
                "UPDATE runs SET state = 'cancelled', finished_at = $2, error = 'the job was deleted' \
                 WHERE job_id = $1 AND state = 'queued'",
                &[id.as_str().into(), at.into()],
            )
            .await?;
            by.record(&mut tx, "job", Some(id.as_str()), now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
