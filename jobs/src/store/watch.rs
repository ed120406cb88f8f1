//! The watchdog's reads and writes: slots whose run has not started in time become
//! `job.late`, runs going past their threshold `job.overran`, each sent once (the
//! `job_alerts` key refuses a second); and a job's health. The rules are
//! `domain::watch`'s. Nothing here depends on the scheduler or the run queue working: the
//! ledger and the jobs' next fire times are read as they are.

use super::{
    Change, Store,
    db::{Arg, Statement},
    jobs::{JobRow, job_columns},
    runs::{RunEvent, event_job, ms, store_events, time},
};
use crate::StoreError;
use crate::domain::{
    EventType, Job, RunId,
    event::{EventJob, Overran, job_late_payload, job_overran_payload},
    watch::{HealthState, MIN_OVERRAN, RECENT_RUNS, late_slots, overran_threshold, waiting_run_is_late},
};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

/// Rows each of a pass's reads looks at, at most.
const BATCH: i64 = 500;
/// Pages of overdue jobs one pass looks at, at most.
const MAX_PAGES: usize = 20;

/// What one watchdog pass sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchReport {
    /// `job.late` events.
    pub late: usize,
    /// `job.overran` events.
    pub overran: usize,
}

/// A job's health, as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobHealth {
    /// The worst of the below.
    pub state: HealthState,
    /// A slot's run has not started `late_after_seconds` after it.
    pub late: bool,
    /// A run is going past its overrun threshold (`job.overran` was sent for it).
    pub overran: bool,
    /// Its failure streak reached `alert_after_failures` (`job.failing` was sent).
    pub failing: bool,
    /// The newest scheduled run that started within `late_after_seconds` of its slot, and
    /// when it started.
    pub last_on_time_run: Option<(RunId, DateTime<Utc>)>,
}

/// An alert a pass may send, unless sent before.
struct Alert {
    job: EventJob,
    kind: &'static str,
    key: String,
    event: EventType,
    payload: serde_json::Value,
    /// What must still hold when it is written (the pass read before its transaction).
    still: Still,
}

/// The condition an alert is written under, checked in the writing transaction.
enum Still {
    /// The job, not paused, has not fired this slot (ms) yet.
    Unfired(i64),
    /// This run still waits to start.
    Waiting(String),
    /// This run is still going.
    Running(String),
}

impl Still {
    /// The SQL condition, on parameter `$5`, and its value.
    fn condition(&self) -> (&'static str, Arg<'_>) {
        match self {
            Still::Unfired(slot) => (
                "EXISTS (SELECT 1 FROM scheduled_jobs WHERE id = $1 AND NOT paused AND next_fire_at <= $5)",
                (*slot).into(),
            ),
            Still::Waiting(run) => (
                "EXISTS (SELECT 1 FROM runs WHERE id = $5 AND state IN ('scheduled', 'queued'))",
                run.as_str().into(),
            ),
            Still::Running(run) => (
                "EXISTS (SELECT 1 FROM runs WHERE id = $5 AND state = 'running')",
                run.as_str().into(),
            ),
        }
    }
}

fn run_id(id: &str) -> Result<RunId, StoreError> {
    RunId::parse(id).ok_or_else(|| StoreError::Corrupt(format!("run id {id}")))
}

impl Store {
    /// One watchdog pass at `now`: finds the late slots (those the scheduler has not
    /// fired, and fired ones whose run waits to start) and the runs that overran, and
    /// sends `job.late` / `job.overran` for those not alerted yet, in one transaction.
    /// Any number of processes may run it at once: the alert's key is inserted with ON
    /// CONFLICT DO NOTHING, and only the process whose insert took it writes the event.
    pub async fn watch(&self, now: DateTime<Utc>) -> Result<WatchReport, StoreError> {
        let mut alerts = self.late_alerts(now).await?;
        alerts.extend(self.overran_alerts(now).await?);
        let mut report = WatchReport::default();
        if alerts.is_empty() {
            return Ok(report);
        }
        // One order for every process, so two passes inserting the same keys cannot
        // deadlock.
        alerts.sort_by(|a, b| (a.job.id.as_str(), a.kind, &a.key).cmp(&(b.job.id.as_str(), b.kind, &b.key)));
        let mut tx = self.begin().await?;
        let mut events = Vec::new();
        for a in &alerts {
            let (condition, arg) = a.still.condition();
            let n = tx
                .execute(
                    format!(
                        "INSERT INTO job_alerts (job_id, kind, alert_key, created_at) SELECT $1, $2, $3, $4 \
                         WHERE {condition} ON CONFLICT (job_id, kind, alert_key) DO NOTHING"
                    ),
                    &[
                        a.job.id.as_str().into(),
                        a.kind.into(),
                        a.key.as_str().into(),
                        ms(now).into(),
                        arg,
                    ],
                )
                .await?;
            if n == 1 {
                match a.event {
                    EventType::JobLate => report.late += 1,
                    _ => report.overran += 1,
                }
                // The run an alert names has its own event: the alert's row names none.
                events.push(RunEvent::new(a.event, &a.job, None, &a.payload));
            }
        }
        let delivering = store_events(&mut tx, events, now).await?;
        tx.commit().await?;
        if delivering {
            self.changed(Change::DeliveriesPushed);
        }
        Ok(report)
    }

