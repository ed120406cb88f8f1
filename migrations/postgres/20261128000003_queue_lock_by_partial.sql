-- CronFlow deletes a delivery task's row when its attempt is stored
-- (`jobs/src/store/queue`, `TaskEnd::Done`), so every task row is now written twice (pushed, fetched) instead of
-- three times. apalis's index on `lock_by` still took an entry for every pushed task
-- (a NULL) and every fetched one. Only tasks a worker holds have a `lock_by` that any
-- apalis query looks up (orphan recovery and the shutdown re-queue filter on exactly
-- these statuses), so the index keeps just those rows.
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
CREATE INDEX idx_apalis_jobs_lock_by ON apalis.jobs (lock_by) WHERE status = 'Running' OR status = 'Queued';
