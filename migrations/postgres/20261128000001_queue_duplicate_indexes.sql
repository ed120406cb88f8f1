-- apalis-postgres's older migrations left two indexes that repeat others, and every
-- write of a task row maintains them (a task row is written three times: pushed,
-- fetched, acknowledged):
--   apalis.lidx (lock_by)         repeats idx_apalis_jobs_lock_by;
--   apalis.unique_job_id (id)     repeats the primary key jobs_pkey.
DROP INDEX IF EXISTS apalis.lidx;
DROP INDEX IF EXISTS apalis.unique_job_id;
