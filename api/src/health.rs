//! Liveness and readiness probes (no authentication).

use crate::ApiState;
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, payload::Json};

#[derive(Tags)]
enum HealthTags {
    /// Probes for load balancers and orchestrators.
    Health,
}

/// A probe's answer.
#[derive(Debug, Object)]
struct Status {
    /// `ok` or `unavailable`.
    status: String,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The database answers; CronFlow can serve.
    #[oai(status = 200)]
    Ready(Json<Status>),
    /// The database does not answer.
    #[oai(status = 503)]
    NotReady(Json<Status>),
}

pub(crate) struct HealthApi;

#[OpenApi(tag = "HealthTags::Health")]
impl HealthApi {
    /// The process is up.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Status> {
        Json(Status { status: "ok".into() })
    }

    /// The process is up and its database answers.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&ApiState>) -> ReadyResponse {
        match state.store.ping().await {
            Ok(()) => ReadyResponse::Ready(Json(Status { status: "ok".into() })),
            Err(e) => {
                tracing::warn!(error = ?e, "readiness check failed");
                ReadyResponse::NotReady(Json(Status {
                    status: "unavailable".into(),
                }))
            }
        }
    }
}
