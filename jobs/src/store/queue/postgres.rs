//! apalis-postgres's table `apalis.jobs`: due times as `timestamptz`.

use super::{Kind, NewTask, QueueSql};
use crate::StoreError;

/// Pushes `tasks` in one statement: the rows of apalis-postgres's `sink.sql`, except for
/// the due time, kept to the microsecond (apalis rounds it to whole seconds); a task due
/// now gets the database's `now()`, so the insert trigger notifies the listening workers.
pub(super) async fn push(
    conn: &mut sqlx::PgConnection,
    kind: Kind,
    tasks: &[NewTask<'_>],
) -> Result<(), StoreError> {
    let (mut ids, mut bodies, mut attempts, mut due) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let (body, max) = kind.payload(task);
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes the tasks `ids`, in one statement.
pub(super) async fn delete(conn: &mut sqlx::PgConnection, ids: &[&str]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM apalis.jobs WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) const SQL: QueueSql = QueueSql {
    fail_task: "UPDATE apalis.jobs SET status = 'Failed', attempts = GREATEST(attempts + 1, max_attempts), \
                last_result = $2::jsonb, done_at = now(), idempotency_key = $3 WHERE id = $1",
    revive_failed: "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), \
                    lock_by = NULL, lock_at = NULL, done_at = NULL, last_result = NULL \
                    WHERE status = 'Failed' AND job_type = ",
    delete_failed: "DELETE FROM apalis.jobs WHERE status = 'Failed' AND job_type = ",
    release_held: "UPDATE apalis.jobs SET status = 'Pending', done_at = NULL, lock_by = NULL, lock_at = NULL, \
                   last_result = '{\"Err\": \"Handed back by a stopping worker.\"}' \
                   WHERE lock_by = $1 AND (status = 'Running' OR status = 'Queued') AND job_type = $2 \
                   AND (CAST($3 AS TEXT) IS NULL OR id = $3)",
    take_lapsed: "UPDATE apalis.jobs SET last_result = NULL \
                  WHERE last_result = '{\"Err\": \"Re-enqueued due to worker heartbeat timeout.\"}'::jsonb AND id IN ",
    queue_depth: "SELECT job_type, COUNT(*) FROM apalis.jobs WHERE status = 'Pending' GROUP BY job_type",
    delete_finished: "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs WHERE status IN ('Done', 'Killed') \
                      AND done_at < to_timestamp($1::float8 / 1000) LIMIT $2)",
};
