//! The run queue: apalis tasks that carry a run id, on the same database as everything
//! else. Tasks are pushed inside CronFlow's own transactions (the scheduler's, a manual
//! trigger's, a finishing run's), so a run row and its task exist together or not at all.
//!
//! apalis's own retries are not used for job retries: a retry is a new run row with its
//! own task (see `store::runs`). The task's `max_attempts` only bounds redelivery after
//! a worker crash or a transient database error.

use crate::StoreError;
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
    /// For a run queued to become due a little before its slot (see
    /// `store::dialect::postgres::RUN_LEAD`), the slot: the worker that takes the task
    /// holds it until then, so the run starts at its slot, not after a fetch that began
    /// at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
}

/// One task to push.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewTask<'a> {
    /// The run's or delivery's id.
    pub(crate) id: &'a str,
    /// When the queue may hand the task out (`None`: now).
    pub(crate) due: Option<DateTime<Utc>>,
    /// A run's slot, when it is queued ahead of it ([`RunTask::start_at`]).
    pub(crate) start_at: Option<DateTime<Utc>>,
}

impl<'a> NewTask<'a> {
    /// A task for `id` due at `due` (`None`: now).
    pub(crate) fn at(id: &'a str, due: Option<DateTime<Utc>>) -> Self {
        NewTask {
            id,
            due,
            start_at: None,
        }
    }
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
fn payload(kind: Kind, task: &NewTask<'_>) -> (Vec<u8>, usize) {
    let (body, attempts) = match kind {
        Kind::Run => (
            serde_json::to_vec(&RunTask {
                run_id: task.id.to_owned(),
                start_at: task.start_at,
            }),
            MAX_DELIVERIES,
        ),
        Kind::Delivery => (
            serde_json::to_vec(&DeliveryTask {
                delivery_id: task.id.to_owned(),
            }),
            DELIVERY_TASK_ATTEMPTS,
        ),
    };
    (body.unwrap_or_default(), attempts)
}

/// How a delivery task ends: CronFlow acknowledges delivery tasks itself, in the
/// transaction that stores what the task did (see `workers`), instead of leaving it to
/// apalis's acknowledgement, which costs a transaction of its own per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskEnd {
    /// The task did its work: its row is deleted at once. The delivery and its attempts
    /// are the record of what happened; a finished row left in the queue table would only
    /// be written once more and later deleted by retention, and every index of the table
    /// maintained for it (on Postgres, an update of a task row writes a new row version
    /// and an entry in each index; a delete writes neither).
    Done,
    /// The delivery it attempted is dead: the task stays in apalis's `Failed` state, the
    /// dead letter queue, with its attempts used up so apalis never hands it out again.
    Failed,
}

