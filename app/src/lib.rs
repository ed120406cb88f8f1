//! The `cronflow` binary as a library: command line, configuration, start-up and
//! shutdown. Wiring only; behaviour lives in `cronflow-jobs` (the engine) and
//! `cronflow-api` (the HTTP API). The benchmark is a crate of its own, `bench/`
//! (`cronflow-bench`), which uses this library and the engine's public API; the
//! end-to-end tests (`tests/`) build the application through [`Application`] and run the
//! real program from `tests/bin/cronflow.rs`.
//!
//! # Layout
//! - [`cli`]: the commands (`serve`, `worker`, `migrate`, `openapi`, `keys create`,
//!   `audit verify`) and [`cli::main_entry`], which `main.rs` calls.
//! - [`audit`]: `cronflow audit verify`, in the database or an exported file.
//! - [`config`]: [`Settings`], from defaults (`defaults.toml`), a TOML file and
//!   `CRONFLOW_*` variables, validated once; each setting is documented in
//!   `docs/configuration.md`.
//! - [`startup`]: [`Application`], which connects, migrates, binds and serves; tests
//!   build it on port 0. Also [`startup::run_worker`], the worker alone (`cronflow
//!   worker`, and the bench).
//! - [`shutdown`]: SIGTERM / ctrl-c to one cancellation token, passed explicitly.
//! - [`telemetry`]: the tracing subscriber (colour only on a terminal).

pub mod audit;
pub mod cli;
pub mod config;
pub mod shutdown;
pub mod startup;
pub mod telemetry;

pub use config::Settings;
pub use startup::Application;
