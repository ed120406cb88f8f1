-- Recording an attempt updates its delivery row (status, attempts, timestamps). While
-- `status` was in the predicates of the DLQ and retrying indexes, no such update could
-- be a HOT update (heap-only tuple: the new row version on the same page, and no index
-- touched): each one wrote a new entry into every index of the table (its key, the
-- (event, subscription) pair, the creation order), which the delivery benchmark felt.
--
-- The two partial indexes now name columns that a first attempt's update leaves as they
-- were: `dead_at` (new: when the delivery went dead, NULL unless it is dead) and
-- `next_attempt_at` (set only while a retry waits). CronFlow writes them together with
-- `status`; the CHECK below holds it to that for `dead_at`.
ALTER TABLE deliveries ADD COLUMN dead_at BIGINT;
UPDATE deliveries SET dead_at = updated_at WHERE status = 'dead';
UPDATE deliveries SET next_attempt_at = NULL WHERE status <> 'retrying' AND next_attempt_at IS NOT NULL;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_dead_at CHECK ((status = 'dead') = (dead_at IS NOT NULL));

DROP INDEX deliveries_dead;
CREATE INDEX deliveries_dead ON deliveries (created_at, id) WHERE dead_at IS NOT NULL AND NOT acknowledged;
DROP INDEX deliveries_retrying;
CREATE INDEX deliveries_retrying ON deliveries (id) WHERE next_attempt_at IS NOT NULL;

-- A HOT update needs room on the row's own page. Rows are appended, and most are
-- updated once, soon after; pages filled to the brim would leave none. Half of each
-- page is kept for that: with less kept free, far fewer of the updates in the
-- benchmark's backlogs were HOT. Applies to pages written from now on.
ALTER TABLE deliveries SET (fillfactor = 50);

-- apalis's unique index on a task's idempotency key took an entry for every task, though
-- CronFlow's tasks carry none (a NULL never conflicts), and another for every fetch (a
-- fetch changes `status`, so it is never a HOT update). Only keys that are set need it;
-- no query of apalis-postgres names this index in an ON CONFLICT clause.
DROP INDEX apalis.idx_jobs_idempotency_key;
CREATE UNIQUE INDEX idx_jobs_idempotency_key ON apalis.jobs (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL;
