-- Held deliveries: an event for a disabled subscription is recorded as a delivery with
-- status `held` (no queue task) instead of being dropped, and re-enabling the
-- subscription releases those oldest first. Delivery statuses are the code's
-- (`domain::DeliveryStatus`), so the column's CHECK goes.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_status_check;
-- A subscription's held deliveries, in the order re-enabling releases them.
CREATE INDEX deliveries_held ON deliveries (webhook_id, created_at, id) WHERE status = 'held';

-- The `/metrics` gauges count held deliveries too.
ALTER TABLE delivery_gauges ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
UPDATE delivery_gauges SET held = (SELECT COUNT(*) FROM deliveries WHERE status = 'held')
WHERE shard = 0;

CREATE OR REPLACE FUNCTION delivery_gauges_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_retrying BIGINT := 0;
    d_held BIGINT := 0;
    d_dead BIGINT := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        d_retrying := d_retrying + (NEW.status = 'retrying')::INT;
        d_held := d_held + (NEW.status = 'held')::INT;
        d_dead := d_dead + (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)::INT;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        d_retrying := d_retrying - (OLD.status = 'retrying')::INT;
        d_held := d_held - (OLD.status = 'held')::INT;
        d_dead := d_dead - (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)::INT;
    END IF;
    UPDATE delivery_gauges SET retrying = retrying + d_retrying, held = held + d_held, dead = dead + d_dead
    WHERE shard = pg_backend_pid() % 16;
    RETURN NULL;
END
$$;

DROP TRIGGER delivery_gauges_insert ON deliveries;
DROP TRIGGER delivery_gauges_update ON deliveries;
DROP TRIGGER delivery_gauges_delete ON deliveries;

CREATE TRIGGER delivery_gauges_insert AFTER INSERT ON deliveries FOR EACH ROW
WHEN (NEW.status IN ('retrying', 'held') OR (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged))
EXECUTE FUNCTION delivery_gauges_count();

CREATE TRIGGER delivery_gauges_update AFTER UPDATE OF status, dead_at, acknowledged ON deliveries FOR EACH ROW
WHEN ((OLD.status = 'retrying') <> (NEW.status = 'retrying')
    OR (OLD.status = 'held') <> (NEW.status = 'held')
    OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged) <> (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged))
EXECUTE FUNCTION delivery_gauges_count();

CREATE TRIGGER delivery_gauges_delete AFTER DELETE ON deliveries FOR EACH ROW
WHEN (OLD.status IN ('retrying', 'held') OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged))
EXECUTE FUNCTION delivery_gauges_count();
