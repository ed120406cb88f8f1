-- The `/metrics` gauge `cronflow_delivery_retries_waiting` counts the deliveries waiting for
-- a retry on every scrape; without an index that count read the whole deliveries table
-- (every delivery of the retention period). Only retrying deliveries are in this index,
-- so it costs nothing for a delivery that succeeds at once.
CREATE INDEX deliveries_retrying ON deliveries (id) WHERE status = 'retrying';
