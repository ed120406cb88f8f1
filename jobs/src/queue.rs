//! The run queue: apalis tasks that carry a run id, on the same database as everything
//! else. Tasks are pushed inside CronFlow's own transactions (the scheduler's, a manual
//! trigger's, a finishing run's), so a run row and its task exist together or not at all.
//!
//! apalis's own retries are not used for job retries: a retry is a new run row with its
//! own task (see `store::runs`). The task's `max_attempts` only bounds redelivery after
//! a worker crash or a transient database error.

use crate::StoreError;
use apalis::prelude::TaskBuilder;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The apalis queue of runs (never the Rust type name, which would change on a rename).
pub const RUN_QUEUE: &str = "cronflow-runs";
/// The apalis queue of webhook delivery attempts.
pub const DELIVERY_QUEUE: &str = "cronflow-deliveries";
/// How many times a run task may be delivered before apalis gives up on it.
const MAX_DELIVERIES: usize = 10;
/// A delivery task is one attempt: CronFlow schedules each retry as a new delayed task,
/// so apalis never retries one itself. The task of the attempt that exhausts the retry
/// schedule fails, and stays in apalis's `Failed` state: the dead letter queue.
const DELIVERY_TASK_ATTEMPTS: usize = 1;

/// The payload of a run task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTask {
    /// The run to execute.
    pub run_id: String,
}

/// The payload of a delivery task: one attempt of one delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryTask {
    /// The delivery to attempt.
    pub delivery_id: String,
}

/// Which queue, and the task for one id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A run task.
    Run,
    /// A delivery attempt task.
    Delivery,
}

/// A task's payload and how many times apalis may hand it out.
fn payload(kind: Kind, id: &str) -> (Vec<u8>, usize) {
    let (body, attempts) = match kind {
        Kind::Run => (
            serde_json::to_vec(&RunTask {
                run_id: id.to_owned(),
            }),
            MAX_DELIVERIES,
        ),
        Kind::Delivery => (
            serde_json::to_vec(&DeliveryTask {
                delivery_id: id.to_owned(),
            }),
            DELIVERY_TASK_ATTEMPTS,
        ),
    };
    (body.unwrap_or_default(), attempts)
}

/// A not-before time in apalis's whole seconds, rounded up so a task never runs early.
fn run_at_secs(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

fn task_bytes(kind: Kind, id: &str, run_at: Option<DateTime<Utc>>) -> apalis::prelude::Task<Vec<u8>> {
    let (body, attempts) = payload(kind, id);
    let mut b = TaskBuilder::new(body).max_attempts(attempts);
    if let Some(at) = run_at {
        b = b.run_at_timestamp(u64::try_from(run_at_secs(at)).unwrap_or_default());
    }
    b.build()
}

impl Kind {
    fn queue(self) -> &'static str {
        match self {
            Kind::Run => RUN_QUEUE,
            Kind::Delivery => DELIVERY_QUEUE,
        }
    }
}

fn queue_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Queue(Box::new(e))
}

/// Pushing on SQLite.
pub(crate) mod sqlite {
    use super::*;

    /// Rows per INSERT (8 parameters each, under SQLite's 32,766).
    const ROWS: usize = 1000;

    /// Pushes the tasks for `ids` (id, not-before time) inside `tx`, with multi-row
    /// INSERTs. apalis-sqlite's own `push_tasks` writes one statement per task, and on
    /// SQLite every statement is a round trip to the connection's thread; the rows
    /// written here are exactly those of its `sink.sql` (a fresh ULID as id, empty
    /// metadata), which is why apalis is pinned to one version.
    pub(crate) async fn push_kind(
        tx: &mut sqlx::SqliteConnection,
        kind: Kind,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        for chunk in ids.chunks(ROWS) {
            let mut b = sqlx::QueryBuilder::new(
                "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, \
                 metadata, idempotency_key) ",
            );
            b.push_values(chunk, |mut row, (id, at)| {
                let (body, attempts) = payload(kind, id);
                row.push_bind(body)
                    .push_bind(ulid::Ulid::generate().to_string())
                    .push_bind(kind.queue())
                    .push("'Pending'")
                    .push("0")
                    .push_bind(i64::try_from(attempts).unwrap_or(i64::MAX))
                    .push_bind(at.map_or(now.timestamp(), run_at_secs))
                    .push("0")
                    .push("'{}'")
                    .push("NULL");
            });
            b.push(" ON CONFLICT (job_type, idempotency_key) DO NOTHING");
            b.build().execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// Pushing on Postgres.
pub(crate) mod postgres {
    use super::*;

    /// Pushes the tasks for `ids` (id, not-before time) inside `tx`, in one statement.
    pub(crate) async fn push_kind(
        tx: &mut sqlx::PgConnection,
        kind: Kind,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tasks: Vec<_> = ids.iter().map(|(id, at)| task_bytes(kind, id, *at)).collect();
        apalis_postgres::queries::push_tasks(tx, kind.queue(), tasks)
            .await
            .map_err(queue_error)
    }
}
