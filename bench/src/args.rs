//! The bench's command line: what to measure, on which databases, how hard. The
//! figures each option changes are described in the crate's documentation.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Measures fire lateness, run throughput and webhook deliveries on fresh SQLite and
/// Postgres databases and prints the figures beside their targets (asserts nothing).
///
/// The workers use CronFlow's settings (defaults, a TOML file, CRONFLOW_* variables,
/// as for `cronflow`; see docs/configuration.md) with private targets allowed; the
/// bench's own databases are created on CRONFLOW_BENCH_POSTGRES_URL (default: the local
/// test server) and in a temporary directory, and removed afterwards.
#[derive(Debug, Clone, Parser)]
#[command(name = "cronflow-bench", version)]
pub(crate) struct BenchArgs {
    /// TOML settings file for the workers (default: ./cronflow.toml if present; also
    /// CRONFLOW_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Which databases to measure.
    #[arg(long, value_enum, default_value_t = BackendArg::Both)]
    pub(crate) backend: BackendArg,
    /// Jobs in the lateness bench; job i fires at second i % 60 of every minute (0 skips
    /// the lateness bench).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) jobs: usize,
    /// Seconds of lateness measurement, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
    /// Seconds the scheduler and worker run before the measurement starts (excluded).
    #[arg(long, default_value_t = 5)]
    pub(crate) warmup: u64,
    /// Manual runs in the throughput bench (0 skips the throughput bench).
    #[arg(long, default_value_t = 5_000)]
    pub(crate) runs: usize,
    /// Runs the worker executes at once (default: the worker_concurrency setting).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Run only these benches: `runs` (fire lateness and run throughput), `deliveries`
    /// (webhook deliveries) or `data` (the reads under the dashboard's pages and
    /// `/metrics` over a large delivery history; run only when selected). Default: runs
    /// and deliveries.
    #[arg(long, value_enum)]
    pub(crate) only: Option<OnlyArg>,
    /// Deliveries in each delivery throughput scenario: that many events to 1
    /// subscription, and a hundredth of them to 100 subscriptions (0 skips the delivery
    /// bench).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) deliveries: usize,
    /// Deliveries a second in the steady delivery scenarios: that many events a second
    /// to 1 subscription, and a tenth of them to 10 subscriptions.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) delivery_rate: u32,
    /// Seconds each steady delivery scenario publishes for.
    #[arg(long, default_value_t = 5)]
    pub(crate) delivery_secs: u64,
    /// Deliveries (each with one attempt) in the data scenario's history.
    #[arg(long, default_value_t = 500_000)]
    pub(crate) data_deliveries: usize,
    /// Planner statistics in the data scenario: `none` (as on a young database; on
    /// Postgres autovacuum is turned off for the deliveries' tables), `fresh` (after
    /// ANALYZE), or `both` (none, then fresh).
    #[arg(long, value_enum, default_value_t = StatisticsArg::Both)]
    pub(crate) data_statistics: StatisticsArg,
}

/// The planner statistics `--data-statistics` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatisticsArg {
    /// No statistics for the deliveries' tables.
    None,
    /// Statistics refreshed after loading.
    Fresh,
    /// Without, then with.
    Both,
}

/// The benches `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnlyArg {
    /// Fire lateness and run throughput.
    Runs,
    /// Webhook deliveries (see the `deliveries` module).
    Deliveries,
    /// Listings, filters, exports and gauges over a large history (see the `data` module).
    Data,
}

/// The databases `--backend` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the server named by `CRONFLOW_BENCH_POSTGRES_URL`.
    Postgres,
    /// SQLite, then Postgres.
    Both,
}
