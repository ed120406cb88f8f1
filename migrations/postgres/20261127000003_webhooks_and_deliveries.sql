-- Webhook subscriptions, deliveries (one event to one subscription) and their attempts.
-- Deliveries are created in the same transaction as their event (fan-out), each with a
-- queue task; a delivery is `pending`, `retrying` (a retry waits, as a delayed queue
-- task, in the database), `delivered`, or `dead` (retries exhausted: the dead letter
-- queue, until replayed or acknowledged).

CREATE TABLE webhooks (
    id                     TEXT PRIMARY KEY,
    url                    TEXT NOT NULL,
    events                 TEXT NOT NULL,        -- JSON array of event types
    environment            TEXT CHECK (environment IN ('production', 'staging')),
    job_ids                TEXT,                 -- JSON array, NULL for all jobs
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,                 -- still signing until previous_secret_until
    previous_secret_until  BIGINT,
    headers                TEXT NOT NULL,        -- JSON object
    description            TEXT NOT NULL,
    enabled                BOOLEAN NOT NULL,
    disabled_reason        TEXT,
    failing_since          BIGINT,               -- first failed attempt since the last success
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX webhooks_by_creation ON webhooks (created_at, id);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,            -- also the idempotency key and webhook-id
    event_id         TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    job_id           TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'delivered', 'dead')),
    attempts         BIGINT NOT NULL DEFAULT 0,   -- all attempts ever made
    round_attempts   BIGINT NOT NULL DEFAULT 0,   -- attempts since creation or the last replay
    next_attempt_at  BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    acknowledged     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX deliveries_one_per_event_and_webhook ON deliveries (event_id, webhook_id);
CREATE INDEX deliveries_by_creation ON deliveries (created_at, id);
CREATE INDEX deliveries_dead ON deliveries (created_at, id) WHERE status = 'dead' AND NOT acknowledged;

CREATE TABLE delivery_attempts (
    delivery_id      TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    status_code      BIGINT,
    error_kind       TEXT,                        -- timeout, connect, dns, tls, ssrf_blocked, redirect, http
    error            TEXT,
    response_excerpt TEXT,                        -- at most 4 KiB
    PRIMARY KEY (delivery_id, attempt)
);
