//! Bulk data for the benchmark's data scenario (`cronflow-bench --only data`): a
//! synthetic delivery history written straight into the tables in large statements
//! (real events would take hours to make as many), and the choice of whether the
//! planner has statistics for it. The product never calls these.

use super::{Backend, Store};
use crate::StoreError;

/// The shape of the synthetic history; the bench's filters are chosen from it.
///
/// Delivery `i` (id `dlv_bench{i}`, one attempt) is created at `start_ms + i * step_ms`,
/// goes to subscription `wh_bench{i % 20}` for job `wf_bench{i % 200}`; its event is
/// `job.failed` when `i % 100 == 7`, else `job.completed`; it is `dead` when
/// `i % 100 == 3` (the DLQ), `retrying` when `i % 1000 == 5`, else `delivered`. None is
/// `pending`.
pub const SYNTHETIC_SUBSCRIPTIONS: i64 = 20;

/// Rows per statement of [`Store::load_synthetic_deliveries`].
const CHUNK: i64 = 50_000;

impl Store {
    /// Writes deliveries `0..count` of the synthetic history described at
    /// [`SYNTHETIC_SUBSCRIPTIONS`], each with its attempt.
    pub async fn load_synthetic_deliveries(
        &self,
        count: i64,
        start_ms: i64,
        step_ms: i64,
    ) -> Result<(), StoreError> {
        // Rows are numbered by a recursive CTE, which both databases have.
        const NUMBERS: &str = "WITH RECURSIVE n(i) AS (SELECT CAST($1 AS BIGINT) UNION ALL \
             SELECT i + 1 FROM n WHERE i + 1 < $2) ";
        let deliveries = format!(
            "{NUMBERS}INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, attempts, \
             round_attempts, next_attempt_at, last_status_code, last_error, acknowledged, created_at, \
             delivered_at, updated_at, dead_at) \
             SELECT 'dlv_bench' || CAST(i AS TEXT), 'evt_bench' || CAST(i AS TEXT), \
             'wh_bench' || CAST(i % {SYNTHETIC_SUBSCRIPTIONS} AS TEXT), \
             CASE WHEN i % 100 = 7 THEN 'job.failed' ELSE 'job.completed' END, 'wf_bench' || CAST(i % 200 AS TEXT), \
             CASE WHEN i % 100 = 3 THEN 'dead' WHEN i % 1000 = 5 THEN 'retrying' ELSE 'delivered' END, 1, 1, \
             CASE WHEN i % 1000 = 5 THEN t + 3600000 END, CASE WHEN i % 100 = 3 THEN 500 ELSE 200 END, \
             CASE WHEN i % 100 = 3 THEN 'HTTP 500' END, FALSE, t, \
             CASE WHEN i % 100 <> 3 AND i % 1000 <> 5 THEN t + 20 END, t + 20, CASE WHEN i % 100 = 3 THEN t + 20 END \
             FROM (SELECT i, $3 + i * $4 AS t FROM n) x"
        );
        let attempts = format!(
            "{NUMBERS}INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, \
             error_kind, error, response_excerpt) \
             SELECT 'dlv_bench' || CAST(i AS TEXT), 1, $3 + i * $4, 20, CASE WHEN i % 100 = 3 THEN 500 ELSE 200 END, \
             CASE WHEN i % 100 = 3 THEN 'http' END, CASE WHEN i % 100 = 3 THEN 'HTTP 500' END, 'ok' FROM n"
        );
        let mut from = 0;
        while from < count {
            let to = (from + CHUNK).min(count);
            let args = [from.into(), to.into(), start_ms.into(), step_ms.into()];
            let mut tx = self.begin().await?;
            tx.execute(deliveries.clone(), &args).await?;
            tx.execute(attempts.clone(), &args).await?;
            tx.commit().await?;
            from = to;
        }
        Ok(())
    }

    /// Whether the planner has statistics for the deliveries: `true` refreshes them
    /// (`ANALYZE`); `false`, on Postgres, turns autovacuum off for the deliveries'
    /// tables, so they stay without statistics as on a young database (SQLite has none
    /// until an `ANALYZE`).
    pub async fn set_delivery_statistics(&self, fresh: bool) -> Result<(), StoreError> {
        let on = if fresh { "true" } else { "false" };
        if self.backend() == Backend::Postgres {
            for table in ["deliveries", "delivery_attempts"] {
                self.writer()
                    .execute(
                        format!("ALTER TABLE {table} SET (autovacuum_enabled = {on})"),
                        &[],
                    )
                    .await?;
            }
        }
        if fresh {
            self.writer().execute("ANALYZE", &[]).await?;
        }
        Ok(())
    }
}
