-- The audit log: every change made through the API and every delivery attempt,
-- append-only. `seq` is handed out from `audit_counter` inside the writing transaction,
-- whose row lock makes sequence order equal commit order: a reader that resumes after
-- seq N can never miss an entry that commits later with a smaller number.
CREATE TABLE audit_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO audit_counter (id, last) VALUES (1, 0);

CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,             -- API key id, key_env, or system
    action       TEXT NOT NULL,             -- e.g. POST /v1/jobs, delivery.attempt
    object_type  TEXT NOT NULL,
    object_id    TEXT,
    source       TEXT,                      -- client address
    detail       TEXT NOT NULL              -- JSON
);
CREATE INDEX audit_log_by_time ON audit_log (at);
