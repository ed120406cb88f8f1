-- CronFlow's own tables (apalis keeps its queue in schema `apalis`, migrated
-- separately; our history lives in `cronflow_migrations`). Job definitions are
-- `scheduled_jobs`, the same name as on SQLite (where apalis owns `Jobs`).
-- Times are milliseconds since the Unix epoch (UTC), the same on both databases.

CREATE TABLE scheduled_jobs (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    schedule         TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    target           TEXT NOT NULL,              -- JSON, see jobs::domain::Target
    timeout_seconds  BIGINT NOT NULL CHECK (timeout_seconds > 0),
    max_retries      BIGINT NOT NULL CHECK (max_retries >= 0),
    environment      TEXT NOT NULL CHECK (environment IN ('production', 'staging')),
    overlap_policy   TEXT NOT NULL CHECK (overlap_policy IN ('skip', 'allow', 'queue')),
    catch_up         TEXT NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
    tags             TEXT NOT NULL,              -- JSON array of strings
    paused           BOOLEAN NOT NULL DEFAULT FALSE,
    next_fire_at     BIGINT,                     -- NULL while paused
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_by_creation ON scheduled_jobs (created_at, id);
CREATE INDEX jobs_due ON scheduled_jobs (next_fire_at) WHERE next_fire_at IS NOT NULL;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('admin', 'read', 'audit')),
    token_hash   TEXT NOT NULL UNIQUE,           -- hex SHA-256 of the token
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_by_creation ON api_keys (created_at, id);
