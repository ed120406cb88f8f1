-- Failure streaks: a job may ask for `job.failing` once its final runs have failed (or
-- timed out) this many times in a row, and `job.recovered` at the next completed run
-- (0: never). The job row keeps the streak and whether it was alerted; the finishing
-- transaction updates both, under the row's lock, so two workers finishing runs of one
-- job at once count each run and alert once.
ALTER TABLE scheduled_jobs ADD COLUMN alert_after_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduled_jobs ADD COLUMN failure_streak BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduled_jobs ADD COLUMN failure_alerted BOOLEAN NOT NULL DEFAULT FALSE;

-- Event types are the code's (`domain::EventType`); the list in the events table's
-- CHECK would have to be rebuilt with every new one. SQLite cannot drop a CHECK: the
-- table is rebuilt without it, with its indexes.
CREATE TABLE events_new (
    id          TEXT PRIMARY KEY,
    job_id      TEXT,                       -- NULL for webhook.test
    run_id      TEXT,                       -- NULL for events about no single run
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,              -- the exact JSON body webhooks will carry
    created_at  BIGINT NOT NULL
);
INSERT INTO events_new (id, job_id, run_id, event_type, payload, created_at)
    SELECT id, job_id, run_id, event_type, payload, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE UNIQUE INDEX events_one_per_run ON events (run_id);
CREATE INDEX events_by_creation ON events (created_at, id);
