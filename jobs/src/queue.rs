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

/// The apalis queue name (never the Rust type name, which would change on a rename).
pub const RUN_QUEUE: &str = "cronflow-runs";
/// How many times a task may be delivered before apalis gives up on it.
const MAX_DELIVERIES: usize = 10;

/// The payload of a run task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTask {
    /// The run to execute.
    pub run_id: String,
}

fn task_bytes(run_id: &str, run_at: Option<DateTime<Utc>>) -> apalis::prelude::Task<Vec<u8>> {
    let body = serde_json::to_vec(&RunTask {
        run_id: run_id.to_owned(),
    })
    .unwrap_or_default();
    let mut b = TaskBuilder::new(body).max_attempts(MAX_DELIVERIES);
    if let Some(at) = run_at {
        b = b.run_at_timestamp(u64::try_from(at.timestamp()).unwrap_or_default());
    }
    b.build()
}

fn queue_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Queue(Box::new(e))
}

/// Pushing on SQLite.
pub(crate) mod sqlite {
    use super::*;

    /// Pushes the tasks for `runs` (id, not-before time) inside `tx`.
    pub(crate) async fn push(
        tx: &mut sqlx::SqliteConnection,
        runs: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        let tasks: Vec<_> = runs.iter().map(|(id, at)| task_bytes(id, *at)).collect();
        apalis_sqlite::queries::push_tasks(tx, RUN_QUEUE, &tasks)
            .await
            .map_err(queue_error)
    }
}

/// Pushing on Postgres.
pub(crate) mod postgres {
    use super::*;

    /// Pushes the tasks for `runs` (id, not-before time) inside `tx`, in one statement.
    pub(crate) async fn push(
        tx: &mut sqlx::PgConnection,
        runs: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        let tasks: Vec<_> = runs.iter().map(|(id, at)| task_bytes(id, *at)).collect();
        apalis_postgres::queries::push_tasks(tx, RUN_QUEUE, tasks)
            .await
            .map_err(queue_error)
    }
}
