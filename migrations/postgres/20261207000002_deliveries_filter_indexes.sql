-- Each filter of the Activity tab, the DLQ page and a job's deliveries reads its own
-- index in listing order (creation time, then id), so a page costs its rows whatever
-- the table's size, and a filter that matches nothing costs one index probe; this holds
-- without fresh statistics too, since the index gives the order the LIMIT asks for.
-- The queries (`jobs/src/store/deliveries`) name only the filters that are set, and
-- bound the cursor as a row value, `(created_at, id) < (…)`, which is an index bound.
--
-- The subscription, job and event type never change, so their indexes leave an
-- attempt's update of its delivery a HOT update (see `20261128000005`). The status
-- index does not: the update that records a delivery's first attempt now writes an
-- entry into it (the price of a status filter that does not read the whole table).
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, created_at, id);
CREATE INDEX deliveries_by_job ON deliveries (job_id, created_at, id);
CREATE INDEX deliveries_by_event_type ON deliveries (event_type, created_at, id);
CREATE INDEX deliveries_by_status ON deliveries (status, created_at, id);
-- The DLQ page filters by subscription and event type; only dead, unacknowledged
-- deliveries are in these (the condition of `deliveries_dead`), and a delivery enters
-- them by the update that already enters `deliveries_dead`.
CREATE INDEX deliveries_dead_by_webhook ON deliveries (webhook_id, created_at, id)
    WHERE dead_at IS NOT NULL AND NOT acknowledged;
CREATE INDEX deliveries_dead_by_event_type ON deliveries (event_type, created_at, id)
    WHERE dead_at IS NOT NULL AND NOT acknowledged;
