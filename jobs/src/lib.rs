//! CronFlow's engine: everything that is not HTTP.
//!
//! The API crate (`cronflow-api`) parses requests into the domain types defined here and
//! calls one function of this crate per operation; the binary (`cronflow`) wires the
//! pieces together. Nothing in here knows about poem, HTTP status codes or the CLI.
//!
//! # Layout
//! - [`domain`]: parsed, validated types (prefixed ids, cron schedules in a time zone,
//!   job definitions and targets, deliveries, API keys), and the policies as pure
//!   functions (which slots fire, run retries, delivery retries). Past this boundary no
//!   raw strings travel.
//! - [`store`]: the one place that speaks SQL, over SQLite or Postgres, including the
//!   migrations of CronFlow and of apalis, and everything that touches apalis's tables.
//! - [`queue`]: the apalis queues' names and task payloads (pushing them is the store's).
//! - [`scheduler`]: the loop that fires due jobs exactly once per slot.
//! - [`signals`]: the wake-ups within one process (tasks pushed, a schedule changed).
//! - [`runner`]: the worker that executes runs (commands in process groups, HTTP
//!   requests), with timeouts, cancel and crash recovery.
//! - [`delivery`]: webhook delivery attempts and their signatures.
//! - [`workers`]: the apalis wiring of the run and delivery workers.
//! - [`wake`]: the workers' wake-ups, and the workarounds of apalis's poll strategy.
//! - [`drain`]: the graceful stop every task handler goes through.
//! - [`retention`]: the loop that prunes old records.
//! - [`metrics`]: the Prometheus registry of the process.
//! - [`outbound`]: the HTTP client for targets, with its private-address guard.
//! - [`batch`]: group commit: the database work of concurrent tasks in one call.
//! - [`clock`]: the injectable source of "now", so schedules can be tested exactly.
//! - [`error`]: the error enums of this crate.

pub mod batch;
pub mod clock;
pub mod delivery;
pub mod domain;
pub mod drain;
pub mod error;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod retention;
pub mod runner;
pub mod scheduler;
pub mod signals;
pub mod store;
pub mod wake;
pub mod watchdog;
pub mod workers;

pub use clock::{Clock, SystemClock};
pub use error::{StoreError, ValidationError};
pub use store::Store;
