-- The `/metrics` gauges of deliveries waiting for a retry and of the DLQ's size are
-- kept here, not counted at each scrape: a count reads every such delivery, and the DLQ
-- can hold as many as the retention period gathers. Row triggers on `deliveries` keep
-- the figures; their WHEN clauses let only a row that enters or leaves a figure call
-- the function (a new delivery is `pending`, and one that is delivered leaves both
-- alone), so the common path of an attempt pays nothing.
--
-- Deliveries commit in batches from several workers at once; a single counter row
-- would make each wait for the others' commits. The figures are kept over 16 rows
-- instead, each transaction adding to the row of its own connection
-- (`pg_backend_pid() % 16`), and a scrape sums them. A transaction so touches one row
-- of this table, whatever it changes: transactions wait for each other here only when
-- their connections share a row.
CREATE TABLE delivery_gauges (
    shard    INT PRIMARY KEY,
    retrying BIGINT NOT NULL DEFAULT 0,   -- deliveries with status 'retrying'
    dead     BIGINT NOT NULL DEFAULT 0    -- dead, unacknowledged deliveries (the DLQ)
);
INSERT INTO delivery_gauges (shard) SELECT generate_series(0, 15);
UPDATE delivery_gauges SET
    retrying = (SELECT COUNT(*) FROM deliveries WHERE status = 'retrying'),
    dead = (SELECT COUNT(*) FROM deliveries WHERE dead_at IS NOT NULL AND NOT acknowledged)
WHERE shard = 0;

CREATE FUNCTION delivery_gauges_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_retrying BIGINT := 0;
    d_dead BIGINT := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        d_retrying := d_retrying + (NEW.status = 'retrying')::INT;
        d_dead := d_dead + (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged)::INT;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        d_retrying := d_retrying - (OLD.status = 'retrying')::INT;
        d_dead := d_dead - (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged)::INT;
    END IF;
    UPDATE delivery_gauges SET retrying = retrying + d_retrying, dead = dead + d_dead
    WHERE shard = pg_backend_pid() % 16;
    RETURN NULL;
END
$$;

CREATE TRIGGER delivery_gauges_insert AFTER INSERT ON deliveries FOR EACH ROW
WHEN (NEW.status = 'retrying' OR (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged))
EXECUTE FUNCTION delivery_gauges_count();

CREATE TRIGGER delivery_gauges_update AFTER UPDATE OF status, dead_at, acknowledged ON deliveries FOR EACH ROW
WHEN ((OLD.status = 'retrying') <> (NEW.status = 'retrying')
    OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged) <> (NEW.dead_at IS NOT NULL AND NOT NEW.acknowledged))
EXECUTE FUNCTION delivery_gauges_count();

CREATE TRIGGER delivery_gauges_delete AFTER DELETE ON deliveries FOR EACH ROW
WHEN (OLD.status = 'retrying' OR (OLD.dead_at IS NOT NULL AND NOT OLD.acknowledged))
EXECUTE FUNCTION delivery_gauges_count();
