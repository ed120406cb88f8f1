-- Two per-row costs of apalis-postgres's queue table that CronFlow's batched writes pay
-- for every task (found with pg_stat_statements and auto_explain under load):
--
-- 1. Its insert trigger runs once per row: a PL/pgSQL call, a JSON object and a
--    pg_notify per task, and every listener then receives and parses one notification
--    per task. CronFlow pushes tasks hundreds at a time (`jobs/src/store/queue`), and a
--    worker only needs to know that its queue has new due tasks: one fetch takes a whole
--    batch. This trigger notifies once per statement and queue, with the payload apalis's
--    listener expects (`job_type`, and one task's `id`).
CREATE FUNCTION cronflow_notify_new_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'apalis::job::insert',
        json_build_object('job_type', job_type, 'id', min(id), 'run_at', min(run_at))::text
    )
    FROM new_tasks
    WHERE run_at <= now()
    GROUP BY job_type;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
CREATE TRIGGER notify_workers
AFTER INSERT ON apalis.jobs
REFERENCING NEW TABLE AS new_tasks
FOR EACH STATEMENT EXECUTE FUNCTION cronflow_notify_new_tasks();

-- 2. The foreign key from a task's `lock_by` to its worker is checked for every row a
--    fetch takes (a lookup and a share lock on the worker row per task, a large share of
--    the fetch's time). Every query of apalis that reads `lock_by` joins the workers
--    table itself (orphan recovery), so nothing relies on the constraint, and workers
--    are never deleted while they hold tasks.
ALTER TABLE apalis.jobs DROP CONSTRAINT IF EXISTS fk_worker_lock_by;
