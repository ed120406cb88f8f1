-- Runs: one row per execution attempt, and the scheduler's ledger. The unique key on
-- (job, scheduled time, attempt) is what makes each slot fire exactly once, however many
-- schedulers share the database. Slots that did not run keep a row too: `skipped`
-- (overlap) or `missed` (downtime the catch-up policy did not fill; one row per stretch,
-- with the count and the first and last slot).
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL,
    scheduled_for   BIGINT,                 -- slot time; NULL for manual triggers
    origin          TEXT NOT NULL CHECK (origin IN ('schedule', 'catch_up', 'manual', 'retry')),
    state           TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'completed', 'failed',
                                                   'timed_out', 'skipped', 'cancelled', 'missed')),
    attempt         BIGINT NOT NULL,        -- 1 for the first attempt of a slot or trigger
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    duration_ms     BIGINT,
    lateness_ms     BIGINT,                 -- start - scheduled_for
    exit_code       BIGINT,                 -- command exit code, or HTTP status
    output          TEXT,                   -- bounded: head and tail, the cut marked
    error           TEXT,
    stack_trace     TEXT,
    worker          TEXT,                   -- the worker process that ran it
    pgid            BIGINT,                 -- command's process group while running
    boot_id         TEXT,                   -- host boot the pgid belongs to
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    missed_count    BIGINT,
    missed_last     BIGINT
);
CREATE UNIQUE INDEX runs_one_per_slot ON runs (job_id, scheduled_for, attempt);
CREATE INDEX runs_by_job ON runs (job_id, created_at, id);
CREATE INDEX runs_active ON runs (job_id, state) WHERE state IN ('scheduled', 'queued', 'running');

-- Events: written in the same transaction as the run's final state (an outbox), so a
-- crash can never lose one. One event per finished run.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    job_id      TEXT,                       -- NULL for webhook.test
    run_id      TEXT,
    event_type  TEXT NOT NULL CHECK (event_type IN ('job.completed', 'job.failed', 'job.timed_out', 'webhook.test')),
    payload     TEXT NOT NULL,              -- the exact JSON body webhooks will carry
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_one_per_run ON events (run_id);
CREATE INDEX events_by_creation ON events (created_at, id);
