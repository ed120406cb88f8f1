//! Retention: old runs, events, deliveries (with their attempts), audit entries and
//! finished queue tasks are deleted in small batches, so the tables (and the queue's
//! scans) stay small without long locks. Nothing unfinished is ever deleted, and a dead
//! delivery stays until acknowledged or its own, longer, retention has passed; when it
//! goes, its `Failed` queue task (its place in the DLQ) goes in the same transaction.

use super::{Store, db::Statement, queue};
use crate::StoreError;
use chrono::{DateTime, Duration, Utc};

/// Rows deleted per statement.
const BATCH: i64 = 1000;

/// How long each kind of record is kept.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Finished runs (and events no delivery needs any more).
    pub runs: Duration,
    /// Delivered (or dead and acknowledged) deliveries and their attempts.
    pub deliveries: Duration,
    /// Dead deliveries nobody acknowledged, and deliveries held for a subscription that
    /// stayed disabled.
    pub dead_deliveries: Duration,
    /// Audit entries.
    pub audit: Duration,
    /// Finished queue tasks (apalis rows of completed work).
    pub finished_tasks: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            runs: Duration::days(30),
            deliveries: Duration::days(30),
            dead_deliveries: Duration::days(90),
            audit: Duration::days(365),
            finished_tasks: Duration::hours(1),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Runs.
    pub runs: u64,
    /// Events.
    pub events: u64,
    /// Deliveries (their attempts go with them).
    pub deliveries: u64,
    /// Audit entries.
    pub audit: u64,
    /// Queue tasks.
    pub tasks: u64,
}

impl Store {
    /// Deletes, in batches, everything older than the policy allows at `now`.
    pub async fn prune(
        &self,
        now: DateTime<Utc>,
        policy: &RetentionPolicy,
    ) -> Result<PruneReport, StoreError> {
        let ms = |d: Duration| (now - d).timestamp_millis();
        let mut report = PruneReport::default();
        let (runs_cut, dlv_cut, dead_cut, audit_cut) = (
            ms(policy.runs),
            ms(policy.deliveries),
            ms(policy.dead_deliveries),
            ms(policy.audit),
        );
        report.runs = self
            .delete_in_batches(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE created_at < $1 \
                 AND state NOT IN ('scheduled', 'queued', 'running') LIMIT $2)",
                runs_cut,
            )
            .await?;
        // What deleted jobs left for their last runs' events, once those runs could be pruned.
        self.writer()
            .execute(
                "DELETE FROM deleted_jobs WHERE deleted_at < $1",
                &[runs_cut.into()],
            )
            .await?;
        // The watchdog's alert keys, with the runs they were about.
        self.writer()
            .execute("DELETE FROM job_alerts WHERE created_at < $1", &[runs_cut.into()])
            .await?;
        let deliveries_sql = "SELECT id FROM deliveries WHERE \
             ((status = 'delivered' OR (status = 'dead' AND acknowledged)) AND created_at < $1) \
             OR (status IN ('dead', 'held') AND created_at < $3) LIMIT $2";
        loop {
            let ids: Vec<(String,)> = self
                .reader()
                .fetch_all(deliveries_sql, &[dlv_cut.into(), BATCH.into(), dead_cut.into()])
                .await?;
            if ids.is_empty() {
                break;
            }
            let n = ids.len() as i64;
            let ids: Vec<&str> = ids.iter().map(|(id,)| id.as_str()).collect();
            let mut tx = self.begin().await?;
            // The conditions again: a delivery replayed or released since it was read is
            // no longer old news.
            let mut deliveries = Statement::new("DELETE FROM deliveries WHERE id IN ");
            deliveries
                .list(ids.iter().copied())
                .push(" AND (((status = 'delivered' OR (status = 'dead' AND acknowledged)) AND created_at < ")
                .bind(dlv_cut)
                .push(") OR (status IN ('dead', 'held') AND created_at < ")
                .bind(dead_cut)
                .push(")) RETURNING id");
            let gone: Vec<(String,)> = tx.fetch_built(deliveries).await?;
            let gone: Vec<&str> = gone.iter().map(|(id,)| id.as_str()).collect();
            if !gone.is_empty() {
                let mut attempts = Statement::new("DELETE FROM delivery_attempts WHERE delivery_id IN ");
                attempts.list(gone.iter().copied());
                tx.run(attempts).await?;
                queue::remove_dead(&mut tx, &gone).await?;
            }
            tx.commit().await?;
            report.deliveries += gone.len() as u64;
            if n < BATCH {
                break;
            }
        }
        report.events = self
            .delete_in_batches(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT $2)",
                runs_cut.min(dlv_cut),
            )
            .await?;
        loop {
            let n = self.prune_audit(audit_cut, BATCH).await?;
            report.audit += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        let tasks_cut = ms(policy.finished_tasks);
        loop {
            let n = self.delete_finished_tasks(tasks_cut, BATCH).await?;
            report.tasks += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        Ok(report)
    }

    /// Refreshes the query planner's statistics on SQLite (bounded work per table):
    /// without them apalis's task queries pick full scans as the queue grows. Postgres's
    /// autovacuum does this by itself.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.backend() == super::Backend::Sqlite {
            self.writer().execute("PRAGMA analysis_limit = 1000", &[]).await?;
            self.writer().execute("ANALYZE", &[]).await?;
        }
        Ok(())
    }

    async fn delete_in_batches(&self, sql: &'static str, cutoff: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.writer().execute(sql, &[cutoff.into(), BATCH.into()]).await?;
            total += n;
            if (n as i64) < BATCH {
                return Ok(total);
            }
        }
    }
}
