-- The `/metrics` gauges of deliveries waiting for a retry and of the DLQ's size are
-- kept here, not counted at each scrape: a count reads every such delivery, and the DLQ
-- can hold as many as the retention period gathers. Triggers on `deliveries` keep the
-- figures; they fire only for a row that enters or leaves a figure (a new delivery is
-- `pending` and one that is delivered leaves both alone). One row: SQLite has one
-- writer. Postgres's migration of this name keeps the same figures over several rows.
CREATE TABLE delivery_gauges (
    shard    INTEGER PRIMARY KEY,
    retrying BIGINT NOT NULL,   -- deliveries with status 'retrying'
    dead     BIGINT NOT NULL    -- dead, unacknowledged deliveries (the DLQ)
);
INSERT INTO delivery_gauges (shard, retrying, dead) VALUES (
    0,
    (SELECT COUNT(*) FROM deliveries WHERE status = 'retrying'),
    (SELECT COUNT(*) FROM deliveries WHERE dead_at IS NOT NULL AND NOT acknowledged)
);

CREATE TRIGGER delivery_gauges_insert AFTER INSERT ON deliveries
WHEN NEW.status = 'retrying' OR (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
BEGIN
    UPDATE delivery_gauges SET
        retrying = retrying + (NEW.status = 'retrying'),
        dead = dead + (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
    WHERE shard = 0;
END;

CREATE TRIGGER delivery_gauges_update AFTER UPDATE OF status, dead_at, acknowledged ON deliveries
WHEN (OLD.status = 'retrying') <> (NEW.status = 'retrying')
    OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged) <> (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
BEGIN
    UPDATE delivery_gauges SET
        retrying = retrying + (NEW.status = 'retrying') - (OLD.status = 'retrying'),
        dead = dead + (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)
                    - (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)
    WHERE shard = 0;
END;

CREATE TRIGGER delivery_gauges_delete AFTER DELETE ON deliveries
WHEN OLD.status = 'retrying' OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)
BEGIN
    UPDATE delivery_gauges SET
        retrying = retrying - (OLD.status = 'retrying'),
        dead = dead - (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)
    WHERE shard = 0;
END;
