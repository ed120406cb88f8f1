//! `cronflow bench`: measures how late scheduled runs start and how many runs a second
//! the worker completes, on fresh SQLite and Postgres databases, and prints the figures.
//! It asserts nothing; the targets (p99 lateness under 10 ms, at least 1,000
//! runs/s) are printed next to the figures for comparison.
//!
//! # What is measured
//! - *Fire lateness*: `--jobs` jobs (default 10,000) that run `true` with overlap
//!   `allow`; job `i` has the schedule `{i % 60} * * * * *`, so the slots are spread
//!   evenly over each minute (about 167 a second for 10,000 jobs). The real scheduler
//!   and run worker run for `--warmup` seconds, which are not measured, then for
//!   `--duration` seconds, plus a short drain so the last slots can start. For the slots
//!   of that window it reports the lateness (`started_at − scheduled_for`) split into
//!   scheduler lag (`created_at − scheduled_for`: the run row is stamped with the start
//!   of the scheduler pass that fired it) and queue wait (`started_at − created_at`),
//!   and counts the slots that were skipped, missed, caught up, never fired or never
//!   started. Cron slots are whole seconds, so each second's ~167 runs fall due at the
//!   same instant: the lateness of the first run of each second to start is the
//!   pipeline's latency, that of the last one is how long the burst took to drain.
//!   Jobs are created so that no slot falls due before the scheduler starts (see
//!   `create_lateness_jobs`), as a backlog would be measured as lateness.
//! - *Run throughput*: `--runs` manual runs (default 5,000) of one `true` job with
//!   overlap `allow` are enqueued with `Store::trigger_run` while no worker runs (that
//!   is the enqueue rate); then a worker with `--concurrency` slots executes them, and
//!   the throughput is the runs finished per second from the first start to the last
//!   finish, read from the runs themselves.
//!
//! Each measurement gets a fresh database: a file in a new temporary directory for
//! SQLite; for Postgres, a database created on the server named by
//! `CRONFLOW_BENCH_POSTGRES_URL` and dropped at the end (also on failure or ctrl-c).
//! Both measurements also report the CPU time per run of this process and of the
//! `true` processes, and how busy the whole machine was, since on a small machine the
//! figures are often bound by CPU rather than by the database.
//!
//! `--jobs 0` or `--runs 0` skips that measurement. Webhook deliveries are measured
//! too, by [`crate::bench_deliveries`] (`--deliveries 0` skips them); `--only runs` or
//! `--only deliveries` picks one side. Logs are quiet (warnings only) unless `RUST_LOG`
//! says otherwise.

