//! The jobs the run benches create and the runs they read back, through the engine's
//! public API.

use anyhow::Context;
use chrono::{DateTime, Utc};
use cronflow_jobs::{
    Store,
    domain::{
        CatchUpPolicy, CommandTarget, Environment, Job, JobId, JobSpec, OverlapPolicy, PageRequest, Run,
        Schedule, Target,
        job::{JobName, Tags},
        page::MAX_LIMIT,
    },
    store::ChangedBy,
};
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

/// Tasks creating jobs and reading runs at once (the pools hold 8 and 16 connections).
const PARALLEL: usize = 8;
/// Jobs created to time job creation (see `create_lateness_jobs`).
const CREATE_PROBE: usize = 200;
/// Seconds a bench run may take before it is stopped (`true` takes milliseconds).
const RUN_TIMEOUT_SECONDS: u32 = 60;

/// A job that runs `true` on `schedule`, with overlap `allow` and no retries.
pub(crate) fn bench_job(name: &str, schedule: &str) -> anyhow::Result<JobSpec> {
    Ok(JobSpec {
        name: JobName::parse(name)?,
        schedule: Schedule::parse(schedule, "UTC")?,
        target: Target::Command(CommandTarget::parse(vec!["true".into()], BTreeMap::new(), None)?),
        timeout_seconds: RUN_TIMEOUT_SECONDS,
        max_retries: 0,
        environment: Environment::default(),
        overlap_policy: OverlapPolicy::Allow,
        catch_up: CatchUpPolicy::default(),
        tags: Tags::default(),
        watch: Default::default(),
        alert_after_failures: 0,
    })
}

/// Creates the bench jobs with indices in `range` (job i fires at second i % 60),
/// [`PARALLEL`] at a time, each as if created at `at` (`None`: when it is created).
async fn create_jobs(
    store: &Store,
    range: std::ops::Range<usize>,
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<Job>> {
    let mut tasks = JoinSet::new();
    for part in 0..PARALLEL {
        let (store, range) = (store.clone(), range.clone());
        tasks.spawn(async move {
            let mut jobs = Vec::new();
            for i in range.skip(part).step_by(PARALLEL) {
                let spec = bench_job(&format!("bench-{i}"), &format!("{} * * * * *", i % 60))?;
                let by = ChangedBy::system("bench");
                jobs.push(store.create_job(spec, &by, at.unwrap_or_else(Utc::now)).await?);
            }
            anyhow::Ok(jobs)
        });
    }
    let mut all = Vec::with_capacity(range.len());
    while let Some(jobs) = tasks.join_next().await {
        all.extend(jobs.context("a job-creating task panicked")??);
    }
    Ok(all)
}

/// Creates the `n` jobs of the lateness bench so that (nearly) none falls due before
/// the scheduler starts: slots due while jobs are still being created would pile up and
/// be measured as lateness. The first few jobs are created normally, the last
/// [`CREATE_PROBE`] of them timed (the first ones open the pool's connections); the
/// rest are created as of a moment after the estimated end of creation, so their first
/// slots follow it. Returns the jobs and that moment, after which every job is firing.
pub(crate) async fn create_lateness_jobs(
    store: &Store,
    n: usize,
) -> anyhow::Result<(Vec<Job>, DateTime<Utc>)> {
    let warm = n.min(CREATE_PROBE / 2);
    let probe = n.min(warm + CREATE_PROBE);
    let mut jobs = create_jobs(store, 0..warm, None).await?;
    let t = Instant::now();
    jobs.extend(create_jobs(store, warm..probe, None).await?);
    let per_job = t.elapsed().as_secs_f64() / (probe - warm).max(1) as f64;
    let estimate = Duration::from_secs_f64(per_job * (n - probe) as f64 * 1.5) + Duration::from_secs(1);
    let live_from = Utc::now() + chrono::Duration::from_std(estimate)?;
    jobs.extend(create_jobs(store, probe..n, Some(live_from)).await?);
    Ok((jobs, live_from))
}

/// Every run of the job, page by page.
pub(crate) async fn runs_of(store: &Store, job: &JobId) -> anyhow::Result<Vec<Run>> {
    let mut page = PageRequest {
        limit: MAX_LIMIT,
        after: None,
    };
    let mut runs = Vec::new();
    loop {
        let p = store.list_runs(job, &page).await?;
        runs.extend(p.items);
        match p.next_cursor {
            Some(c) => page.after = Some(c),
            None => return Ok(runs),
        }
    }
}

/// Every run of every job, [`PARALLEL`] jobs at a time.
pub(crate) async fn runs_of_all(store: &Store, jobs: &[Job]) -> anyhow::Result<Vec<Run>> {
    let ids: Arc<Vec<JobId>> = Arc::new(jobs.iter().map(|j| j.id.clone()).collect());
    let mut tasks = JoinSet::new();
    for part in 0..PARALLEL {
        let (store, ids) = (store.clone(), ids.clone());
        tasks.spawn(async move {
            let mut runs = Vec::new();
            for id in ids.iter().skip(part).step_by(PARALLEL) {
                runs.extend(runs_of(&store, id).await?);
            }
            anyhow::Ok(runs)
        });
    }
    let mut all = Vec::new();
    while let Some(runs) = tasks.join_next().await {
        all.extend(runs.context("a run-reading task panicked")??);
    }
    Ok(all)
}
