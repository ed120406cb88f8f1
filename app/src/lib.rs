//! The `cronflow` binary as a library: command line, configuration, start-up and
//! shutdown. Wiring only; behaviour lives in `cronflow-jobs` and `cronflow-api`.
//!
//! # Layout
//! - [`cli`]: the commands (`serve`, `migrate`, `openapi`, `keys create`, `bench`) and
//!   [`cli::main_entry`], which `main.rs` calls.
//! - [`bench`]: `cronflow bench`, which measures fire lateness and run throughput;
//!   [`bench_deliveries`], its webhook delivery scenarios.
//! - [`config`]: [`Settings`], from defaults, a TOML file and `CRONFLOW_*` variables,
//!   validated once.
//! - [`startup`]: [`Application`], which connects, migrates, binds and serves; tests
//!   build it on port 0.
//! - [`shutdown`]: SIGTERM / ctrl-c to one cancellation token, passed explicitly.
//! - [`telemetry`]: the tracing subscriber.

pub mod bench;
pub mod bench_deliveries;
pub mod cli;
pub mod config;
pub mod shutdown;
pub mod startup;
pub mod telemetry;

pub use config::Settings;
pub use startup::Application;
