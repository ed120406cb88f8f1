//! What differs between the backends: pushing queue tasks, and the few statements whose
//! SQL is not the same on both. [`super::with_tx`] binds one of these modules for its
//! body, and so does [`super::with_writer`] when asked (`with_writer!(store, pool, q => …)`).

use crate::queue::NewTask;
use chrono::{DateTime, Duration, Utc};

/// Tasks due at the given times.
fn due_at(ids: &[(String, Option<DateTime<Utc>>)]) -> Vec<NewTask<'_>> {
    ids.iter().map(|(id, at)| NewTask::at(id, *at)).collect()
}

/// Run tasks due `lead` before their slots, carrying the slot.
fn ahead_of(slots: &[(String, DateTime<Utc>)], lead: Duration) -> Vec<NewTask<'_>> {
    slots
        .iter()
        .map(|(id, slot)| NewTask {
            id,
            due: Some(*slot - lead),
            start_at: Some(*slot),
        })
        .collect()
}

/// The task functions of a dialect: the same four over the backend's connection
/// type and its `crate::queue` module, with the dialect's `RUN_LEAD`.
macro_rules! push_fns {
    ($conn:ty, $queue:ident) => {
        /// Pushes run tasks (id, due time; `None`: now).
        pub(crate) async fn push(
            tx: &mut $conn,
            ids: &[(String, Option<DateTime<Utc>>)],
        ) -> Result<(), StoreError> {
            crate::queue::$queue::push_kind(tx, Kind::Run, &super::due_at(ids)).await
        }

        /// Pushes the tasks of runs fired ahead of their slots (id, slot): due [`RUN_LEAD`]
        /// before the slot, held by the worker until it.
        pub(crate) async fn push_ahead(
            tx: &mut $conn,
            slots: &[(String, DateTime<Utc>)],
        ) -> Result<(), StoreError> {
            crate::queue::$queue::push_kind(tx, Kind::Run, &super::ahead_of(slots, RUN_LEAD)).await
        }

        /// Pushes delivery attempt tasks (id, due time; `None`: now).
        pub(crate) async fn push_deliveries(
            tx: &mut $conn,
            ids: &[(String, Option<DateTime<Utc>>)],
        ) -> Result<(), StoreError> {
            crate::queue::$queue::push_kind(tx, Kind::Delivery, &super::due_at(ids)).await
        }

        /// [`crate::queue::release_held_sql`] on this backend's task table.
        pub(crate) fn release_held_sql() -> String {
            crate::queue::release_held_sql(crate::queue::$queue::TABLE)
        }

        /// Ends tasks (task id, how it ended): CronFlow's acknowledgement of delivery tasks.
        pub(crate) async fn finish_tasks(tx: &mut $conn, ends: &[(&str, TaskEnd)]) -> Result<(), StoreError> {
            crate::queue::$queue::finish(tx, ends).await
        }
    };
}

/// SQLite: one process, so no row locking is needed (the transaction is `IMMEDIATE`).
pub(crate) mod sqlite {
    use crate::{
        StoreError,
        queue::{Kind, TaskEnd},
    };
    use chrono::{DateTime, Duration, Utc};

    /// How long before its slot a run fired ahead becomes due: none, because apalis-sqlite
    /// compares due times in whole seconds (a lead would make the task due up to a second
    /// early, holding a worker slot all that time). The worker is woken just after the slot.
    pub(crate) const RUN_LEAD: Duration = Duration::zero();

    /// `Store::record_process_groups`: no row locks to order (one writer).
    pub(crate) const LOCK_GROUP_RUNS: &str = "";
    /// The join on [`LOCK_GROUP_RUNS`]'s rows: none.
    pub(crate) const JOIN_LOCKED_GROUP_RUNS: &str = "";
    /// `Store::finish_runs`: nothing to lock (one writer).
    pub(crate) const LOCK_QUEUE_JOBS_OF_RUNS: &str = "";

    push_fns!(sqlx::SqliteConnection, sqlite);

    /// Waiting tasks per queue, for the queue-depth gauge. A pending task never has a
    /// `lock_by`; with that condition the count reads apalis's partial fetch index instead
    /// of the table.
    pub(crate) const QUEUE_DEPTH_SQL: &str =
        "SELECT job_type, COUNT(*) FROM Jobs WHERE status = 'Pending' AND lock_by IS NULL GROUP BY job_type";