impl TaskEnd {
    /// The task ids of `ends` that ended `self`.
    fn ids<'a>(self, ends: &[(&'a str, TaskEnd)]) -> Vec<&'a str> {
        ends.iter()
            .filter(|(_, e)| *e == self)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The `last_result` apalis would store for a failed task (its JSON encoding of the
/// handler's `Err(String)`).
const FAILED_RESULT: &str = r#"{"Err":"the delivery exhausted its retries and is dead"}"#;

/// A not-before time in apalis's whole seconds, rounded up so a task never runs early.
fn run_at_secs(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

impl Kind {
    fn queue(self) -> &'static str {
        match self {
            Kind::Run => RUN_QUEUE,
            Kind::Delivery => DELIVERY_QUEUE,
        }
    }
}

/// Pushing on SQLite.
pub(crate) mod sqlite {
    use super::*;

    /// apalis-sqlite's task table.
    pub(crate) const TABLE: &str = "Jobs";

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
        tasks: &[NewTask<'_>],
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        for chunk in tasks.chunks(ROWS) {
            let mut b = sqlx::QueryBuilder::new(
                "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, \
                 metadata, idempotency_key) ",
            );
            b.push_values(chunk, |mut row, task| {
                let (body, attempts) = payload(kind, task);
                row.push_bind(body)
                    .push_bind(ulid::Ulid::generate().to_string())
                    .push_bind(kind.queue())
                    .push("'Pending'")
                    .push("0")
                    .push_bind(i64::try_from(attempts).unwrap_or(i64::MAX))
                    .push_bind(task.due.map_or(now.timestamp(), run_at_secs))
                    .push("0")
                    .push("'{}'")
                    .push("NULL");
            });
            b.push(" ON CONFLICT (job_type, idempotency_key) DO NOTHING");
            b.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Ends the tasks `ends` names (task id, how it ended) inside `tx`: deletes the `Done`
    /// ones and fails the others as apalis-sqlite's acknowledgement would (`ack.sql`),
    /// with one statement per [`ROWS`] of each.
    pub(crate) async fn finish(
        tx: &mut sqlx::SqliteConnection,
        ends: &[(&str, TaskEnd)],
    ) -> Result<(), StoreError> {
        for chunk in TaskEnd::Done.ids(ends).chunks(ROWS) {
            let mut b = sqlx::QueryBuilder::new("DELETE FROM Jobs WHERE id IN ");
            crate::store::push_list(&mut b, chunk.iter().copied());
            b.build().execute(&mut *tx).await?;
        }
        for chunk in TaskEnd::Failed.ids(ends).chunks(ROWS) {
            let mut b = sqlx::QueryBuilder::new(
                "UPDATE Jobs SET status = 'Failed', attempts = MAX(attempts + 1, max_attempts), last_result = ",
            );
            b.push_bind(FAILED_RESULT)
                .push(", done_at = strftime('%s', 'now') WHERE id IN ");
            crate::store::push_list(&mut b, chunk.iter().copied());
            b.build().execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// The statement that puts back on a queue, due now, the tasks a stopping worker holds
/// but will not start, on apalis's task table `table`. It binds the worker (`lock_by`),
/// the queue, and one task id, or NULL for all of them. The tasks go back as apalis's
/// orphan recovery would put them (`reenqueue_orphaned.sql`), without waiting for the
/// worker's lease to lapse, and without counting an attempt: the task was not run (a run
/// task handed back more than once during one drain would otherwise use up its
/// redeliveries). apalis's own acknowledgement of it later, if any, changes nothing: it
/// only updates tasks the worker still holds.
pub(crate) fn release_held_sql(table: &str) -> String {
    format!(
        "UPDATE {table} SET status = 'Pending', done_at = NULL, lock_by = NULL, lock_at = NULL, \
         last_result = '{{\"Err\": \"Handed back by a stopping worker.\"}}' \
         WHERE lock_by = $1 AND (status = 'Running' OR status = 'Queued') AND job_type = $2 \
         AND (CAST($3 AS TEXT) IS NULL OR id = $3)"
    )
}

/// Pushing on Postgres.
pub(crate) mod postgres {
    use super::*;

    /// apalis-postgres's task table.
    pub(crate) const TABLE: &str = "apalis.jobs";

    /// Pushes `tasks` inside `tx`, in one statement. The rows are those of
    /// apalis-postgres's `sink.sql` (a fresh ULID as id, empty metadata) except for the
    /// due time, which is kept to the microsecond (apalis rounds it to whole seconds);
    /// a task due now gets the database's `now()`, so apalis's insert trigger notifies
    /// the listening workers.
    pub(crate) async fn push_kind(
        tx: &mut sqlx::PgConnection,
        kind: Kind,
        tasks: &[NewTask<'_>],
    ) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let (mut ids, mut bodies, mut attempts, mut due) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for task in tasks {
            let (body, max) = payload(kind, task);
            ids.push(ulid::Ulid::generate().to_string());
            bodies.push(body);
            attempts.push(i32::try_from(max).unwrap_or(i32::MAX));
            due.push(task.due);
        }
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, \
             metadata, idempotency_key) \
             SELECT t.id, $2, t.job, 'Pending', 0, t.max_attempts, COALESCE(t.run_at, now()), 0, ''::hstore, NULL \
             FROM unnest($1::text[], $3::bytea[], $4::integer[], $5::timestamptz[]) AS t(id, job, max_attempts, run_at)",
        )
        .bind(&ids)
        .bind(kind.queue())
        .bind(&bodies)
        .bind(&attempts)
        .bind(&due)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Ends the tasks `ends` names (task id, how it ended) inside `tx`: deletes the `Done`
    /// ones and fails the others as apalis-postgres's acknowledgement would
    /// (`handle_result.sql`), one statement for each.
    pub(crate) async fn finish(
        tx: &mut sqlx::PgConnection,
        ends: &[(&str, TaskEnd)],
    ) -> Result<(), StoreError> {
        let done = TaskEnd::Done.ids(ends);
        if !done.is_empty() {
            sqlx::query("DELETE FROM apalis.jobs WHERE id = ANY($1)")
                .bind(&done)
                .execute(&mut *tx)
                .await?;
        }
        let failed = TaskEnd::Failed.ids(ends);
        if !failed.is_empty() {
            sqlx::query(
                "UPDATE apalis.jobs SET status = 'Failed', attempts = GREATEST(attempts + 1, max_attempts), \
                 last_result = $2::jsonb, done_at = now() WHERE id = ANY($1)",
            )
            .bind(&failed)
            .bind(FAILED_RESULT)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