    /// The late slots at `now`, as alerts.
    async fn late_alerts(&self, now: DateTime<Utc>) -> Result<Vec<Alert>, StoreError> {
        let mut alerts = Vec::new();
        // Slots the scheduler has not fired (it is down, stuck or behind): every such
        // job, a page at a time, each from the slot after the newest already alerted.
        let mut after = (i64::MIN, String::new());
        for _ in 0..MAX_PAGES {
            let rows: Vec<JobRow> = self
                .reader()
                .fetch_all(
                    concat!(
                        "SELECT ",
                        job_columns!(),
                        " FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 AND NOT paused \
                         AND late_after_seconds > 0 AND next_fire_at + late_after_seconds * 1000 <= $2 \
                         AND (next_fire_at > $4 OR (next_fire_at = $4 AND id > $5)) \
                         ORDER BY next_fire_at, id LIMIT $3"
                    ),
                    &[
                        (ms(now) - 1000).into(),
                        ms(now).into(),
                        BATCH.into(),
                        after.0.into(),
                        after.1.as_str().into(),
                    ],
                )
                .await?;
            let full = rows.len() as i64 == BATCH;
            let jobs = rows
                .into_iter()
                .map(Job::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            let Some(last) = jobs.last() else {
                break;
            };
            after = (last.next_run_at.map_or(i64::MIN, ms), last.id.to_string());
            let mut s = Statement::new(
                "SELECT job_id, MAX(CAST(alert_key AS BIGINT)) FROM job_alerts WHERE kind = 'late' AND job_id IN ",
            );
            s.list(jobs.iter().map(|j| j.id.as_str()))
                .push(" GROUP BY job_id");
            let alerted: HashMap<String, i64> = self
                .reader()
                .fetch_built::<(String, i64)>(s)
                .await?
                .into_iter()
                .collect();
            for job in &jobs {
                let Some(first) = job.next_run_at else {
                    continue;
                };
                let late_after = job.spec.watch.late_after_seconds;
                let newest = alerted.get(job.id.as_str()).copied().unwrap_or(i64::MIN);
                let facts = EventJob::from(job);
                for slot in late_slots(&job.spec.schedule, first, late_after, now)
                    .into_iter()
                    .filter(|s| ms(*s) > newest)
                {
                    alerts.push(Alert {
                        payload: job_late_payload(&facts, slot, late_after, None, now),
                        job: facts.clone(),
                        kind: "late",
                        key: ms(slot).to_string(),
                        event: EventType::JobLate,
                        still: Still::Unfired(ms(slot)),
                    });
                }
            }
            if !full {
                break;
            }
        }
        // Fired slots whose run waits to start (the workers are down, stuck or busy).
        #[derive(sqlx::FromRow)]
        struct Waiting {
            id: String,
            job_id: String,
            scheduled_for: i64,
            late_after_seconds: i64,
            environment: String,
            max_retries: i64,
            timeout_seconds: i64,
        }
        let rows: Vec<Waiting> = self
            .reader()
            .fetch_all(
                "SELECT r.id, r.job_id, r.scheduled_for, j.late_after_seconds, j.environment, j.max_retries, \
                 j.timeout_seconds FROM runs r JOIN scheduled_jobs j ON j.id = r.job_id \
                 WHERE r.state IN ('scheduled', 'queued') AND r.attempt = 1 AND r.origin = 'schedule' \
                 AND r.scheduled_for IS NOT NULL \
                 AND j.late_after_seconds > 0 AND r.scheduled_for + j.late_after_seconds * 1000 <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM job_alerts a WHERE a.job_id = r.job_id AND a.kind = 'late' \
                 AND a.alert_key = CAST(r.scheduled_for AS TEXT)) \
                 ORDER BY r.scheduled_for LIMIT $2",
                &[ms(now).into(), BATCH.into()],
            )
            .await?;
        for w in rows {
            let job = event_job(&w.job_id, &w.environment, w.max_retries, w.timeout_seconds)?;
            let late_after = u32::try_from(w.late_after_seconds).unwrap_or(u32::MAX);
            let run = run_id(&w.id)?;
            let slot = time(w.scheduled_for)?;
            alerts.push(Alert {
                payload: job_late_payload(&job, slot, late_after, Some(&run), now),
                job,
                kind: "late",
                key: w.scheduled_for.to_string(),
                event: EventType::JobLate,
                still: Still::Waiting(w.id),
            });
        }
        Ok(alerts)
    }

    /// The runs that overran at `now` and were not alerted yet, as alerts.
    async fn overran_alerts(&self, now: DateTime<Utc>) -> Result<Vec<Alert>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Going {
            id: String,
            job_id: String,
            started_at: i64,
            environment: String,
            max_retries: i64,
            timeout_seconds: i64,
            expected_duration_seconds: Option<i64>,
        }
        let rows: Vec<Going> = self
            .reader()
            .fetch_all(
                "SELECT r.id, r.job_id, r.started_at, j.environment, j.max_retries, j.timeout_seconds, \
                 j.expected_duration_seconds FROM runs r JOIN scheduled_jobs j ON j.id = r.job_id \
                 WHERE r.state = 'running' AND r.started_at IS NOT NULL \
                 AND r.started_at + COALESCE(j.expected_duration_seconds * 1000, $2) <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM job_alerts a WHERE a.job_id = r.job_id AND a.kind = 'overran' \
                 AND a.alert_key = r.id) ORDER BY r.started_at LIMIT $3",
                &[
                    ms(now).into(),
                    MIN_OVERRAN.num_milliseconds().into(),
                    BATCH.into(),
                ],
            )
            .await?;
        let mut recent: HashMap<String, Vec<i64>> = HashMap::new();
        let mut alerts = Vec::new();
        for g in rows {
            let job = event_job(&g.job_id, &g.environment, g.max_retries, g.timeout_seconds)?;
            let expected = g.expected_duration_seconds.and_then(|s| u32::try_from(s).ok());
            if expected.is_none() && !recent.contains_key(&g.job_id) {
                let durations: Vec<(i64,)> = self
                    .reader()
                    .fetch_all(
                        "SELECT duration_ms FROM runs WHERE job_id = $1 AND state = 'completed' \
                         AND duration_ms IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT $2",
                        &[g.job_id.as_str().into(), (RECENT_RUNS as i64).into()],
                    )
                    .await?;
                recent.insert(g.job_id.clone(), durations.into_iter().map(|(d,)| d).collect());
            }
            let history = recent.get(&g.job_id).map(Vec::as_slice).unwrap_or_default();
            let Some((threshold, basis)) = overran_threshold(expected, history, job.timeout_seconds) else {
                continue;
            };
            let started_at = time(g.started_at)?;
            if now - started_at < threshold {
                continue;
            }
            let run = run_id(&g.id)?;
            let overran = Overran {
                started_at,
                threshold_ms: threshold.num_milliseconds(),
                basis: basis.as_str(),
            };
            alerts.push(Alert {
                payload: job_overran_payload(&job, &run, &overran, now),
                job,
                kind: "overran",
                still: Still::Running(g.id.clone()),
                key: g.id,
                event: EventType::JobOverran,
            });
        }
        Ok(alerts)
    }

