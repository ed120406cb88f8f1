-- Failure streaks: a job may ask for `job.failing` once its final runs have failed (or
-- timed out) this many times in a row, and `job.recovered` at the next completed run
-- (0: never). The job row keeps the streak and whether it was alerted; the finishing
-- transaction updates both, under the row's lock, so two workers finishing runs of one
-- job at once count each run and alert once.
ALTER TABLE scheduled_jobs ADD COLUMN alert_after_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduled_jobs ADD COLUMN failure_streak BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduled_jobs ADD COLUMN failure_alerted BOOLEAN NOT NULL DEFAULT FALSE;

-- Event types are the code's (`domain::EventType`); the list in the CHECK would have to
-- change with every new one.
ALTER TABLE events DROP CONSTRAINT events_event_type_check;
