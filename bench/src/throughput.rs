//! Run throughput: how many runs a second the worker completes.
//!
//! `--runs` manual runs (default 5,000) of one `true` job with overlap `allow` are
//! enqueued with `Store::trigger_run` while no worker runs (that is the enqueue rate);
//! then a worker with `--concurrency` slots executes them, and the throughput is the
//! runs finished per second from the first start to the last finish, read from the runs
//! themselves.

use crate::{
    args::BenchArgs,
    cpu::{CpuSample, CpuUse},
    database::BackendName,
    jobs::{bench_job, runs_of},
    stats::Stats,
    table::{Table, yes_no},
    worker::{BackgroundWorker, worker_settings},
};
use chrono::Utc;
use cronflow::{Settings, startup::connect_and_migrate};
use cronflow_jobs::{
    domain::{Run, RunState},
    signals::Signals,
    store::ChangedBy,
};
use std::time::{Duration, Instant};

/// The target for run throughput, in runs per second.
const THROUGHPUT_TARGET: f64 = 1000.0;
/// How often the throughput bench checks whether every run has finished. Each check
/// reads every run, taking CPU from the runs, so not often; the figures come from the
/// runs' own timestamps, so this does not change them.
const POLL: Duration = Duration::from_secs(2);
/// The throughput bench gives up when no run finishes for this long.
const STALL: Duration = Duration::from_secs(30);

/// What the throughput bench saw.
#[derive(Debug, Default)]
pub(crate) struct ThroughputReport {
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

/// Measures run throughput on the fresh database at `url`.
pub(crate) async fn measure(
    url: &str,
    settings: &Settings,
    runs: usize,
    concurrency: usize,
    backend: BackendName,
) -> anyhow::Result<ThroughputReport> {
    let name = backend.as_str();
    let (store, signals) =
        Signals::listen_to(connect_and_migrate(url, Some(&crate::database::fresh_secret_key())).await?);
    // Fires once a year: the runs measured are the manual ones.
    let job = store
        .create_job(
            bench_job("bench-throughput", "0 0 0 1 1 *")?,
            &ChangedBy::system("bench"),
            Utc::now(),
        )
        .await?;
    eprintln!("{name}: enqueueing {runs} manual runs…");
    let t = Instant::now();
    for _ in 0..runs {
        store
            .trigger_run(&job.id, &ChangedBy::system("bench"), Utc::now())
            .await?;
    }
    let enqueue_secs = t.elapsed().as_secs_f64();
    eprintln!("{name}: enqueued in {enqueue_secs:.1} s; running them with concurrency {concurrency}…");

    let cpu_start = CpuSample::take();
    let worker = BackgroundWorker::start(&store, &signals, worker_settings(settings, url, concurrency));
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

/// Prints one backend's figures as soon as they are measured.
pub(crate) fn print(backend: BackendName, r: &ThroughputReport) {
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

/// The rows of the summary table, for the reports `pick` finds.
pub(crate) fn summary<R>(
    t: &mut Table<'_, R>,
    pick: impl Fn(&R) -> Option<&ThroughputReport>,
    args: &BenchArgs,
    concurrency: usize,
) {
    t.section(format!(
        "RUN THROUGHPUT ({} manual runs, concurrency {concurrency})",
        args.runs
    ));
    t.row_of("enqueue (trigger_run/s)", "", &pick, |r| {
        format!("{:.0}", r.enqueue_rate())
    });
    t.row_of("completed / failed / unfinished", "", &pick, |r| {
        format!("{} / {} / {}", r.completed, r.failed, r.unfinished)
    });
    t.row_of("first start to last finish (s)", "", &pick, |r| {
        format!("{:.2}", r.busy_secs)
    });
    t.row_of("throughput (runs/s)", ">= 1000", &pick, |r| {
        format!("{:.0}", r.throughput())
    });
    t.row_of("throughput within target", "", &pick, |r| {
        yes_no(r.throughput() >= THROUGHPUT_TARGET)
    });
    t.row_of("run duration p50 / p99 / max (ms)", "", &pick, |r| {
        r.run_duration.triple()
    });
    t.row_of("CPU ms/run: cronflow + `true` / busy", "", &pick, |r| {
        CpuUse::per_run_of(r.cpu, r.completed + r.failed)
    });
}
