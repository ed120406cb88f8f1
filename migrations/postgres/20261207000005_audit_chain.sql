-- The audit trail's hash chain (the rule: `jobs/src/domain/audit_chain.rs`). Each entry
-- carries the previous entry's hash and its own; the counter row, which every append
-- already locks, keeps the last hash, and the anchor: the `seq` and hash that the first
-- kept entry continues from once retention has removed older ones. Entries written
-- before this migration are chained when CronFlow starts (`last_hash` is NULL until then).
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
ALTER TABLE audit_counter ADD COLUMN last_hash TEXT;
ALTER TABLE audit_counter ADD COLUMN anchor_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_counter ADD COLUMN anchor_hash TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
