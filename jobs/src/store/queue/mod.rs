//! The queue room: everything CronFlow does to apalis's tables. Nothing else in
//! CronFlow reads or writes them; apalis's own workers fetch, heartbeat, acknowledge
//! run tasks and recover orphans as usual. The payloads (`crate::queue::RunTask`,
//! `crate::queue::DeliveryTask`) and the queue names live outside the store, because the
//! workers deserialize them; the wake-up workarounds of apalis's poll strategy are worker
//! wiring (`crate::workers::wake`).
//!
//! # Where CronFlow departs from apalis, and why
//! - **Its own push** (`sqlite::push`, `postgres::push`): tasks are pushed inside
//!   CronFlow's transactions (a run row and its task exist together or not at all), with
//!   one multi-row statement per batch; apalis's `push_tasks` writes one statement per
//!   task on SQLite. The rows are those of apalis's `sink.sql` (a fresh ULID as id, empty
//!   metadata), which is why apalis is pinned to one version and [`RELIED_ON`] is
//!   checked against its schema by a test.
//! - **Due times to the millisecond on Postgres**: apalis rounds them to whole seconds;
//!   runs fired ahead of their slot become due [`run_lead`] before it. SQLite keeps
//!   apalis's whole seconds, rounded up so a task never runs early. A task due now gets
//!   the database's own clock, the one apalis's fetch compares with.
//! - **Its own acknowledgement of delivery tasks** ([`finish_delivery_tasks`]): in the
//!   transaction that records the attempt, instead of apalis's, which is a transaction of
//!   its own per batch (the delivery worker runs with `persist_results(false)`). A done
//!   task's row is deleted at once rather than marked `Done`: the delivery and its
//!   attempts are the record, and a finished row would only be written again and later
//!   deleted by retention.
//! - **The dead letter queue is apalis's failed-task storage**: the task of a delivery
//!   that dies stays `Failed`, its attempts used up, with the delivery id as its
//!   idempotency key. A replay takes that task back ([`revive_dead`]: `Pending`, due now,
//!   attempts reset, same row), acknowledging or pruning a dead delivery deletes it
//!   ([`remove_dead`]), so the `Failed` delivery tasks are exactly the DLQ.
//! - **Interrupted attempts** ([`take_lapsed`]): a delivery task that apalis's orphan
//!   recovery put back (marked in `last_result`) was taken by a worker that died; its
//!   next holder records the attempt that may have gone out as `interrupted`.
//! - **Handing back held tasks** ([`Store::release_held_tasks`]): a stopping worker puts
//!   back the tasks it holds but will not start, as apalis's orphan recovery would but
//!   without waiting for its lease to lapse and without counting an attempt.
//! - **Retention of finished tasks** ([`Store::delete_finished_tasks`]): apalis's
//!   `vacuum` also deletes `Failed` tasks, which would empty the DLQ.
//! - **Migrations on apalis's tables** (`migrations/*/20261128*`): duplicate indexes
//!   dropped, the `lock_by` index made partial, on Postgres a per-statement insert
//!   trigger instead of apalis's per-row one and no foreign key from `lock_by` to the
//!   workers table, on SQLite an index for the acknowledgement; each says why.

mod postgres;
mod sqlite;

use super::{Backend, Store, db::Tx};
use crate::StoreError;
use crate::queue::{DELIVERY_QUEUE, DeliveryTask, RUN_QUEUE, RunTask};
use chrono::{DateTime, Duration, Utc};

/// How many times a run task may be handed out before apalis gives up on it. apalis's
/// retries are not job retries (a retry is a new run with its own task): this only bounds
/// redelivery after a worker crash or a transient database error.
const RUN_TASK_ATTEMPTS: i64 = 10;
/// A delivery task is one attempt: CronFlow schedules each retry as a new delayed task,
/// so apalis never retries one itself.
const DELIVERY_TASK_ATTEMPTS: i64 = 1;
/// The `last_result` apalis would store for a failed task (its JSON encoding of the
/// handler's `Err(String)`).
const FAILED_RESULT: &str = r#"{"Err":"the delivery exhausted its retries and is dead"}"#;
/// Rows per multi-row statement.
const ROWS: usize = 500;

