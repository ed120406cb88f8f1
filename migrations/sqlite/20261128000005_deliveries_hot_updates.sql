-- The same schema as Postgres's migration of this name, where it lets an attempt's
-- update of its delivery leave every index alone (a HOT update). The DLQ and retrying
-- indexes name `dead_at` (new: when the delivery went dead, NULL unless it is dead) and
-- `next_attempt_at` (set only while a retry waits) instead of `status`. CronFlow writes
-- them together with `status`. (SQLite cannot add a CHECK constraint to an existing
-- table; Postgres's migration adds one, and the same statements serve both.)
ALTER TABLE deliveries ADD COLUMN dead_at INTEGER;
UPDATE deliveries SET dead_at = updated_at WHERE status = 'dead';
UPDATE deliveries SET next_attempt_at = NULL WHERE status <> 'retrying' AND next_attempt_at IS NOT NULL;

DROP INDEX deliveries_dead;
CREATE INDEX deliveries_dead ON deliveries (created_at, id) WHERE dead_at IS NOT NULL AND NOT acknowledged;
DROP INDEX deliveries_retrying;
CREATE INDEX deliveries_retrying ON deliveries (id) WHERE next_attempt_at IS NOT NULL;