use crate::{
    Settings,
    startup::{connect_and_migrate, run_worker},
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use cronflow_jobs::{
    Clock, Store, SystemClock,
    domain::{
        CatchUpPolicy, CommandTarget, Environment, Job, JobId, JobSpec, OverlapPolicy, PageRequest, Run,
        RunOrigin, RunState, Schedule, Target,
        job::{JobName, Tags},
        page::MAX_LIMIT,
    },
    scheduler::run_scheduler_until_stopped,
};
use sqlx::{Postgres, migrate::MigrateDatabase};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Names the Postgres server the bench creates its databases on.
const POSTGRES_URL_ENV: &str = "CRONFLOW_BENCH_POSTGRES_URL";
/// The server used when [`POSTGRES_URL_ENV`] is not set (the one the tests use).
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The target for p99 fire lateness, in milliseconds.
const LATENESS_P99_TARGET_MS: i64 = 10;
/// The target for run throughput, in runs per second.
const THROUGHPUT_TARGET: f64 = 1000.0;
/// After the lateness window, how long the worker keeps going (the scheduler is
/// stopped) so the window's last slots can start before the runs are read.
const DRAIN: Duration = Duration::from_secs(5);
/// Tasks creating jobs and reading runs at once (the pools hold 8 and 16 connections).
const PARALLEL: usize = 8;
/// How often the throughput bench checks whether every run has finished. Each check
/// reads every run, taking CPU from the runs, so not often; the figures come from the
/// runs' own timestamps, so this does not change them.
const POLL: Duration = Duration::from_secs(2);
/// The throughput bench gives up when no run finishes for this long.
const STALL: Duration = Duration::from_secs(30);
/// Jobs created to time job creation (see `create_lateness_jobs`).
const CREATE_PROBE: usize = 200;
/// Seconds a bench run may take before it is stopped (`true` takes milliseconds).
const RUN_TIMEOUT_SECONDS: u32 = 60;

/// The `cronflow bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which databases to measure.
    #[arg(long, value_enum, default_value_t = BackendArg::Both)]
    pub backend: BackendArg,
    /// Jobs in the lateness bench; job i fires at second i % 60 of every minute (0 skips
    /// the lateness bench).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Seconds of lateness measurement, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds the scheduler and worker run before the measurement starts (excluded).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Manual runs in the throughput bench (0 skips the throughput bench).
    #[arg(long, default_value_t = 5_000)]
    pub runs: usize,
    /// Runs the worker executes at once (default: the worker_concurrency setting).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Run only these benches: `runs` (fire lateness and run throughput) or `deliveries`
    /// (webhook deliveries). Default: all of them.
    #[arg(long, value_enum)]
    pub only: Option<OnlyArg>,
    /// Deliveries in each delivery throughput scenario: that many events to 1
    /// subscription, and a hundredth of them to 100 subscriptions (0 skips the delivery
    /// bench).
    #[arg(long, default_value_t = 20_000)]
    pub deliveries: usize,
    /// Deliveries a second in the steady delivery scenarios: that many events a second
    /// to 1 subscription, and a tenth of them to 10 subscriptions.
    #[arg(long, default_value_t = 1_000)]
    pub delivery_rate: u32,
    /// Seconds each steady delivery scenario publishes for.
    #[arg(long, default_value_t = 5)]
    pub delivery_secs: u64,
}

/// The benches `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnlyArg {
    /// Fire lateness and run throughput.
    Runs,
    /// Webhook deliveries (see `bench_deliveries`).
    Deliveries,
}

/// The databases `--backend` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the server named by `CRONFLOW_BENCH_POSTGRES_URL`.
    Postgres,
    /// SQLite, then Postgres.
    Both,
}

/// One backend the bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendName {
    Sqlite,
    Postgres,
}

impl BackendName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendName::Sqlite => "sqlite",
            BackendName::Postgres => "postgres",
        }
    }
}

