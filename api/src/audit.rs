//! The audit trail of the API: every successful change made through `/v1` is recorded
//! (who — the key id —, what, which object, when, from which address), and
//! `GET /v1/audit` streams the log as NDJSON for SIEMs, resuming exactly after a cursor
//! and, with `follow=true`, staying open to stream new entries as they happen.
//!
//! Recording happens in a middleware, after the handler succeeded, so no route can
//! forget it. Secrets in responses (new keys, webhook secrets) are never recorded.

use crate::{ApiError, ApiState, ApiTags, auth::BearerAuth};
use cronflow_jobs::{
    Store,
    domain::api_key::{key_id_of_token, token_matches},
    store::NewAuditEntry,
};
use poem::{Body, Endpoint, IntoResponse, Request, Response, http::Method, web::Data};
use poem_openapi::{ApiResponse, OpenApi, param::Query, payload::Binary};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often follow mode looks for new entries.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often follow mode sends a heartbeat line when nothing happens.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Entries read per database round trip.
const BATCH: i64 = 500;

/// The object kind of a `/v1/<collection>/…` path.
fn object_type(collection: &str) -> &'static str {
    match collection {
        "jobs" => "job",
        "runs" => "run",
        "webhooks" => "webhook",
        "dlq" | "deliveries" => "delivery",
        "keys" => "key",
        _ => "other",
    }
}

fn looks_like_id(segment: &str) -> bool {
    ["wf_", "run_", "wh_", "dlv_", "key_", "evt_"]
        .iter()
        .any(|p| segment.starts_with(p))
}

/// Records successful changes (any method but GET/HEAD/OPTIONS under `/v1/`).
pub(crate) async fn record_changes<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let is_change =
        path.starts_with("/v1/") && ![Method::GET, Method::HEAD, Method::OPTIONS].contains(&method);
    let Some(state) = req.data::<ApiState>().cloned().filter(|_| is_change) else {
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let token = req
        .header(poem::http::header::AUTHORIZATION)
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned)
        .unwrap_or_default();
    let source = crate::client_ip(&req).map(|ip| ip.to_string());
    let mut resp = next.call(req).await?.into_response();
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let actor = match &state.admin_token_hash {
        Some(h) if token_matches(&token, h) => "key_env".to_owned(),
        _ => key_id_of_token(&token).map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
    };
    let mut object_id = id_in_path(&path);
    if object_id.is_none() {
        // A create: the new object's id is in the answer.
        let body = resp.take_body().into_bytes().await.unwrap_or_default();
        object_id = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            v.get("id")
                .or(v.get("delivery_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        resp.set_body(body);
    }
    let change = Change {
        actor: &actor,
        method: &method,
        path: &path,
        object_id: object_id.as_deref(),
        source: source.as_deref(),
        detail: json!({ "status": resp.status().as_u16() }),
    };
    append_change(&state, &change).await;
    Ok(resp)
}

/// The first object id in a `/v1/…` path.
fn id_in_path(path: &str) -> Option<String> {
    path.trim_start_matches("/v1/")
        .split('/')
        .find(|s| looks_like_id(s))
        .map(str::to_owned)
}

/// A change to record, as the API sees it: `path` is the `/v1/…` route it went (or, for
/// the dashboard, would go) through.
pub(crate) struct Change<'a> {
    /// The key id, or `key_env`.
    pub(crate) actor: &'a str,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) object_id: Option<&'a str>,
    /// The client's address.
    pub(crate) source: Option<&'a str>,
    pub(crate) detail: Value,
}

/// Appends the audit entry of a completed change (logging, not failing, if it cannot).
pub(crate) async fn append_change(state: &ApiState, change: &Change<'_>) {
    let segments: Vec<&str> = change.path.trim_start_matches("/v1/").split('/').collect();
    let template: Vec<&str> = segments
        .iter()
        .map(|s| if looks_like_id(s) { "{id}" } else { s })
        .collect();
    let action = format!("{} /v1/{}", change.method, template.join("/"));
    let entry = NewAuditEntry {
        actor: change.actor,
        action: &action,
        object_type: object_type(segments.first().copied().unwrap_or_default()),
        object_id: change.object_id,
        source: change.source,
        detail: change.detail.clone(),
    };
    if let Err(e) = state.store.append_audit(&entry, state.clock.now()).await {
        tracing::error!(error = ?e, %action, "cannot write the audit entry of a completed change");
    }
}

#[derive(ApiResponse)]
enum AuditStream {
    /// One JSON object per line, in log order: `seq`, `at`, `actor`, `action`,
    /// `object_type`, `object_id`, `source`, `detail`. In follow mode, a line
    /// `{"heartbeat": "<time>"}` comes every 15 s while nothing happens.
    #[oai(status = 200, content_type = "application/x-ndjson")]
    Lines(Binary<Body>),
}

fn audit_stream(
    store: Store,
    after: i64,
    follow: bool,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    struct S {
        store: Store,
        after: i64,
        follow: bool,
        shutdown: CancellationToken,
        last_line: Instant,
    }
    let s = S {
        store,
        after,
        follow,
        shutdown,
        last_line: Instant::now(),
    };
    futures::stream::unfold(s, |mut s| async move {
        loop {
            match s.store.read_audit(s.after, BATCH).await {
                Ok(entries) if !entries.is_empty() => {
                    let mut out = Vec::new();
                    for e in &entries {
                        out.extend_from_slice(e.to_json().to_string().as_bytes());
                        out.push(b'\n');
                    }
                    s.after = entries.last().map_or(s.after, |e| e.seq);
                    s.last_line = Instant::now();
                    return Some((Ok(bytes::Bytes::from(out)), s));
                }
                Ok(_) if !s.follow => return None,
                Ok(_) => {
                    if s.last_line.elapsed() >= HEARTBEAT {
                        s.last_line = Instant::now();
                        let line = json!({ "heartbeat": cronflow_jobs::domain::event::format_time(chrono::Utc::now()) });
                        return Some((Ok(bytes::Bytes::from(format!("{line}\n"))), s));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_POLL) => {}
                        () = s.shutdown.cancelled() => return None,
                    }
                }
                Err(e) => {
                    tracing::error!(error = ?e, "the audit stream failed");
                    return Some((
                        Err(std::io::Error::other(
                            "the audit stream failed; see the server log",
                        )),
                        {
                            s.follow = false;
                            s.after = i64::MAX;
                            s
                        },
                    ));
                }
            }
        }
    })
}

pub(crate) struct AuditApi;

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// The audit log for SIEMs (an `audit` or `admin` key): every change made through
    /// the API and every delivery attempt, oldest first. Resume with `cursor` = the `seq`
    /// of the last line you read: no entry is skipped or repeated, even while others
    /// are being written. `follow=true` keeps the response open and streams new entries.
    #[oai(path = "/v1/audit", method = "get", operation_id = "stream_audit_log")]
    async fn stream(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// The `seq` of the last entry already read (default: from the start).
        #[oai(validator(minimum(value = "0")))]
        cursor: Query<Option<i64>>,
        /// Keep the response open and stream new entries as they happen.
        follow: Query<Option<bool>>,
    ) -> Result<AuditStream, ApiError> {
        let body = Body::from_bytes_stream(audit_stream(
            state.store.clone(),
            cursor.0.unwrap_or(0),
            follow.0.unwrap_or(false),
            state.shutdown.clone(),
        ));
        Ok(AuditStream::Lines(Binary(body)))
    }
}
