-- The dead letter queue is apalis's failed-task storage: the task of each dead,
-- unacknowledged delivery stays `Failed`, keyed by the delivery's id
-- (`idempotency_key`); replay, acknowledgement and retention keep the two the same set
-- (`jobs/src/store/queue`). Before, a replay left the old `Failed` task behind and
-- nothing deleted `Failed` tasks. Each delivery still in the DLQ keeps its newest
-- `Failed` task, now keyed; every other `Failed` delivery task goes. A delivery in the
-- DLQ without a task (marked dead before it had one) gets one when it is replayed.
UPDATE Jobs SET idempotency_key = json_extract(CAST(job AS TEXT), '$.delivery_id')
WHERE id IN (
    SELECT MAX(j.id) FROM Jobs j
    JOIN deliveries d ON d.id = json_extract(CAST(j.job AS TEXT), '$.delivery_id')
    WHERE j.job_type = 'cronflow-deliveries' AND j.status = 'Failed'
      AND d.dead_at IS NOT NULL AND NOT d.acknowledged
    GROUP BY d.id
);
DELETE FROM Jobs WHERE job_type = 'cronflow-deliveries' AND status = 'Failed' AND idempotency_key IS NULL;
