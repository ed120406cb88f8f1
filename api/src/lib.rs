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
//! - `dto`: request and response bodies, one module per resource, and their conversion
//!   to and from the domain.
//! - `jobs`, `runs`, `webhooks`, `deliveries`, `dlq`, `audit`, `keys`, `schemas`,
//!   `health`: one `#[OpenApi]` impl per group of routes.
//! - `spec`: the OpenAPI document, tidied so that client generators take it as it is.
//! - `validate`: checks every request against that document before a handler runs
//!   (400/422 naming the field, 405 with `Allow`).
//! - `dashboard`: the web pages (`/`, `/jobs`, `/activity`, `/dlq`, …), over the same
//!   engine calls as the API.
//! - `request_body`: refuses oversized bodies with 413.

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
mod reveal;
mod runs;
mod schemas;
mod spec;
pub mod state;
mod validate;
mod webhooks;

pub use error::ApiError;
pub use state::ApiState;

use poem::{Endpoint, EndpointExt, Request, Route};
use poem_openapi::{OpenApiService, Tags};
use std::net::IpAddr;

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
    /// Credentials held in jobs and subscriptions, shown redacted elsewhere: reveal them
    /// (admin only, audited).
    Credentials,
    /// Webhook payloads: the JSON Schema of each event type ("View Payload Schema").
    Events,
}

/// The client's IP address. A dual-stack listener (`[::]`) sees an IPv4 client as an
/// IPv4-mapped address (`::ffff:127.0.0.1`): it is given in its IPv4 form, so that a
/// loopback client is recognised as one and the audit log records what the client is.
pub(crate) fn client_ip(req: &Request) -> Option<IpAddr> {
    req.remote_addr().as_socket_addr().map(|a| a.ip().to_canonical())
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
    reveal::RevealApi,
    schemas::SchemasApi,
);

/// The OpenAPI document as YAML: what `cronflow openapi` prints and `/openapi.yaml`
/// serves, and what the committed `openapi.yaml` must equal.
pub fn spec_yaml() -> String {
    spec::yaml().to_owned()
}

/// The same document as JSON.
pub fn spec_json() -> String {
    spec::json_text().to_owned()
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
            reveal::RevealApi,
            schemas::SchemasApi,
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
    // Swagger UI embeds the document it is built with: give it the tidied one.
    let docs = api.swagger_ui_html().replace(&api.spec(), spec::json_text());
    let docs = poem::endpoint::make_sync(move |_| poem::web::Html(docs.clone()));
    let spec_yaml = poem::endpoint::make_sync(|_| {
        poem::Response::builder()
            .content_type("application/x-yaml")
            .body(spec::yaml())
    });
    Route::new()
        .nest("/", dashboard::beside(api))
        .nest("/docs", Route::new().at("/", docs))
        .at("/openapi.yaml", spec_yaml)
        .around(validate::check_request)
        .around(request_body::check_body)
        .catch_all_error(error::json_error)
        .data(state)
}
