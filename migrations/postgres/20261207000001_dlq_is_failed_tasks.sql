-- The dead letter queue is apalis's failed-task storage: the task of each dead,
-- unacknowledged delivery stays `Failed`, keyed by the delivery's id
-- (`idempotency_key`); replay, acknowledgement and retention keep the two the same set
-- (`jobs/src/store/queue`). Before, a replay left the old `Failed` task behind and
-- nothing deleted `Failed` tasks. Each delivery still in the DLQ keeps its newest
-- `Failed` task, now keyed; every other `Failed` delivery task goes. A delivery in the
-- DLQ without a task (marked dead before it had one) gets one when it is replayed.
UPDATE apalis.jobs SET idempotency_key = convert_from(job, 'UTF8')::jsonb ->> 'delivery_id'
WHERE id IN (
    SELECT MAX(j.id) FROM apalis.jobs j
    JOIN deliveries d ON d.id = convert_from(j.job, 'UTF8')::jsonb ->> 'delivery_id'
    WHERE j.job_type = 'cronflow-deliveries' AND j.status = 'Failed'
      AND d.dead_at IS NOT NULL AND NOT d.acknowledged
    GROUP BY d.id
);
DELETE FROM apalis.jobs WHERE job_type = 'cronflow-deliveries' AND status = 'Failed' AND idempotency_key IS NULL;
