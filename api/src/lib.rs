//! CronFlow's HTTP face: the poem-openapi API under `/v1`, health probes, the OpenAPI
//! document and Swagger UI, and the dashboard (server-rendered pages beside the API).
//!
//! Handlers are thin: parse the request into domain types (`dto`), call one function of
//! `cronflow-jobs`, answer. No SQL here; no HTTP in `cronflow-jobs`.
//!
//! # Layout
//! - [`state`]: [`ApiState`], what every handler can reach.
//! - `auth`: bearer API keys and the scope each route needs.
//! - `error`: [`ApiError`], the JSON error body and the catch-all that turns every
//!   framework error (bad JSON, unknown route, body too large) into the same shape.
//! - `dto`: request and response bodies, and their conversion to and from the domain.
//! - `jobs`, `runs`, `webhooks`, `dlq`, `keys`, `health`: one `#[OpenApi]` impl per tag.
//! - `dashboard`: the web pages (`/`, `/jobs`, `/activity`, `/dlq`, …), over the same
//!   engine calls as the API.
//! - `request_body`: refuses oversized bodies with 413, and names the field at fault
//!   when a body does not fit its schema.

mod audit;
mod auth;
mod dashboard;
mod deliveries;
mod dlq;
mod dto;
mod error;
mod health;
mod jobs;
mod keys;
mod request_body;
mod runs;
pub mod state;
mod webhooks;

pub use error::ApiError;
pub use state::ApiState;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

/// The sections of the API document.
#[derive(Tags)]
enum ApiTags {
    /// Scheduled jobs: define, pause, resume.
    Jobs,
    /// Runs: run now, history (with skipped and missed slots), output, cancel.
    Runs,
    /// Webhook subscriptions: create, rotate the secret, send a test event.
    Webhooks,
    /// Deliveries and the dead letter queue.
    Deliveries,
    /// The audit log, for SIEMs.
    Audit,
    /// API keys (admin only).
    Keys,
}

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every OpenAPI operation of CronFlow, in the order they appear in the document.
type Apis = (
    health::HealthApi,
    jobs::JobsApi,
    runs::RunsApi,
    webhooks::WebhooksApi,
    deliveries::DeliveriesApi,
    dlq::DlqApi,
    audit::AuditApi,
    keys::KeysApi,
);

/// The OpenAPI document as YAML: what `cronflow openapi` prints and `/openapi.yaml`
/// serves, and what the committed `openapi.yaml` must equal.
pub fn spec_yaml() -> String {
    openapi_service().spec_yaml()
}

/// The same document as JSON.
pub fn spec_json() -> String {
    openapi_service().spec()
}

fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            jobs::JobsApi,
            runs::RunsApi,
            webhooks::WebhooksApi,
            deliveries::DeliveriesApi,
            dlq::DlqApi,
            audit::AuditApi,
            keys::KeysApi,
        ),
        "CronFlow",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Scheduled jobs and signed webhook delivery. Every /v1 route needs \
         `Authorization: Bearer <API key>`; errors are JSON `{code, message, field}`.",
    )
}

/// The whole HTTP application: API, dashboard, docs, spec, with JSON errors and the
/// body limit.
pub fn routes(state: ApiState) -> impl Endpoint {
    let api = openapi_service();
    let spec_yaml = api.spec_endpoint_yaml();
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", dashboard::beside(api))
        .nest("/docs", docs)
        .at("/openapi.yaml", spec_yaml)
        .around(request_body::check_body)
        .around(audit::record_changes)
        .catch_all_error(error::json_error)
        .data(state)
}
