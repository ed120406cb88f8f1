-- Each filter of the Activity tab, the DLQ page and a job's deliveries reads its own
-- index in listing order (creation time, then id), so a page costs its rows whatever
-- the table's size, and a filter that matches nothing costs one index probe. The queries
-- (`jobs/src/store/deliveries`) name only the filters that are set, and bound the
-- cursor as a row value, `(created_at, id) < (…)`, which the index serves.
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, created_at, id);
CREATE INDEX deliveries_by_job ON deliveries (job_id, created_at, id);
CREATE INDEX deliveries_by_event_type ON deliveries (event_type, created_at, id);
CREATE INDEX deliveries_by_status ON deliveries (status, created_at, id);
-- The DLQ page filters by subscription and event type; only dead, unacknowledged
-- deliveries are in these (the condition of `deliveries_dead`).
CREATE INDEX deliveries_dead_by_webhook ON deliveries (webhook_id, created_at, id)
    WHERE dead_at IS NOT NULL AND NOT acknowledged;
CREATE INDEX deliveries_dead_by_event_type ON deliveries (event_type, created_at, id)
    WHERE dead_at IS NOT NULL AND NOT acknowledged;
