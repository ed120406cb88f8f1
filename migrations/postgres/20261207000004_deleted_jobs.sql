-- A deleted job's row is gone, but a run of it may still be going: when that run ends,
-- its final state and its event must still be recorded. The event needs these facts of
-- the job (what `job.failed` and `job.timed_out` report, and the environment that
-- subscriptions filter on). One row per deleted job, written in the deletion's
-- transaction; pruned with the runs (`retention_runs`).
CREATE TABLE deleted_jobs (
    id              TEXT PRIMARY KEY,
    environment     TEXT NOT NULL,
    max_retries     BIGINT NOT NULL,
    timeout_seconds BIGINT NOT NULL,
    deleted_at      BIGINT NOT NULL
);
CREATE INDEX deleted_jobs_by_age ON deleted_jobs (deleted_at);
