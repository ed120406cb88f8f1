-- Every task row is written three times (pushed, fetched, then deleted or acknowledged),
-- and apalis-sqlite's index on (status, run_at) changes at each: with a backlog of
-- tasks it was a large share of the time of apalis's fetch, the largest statement on
-- SQLite's one writing connection.
-- Its users take other indexes:
--   * orphan recovery (tasks `Queued` or `Running` whose worker stopped beating) looks
--     its tasks up by `lock_by` in the partial index below, which holds only the tasks
--     workers hold, written when a task is taken and removed when it ends;
--   * the queue-depth gauge counts `Pending` tasks in apalis's partial fetch index
--     (`idx_jobs_pending`), see `Store::gauges`;
--   * retention finds finished tasks through `idx_jobs_completed_done_at`.
-- Checked with EXPLAIN QUERY PLAN, without statistics. The predicate is written as
-- apalis's recovery query writes it, so that SQLite sees that the query implies it.
DROP INDEX IF EXISTS idx_jobs_status_run_at;
CREATE INDEX idx_jobs_held ON Jobs (lock_by) WHERE status = 'Running' OR status = 'Queued';
