//! The audit trail of the API: every successful change made through `/v1` or the
//! dashboard is recorded (who — the key id —, what, which object, when, from which
//! address), and `GET /v1/audit` streams the log as NDJSON for SIEMs, resuming exactly
//! after a cursor and, with `follow=true`, staying open to stream new entries as they
//! happen.
//!
//! The store method that makes a change writes its entry in the same transaction, from
//! the [`ChangedBy`] its caller builds here out of the authenticated key: a change is
//! never without its entry, nor an entry without its change. Secrets in responses (new
//! keys, webhook secrets) are never recorded.

use crate::{ApiError, ApiState, ApiTags, auth::BearerAuth, auth::Principal};
use cronflow_jobs::{Store, store::ChangedBy};
use poem::{Body, Request, http::Method, web::Data};
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

fn looks_like_id(segment: &str) -> bool {
    ["wf_", "run_", "wh_", "dlv_", "key_", "evt_"]
        .iter()
        .any(|p| segment.starts_with(p))
}

/// The audit action of a `/v1` route: its method and path, ids replaced by `{id}`
/// (`POST /v1/jobs/{id}/pause`).
pub(crate) fn action(method: &Method, path: &str) -> String {
    let template: Vec<&str> = path
        .trim_start_matches("/v1/")
        .split('/')
        .map(|s| if looks_like_id(s) { "{id}" } else { s })
        .collect();
    format!("{method} /v1/{}", template.join("/"))
}

/// Who asks, through the API, for the change `req` makes: the key the request was
/// authenticated with, the route, the client's address and the status the change
/// answers with.
pub(crate) fn changed_by(auth: &BearerAuth, req: &Request, status: u16) -> ChangedBy {
    change_of(
        &auth.0,
        req.method(),
        req.uri().path(),
        client_address(req),
        json!({ "status": status }),
    )
}

/// A change by `principal` through the `/v1` route `method` `path`.
pub(crate) fn change_of(
    principal: &Principal,
    method: &Method,
    path: &str,
    source: Option<String>,
    detail: Value,
) -> ChangedBy {
    ChangedBy {
        actor: principal.key_id.clone(),
        action: action(method, path),
        source,
        detail,
    }
}

/// The client's address, as the audit log records it (an IPv4 peer of a dual-stack
/// listener in its IPv4 form).
pub(crate) fn client_address(req: &Request) -> Option<String> {
    crate::client_ip(req).map(|ip| ip.to_string())
}

#[derive(ApiResponse)]
enum AuditStream {
    /// One JSON object per line, in log order: `seq`, `at`, `actor`, `action`,
    /// `object_type`, `object_id`, `source`, `detail`, and the hash chain: `prev_hash`
    /// (the previous entry's `hash`) and `hash` (SHA-256 of `prev_hash`, a newline and
    /// the entry's canonical JSON without these two fields; see docs/api.md). In follow mode, a line
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

#[derive(ApiResponse)]
enum AuditCsv {
    /// The audit log as CSV (streamed), oldest first: one row per entry with the columns
    /// `seq`, `at`, `actor`, `action`, `object_type`, `object_id`, `source`, `detail`
    /// (its JSON text), `prev_hash` and `hash`. Each cell is exactly the NDJSON field's
    /// value (empty for null), so the chain can be verified from the CSV too.
    #[oai(status = 200, content_type = "text/csv")]
    Csv(Binary<Body>, #[oai(header = "Content-Disposition")] String),
}

/// The audit CSV's columns: the NDJSON fields, in order.
const AUDIT_COLUMNS: [&str; 10] = [
    "seq",
    "at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "source",
    "detail",
    "prev_hash",
    "hash",
];

/// The entries after `after` as CSV, read [`BATCH`] at a time; the header first.
fn audit_csv_stream(
    store: Store,
    after: i64,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(Some((store, after, true)), |state| async move {
        let (store, after, first) = state?;
        let entries = match store.read_audit(after, BATCH).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = ?e, "the audit export failed");
                return Some((
                    Err(std::io::Error::other(
                        "the audit export failed; see the server log",
                    )),
                    None,
                ));
            }
        };
        if entries.is_empty() && !first {
            return None;
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        if first {
            let _ = w.write_record(AUDIT_COLUMNS);
        }
        for e in &entries {
            let v = e.to_json();
            let row = AUDIT_COLUMNS.map(|c| match &v[c] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let _ = w.write_record(&row);
        }
        let next = match (entries.last(), entries.len() as i64 == BATCH) {
            (Some(last), true) => Some((store, last.seq, false)),
            _ => None,
        };
        Some((Ok(bytes::Bytes::from(w.into_inner().unwrap_or_default())), next))
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

    /// The audit log as CSV (an `audit` or `admin` key), oldest first, with the hash
    /// chain's `prev_hash` and `hash` on every row; `cursor` as for `GET /v1/audit`.
    #[oai(
        path = "/v1/audit/export.csv",
        method = "get",
        operation_id = "export_audit_csv"
    )]
    async fn export(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// The `seq` of the last entry already read (default: from the start).
        #[oai(validator(minimum(value = "0")))]
        cursor: Query<Option<i64>>,
    ) -> Result<AuditCsv, ApiError> {
        let body = Body::from_bytes_stream(audit_csv_stream(state.store.clone(), cursor.0.unwrap_or(0)));
        Ok(AuditCsv::Csv(
            Binary(body),
            "attachment; filename=\"cronflow-audit.csv\"".to_owned(),
        ))
    }
}
