//! Fire lateness: how late scheduled runs start, measured with the real scheduler and
//! run worker on thousands of jobs.
//!
//! `--jobs` jobs (default 10,000) run `true` with overlap `allow`; job `i` has the
//! schedule `{i % 60} * * * * *`, so the slots are spread evenly over each minute (about
//! 167 a second for 10,000 jobs). The real scheduler and run worker run for `--warmup`
//! seconds, which are not measured, then for `--duration` seconds, plus a short drain so
//! the last slots can start. For the slots of that window the bench reports the
//! lateness (`started_at − scheduled_for`) split into scheduler lag (`created_at −
//! scheduled_for`: the run row is stamped with the start of the scheduler pass that
//! fired it) and queue wait (`started_at − created_at`), and counts the slots that were
//! skipped, missed, caught up, never fired or never started. Cron slots are whole
//! seconds, so each second's runs fall due at the same instant: the lateness of the
//! first run of each second to start is the pipeline's latency, that of the last one is
//! how long the burst took to drain. Jobs are created so that no slot falls due before
//! the scheduler starts (see `jobs::create_lateness_jobs`), as a backlog would be
//! measured as lateness.

use crate::{
    args::BenchArgs,
    cpu::{CpuSample, CpuUse},
    database::BackendName,
    jobs::{create_lateness_jobs, runs_of_all},
    stats::Stats,
    table::{Table, yes_no},
    worker::{BackgroundWorker, worker_settings},
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use cronflow::{Settings, startup::connect_and_migrate};
use cronflow_jobs::{
    SystemClock,
    domain::{Job, Run, RunOrigin, RunState},
    scheduler::run_scheduler_until_stopped,
    signals::Signals,
};
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// The target for p99 fire lateness, in milliseconds.
const LATENESS_P99_TARGET_MS: i64 = 10;
/// After the lateness window, how long the worker keeps going (the scheduler is
/// stopped) so the window's last slots can start before the runs are read.
const DRAIN: Duration = Duration::from_secs(5);

/// What the lateness bench saw.
#[derive(Debug, Default)]
pub(crate) struct LatenessReport {
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

/// Measures fire lateness on the fresh database at `url`.
pub(crate) async fn measure(
    url: &str,
    settings: &Settings,
    args: &BenchArgs,
    concurrency: usize,
    backend: BackendName,
) -> anyhow::Result<LatenessReport> {
    let name = backend.as_str();
    let (store, signals) =
        Signals::listen_to(connect_and_migrate(url, Some(&crate::database::fresh_secret_key())).await?);
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
        signals.clone(),
        Arc::new(SystemClock),
        scheduler_stop.clone(),
    ));
    let worker = BackgroundWorker::start(&store, &signals, worker_settings(settings, url, concurrency));
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

/// Prints one backend's figures as soon as they are measured.
pub(crate) fn print(backend: BackendName, r: &LatenessReport) {
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

/// The rows of the summary table, for the reports `pick` finds.
pub(crate) fn summary<R>(
    t: &mut Table<'_, R>,
    pick: impl Fn(&R) -> Option<&LatenessReport>,
    args: &BenchArgs,
    concurrency: usize,
) {
    t.section(format!(
        "FIRE LATENESS ({} jobs, {} s after {} s warm-up, concurrency {concurrency})",
        args.jobs, args.duration, args.warmup
    ));
    t.row_of("job creation (jobs/s)", "", &pick, |r| {
        format!("{:.0}", r.jobs as f64 / r.create_secs)
    });
    t.row_of("slots due in window", "", &pick, |r| r.slots.to_string());
    t.row_of("runs started", "", &pick, |r| r.lateness.count.to_string());
    t.row_of("lateness p50 / p99 / max (ms)", "p99 < 10", &pick, |r| {
        r.lateness.triple()
    });
    t.row_of(".. scheduler lag p50 / p99 / max", "", &pick, |r| {
        r.scheduler_lag.triple()
    });
    t.row_of(".. queue wait p50 / p99 / max", "", &pick, |r| {
        r.queue_wait.triple()
    });
    t.row_of("first start of each second p50/p99/max", "", &pick, |r| {
        r.burst_first.triple()
    });
    t.row_of("last start of each second p50/p99/max", "", &pick, |r| {
        r.burst_last.triple()
    });
    t.row_of("p99 within target", "", &pick, |r| {
        yes_no(r.lateness.count > 0 && r.lateness.p99 < LATENESS_P99_TARGET_MS)
    });
    t.row_of("skipped / missed / caught up", "0 / 0 / 0", &pick, |r| {
        format!("{} / {} / {}", r.skipped, r.missed, r.caught_up)
    });
    t.row_of("never fired / not started", "0 / 0", &pick, |r| {
        format!("{} / {}", r.never_fired, r.not_started)
    });
    t.row_of("runs of warm-up slots", "", &pick, |r| r.warmup_runs.to_string());
    t.row_of("CPU ms/run: cronflow + `true` / busy", "", &pick, |r| {
        CpuUse::per_run_of(r.cpu, r.lateness.count)
    });
}
