-- Held deliveries: an event for a disabled subscription is recorded as a delivery with
-- status `held` (no queue task) instead of being dropped, and re-enabling the
-- subscription releases those oldest first. Delivery statuses are the code's
-- (`domain::DeliveryStatus`): SQLite cannot drop the column's CHECK, so the table is
-- rebuilt without it, with its indexes and its gauge triggers.
CREATE TABLE deliveries_new (
    id               TEXT PRIMARY KEY,            -- also the idempotency key and webhook-id
    event_id         TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    job_id           TEXT,
    status           TEXT NOT NULL,               -- pending, retrying, delivered, dead, held
    attempts         BIGINT NOT NULL DEFAULT 0,   -- all attempts ever made
    round_attempts   BIGINT NOT NULL DEFAULT 0,   -- attempts since creation or the last replay
    next_attempt_at  BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    acknowledged     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    updated_at       BIGINT NOT NULL,
    dead_at          INTEGER
);
INSERT INTO deliveries_new (id, event_id, webhook_id, event_type, job_id, status, attempts,
        round_attempts, next_attempt_at, last_status_code, last_error, acknowledged,
        created_at, delivered_at, updated_at, dead_at)
    SELECT id, event_id, webhook_id, event_type, job_id, status, attempts, round_attempts,
        next_attempt_at, last_status_code, last_error, acknowledged, created_at,
        delivered_at, updated_at, dead_at
    FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE UNIQUE INDEX deliveries_one_per_event_and_webhook ON deliveries (event_id, webhook_id);
CREATE INDEX deliveries_by_creation ON deliveries (created_at, id);
CREATE INDEX deliveries_dead ON deliveries (created_at, id) WHERE dead_at IS NOT NULL AND NOT acknowledged;
CREATE INDEX deliveries_retrying ON deliveries (id) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, created_at, id);
CREATE INDEX deliveries_by_job ON deliveries (job_id, created_at, id);
CREATE INDEX deliveries_by_event_type ON deliveries (event_type, created_at, id);
CREATE INDEX deliveries_by_status ON deliveries (status, created_at, id);
CREATE INDEX deliveries_dead_by_webhook ON deliveries (webhook_id, created_at, id)
    WHERE dead_at IS NOT NULL AND NOT acknowledged;
CREATE INDEX deliveries_dead_by_event_type ON deliveries (event_type, created_at, id)
    WHERE dead_at IS NOT NULL AND NOT acknowledged;
-- A subscription's held deliveries, in the order re-enabling releases them.
CREATE INDEX deliveries_held ON deliveries (webhook_id, created_at, id) WHERE status = 'held';

-- The `/metrics` gauges count held deliveries too.
ALTER TABLE delivery_gauges ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
UPDATE delivery_gauges SET held = (SELECT COUNT(*) FROM deliveries WHERE status = 'held');

CREATE TRIGGER delivery_gauges_insert AFTER INSERT ON deliveries
WHEN NEW.status IN ('retrying', 'held') OR (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
BEGIN
    UPDATE delivery_gauges SET
        retrying = retrying + (NEW.status = 'retrying'),
        held = held + (NEW.status = 'held'),
        dead = dead + (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
    WHERE shard = 0;
END;

CREATE TRIGGER delivery_gauges_update AFTER UPDATE OF status, dead_at, acknowledged ON deliveries
WHEN (OLD.status = 'retrying') <> (NEW.status = 'retrying')
    OR (OLD.status = 'held') <> (NEW.status = 'held')
    OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged) <> (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
BEGIN
    UPDATE delivery_gauges SET
        retrying = retrying + (NEW.status = 'retrying') - (OLD.status = 'retrying'),
        held = held + (NEW.status = 'held') - (OLD.status = 'held'),
        dead = dead + (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
                    - (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)
    WHERE shard = 0;
END;

CREATE TRIGGER delivery_gauges_delete AFTER DELETE ON deliveries
WHEN OLD.status IN ('retrying', 'held') OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)
BEGIN
    UPDATE delivery_gauges SET
        retrying = retrying - (OLD.status = 'retrying'),
        held = held - (OLD.status = 'held'),
        dead = dead - (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)
    WHERE shard = 0;
END;
