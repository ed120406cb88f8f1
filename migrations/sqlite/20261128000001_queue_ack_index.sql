-- apalis-sqlite acknowledges finished tasks with
--   UPDATE Jobs ... FROM json_each(?) j WHERE Jobs.id = j.task_id AND Jobs.lock_by = ?
-- Without planner statistics SQLite answers it through the index on lock_by, i.e. by
-- walking every task this worker ever finished (apalis never clears lock_by), so each
-- acknowledgement slows down as finished tasks accumulate.
-- Without that index the unique index on id is the only choice: one lookup per task.
-- No apalis query needs it: orphan recovery filters on status first (Running/Queued
-- rows are few and indexed by status).
DROP INDEX IF EXISTS LIdx;
