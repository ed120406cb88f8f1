//! `/v1/jobs`: create, list, read, change, pause, resume and delete jobs.

use crate::{
    ApiError, ApiState, ApiTags,
    audit::changed_by,
    auth::BearerAuth,
    dto::jobs::{JobIn, JobList, JobOut, JobPatchIn},
    error::job_error,
};
use cronflow_jobs::{
    domain::{JobId, PageRequest},
    store::ChangedBy,
};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};

#[derive(ApiResponse)]
enum Created {
    /// The job, with its id and next fire times.
    #[oai(status = 201)]
    Job(Json<JobOut>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// The job is gone.
    #[oai(status = 204)]
    Job,
}

fn parse_id(id: &str) -> Result<JobId, ApiError> {
    JobId::parse(id).ok_or_else(|| ApiError::not_found("job", id))
}

pub(crate) struct JobsApi;

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Create a job.
    #[oai(path = "/v1/jobs", method = "post", operation_id = "create_job")]
    async fn create(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        body: Json<JobIn>,
    ) -> Result<Created, ApiError> {
        let spec = body.0.into_spec(state.url_policy)?;
        let job = state
            .store
            .create_job(spec, &changed_by(&auth, req, 201), state.clock.now())
            .await?;
        Ok(Created::Job(Json(JobOut::new(&job))))
    }

    /// List jobs, oldest first, one page at a time.
    #[oai(path = "/v1/jobs", method = "get", operation_id = "list_jobs")]
    async fn list(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// Items per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<JobList>, ApiError> {
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let page = state.store.list_jobs(&page).await?;
        Ok(Json(JobList {
            items: page.items.iter().map(JobOut::new).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }))
    }

    /// Get a job, with its next fire times and its health (on time, late, overran,
    /// failing).
    #[oai(path = "/v1/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<JobOut>, ApiError> {
        let job_id = parse_id(&id)?;
        match state.store.get_job(&job_id).await? {
            Some(job) => {
                let health = state.store.job_health(&job, state.clock.now()).await?;
                Ok(Json(JobOut::new(&job).with_health(&health)))
            }
            None => Err(ApiError::not_found("job", &id)),
        }
    }

    /// Change a job. Fields present replace the job's; a new schedule or time zone
    /// takes effect from now.
    #[oai(path = "/v1/jobs/:id", method = "patch", operation_id = "update_job")]
    async fn update(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
        body: Json<JobPatchIn>,
    ) -> Result<Json<JobOut>, ApiError> {
        let job_id = parse_id(&id)?;
        let patch = body.0.into_patch(state.url_policy)?;
        let job = state
            .store
            .update_job(&job_id, patch, &changed_by(&auth, req, 200), state.clock.now())
            .await
            .map_err(|e| job_error(e, &id))?;
        Ok(Json(JobOut::new(&job)))
    }

    /// Delete a job.
    ///
    /// It fires no more. Its runs stay on record (retention prunes them); a run still
    /// going ends as usual and its event is delivered; runs queued behind it are
    /// cancelled.
    #[oai(path = "/v1/jobs/:id", method = "delete", operation_id = "delete_job")]
    async fn delete(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Deleted, ApiError> {
        let job_id = parse_id(&id)?;
        if state
            .store
            .delete_job(&job_id, &changed_by(&auth, req, 204), state.clock.now())
            .await?
        {
            Ok(Deleted::Job)
        } else {
            Err(ApiError::not_found("job", &id))
        }
    }

    /// Pause a job: it stops firing until resumed. Pausing a paused job is a no-op.
    #[oai(path = "/v1/jobs/:id/pause", method = "post", operation_id = "pause_job")]
    async fn pause(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Json<JobOut>, ApiError> {
        self.set_paused(&state, &id, true, &changed_by(&auth, req, 200))
            .await
    }

    /// Resume a paused job: it fires next at its first slot from now (paused slots are
    /// not caught up).
    #[oai(path = "/v1/jobs/:id/resume", method = "post", operation_id = "resume_job")]
    async fn resume(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Json<JobOut>, ApiError> {
        self.set_paused(&state, &id, false, &changed_by(&auth, req, 200))
            .await
    }
}

impl JobsApi {
    async fn set_paused(
        &self,
        state: &ApiState,
        id: &str,
        paused: bool,
        by: &ChangedBy,
    ) -> Result<Json<JobOut>, ApiError> {
        let job_id = parse_id(id)?;
        let job = state
            .store
            .set_job_paused(&job_id, paused, by, state.clock.now())
            .await
            .map_err(|e| job_error(e, id))?;
        Ok(Json(JobOut::new(&job)))
    }
}
