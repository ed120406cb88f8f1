//! Runs: trigger a job now, list a job's runs (the ledger), read one run with its
//! output, cancel one.

use crate::{
    ApiError, ApiState, ApiTags,
    audit::changed_by,
    auth::BearerAuth,
    dto::runs::{RunList, RunOut},
    error::run_error,
};
use cronflow_jobs::domain::{JobId, PageRequest, RunId};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};

#[derive(ApiResponse)]
enum Accepted {
    /// The run, as it stands now (work continues in the background).
    #[oai(status = 202)]
    Run(Json<RunOut>),
}

pub(crate) struct RunsApi;

#[OpenApi(tag = "ApiTags::Runs")]
impl RunsApi {
    /// Run a job now, outside its schedule. The overlap policy applies: with `skip` and
    /// a run in progress the new run is recorded as `skipped`; with `queue` it waits.
    #[oai(path = "/v1/jobs/:id/trigger", method = "post", operation_id = "trigger_job")]
    async fn trigger(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Accepted, ApiError> {
        let job_id = JobId::parse(&id).ok_or_else(|| ApiError::not_found("job", &id))?;
        let run = state
            .store
            .trigger_run(&job_id, &changed_by(&auth, req, 202), state.clock.now())
            .await
            .map_err(|e| run_error(e, "job", &id))?;
        Ok(Accepted::Run(Json(RunOut::new(run, false))))
    }

    /// A job's runs, newest first, including the ledger rows for slots that did not run
    /// (`skipped`, `missed`). Output is left out; read a run to get it.
    #[oai(path = "/v1/jobs/:id/runs", method = "get", operation_id = "list_job_runs")]
    async fn list(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        id: Path<String>,
        /// Items per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<RunList>, ApiError> {
        let job_id = JobId::parse(&id).ok_or_else(|| ApiError::not_found("job", &id))?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        if state.store.get_job(&job_id).await?.is_none() {
            return Err(ApiError::not_found("job", &id));
        }
        let page = state.store.list_runs(&job_id, &page).await?;
        Ok(Json(RunList {
            items: page.items.into_iter().map(|r| RunOut::new(r, false)).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }))
    }

    /// One run, with its captured output.
    #[oai(path = "/v1/runs/:id", method = "get", operation_id = "get_run")]
    async fn get(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<RunOut>, ApiError> {
        let run_id = RunId::parse(&id).ok_or_else(|| ApiError::not_found("run", &id))?;
        match state.store.get_run(&run_id).await? {
            Some(run) => Ok(Json(RunOut::new(run, true))),
            None => Err(ApiError::not_found("run", &id)),
        }
    }

    /// Cancel a run. One not started yet ends `cancelled` at once; a running one has its
    /// whole process group stopped (or its request aborted) within a second and ends
    /// `cancelled`. A finished run answers 409.
    #[oai(path = "/v1/runs/:id/cancel", method = "post", operation_id = "cancel_run")]
    async fn cancel(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Accepted, ApiError> {
        let run_id = RunId::parse(&id).ok_or_else(|| ApiError::not_found("run", &id))?;
        let run = state
            .store
            .cancel_run(&run_id, &changed_by(&auth, req, 202), state.clock.now())
            .await
            .map_err(|e| run_error(e, "run", &id))?;
        Ok(Accepted::Run(Json(RunOut::new(run, false))))
    }
}
