//! `POST /v1/reveal`: the one way to read the credentials a job or a subscription holds
//! (environment values, header values, an HTTP body, URL query values and passwords),
//! which every other answer shows as `[redacted]`. Admin keys only (it is a `POST`), and
//! each reveal is on the audit trail before the values are sent.

use crate::{ApiError, ApiState, ApiTags, audit::changed_by, auth::BearerAuth};
use cronflow_jobs::domain::{
    JobId, WebhookId,
    credentials::{target_secrets, webhook_secrets},
};
use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};
use std::collections::BTreeMap;

/// What to reveal.
#[derive(Debug, Object)]
#[oai(rename = "RevealRequest", deny_unknown_fields)]
pub(crate) struct RevealIn {
    /// A job (`wf_…`) or a subscription (`wh_…`).
    #[oai(validator(min_length = 1, max_length = 64))]
    id: String,
}

/// The stored values of an object's redacted fields.
#[derive(Debug, Object)]
#[oai(rename = "Revealed")]
pub(crate) struct RevealedOut {
    /// The object.
    id: String,
    /// Each redacted field's stored value, by its path as the object's answers name it:
    /// `target.env.TOKEN`, `target.headers.Authorization`, `target.body`, `target.url`
    /// (a job); `headers.X-Token`, `url` (a subscription). Empty when it holds none.
    values: BTreeMap<String, String>,
}

pub(crate) struct RevealApi;

#[OpenApi(tag = "ApiTags::Credentials")]
impl RevealApi {
    /// Reveal the credentials of a job or a subscription (admin only; audited).
    #[oai(path = "/v1/reveal", method = "post", operation_id = "reveal_credentials")]
    async fn reveal(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        body: Json<RevealIn>,
    ) -> Result<Json<RevealedOut>, ApiError> {
        let id = body.0.id;
        let (object_type, values) = if let Some(job_id) = JobId::parse(&id) {
            let job = state
                .store
                .get_job(&job_id)
                .await?
                .ok_or_else(|| ApiError::not_found("job", &id))?;
            ("job", target_secrets(&job.spec.target))
        } else if let Some(hook_id) = WebhookId::parse(&id) {
            let hook = state
                .store
                .get_webhook(&hook_id)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook", &id))?;
            ("webhook", webhook_secrets(&hook.url, &hook.headers))
        } else {
            return Err(ApiError::not_found("job or webhook", &id));
        };
        let mut by = changed_by(&auth, req, 200);
        by.detail["fields"] = values.keys().cloned().collect::<Vec<_>>().into();
        state
            .store
            .record_action(&by, object_type, &id, state.clock.now())
            .await?;
        Ok(Json(RevealedOut { id, values }))
    }
}
