-- Every task row is written three times (pushed, fetched, acknowledged), and each write
-- that changes `status` rewrites every index holding it. Two of apalis-sqlite's indexes
-- serve no query CronFlow runs:
--   idx_jobs_claimable (status, attempts): apalis's fetch uses the partial indexes
--     idx_jobs_pending / idx_jobs_failed;
--   idx_jobs_job_type_status_run_at: every query that filters on status is served by
--     idx_jobs_status_run_at (orphan recovery, the queue-depth gauge) or by the partial
--     indexes (fetch, retention's idx_jobs_completed_done_at).
-- Checked with EXPLAIN QUERY PLAN on a large table of tasks, without statistics.
DROP INDEX IF EXISTS idx_jobs_claimable;
DROP INDEX IF EXISTS idx_jobs_job_type_status_run_at;
