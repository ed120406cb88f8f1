//! CronFlow's end-to-end tests, one binary. Each test starts the real application (or
//! the real `cronflow` program) on a random port over a fresh SQLite file or a fresh
//! Postgres database; `on_both_backends!` runs a test on each.
//!
//! Postgres: `CRONFLOW_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) names a server where tests may create
//! databases. If nothing answers there, the tests start a private server from the
//! installed binaries (`pg_server`) and share it; if none is installed, the Postgres
//! tests fail under `CI=true` and are skipped elsewhere, with one warning naming the
//! packages to install. `docs/testing.md` says how to run everything, the chaos test's
//! long form included.

mod helpers;
mod pg_server;
mod receiver;

mod activity;
mod audit;
mod auth;
mod binary;
mod chaos;
mod clients;
mod credentials;
mod dashboard;
mod dlq_queue;
mod event_schemas;
mod held;
mod jobs;
mod ledger_events;
mod logs;
mod metrics;
mod openapi;
mod queue;
mod readme_receivers;
mod retention;
mod runs;
mod scheduling;
mod secrets;
mod streaks;
mod strict_input;
mod upgrade;
mod watchdog;
mod webhooks;
