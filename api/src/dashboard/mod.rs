//! The dashboard: server-rendered HTML pages over the same engine calls as the API.
//!
//! Pages (fixed paths, users bookmark them): `/login`, `/logout`, `/` and `/jobs`,
//! `/jobs/new`, `/jobs/{id}`, `/jobs/{id}/edit`, `/runs/{id}`,
//! `/settings/integrations/webhooks`, `/activity` (Webhook Activity), `/deliveries/{id}`,
//! `/dlq`, `/schemas/events` (View Payload Schema). Every flow works with plain forms;
//! `assets/dashboard.js` only adds the copy button, browser-local times on hover and the
//! live refresh of Activity.
//!
//! # Security
//! - Sign-in takes an API key. The session lives on the server (poem's `ServerSession`
//!   in memory, keyed by a random id); the cookie holds only that id, is `HttpOnly` and
//!   `SameSite=Strict`, and `Secure` when the request came over HTTPS. A session ends at
//!   sign-out, after 12 hours, when its key is revoked, or when the process restarts
//!   (sessions are per process: behind a load balancer over several processes, use
//!   sticky sessions).
//! - Every form carries poem's CSRF token; a POST without a valid one is refused (403).
//! - A `read` key sees everything and changes nothing (no buttons; POSTs are 403); an
//!   `audit` key is refused at sign-in.
//! - Every change is audited as the same change through the API would be
//!   ([`crate::audit::append_change`], with the `/v1` route it corresponds to).
//!
//! # Layout
//! - `session`: sign-in, sign-out, the guard every request passes (CSRF, who is asking).
//! - `forms`: the one adapter from form fields to the API's request bodies.
//! - `layout`: the page shell and small shared pieces (times, badges, pagination).
//! - `jobs`, `webhooks`, `activity`, `dlq`, `schemas`: the pages.
//! - `charts`: server-rendered SVG. `time`: times in UTC and a zone, DST marks.
//!   `cause`: why a delivery failed, in words. `cron_words`: schedules in words.

mod activity;
mod cause;
mod charts;
mod cron_words;
mod dlq;
mod forms;
mod jobs;
mod layout;
mod schemas;
mod session;
mod time;
mod webhooks;

use crate::{ApiError, ApiState, audit};
use cronflow_jobs::{
    StoreError,
    domain::{Scope, event::format_time},
};
use maud::Markup;
use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route,
    endpoint::{EmbeddedFilesEndpoint, make},
    get,
    http::{Method, StatusCode},
    web::{CsrfToken, Redirect},
};
use std::future::Future;

/// The first path segments the dashboard answers; everything else goes to the API.
const TOP_SEGMENTS: [&str; 10] = [
    "login",
    "logout",
    "jobs",
    "runs",
    "settings",
    "activity",
    "deliveries",
    "dlq",
    "schemas",
    "assets",
];

/// The dashboard's static files, compiled into the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "src/dashboard/assets"]
struct Assets;

/// The API beside the dashboard: requests for a dashboard page (or `/`) go to the
/// dashboard, all others to `api`. (A route table holding both `/` and the API nested at
/// `/` answers 404 for `/`, so the split is made here.)
pub(crate) fn beside<E: IntoEndpoint>(api: E) -> impl Endpoint<Output = Response>
where
    E::Endpoint: 'static,
{
    Beside {
        pages: pages().boxed(),
        api: api.into_endpoint().map_to_response().boxed(),
    }
}

struct Beside {
    pages: poem::endpoint::BoxEndpoint<'static, Response>,
    api: poem::endpoint::BoxEndpoint<'static, Response>,
}

impl Endpoint for Beside {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let first = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if first.is_empty() || TOP_SEGMENTS.contains(&first) {
            self.pages.call(req).await
        } else {
            self.api.call(req).await
        }
    }
}

fn pages() -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/", get(page(jobs::list)))
        .at("/jobs", get(page(jobs::list)))
        .at("/jobs/new", get(page(jobs::new_form)).post(page(jobs::create)))
        .at("/jobs/:id", get(page(jobs::show)))
        .at(
            "/jobs/:id/edit",
            get(page(jobs::edit_form)).post(page(jobs::update)),
        )
        .at("/jobs/:id/trigger", poem::post(page(jobs::trigger)))
        .at("/jobs/:id/pause", poem::post(page(jobs::pause)))
        .at("/jobs/:id/resume", poem::post(page(jobs::resume)))
        .at(
            "/jobs/:id/delete",
            get(page(jobs::delete_form)).post(page(jobs::delete)),
        )
        .at("/runs/:id", get(page(jobs::run)))
        .at("/runs/:id/cancel", poem::post(page(jobs::cancel_run)))
        .at(
            "/settings/integrations/webhooks",
            get(page(webhooks::list)).post(page(webhooks::create)),
        )
        .at(
            "/settings/integrations/webhooks/:id/:action",
            get(page(webhooks::confirm)).post(page(webhooks::act)),
        )
        .at("/activity", get(page(activity::list)))
        .at("/activity/newer", get(page(activity::newer)))
        .at("/activity/export.csv", get(page(activity::export)))
        .at("/deliveries/:id", get(page(activity::delivery)))
        .at("/dlq", get(page(dlq::list)))
        .at("/dlq/bulk", get(page(dlq::preview)).post(page(dlq::bulk)))
        .at("/dlq/:id/:action", poem::post(page(dlq::act)))
        .at("/schemas/events", get(page(schemas::page)))
        .at(
            "/login",
            get(page(session::login_form)).post(page(session::login)),
        )
        .at(
            "/logout",
            get(page(session::logout_form)).post(page(session::logout)),
        )
        .nest("/assets", EmbeddedFilesEndpoint::<Assets>::new())
        .catch_error(not_found)
        .around(session::guard)
        .with(session::csrf())
        .with(session::sessions())
        .around(session::harden)
        .map_to_response()
}

