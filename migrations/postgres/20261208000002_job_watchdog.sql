-- The dead-man's switch: per job, `job.late` when a slot's run has not started
-- `late_after_seconds` after it (0: never), and `job.overran` when a run goes past
-- `expected_duration_seconds` (NULL: judged from its recent runs). `job_alerts` holds
-- one row per alert sent, keyed by what it is about (the slot's time in milliseconds for
-- `late`, the run's id for `overran`): the watchdog of every process inserts it with
-- ON CONFLICT DO NOTHING and writes the event only if the row was new, so each alert is
-- sent once however many processes watch. Pruned with the runs.
ALTER TABLE scheduled_jobs ADD COLUMN late_after_seconds BIGINT NOT NULL DEFAULT 60;
ALTER TABLE scheduled_jobs ADD COLUMN expected_duration_seconds BIGINT;
CREATE TABLE job_alerts (
    job_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,      -- late, overran
    alert_key   TEXT NOT NULL,      -- the slot (ms since the epoch) or the run id
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, kind, alert_key)
);
CREATE INDEX job_alerts_by_creation ON job_alerts (created_at);
