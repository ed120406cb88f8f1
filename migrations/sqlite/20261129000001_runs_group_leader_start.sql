-- The start time of a running command's process-group leader (clock ticks since boot,
-- as /proc/<pid>/stat gives it), recorded with its pgid: crash recovery kills the group
-- only while its leader is still the job's (a pgid can be reused within one boot).
ALTER TABLE runs ADD COLUMN pgid_start BIGINT;