/// The columns of apalis's task table that CronFlow's SQL names, with their declared
/// types (SQLite's declared type; Postgres's `information_schema` data type). A test
/// reads them from a database migrated by apalis itself, so an apalis upgrade that
/// changes them fails loudly.
pub const RELIED_ON: [(&str, &str, &str); 14] = [
    // (column, SQLite type, Postgres type)
    ("job", "BLOB", "bytea"),
    ("id", "TEXT", "text"),
    ("job_type", "TEXT", "text"),
    ("status", "TEXT", "text"),
    ("attempts", "INTEGER", "integer"),
    ("max_attempts", "INTEGER", "integer"),
    ("run_at", "INTEGER", "timestamp with time zone"),
    ("last_result", "TEXT", "jsonb"),
    ("lock_at", "INTEGER", "timestamp with time zone"),
    ("lock_by", "TEXT", "text"),
    ("done_at", "INTEGER", "timestamp with time zone"),
    ("priority", "INTEGER", "integer"),
    ("metadata", "TEXT", "USER-DEFINED"),
    ("idempotency_key", "TEXT", "text"),
];

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

/// Which queue a task goes to.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Run,
    Delivery,
}

impl Kind {
    fn queue(self) -> &'static str {
        match self {
            Kind::Run => RUN_QUEUE,
            Kind::Delivery => DELIVERY_QUEUE,
        }
    }

    /// A task's payload and how many times apalis may hand it out.
    fn payload(self, task: &NewTask<'_>) -> (Vec<u8>, i64) {
        let (body, attempts) = match self {
            Kind::Run => (
                serde_json::to_vec(&RunTask {
                    run_id: task.id.to_owned(),
                    start_at: task.start_at,
                }),
                RUN_TASK_ATTEMPTS,
            ),
            Kind::Delivery => (
                serde_json::to_vec(&DeliveryTask {
                    delivery_id: task.id.to_owned(),
                }),
                DELIVERY_TASK_ATTEMPTS,
            ),
        };
        // Serialising plain data cannot fail.
        (body.unwrap_or_default(), attempts)
    }
}

/// How a delivery task ends (CronFlow's acknowledgement, see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskEnd<'a> {
    /// The task did its work: its row is deleted.
    Done,
    /// The delivery it attempted (named) is dead: the task stays `Failed`, keyed by the
    /// delivery's id: the DLQ.
    Dead(&'a str),
}

/// How long before its slot a run fired ahead becomes due on `backend`: on Postgres
/// (due times to the millisecond) a little, so this process's worker fetches the slot's
/// tasks before the slot and each handler waits for it; on SQLite none, because
/// apalis-sqlite compares due times in whole seconds (a lead would make the task due up
/// to a second early, holding a worker slot all that time).
pub(crate) fn run_lead(backend: Backend) -> Duration {
    match backend {
        Backend::Sqlite => Duration::zero(),
        Backend::Postgres => Duration::milliseconds(50),
    }
}

/// Pushes run tasks (id, due time; `None`: now).
pub(crate) async fn push_runs(
    tx: &mut Tx,
    runs: &[(String, Option<DateTime<Utc>>)],
) -> Result<(), StoreError> {
    let tasks: Vec<_> = runs.iter().map(|(id, at)| NewTask::at(id, *at)).collect();
    push(tx, Kind::Run, &tasks).await
}

/// Pushes the tasks of runs fired ahead of their slots (id, slot): due [`run_lead`]
/// before the slot, held by the worker until it.
pub(crate) async fn push_runs_ahead(
    tx: &mut Tx,
    slots: &[(String, DateTime<Utc>)],
) -> Result<(), StoreError> {
    let lead = run_lead(tx.backend());
    let tasks: Vec<_> = slots
        .iter()
        .map(|(id, slot)| NewTask {
            id,
            due: Some(*slot - lead),
            start_at: Some(*slot),
        })
        .collect();
    push(tx, Kind::Run, &tasks).await
}

