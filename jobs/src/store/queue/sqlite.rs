//! apalis-sqlite's table `Jobs`: due times in whole seconds since the epoch.

use super::{Kind, NewTask, QueueSql};
use crate::StoreError;
use crate::store::db::{Exec, Statement};
use chrono::{DateTime, Utc};

/// Rows per INSERT (8 parameters each, under SQLite's limit of 32,766) or DELETE.
const PUSH_ROWS: usize = 1000;

/// Pushes `tasks` with multi-row INSERTs: the rows of apalis-sqlite's `sink.sql`, due at
/// the database's clock when due now.
pub(super) async fn push(
    conn: &mut sqlx::SqliteConnection,
    kind: Kind,
    tasks: &[NewTask<'_>],
) -> Result<(), StoreError> {
    for chunk in tasks.chunks(PUSH_ROWS) {
        let mut s = Statement::new(
            "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, \
             metadata, idempotency_key) ",
        );
        s.values(chunk, |row, task| {
            let (body, attempts) = kind.payload(task);
            row.bind(body)
                .bind(ulid::Ulid::generate().to_string())
                .bind(kind.queue())
                .raw("'Pending'")
                .raw("0")
                .bind(attempts)
                .bind_in(
                    "COALESCE(",
                    task.due.map(run_at_secs),
                    ", CAST(strftime('%s', 'now') AS INTEGER))",
                )
                .raw("0")
                .raw("'{}'")
                .raw("NULL");
        });
        s.push(" ON CONFLICT (job_type, idempotency_key) DO NOTHING");
        Exec::SqliteConn(&mut *conn).run(s).await?;
    }
    Ok(())
}

/// Deletes the tasks `ids`, one statement per [`PUSH_ROWS`].
pub(super) async fn delete(conn: &mut sqlx::SqliteConnection, ids: &[&str]) -> Result<(), StoreError> {
    for chunk in ids.chunks(PUSH_ROWS) {
        let mut s = Statement::new("DELETE FROM Jobs WHERE id IN ");
        s.list(chunk.iter().copied());
        Exec::SqliteConn(&mut *conn).run(s).await?;
    }
    Ok(())
}

/// A not-before time in apalis's whole seconds, rounded up so a task never runs early.
fn run_at_secs(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

pub(super) const SQL: QueueSql = QueueSql {
    fail_task: "UPDATE Jobs SET status = 'Failed', attempts = MAX(attempts + 1, max_attempts), last_result = $2, \
                done_at = strftime('%s', 'now'), idempotency_key = $3 WHERE id = $1",
    revive_failed: "UPDATE Jobs SET status = 'Pending', attempts = 0, run_at = strftime('%s', 'now'), \
                    lock_by = NULL, lock_at = NULL, done_at = NULL, last_result = NULL \
                    WHERE status = 'Failed' AND job_type = ",
    delete_failed: "DELETE FROM Jobs WHERE status = 'Failed' AND job_type = ",
    release_held: "UPDATE Jobs SET status = 'Pending', done_at = NULL, lock_by = NULL, lock_at = NULL, \
                   last_result = '{\"Err\": \"Handed back by a stopping worker.\"}' \
                   WHERE lock_by = $1 AND (status = 'Running' OR status = 'Queued') AND job_type = $2 \
                   AND (CAST($3 AS TEXT) IS NULL OR id = $3)",
    // The text apalis's `reenqueue_orphaned.sql` writes, exactly.
    take_lapsed: "UPDATE Jobs SET last_result = NULL \
                  WHERE last_result = '{\"Err\": \"Re-enqueued due to worker heartbeat timeout.\"}' AND id IN ",
    // A pending task never has a `lock_by`; with that condition the count reads apalis's
    // partial fetch index instead of the table.
    queue_depth: "SELECT job_type, COUNT(*) FROM Jobs WHERE status = 'Pending' AND lock_by IS NULL GROUP BY job_type",
    delete_finished: "DELETE FROM Jobs WHERE id IN (SELECT id FROM Jobs WHERE status IN ('Done', 'Killed') \
                      AND done_at < $1 / 1000 LIMIT $2)",
};
