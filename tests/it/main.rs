//! CronFlow's end-to-end tests, one binary. Each test starts the real application (or
//! the real `cronflow` program) on a random port over a fresh SQLite file or a fresh
//! Postgres database; `both_backends!` (or `on_both_backends!`, for tests that set up
//! their own database) runs a test on each.
//!
//! Postgres: `CRONFLOW_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) names a server where tests may create
//! databases. If it cannot be reached, Postgres tests fail; they are never skipped.

mod helpers;
mod receiver;

mod activity;
mod audit;
mod auth;
mod binary;
mod dashboard;
mod jobs;
mod metrics;
mod openapi;
mod queue;
mod readme_receivers;
mod retention;
mod runs;
mod scheduling;
mod upgrade;
mod webhooks;
