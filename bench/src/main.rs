//! `cronflow-bench`: measures how late scheduled runs start, how many runs a second the
//! worker completes, and how fast webhooks are delivered, on fresh SQLite and Postgres
//! databases, and prints the figures beside their targets. It asserts nothing: speed is
//! measured here, never in tests. How to run it and the current figures:
//! `docs/benchmarks.md`.
//!
//! It drives the product as a user's deployment would, through its public parts only:
//! the engine's API (`cronflow_jobs::Store`, the scheduler) and the `cronflow` library's
//! worker ([`cronflow::startup::run_worker`]), with CronFlow's settings and allocator.
//! Every measurement gets a fresh database, and reports the CPU time it used and how busy
//! the whole machine was, since on a small machine the figures are often bound by CPU
//! rather than by the database. Logs are quiet (warnings only) unless `RUST_LOG` says
//! otherwise.
//!
//! # Layout
//! - `args`: the command line.
//! - `lateness`, `throughput`: the run benches (fire lateness, run throughput), over
//!   `jobs` (the jobs they create and the runs they read back).
//! - `deliveries`: the webhook delivery scenarios, publishing with `publish` to the HTTP
//!   endpoints of `sink`.
//! - `data`: the reads under the dashboard's pages and `/metrics` over a large delivery
//!   history (`--only data`).
//! - `database` (fresh databases), `worker` (the real workers in the background), `cpu`
//!   and `stats` (what is measured), `table` (the summary tables).

mod args;
mod cpu;
mod data;
mod database;
mod deliveries;
mod jobs;
mod lateness;
mod publish;
mod sink;
mod stats;
mod table;
mod throughput;
mod worker;

use crate::{
    args::{BackendArg, BenchArgs, OnlyArg},
    database::{BackendName, on_fresh_database},
    table::Table,
};
use anyhow::Context;
use clap::Parser;
use cronflow::{Settings, config::LogFormat, telemetry};
use std::process::ExitCode;

/// The same allocator as the `cronflow` binary, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for an unusable configuration, as `cronflow` uses.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let settings = match Settings::load(args.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cronflow-bench: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_with_default_filter(LogFormat::Text, "warn");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cronflow-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cronflow-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected benches and prints their figures (stdout) and progress (stderr).
/// `settings` supply the worker's settings; its database is never touched.
async fn run(mut args: BenchArgs, settings: Settings) -> anyhow::Result<()> {
    match args.only {
        Some(OnlyArg::Runs) => args.deliveries = 0,
        Some(OnlyArg::Deliveries) => (args.jobs, args.runs) = (0, 0),
        Some(OnlyArg::Data) => (args.jobs, args.runs, args.deliveries) = (0, 0, 0),
        None => {}
    }
    let data = args.only == Some(OnlyArg::Data);
    let backends: &[BackendName] = match args.backend {
        BackendArg::Sqlite => &[BackendName::Sqlite],
        BackendArg::Postgres => &[BackendName::Postgres],
        BackendArg::Both => &[BackendName::Sqlite, BackendName::Postgres],
    };
    let concurrency = args.concurrency.unwrap_or(settings.worker_concurrency).max(1);
    let (settings, args) = (&settings, &args);
    let mut reports = Vec::new();
    let mut delivery_reports = Vec::new();
    let mut data_columns = Vec::new();
    for &backend in backends {
        if data {
            data_columns.extend(data::measure(backend, args).await?);
        }
        let lateness = if args.jobs > 0 {
            let r = on_fresh_database(backend, |url| async move {
                lateness::measure(&url, settings, args, concurrency, backend).await
            })
            .await
            .with_context(|| format!("{}: the lateness bench failed", backend.as_str()))?;
            lateness::print(backend, &r);
            Some(r)
        } else {
            None
        };
        let throughput = if args.runs > 0 {
            let r = on_fresh_database(backend, |url| async move {
                throughput::measure(&url, settings, args.runs, concurrency, backend).await
            })
            .await
            .with_context(|| format!("{}: the throughput bench failed", backend.as_str()))?;
            throughput::print(backend, &r);
            Some(r)
        } else {
            None
        };
        reports.push((backend, lateness, throughput));
        if args.deliveries > 0 {
            let r = deliveries::measure(backend, settings, args).await?;
            delivery_reports.push((backend, r));
        }
    }
    if args.jobs > 0 || args.runs > 0 {
        let mut t = Table::new(&reports, |r| r.0);
        if args.jobs > 0 {
            lateness::summary(&mut t, |r| r.1.as_ref(), args, concurrency);
        }
        if args.runs > 0 {
            throughput::summary(&mut t, |r| r.2.as_ref(), args, concurrency);
        }
        t.print();
    }
    if args.deliveries > 0 {
        deliveries::print_summary(args, settings, &delivery_reports);
    }
    if data {
        data::print_summary(args, &data_columns);
    }
    Ok(())
}
