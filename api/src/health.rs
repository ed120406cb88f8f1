//! Liveness and readiness probes (no authentication).

use crate::ApiState;
use cronflow_jobs::domain::api_key::token_matches;
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi, Tags,
    payload::{Json, PlainText},
};

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

#[derive(ApiResponse)]
enum MetricsResponse {
    /// Prometheus text exposition.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8")]
    Ok(PlainText<String>),
    /// Not from loopback and without the metrics token.
    #[oai(status = 403)]
    Forbidden(PlainText<String>),
    /// The database does not answer.
    #[oai(status = 503)]
    Unavailable(PlainText<String>),
}

pub(crate) struct HealthApi;

#[OpenApi(tag = "HealthTags::Health")]
impl HealthApi {
    /// The process is up.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Status> {
        Json(Status { status: "ok".into() })
    }

    /// Prometheus metrics: runs by final state, run duration and fire lateness, delivery
    /// attempts by outcome and their latency, event-to-delivery latency, waiting retries,
    /// queue depth, DLQ size, disabled endpoints. Open to loopback clients, or to anyone
    /// with `Authorization: Bearer <CRONFLOW_METRICS_TOKEN>` when that is set.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&ApiState>, req: &Request) -> MetricsResponse {
        let allowed = match &state.metrics_token_hash {
            Some(hash) => req
                .header(poem::http::header::AUTHORIZATION)
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|t| token_matches(t, hash)),
            None => crate::client_ip(req).is_some_and(|ip| ip.is_loopback()),
        };
        if !allowed {
            return MetricsResponse::Forbidden(PlainText(
                "metrics are open to loopback clients or with CRONFLOW_METRICS_TOKEN\n".into(),
            ));
        }
        match state.metrics.render(&state.store).await {
            Ok(text) => MetricsResponse::Ok(PlainText(text)),
            Err(e) => {
                tracing::warn!(error = ?e, "metrics unavailable");
                MetricsResponse::Unavailable(PlainText("the database is unavailable\n".into()))
            }
        }
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
