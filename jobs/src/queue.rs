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

fn task_bytes(kind: Kind, id: &str, run_at: Option<DateTime<Utc>>) -> apalis::prelude::Task<Vec<u8>> {
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
    let mut b = TaskBuilder::new(body.unwrap_or_default()).max_attempts(attempts);
    if let Some(at) = run_at {
        // apalis keeps whole seconds: round up, so a task never runs early.
        let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        b = b.run_at_timestamp(u64::try_from(secs).unwrap_or_default());
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

    /// Pushes the tasks for `ids` (id, not-before time) inside `tx`.
    pub(crate) async fn push_kind(
        tx: &mut sqlx::SqliteConnection,
        kind: Kind,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tasks: Vec<_> = ids.iter().map(|(id, at)| task_bytes(kind, id, *at)).collect();
        apalis_sqlite::queries::push_tasks(tx, kind.queue(), &tasks)
            .await
            .map_err(queue_error)
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