/// Pushes delivery attempt tasks (id, due time; `None`: now).
pub(crate) async fn push_deliveries(
    tx: &mut Tx,
    deliveries: &[(String, Option<DateTime<Utc>>)],
) -> Result<(), StoreError> {
    let tasks: Vec<_> = deliveries.iter().map(|(id, at)| NewTask::at(id, *at)).collect();
    push(tx, Kind::Delivery, &tasks).await
}

async fn push(tx: &mut Tx, kind: Kind, tasks: &[NewTask<'_>]) -> Result<(), StoreError> {
    if tasks.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Sqlite(c) => sqlite::push(c, kind, tasks).await,
        Tx::Postgres(c) => postgres::push(c, kind, tasks).await,
    }
}

/// Ends delivery tasks (task id, how it ended), in the transaction that records what
/// they did.
pub(crate) async fn finish_delivery_tasks(
    tx: &mut Tx,
    ends: &[(&str, TaskEnd<'_>)],
) -> Result<(), StoreError> {
    let mut done: Vec<&str> = ends
        .iter()
        .filter(|(_, e)| *e == TaskEnd::Done)
        .map(|(id, _)| *id)
        .collect();
    // Two tasks of one delivery (a copy handed out again after its worker's lease
    // lapsed, while the worker was only slow) may both end it as dead in one batch: the
    // first keeps the delivery's `Failed` task, the others are deleted.
    let mut dead: Vec<(&str, &str)> = Vec::new();
    for (id, end) in ends {
        if let TaskEnd::Dead(delivery) = end {
            if dead.iter().any(|(_, d)| d == delivery) {
                done.push(id);
            } else {
                dead.push((id, delivery));
            }
        }
    }
    if !done.is_empty() {
        match tx {
            Tx::Sqlite(c) => sqlite::delete(c, &done).await?,
            Tx::Postgres(c) => postgres::delete(c, &done).await?,
        }
    }
    let sql = sql(tx.backend());
    if !dead.is_empty() {
        // A delivery dies once per replay, so no other task holds its key; but should a
        // duplicate of its task have died before, that one gives way. A duplicate dying
        // in a concurrent transaction makes this one meet its key: a conflict, and the
        // batch is served again (and then this one's removal finds the other's task).
        remove_dead(tx, &dead.iter().map(|(_, d)| *d).collect::<Vec<_>>()).await?;
        for (task, delivery) in dead {
            tx.execute(
                sql.fail_task,
                &[task.into(), FAILED_RESULT.into(), delivery.into()],
            )
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
                e => e.into(),
            })?;
        }
    }
    Ok(())
}