/// An endpoint from a page function: its failure is rendered as an HTML error page.
fn page<F, Fut>(f: F) -> impl Endpoint<Output = Response>
where
    F: Fn(Request) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Response, Failure>> + Send,
{
    make(move |req| {
        let fut = f(req);
        async move { Ok::<Response, poem::Error>(fut.await.unwrap_or_else(Failure::into_response)) }
    })
}

/// An HTML 404 for addresses under the dashboard's paths that name no page.
async fn not_found(_: poem::error::NotFoundError) -> Response {
    Failure::new(StatusCode::NOT_FOUND, "There is no page at this address.").into_response()
}

/// Who is signed in.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// `key_…`, or `key_env` for `CRONFLOW_ADMIN_TOKEN`.
    pub(crate) key_id: String,
    pub(crate) scope: Scope,
}

/// What every page handler gets from its request.
pub(crate) struct Ctx {
    pub(crate) state: ApiState,
    pub(crate) viewer: Viewer,
    /// The CSRF token for the forms of the page being rendered.
    pub(crate) csrf: String,
    /// The client's address, for the audit log.
    pub(crate) source: Option<String>,
    /// The path asked for (the navigation marks its section).
    pub(crate) path: String,
}

impl Ctx {
    /// The context of a request that passed the guard.
    pub(crate) fn of(req: &Request) -> Result<Self, Failure> {
        let state = req
            .data::<ApiState>()
            .cloned()
            .ok_or_else(|| Failure::internal("the dashboard has no state"))?;
        let viewer = req
            .extensions()
            .get::<Viewer>()
            .cloned()
            .ok_or_else(|| Failure::new(StatusCode::UNAUTHORIZED, "Sign in first."))?;
        Ok(Ctx {
            state,
            viewer,
            csrf: csrf_token(req),
            source: crate::client_ip(req).map(|ip| ip.to_string()),
            path: req.uri().path().to_owned(),
        })
    }

    /// Whether the viewer may change things (buttons are shown only then).
    pub(crate) fn can_change(&self) -> bool {
        self.viewer.scope == Scope::Admin
    }

    /// Records a change made through the dashboard, exactly as the API records the same
    /// change: `method` and `api_path` are the `/v1` route it corresponds to.
    pub(crate) async fn audit(&self, method: Method, api_path: &str, object_id: Option<&str>, status: u16) {
        let change = audit::Change {
            actor: &self.viewer.key_id,
            method: &method,
            path: api_path,
            object_id,
            source: self.source.as_deref(),
            detail: serde_json::json!({ "status": status, "via": "dashboard" }),
        };
        audit::append_change(&self.state, &change).await;
    }

    /// Renders a page with the shell around `body`.
    pub(crate) async fn render(&self, title: &str, body: Markup) -> Result<Response, Failure> {
        let dlq = self
            .state
            .store
            .count_dead(&Default::default(), layout::BADGE_CAP)
            .await?
            .0;
        Ok(html(layout::shell(self, title, dlq, body)))
    }

    /// `render`, with a status other than 200 (a form with errors is 422, as in the API).
    pub(crate) async fn render_status(
        &self,
        status: StatusCode,
        title: &str,
        body: Markup,
    ) -> Result<Response, Failure> {
        let mut resp = self.render(title, body).await?;
        resp.set_status(status);
        Ok(resp)
    }
}

/// The CSRF token of this request (an empty one fails verification).
fn csrf_token(req: &Request) -> String {
    req.extensions()
        .get::<CsrfToken>()
        .map(|t| t.0.clone())
        .unwrap_or_default()
}

/// An HTML response.
pub(crate) fn html(markup: Markup) -> Response {
    poem::web::Html(markup.into_string()).into_response()
}

/// After a change: back to `to` (303, so a reload does not post again).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::see_other(to).into_response()
}

/// A page that could not be served: its status and what to tell the user.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A failure whose cause is logged, never shown.
    pub(crate) fn internal(cause: &str) -> Self {
        tracing::error!(%cause, "dashboard error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something failed inside CronFlow; the server log says what.",
        )
    }

    pub(crate) fn not_found(kind: &str, id: &str) -> Self {
        ApiError::not_found(kind, id).into()
    }

    pub(crate) fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn into_response(self) -> Response {
        let body = layout::error_page(self.status, &self.message);
        let mut resp = html(body);
        resp.set_status(self.status);
        resp
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let (status, body) = match e {
            ApiError::BadRequest(b) => (StatusCode::BAD_REQUEST, b),
            ApiError::Unauthorized(b) => (StatusCode::UNAUTHORIZED, b),
            ApiError::Forbidden(b) => (StatusCode::FORBIDDEN, b),
            ApiError::NotFound(b) => (StatusCode::NOT_FOUND, b),
            ApiError::Conflict(b) => (StatusCode::CONFLICT, b),
            ApiError::PayloadTooLarge(b) => (StatusCode::PAYLOAD_TOO_LARGE, b),
            ApiError::UnsupportedMediaType(b) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, b),
            ApiError::Invalid(b) => (StatusCode::UNPROCESSABLE_ENTITY, b),
            ApiError::Internal(b) => (StatusCode::INTERNAL_SERVER_ERROR, b),
            ApiError::Unavailable(b) => (StatusCode::SERVICE_UNAVAILABLE, b),
        };
        Self::new(status, body.0.message.clone())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// `format_time` for display: RFC 3339 without fractions.
pub(crate) fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    format_time(t)
}