    /// Deletes up to `$2` tasks that finished before `$1` (ms since the epoch; apalis-sqlite
    /// keeps whole seconds), for retention.
    pub(crate) const DELETE_FINISHED_TASKS_SQL: &str = "DELETE FROM Jobs WHERE id IN (SELECT id FROM Jobs WHERE status IN ('Done', 'Killed') \
         AND done_at < $1 / 1000 LIMIT $2)";

    /// Jobs due at `$1` (or by `$3` for overlap `allow`), at most `$2`.
    pub(crate) const DUE_JOBS_SQL: &str = concat!(
        "SELECT ",
        super::super::jobs::job_columns!(),
        " FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= $3 AND NOT paused ",
        "AND (next_fire_at <= $1 OR overlap_policy = 'allow') ORDER BY next_fire_at LIMIT $2"
    );
}

/// Postgres: schedulers in several processes each lock the due jobs they take and skip
/// those another holds.
pub(crate) mod postgres {
    use crate::{
        StoreError,
        queue::{Kind, TaskEnd},
    };
    use chrono::{DateTime, Duration, Utc};

    /// How long before its slot a run fired ahead becomes due (Postgres keeps due times to
    /// the microsecond). This process's worker is woken then and fetches the slot's tasks
    /// (a few milliseconds for a slot of hundreds), and each handler waits for the slot
    /// before starting its run: the fetch is done before the slot, not after it. The
    /// price is a worker slot held for at most this long per run, whichever worker
    /// (of any process) fetched the task.
    pub(crate) const RUN_LEAD: Duration = Duration::milliseconds(50);

    /// `Store::record_process_groups` locks the runs `v` names in id order first, the
    /// order `finish_runs` locks them in: a run that exits at once is finished while its
    /// group is recorded, and two orders deadlock (Postgres then waits its
    /// deadlock_timeout, 1 s, to break it).
    pub(crate) const LOCK_GROUP_RUNS: &str = ", locked AS MATERIALIZED (SELECT id FROM runs WHERE id IN (SELECT id FROM v) \
         AND state = 'running' ORDER BY id FOR UPDATE)";
    /// The join on [`LOCK_GROUP_RUNS`]'s rows.
    pub(crate) const JOIN_LOCKED_GROUP_RUNS: &str = " JOIN locked ON locked.id = v.id";

    /// `Store::finish_runs` locks the `queue` jobs of the runs it finishes (the list of
    /// run ids follows), in id order, before any run: a scheduler pass holds a job's row
    /// while it records a slot `queued` behind a running run, and a finish that decided
    /// concurrently that nothing was queued would leave that run queued for ever (and
    /// with it every later slot of the job). Locked, the finish waits for the pass and
    /// then sees the queued run and starts it.
    pub(crate) const LOCK_QUEUE_JOBS_OF_RUNS: &str = "SELECT id FROM scheduled_jobs WHERE overlap_policy = 'queue' \
         AND id IN (SELECT job_id FROM runs WHERE id IN ";

    push_fns!(sqlx::PgConnection, postgres);

    /// Waiting tasks per queue, for the queue-depth gauge.
    pub(crate) const QUEUE_DEPTH_SQL: &str =
        "SELECT job_type, COUNT(*) FROM apalis.jobs WHERE status = 'Pending' GROUP BY job_type";

    /// Deletes up to `$2` tasks that finished before `$1` (ms since the epoch), for
    /// retention.
    pub(crate) const DELETE_FINISHED_TASKS_SQL: &str = "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs WHERE status IN ('Done', 'Killed') \
         AND done_at < to_timestamp($1::float8 / 1000) LIMIT $2)";

    /// Jobs due at `$1` (or by `$3` for overlap `allow`), at most `$2`, locked for this
    /// transaction.
    pub(crate) const DUE_JOBS_SQL: &str = concat!(
        "SELECT ",
        super::super::jobs::job_columns!(),
        " FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= $3 AND NOT paused ",
        "AND (next_fire_at <= $1 OR overlap_policy = 'allow') ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
}