/// Installs a tracing subscriber that shows warnings only, unless `RUST_LOG` says
/// otherwise (`cronflow bench` prints figures; info logs would drown them).
pub fn init_quiet_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the selected benches and prints their figures (stdout) and progress (stderr).
/// `settings` supply the worker's settings; its database is never touched.
pub async fn run_bench(mut args: BenchArgs, settings: Settings) -> anyhow::Result<()> {
    match args.only {
        Some(OnlyArg::Runs) => args.deliveries = 0,
        Some(OnlyArg::Deliveries) => (args.jobs, args.runs) = (0, 0),
        None => {}
    }
    let backends: &[BackendName] = match args.backend {
        BackendArg::Sqlite => &[BackendName::Sqlite],
        BackendArg::Postgres => &[BackendName::Postgres],
        BackendArg::Both => &[BackendName::Sqlite, BackendName::Postgres],
    };
    let concurrency = args.concurrency.unwrap_or(settings.worker_concurrency).max(1);
    let (settings, args) = (&settings, &args);
    let mut reports = Vec::new();
    let mut delivery_reports = Vec::new();
    for &backend in backends {
        let lateness = if args.jobs > 0 {
            let r = on_fresh_database(backend, |url| async move {
                measure_lateness(&url, settings, args, concurrency, backend).await
            })
            .await
            .with_context(|| format!("{}: the lateness bench failed", backend.as_str()))?;
            print_lateness(backend, &r);
            Some(r)
        } else {
            None
        };
        let throughput = if args.runs > 0 {
            let r = on_fresh_database(backend, |url| async move {
                measure_throughput(&url, settings, args.runs, concurrency, backend).await
            })
            .await
            .with_context(|| format!("{}: the throughput bench failed", backend.as_str()))?;
            print_throughput(backend, &r);
            Some(r)
        } else {
            None
        };
        reports.push((backend, lateness, throughput));
        if args.deliveries > 0 {
            let r = crate::bench_deliveries::measure_deliveries(backend, settings, args).await?;
            delivery_reports.push((backend, r));
        }
    }
    if args.jobs > 0 || args.runs > 0 {
        print_summary(args, concurrency, &reports);
    }
    if args.deliveries > 0 {
        crate::bench_deliveries::print_summary(args, settings, &delivery_reports);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fresh databases

/// A database created for one measurement, removed by [`FreshDatabase::remove`].
struct FreshDatabase {
    url: String,
    /// The temporary directory of a SQLite file; `None` for Postgres.
    dir: Option<PathBuf>,
}

/// A name no other bench run uses: process id and the current time.
fn unique_name() -> String {
    format!(
        "cronflow_bench_{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

impl FreshDatabase {
    async fn create(backend: BackendName) -> anyhow::Result<Self> {
        let name = unique_name();
        match backend {
            BackendName::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the directory {}", dir.display()))?;
                let url = format!("sqlite://{}", dir.join("bench.db").display());
                Ok(FreshDatabase { url, dir: Some(dir) })
            }
            BackendName::Postgres => {
                let server =
                    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let url = with_database(&server, &name);
                Postgres::create_database(&url).await.with_context(|| {
                    format!("cannot create a database on the server of {POSTGRES_URL_ENV} ({server})")
                })?;
                Ok(FreshDatabase { url, dir: None })
            }
        }
    }

    /// Deletes the database; failures are reported, not returned (the figures are
    /// already printed).
    async fn remove(self) {
        match self.dir {
            Some(dir) => {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("bench: cannot remove {}: {e}", dir.display());
                }
            }
            None => {
                if let Err(e) = Postgres::force_drop_database(&self.url).await {
                    eprintln!("bench: cannot drop the database {}: {e}", self.url);
                }
            }
        }
    }
}

/// Runs `bench` on a fresh database of `backend`, and removes the database afterwards,
/// whether the bench succeeded, failed or was interrupted with ctrl-c.
pub(crate) async fn on_fresh_database<T, F, Fut>(backend: BackendName, bench: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let db = FreshDatabase::create(backend).await?;
    let result = tokio::select! {
        r = bench(db.url.clone()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    db.remove().await;
    result
}

// ---------------------------------------------------------------------------------------
// Jobs and runs

/// A job that runs `true` on `schedule`, with overlap `allow` and no retries.
fn bench_job(name: &str, schedule: &str) -> anyhow::Result<JobSpec> {
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
                jobs.push(store.create_job(spec, at.unwrap_or_else(Utc::now)).await?);
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
async fn create_lateness_jobs(store: &Store, n: usize) -> anyhow::Result<(Vec<Job>, DateTime<Utc>)> {
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
async fn runs_of(store: &Store, job: &JobId) -> anyhow::Result<Vec<Run>> {
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
async fn runs_of_all(store: &Store, jobs: &[Job]) -> anyhow::Result<Vec<Run>> {
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

/// The worker's settings: the process's, on the bench database, with `concurrency`.
pub(crate) fn worker_settings(settings: &Settings, url: &str, concurrency: usize) -> Settings {
    let mut s = settings.clone();
    s.database_url = url.to_owned();
    s.worker_concurrency = concurrency;
    s
}

/// A worker running in the background until its token is cancelled.
pub(crate) struct BackgroundWorker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BackgroundWorker {
    pub(crate) fn start(store: &Store, settings: Settings) -> Self {
        let stop = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (store, token) = (store.clone(), stop.clone());
        let task = tokio::spawn(async move {
            run_worker(
                store,
                clock,
                &settings,
                cronflow_jobs::metrics::Metrics::new(),
                token,
            )
            .await
        });
        BackgroundWorker { stop, task }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("the run worker panicked")?
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting

/// CPU time used so far, read from `/proc` (Linux only; `None` elsewhere), to tell
/// whether a figure is bound by CPU, and whose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    /// This process (scheduler, worker, database client; SQLite itself), in ticks.
    process: u64,
    /// Its waited-for children: the `true` processes the runs started, in ticks.
    children: u64,
    /// The whole machine: busy ticks (everything but idle and I/O wait) and all ticks,
    /// summed over the cores.
    machine_busy: u64,
    machine_total: u64,
}

/// Kernel clock ticks per second (`USER_HZ`): 100 on every Linux target Rust supports.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    pub(crate) fn take() -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may contain spaces) start at field 3;
        // utime, stime, cutime and cstime are fields 14 to 17.
        let fields: Vec<u64> = own
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4)?;
        Some(CpuSample {
            process: fields.get(11)? + fields.get(12)?,
            children: fields.get(13)? + fields.get(14)?,
            machine_busy: total - idle,
            machine_total: total,
        })
    }
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// Milliseconds of this process's CPU.
    pub(crate) process_ms: f64,
    /// Milliseconds of its children's CPU.
    pub(crate) children_ms: f64,
    /// Share of the machine's CPU that was busy (all processes), 0 to 1.
    pub(crate) machine_busy: f64,
}

impl CpuUse {
    pub(crate) fn between(a: Option<CpuSample>, b: Option<CpuSample>) -> Option<Self> {
        let (a, b) = (a?, b?);
        let ms = |ticks: u64| ticks as f64 * 1000.0 / TICKS_PER_SECOND;
        Some(CpuUse {
            process_ms: ms(b.process - a.process),
            children_ms: ms(b.children - a.children),
            machine_busy: (b.machine_busy - a.machine_busy) as f64
                / (b.machine_total - a.machine_total).max(1) as f64,
        })
    }

    /// "process + children ms per run, machine busy %".
    fn per_run(&self, runs: usize) -> String {
        let n = runs.max(1) as f64;
        format!(
            "{:.2} + {:.2} / {:.0}%",
            self.process_ms / n,
            self.children_ms / n,
            self.machine_busy * 100.0
        )
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Count and nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50: i64,
    pub(crate) p99: i64,
    pub(crate) max: i64,
}

impl Stats {
    pub(crate) fn of(mut sample: Vec<i64>) -> Self {
        if sample.is_empty() {
            return Stats::default();
        }
        sample.sort_unstable();
        let rank = |p: f64| {
            let r = (p / 100.0 * sample.len() as f64).ceil() as usize;
            sample[r.clamp(1, sample.len()) - 1]
        };
        Stats {
            count: sample.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            max: sample[sample.len() - 1],
        }
    }

    fn triple(&self) -> String {
        if self.count == 0 {
            "-".into()
        } else {
            format!("{} / {} / {}", self.p50, self.p99, self.max)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fire lateness

/// What the lateness bench saw.
#[derive(Debug, Default)]
struct LatenessReport {
    jobs: usize,
    /// Seconds to create the jobs.
    create_secs: f64,
    /// Seconds measured.
    window_secs: f64,
    /// Slots of all jobs in the window.
    slots: usize,
    /// `schedule` runs of those slots.
    fired: usize,
    /// Started `schedule` runs: `started_at − scheduled_for`.
    lateness: Stats,
    /// `created_at − scheduled_for` of the fired runs.
    scheduler_lag: Stats,
    /// `started_at − created_at` of the started runs.
    queue_wait: Stats,
    /// Per slot instant (all jobs of one second fire at once): the lateness of its
    /// first run to start, i.e. the pipeline's latency without queueing.
    burst_first: Stats,
    /// Per slot instant: the lateness of its last run to start, i.e. how long the
    /// burst took to drain.
    burst_last: Stats,
    /// CPU used during the window.
    cpu: Option<CpuUse>,
    /// Fired runs that had not started when the runs were read.
    not_started: usize,
    /// Started runs that did not complete.
    not_completed: usize,
    /// Slots recorded `skipped`.
    skipped: usize,
    /// Slots covered by `missed` rows.
    missed: i64,
    /// Slots fired as `catch_up` runs (the scheduler was over 10 s late).
    caught_up: usize,
    /// Slots with no row at all.
    never_fired: i64,
    /// Runs of slots before the window (warm-up, including any start-up backlog).
    warmup_runs: usize,
}

async fn measure_lateness(
    url: &str,
    settings: &Settings,
    args: &BenchArgs,
    concurrency: usize,
    backend: BackendName,
) -> anyhow::Result<LatenessReport> {
    let name = backend.as_str();
    let store = connect_and_migrate(url).await?;
    eprintln!("{name}: creating {} jobs…", args.jobs);
    let t = Instant::now();
    let (jobs, live_from) = create_lateness_jobs(&store, args.jobs).await?;
    let create_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{name}: created in {create_secs:.1} s ({:.0} jobs/s); scheduler and worker running, all jobs firing in {:.1} s, then {} s warm-up, {} s measured…",
        args.jobs as f64 / create_secs,
        (live_from - Utc::now()).num_milliseconds().max(0) as f64 / 1000.0,
        args.warmup,
        args.duration
    );

    let scheduler_stop = CancellationToken::new();
    let scheduler = tokio::spawn(run_scheduler_until_stopped(
        store.clone(),
        Arc::new(SystemClock),
        scheduler_stop.clone(),
    ));
    let worker = BackgroundWorker::start(&store, worker_settings(settings, url, concurrency));
    let until_live = (live_from - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_live + Duration::from_secs(args.warmup)).await;
    let window_start = Utc::now();
    let (t, cpu_start) = (Instant::now(), CpuSample::take());
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let window_end = Utc::now();
    let window_secs = t.elapsed().as_secs_f64();
    let cpu = CpuUse::between(cpu_start, CpuSample::take());
    scheduler_stop.cancel();
    scheduler.await.context("the scheduler panicked")?;
    tokio::time::sleep(DRAIN).await;
    worker.stop().await?;

    eprintln!("{name}: reading the runs…");
    let runs = runs_of_all(&store, &jobs).await?;
    store.close().await;
    let mut report = tally_lateness(&jobs, &runs, window_start, window_end);
    report.create_secs = create_secs;
    report.window_secs = window_secs;
    report.cpu = cpu;
    Ok(report)
}

/// Counts and measures the slots in `[start, end)`.
fn tally_lateness(jobs: &[Job], runs: &[Run], start: DateTime<Utc>, end: DateTime<Utc>) -> LatenessReport {
    let slots: usize = jobs
        .iter()
        .map(|j| {
            std::iter::successors(
                j.spec
                    .schedule
                    .next_after(start - chrono::Duration::milliseconds(1)),
                |t| j.spec.schedule.next_after(*t),
            )
            .take_while(|t| *t < end)
            .count()
        })
        .sum();
    let mut r = LatenessReport {
        jobs: jobs.len(),
        slots,
        ..LatenessReport::default()
    };
    let (mut lateness, mut lag, mut wait) = (Vec::new(), Vec::new(), Vec::new());
    let mut bursts: BTreeMap<DateTime<Utc>, (i64, i64)> = BTreeMap::new();
    let mut accounted: i64 = 0;
    for run in runs {
        let Some(slot) = run.scheduled_for else { continue };
        if slot < start {
            r.warmup_runs += 1;
            continue;
        }
        if slot >= end || run.attempt != 1 {
            continue;
        }
        match (run.state, run.origin) {
            (RunState::Skipped, _) => r.skipped += 1,
            (RunState::Missed, _) => r.missed += run.missed_count.unwrap_or(1),
            (_, RunOrigin::CatchUp) => r.caught_up += 1,
            (_, RunOrigin::Schedule) => {
                r.fired += 1;
                lag.push((run.created_at - slot).num_milliseconds());
                match run.started_at {
                    Some(started) => {
                        let late = run.lateness_ms.unwrap_or((started - slot).num_milliseconds());
                        lateness.push(late);
                        let burst = bursts.entry(slot).or_insert((late, late));
                        *burst = (burst.0.min(late), burst.1.max(late));
                        wait.push((started - run.created_at).num_milliseconds());
                        if run.state != RunState::Completed {
                            r.not_completed += 1;
                        }
                    }
                    None => r.not_started += 1,
                }
            }
            _ => {}
        }
        accounted += match run.state {
            RunState::Missed => run.missed_count.unwrap_or(1),
            _ => 1,
        };
    }
    r.never_fired = (slots as i64 - accounted).max(0);
    r.lateness = Stats::of(lateness);
    r.scheduler_lag = Stats::of(lag);
    r.queue_wait = Stats::of(wait);
    r.burst_first = Stats::of(bursts.values().map(|b| b.0).collect());
    r.burst_last = Stats::of(bursts.values().map(|b| b.1).collect());
    r
}

fn print_lateness(backend: BackendName, r: &LatenessReport) {
    println!(
        "{}: fire lateness, {} jobs, {:.1} s window: {} slots, {} fired, {} started; \
         lateness p50/p99/max {} ms (scheduler lag {} ms, queue wait {} ms); \
         skipped {}, missed {}, caught up {}, never fired {}, not started {}, not completed {}",
        backend.as_str(),
        r.jobs,
        r.window_secs,
        r.slots,
        r.fired,
        r.lateness.count,
        r.lateness.triple(),
        r.scheduler_lag.triple(),
        r.queue_wait.triple(),
        r.skipped,
        r.missed,
        r.caught_up,
        r.never_fired,
        r.not_started,
        r.not_completed,
    );
}

// ---------------------------------------------------------------------------------------
// Run throughput

/// What the throughput bench saw.
#[derive(Debug, Default)]
struct ThroughputReport {
    runs: usize,
    /// Seconds to enqueue them.
    enqueue_secs: f64,
    completed: usize,
    /// Finished in another final state.
    failed: usize,
    /// Not finished when the bench stopped waiting.
    unfinished: usize,
    /// From the first `started_at` to the last `finished_at`, in seconds.
    busy_secs: f64,
    /// `duration_ms` of the finished runs (the `true` process itself).
    run_duration: Stats,
    /// CPU used from the worker's start to the last run's end.
    cpu: Option<CpuUse>,
}

impl ThroughputReport {
    fn enqueue_rate(&self) -> f64 {
        self.runs as f64 / self.enqueue_secs.max(1e-9)
    }

    fn throughput(&self) -> f64 {
        (self.completed + self.failed) as f64 / self.busy_secs.max(1e-3)
    }
}

async fn measure_throughput(
    url: &str,
    settings: &Settings,
    runs: usize,
    concurrency: usize,
    backend: BackendName,
) -> anyhow::Result<ThroughputReport> {
    let name = backend.as_str();
    let store = connect_and_migrate(url).await?;
    // Fires once a year: the runs measured are the manual ones.
    let job = store
        .create_job(bench_job("bench-throughput", "0 0 0 1 1 *")?, Utc::now())
        .await?;
    eprintln!("{name}: enqueueing {runs} manual runs…");
    let t = Instant::now();
    for _ in 0..runs {
        store.trigger_run(&job.id, Utc::now()).await?;
    }
    let enqueue_secs = t.elapsed().as_secs_f64();
    eprintln!("{name}: enqueued in {enqueue_secs:.1} s; running them with concurrency {concurrency}…");

    let cpu_start = CpuSample::take();
    let worker = BackgroundWorker::start(&store, worker_settings(settings, url, concurrency));
    let mut last_progress = (0, Instant::now());
    let all = loop {
        tokio::time::sleep(POLL).await;
        let all = runs_of(&store, &job.id).await?;
        let finished = all.iter().filter(|r| r.state.is_final()).count();
        if finished >= runs {
            break all;
        }
        if finished > last_progress.0 {
            last_progress = (finished, Instant::now());
        } else if last_progress.1.elapsed() > STALL {
            eprintln!("{name}: no run finished for {} s; giving up", STALL.as_secs());
            break all;
        }
    };
    let cpu = CpuUse::between(cpu_start, CpuSample::take());
    worker.stop().await?;
    store.close().await;

    let finished: Vec<&Run> = all.iter().filter(|r| r.state.is_final()).collect();
    let first_start = all.iter().filter_map(|r| r.started_at).min();
    let last_finish = finished.iter().filter_map(|r| r.finished_at).max();
    let busy_secs = match (first_start, last_finish) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    let completed = finished.iter().filter(|r| r.state == RunState::Completed).count();
    Ok(ThroughputReport {
        runs,
        enqueue_secs,
        completed,
        failed: finished.len() - completed,
        unfinished: runs.saturating_sub(finished.len()),
        busy_secs,
        run_duration: Stats::of(finished.iter().filter_map(|r| r.duration_ms).collect()),
        cpu,
    })
}

fn print_throughput(backend: BackendName, r: &ThroughputReport) {
    println!(
        "{}: run throughput, {} runs: enqueued at {:.0} runs/s; {} completed, {} failed, {} unfinished \
         in {:.2} s: {:.0} runs/s; run duration p50/p99/max {} ms",
        backend.as_str(),
        r.runs,
        r.enqueue_rate(),
        r.completed,
        r.failed,
        r.unfinished,
        r.busy_secs,
        r.throughput(),
        r.run_duration.triple(),
    );
}

// ---------------------------------------------------------------------------------------
// Summary table

type BackendReport = (BackendName, Option<LatenessReport>, Option<ThroughputReport>);

/// The rows of the summary table: a label, a value per backend, the target.
struct Table<'a> {
    reports: &'a [BackendReport],
    rows: Vec<(String, Vec<String>, &'static str)>,
}

impl Table<'_> {
    fn section(&mut self, title: String) {
        self.rows.push((title, Vec::new(), ""));
    }

    fn lateness(&mut self, label: &str, target: &'static str, f: impl Fn(&LatenessReport) -> String) {
        let values = self
            .reports
            .iter()
            .map(|r| r.1.as_ref().map_or("-".into(), &f))
            .collect();
        self.rows.push((format!("  {label}"), values, target));
    }

    fn throughput(&mut self, label: &str, target: &'static str, f: impl Fn(&ThroughputReport) -> String) {
        let values = self
            .reports
            .iter()
            .map(|r| r.2.as_ref().map_or("-".into(), &f))
            .collect();
        self.rows.push((format!("  {label}"), values, target));
    }

    fn print(&self) {
        let columns: Vec<&str> = self.reports.iter().map(|r| r.0.as_str()).collect();
        print_table(&columns, &self.rows);
    }
}

/// Prints a table: a header of `columns`, then per row its label, a value per column and
/// its target (section rows, without values, print their label alone).
pub(crate) fn print_table<T: AsRef<str>>(columns: &[&str], rows: &[(String, Vec<String>, T)]) {
    let label_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .flat_map(|r| r.1.iter().map(|v| v.chars().count()))
        .chain(columns.iter().map(|c| c.chars().count()))
        .max()
        .unwrap_or(0)
        .max(8);
    println!();
    let mut header = format!("{:label_width$}", "");
    for column in columns {
        header.push_str(&format!("  {column:>value_width$}"));
    }
    header.push_str("  target");
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    for (label, values, target) in rows {
        let target = target.as_ref();
        let mut line = format!("{label:label_width$}");
        for v in values {
            line.push_str(&format!("  {v:>value_width$}"));
        }
        if !values.is_empty() && !target.is_empty() {
            line.push_str(&format!("  {target}"));
        }
        println!("{}", line.trim_end());
    }
}

/// Prints one table: a row per figure, a column per backend, and the target.
fn print_summary(args: &BenchArgs, concurrency: usize, reports: &[BackendReport]) {
    let mut t = Table {
        reports,
        rows: Vec::new(),
    };
    let cpu = |c: Option<CpuUse>, runs: usize| c.map_or("-".into(), |c| c.per_run(runs));
    if args.jobs > 0 {
        t.section(format!(
            "FIRE LATENESS ({} jobs, {} s after {} s warm-up, concurrency {concurrency})",
            args.jobs, args.duration, args.warmup
        ));
        t.lateness("job creation (jobs/s)", "", |r| {
            format!("{:.0}", r.jobs as f64 / r.create_secs)
        });
        t.lateness("slots due in window", "", |r| r.slots.to_string());
        t.lateness("runs started", "", |r| r.lateness.count.to_string());
        t.lateness("lateness p50 / p99 / max (ms)", "p99 < 10", |r| {
            r.lateness.triple()
        });
        t.lateness(".. scheduler lag p50 / p99 / max", "", |r| {
            r.scheduler_lag.triple()
        });
        t.lateness(".. queue wait p50 / p99 / max", "", |r| r.queue_wait.triple());
        t.lateness("first start of each second p50/p99/max", "", |r| {
            r.burst_first.triple()
        });
        t.lateness("last start of each second p50/p99/max", "", |r| {
            r.burst_last.triple()
        });
        t.lateness("p99 within target", "", |r| {
            yes_no(r.lateness.count > 0 && r.lateness.p99 < LATENESS_P99_TARGET_MS)
        });
        t.lateness("skipped / missed / caught up", "0 / 0 / 0", |r| {
            format!("{} / {} / {}", r.skipped, r.missed, r.caught_up)
        });
        t.lateness("never fired / not started", "0 / 0", |r| {
            format!("{} / {}", r.never_fired, r.not_started)
        });
        t.lateness("runs of warm-up slots", "", |r| r.warmup_runs.to_string());
        t.lateness("CPU ms/run: cronflow + `true` / busy", "", |r| {
            cpu(r.cpu, r.lateness.count)
        });
    }
    if args.runs > 0 {
        t.section(format!(
            "RUN THROUGHPUT ({} manual runs, concurrency {concurrency})",
            args.runs
        ));
        t.throughput("enqueue (trigger_run/s)", "", |r| {
            format!("{:.0}", r.enqueue_rate())
        });
        t.throughput("completed / failed / unfinished", "", |r| {
            format!("{} / {} / {}", r.completed, r.failed, r.unfinished)
        });
        t.throughput("first start to last finish (s)", "", |r| {
            format!("{:.2}", r.busy_secs)
        });
        t.throughput("throughput (runs/s)", ">= 1000", |r| {
            format!("{:.0}", r.throughput())
        });
        t.throughput("throughput within target", "", |r| {
            yes_no(r.throughput() >= THROUGHPUT_TARGET)
        });
        t.throughput("run duration p50 / p99 / max (ms)", "", |r| {
            r.run_duration.triple()
        });
        t.throughput("CPU ms/run: cronflow + `true` / busy", "", |r| {
            cpu(r.cpu, r.completed + r.failed)
        });
    }
    t.print();
}

pub(crate) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

#[cfg(test)]
mod tests {
    use super::{Stats, with_database};

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u:pw@h:5432/test", "b"),
            "postgres://u:pw@h:5432/b"
        );
        assert_eq!(
            with_database("postgres://h/test?sslmode=disable", "b"),
            "postgres://h/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b"), "postgres://h/b");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::of((1..=100).collect());
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50, 99, 100));
        assert_eq!(Stats::of(vec![7]).p99, 7);
        assert_eq!(Stats::of(Vec::new()).count, 0);
    }
}