/// Of the delivery tasks `ids`, those that apalis's orphan recovery put back because the
/// worker holding them stopped heart-beating (its mark in `last_result`): the attempt
/// each was making may have gone out unrecorded. The mark is cleared, so the
/// interruption is counted once, in the transaction that records it.
pub(crate) async fn take_lapsed(tx: &mut Tx, ids: &[&str]) -> Result<Vec<String>, StoreError> {
    let mut lapsed = Vec::new();
    for chunk in ids.chunks(ROWS) {
        let mut s = super::db::Statement::new(sql(tx.backend()).take_lapsed);
        s.list(chunk.iter().copied()).push(" RETURNING id");
        let rows: Vec<(String,)> = tx.fetch_built(s).await?;
        lapsed.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(lapsed)
}

/// Takes back the `Failed` tasks of the dead deliveries `ids` (replayed): each becomes
/// `Pending`, due now, its attempts reset, in the same row. A delivery with no `Failed`
/// task (it died before the DLQ was apalis's failed-task storage) gets a new one.
pub(crate) async fn revive_dead(tx: &mut Tx, ids: &[&str]) -> Result<(), StoreError> {
    let sql = sql(tx.backend());
    let mut missing = Vec::new();
    for chunk in ids.chunks(ROWS) {
        let mut s = super::db::Statement::new(sql.revive_failed);
        s.bind(DELIVERY_QUEUE)
            .push(" AND idempotency_key IN ")
            .list(chunk.iter().copied());
        s.push(" RETURNING idempotency_key");
        let revived: Vec<(String,)> = tx.fetch_built(s).await?;
        let revived: std::collections::HashSet<&str> = revived.iter().map(|(k,)| k.as_str()).collect();
        missing.extend(
            chunk
                .iter()
                .filter(|id| !revived.contains(*id))
                .map(|id| ((*id).to_owned(), None)),
        );
    }
    push_deliveries(tx, &missing).await
}

/// Deletes the `Failed` tasks of the deliveries `ids` (acknowledged or pruned).
pub(crate) async fn remove_dead(tx: &mut Tx, ids: &[&str]) -> Result<u64, StoreError> {
    let sql = sql(tx.backend());
    let mut n = 0;
    for chunk in ids.chunks(ROWS) {
        let mut s = super::db::Statement::new(sql.delete_failed);
        s.bind(DELIVERY_QUEUE)
            .push(" AND idempotency_key IN ")
            .list(chunk.iter().copied());
        n += tx.run(s).await?;
    }
    Ok(n)
}

/// The statements whose text differs between the two backends' task tables.
struct QueueSql {
    /// Fails task `$1` as apalis's acknowledgement would, with result `$2`, keyed by the
    /// dead delivery's id `$3`.
    fail_task: &'static str,
    /// Puts `Failed` tasks of queue `$1` back, due now (an `IN` list of keys follows).
    revive_failed: &'static str,
    /// Deletes `Failed` tasks of queue `$1` (an `IN` list of keys follows).
    delete_failed: &'static str,
    /// Puts back on queue `$2`, due now, the tasks worker `$1` holds (only task `$3` if
    /// not NULL).
    release_held: &'static str,
    /// Clears the orphan-recovery mark of the tasks that carry it (an `IN` list of task
    /// ids follows).
    take_lapsed: &'static str,
    /// Waiting tasks per queue.
    queue_depth: &'static str,
    /// Deletes up to `$2` tasks that finished before `$1` (ms since the epoch).
    delete_finished: &'static str,
}

fn sql(backend: Backend) -> &'static QueueSql {
    match backend {
        Backend::Sqlite => &sqlite::SQL,
        Backend::Postgres => &postgres::SQL,
    }
}

impl Store {
    /// Puts back on `queue` (a queue name), due now, the tasks that the worker named
    /// `worker` holds but will not start (only `task`, if given), rather than leaving
    /// them until its lease lapses. Returns how many. apalis's own acknowledgement of
    /// such a task later, if any, changes nothing: it only updates tasks the worker still
    /// holds.
    pub(crate) async fn release_held_tasks(
        &self,
        queue: &str,
        worker: &str,
        task: Option<&str>,
    ) -> Result<u64, StoreError> {
        let sql = sql(self.backend()).release_held;
        Ok(self
            .writer()
            .execute(sql, &[worker.into(), queue.into(), task.into()])
            .await?)
    }

    /// Tasks waiting per queue (due or delayed; not those a worker has taken), for the
    /// queue-depth gauge; every queue of CronFlow is named, with 0 if none wait.
    pub(crate) async fn queue_depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let depth: Vec<(String, i64)> = self
            .reader()
            .fetch_all(sql(self.backend()).queue_depth, &[])
            .await?;
        let mut out: Vec<(String, i64)> = [RUN_QUEUE, DELIVERY_QUEUE]
            .iter()
            .map(|q| ((*q).to_owned(), 0))
            .collect();
        for (q, n) in depth {
            if let Some(e) = out.iter_mut().find(|(name, _)| *name == q) {
                e.1 = n;
            }
        }
        Ok(out)
    }

    /// Deletes up to `limit` tasks that finished (`Done`, `Killed`) before `cutoff` (ms
    /// since the epoch); `Failed` ones are the DLQ and stay.
    pub(crate) async fn delete_finished_tasks(&self, cutoff: i64, limit: i64) -> Result<u64, StoreError> {
        let sql = sql(self.backend()).delete_finished;
        Ok(self.writer().execute(sql, &[cutoff.into(), limit.into()]).await?)
    }
}