    /// `job`'s health at `now` (see [`JobHealth`]).
    pub async fn job_health(&self, job: &Job, now: DateTime<Utc>) -> Result<JobHealth, StoreError> {
        let late_after = job.spec.watch.late_after_seconds;
        let unfired_late = !job.paused
            && job
                .next_run_at
                .is_some_and(|t| waiting_run_is_late(t, late_after, now));
        let cut = now - Duration::seconds(i64::from(late_after));
        let (waiting_late, overran): (bool, bool) = self
            .reader()
            .fetch_one(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 AND state IN ('scheduled', 'queued') \
                 AND attempt = 1 AND scheduled_for IS NOT NULL AND scheduled_for <= $2 AND $3), \
                 EXISTS (SELECT 1 FROM job_alerts a JOIN runs r ON r.id = a.alert_key \
                 WHERE a.job_id = $1 AND a.kind = 'overran' AND r.state = 'running')",
                &[job.id.as_str().into(), ms(cut).into(), (late_after > 0).into()],
            )
            .await?;
        let last: Option<(String, i64)> = self
            .reader()
            .fetch_optional(
                "SELECT id, started_at FROM runs WHERE job_id = $1 AND scheduled_for IS NOT NULL \
                 AND started_at IS NOT NULL AND lateness_ms <= $2 ORDER BY created_at DESC, id DESC LIMIT 1",
                &[
                    job.id.as_str().into(),
                    (i64::from(late_after.max(1)) * 1000).into(),
                ],
            )
            .await?;
        let late = unfired_late || waiting_late;
        let failing = job.failure_alerted;
        Ok(JobHealth {
            state: HealthState::of(failing, overran, late),
            late,
            overran,
            failing,
            last_on_time_run: last
                .map(|(id, at)| Ok::<_, StoreError>((run_id(&id)?, time(at)?)))
                .transpose()?,
        })
    }
}
