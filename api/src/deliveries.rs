//! Webhook Activity: deliveries with filters (`GET /v1/deliveries`), one delivery with
//! its retry history, and the CSV export of every attempt.
//!
//! # CSV export columns (fixed; one row per attempt, oldest delivery first)
//! `delivery_id, event_id, webhook_id, event_type, job_id, delivery_status,
//! delivery_created_at, attempt, attempted_at, duration_ms, status_code, error_kind,
//! error, response_excerpt`. A delivery not attempted yet has one row with `attempt` 0
//! and the attempt columns empty. Times are RFC 3339 UTC. Quoting follows RFC 4180;
//! a cell that a spreadsheet would run as a formula (first character `=`, `+`, `-`,
//! `@`, tab or carriage return) is prefixed with `'`. The body is streamed page by page,
//! so an export of millions of rows uses constant memory.

use crate::{
    ApiError, ApiState, ApiTags,
    auth::BearerAuth,
    dto::{
        deliveries::{DeliveryList, DeliveryOut, DeliveryStatus},
        webhooks::WebhookEvent,
    },
};
use chrono::{DateTime, Utc};
use cronflow_jobs::{
    Store, ValidationError,
    domain::{DeliveryId, JobId, PageRequest, WebhookId, event::format_time},
    store::{DeliveryFilter, ExportCursor, ExportRow},
};
use poem::{Body, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::{Binary, Json},
};

/// Rows fetched per page of an export.
const EXPORT_PAGE: i64 = 1000;

/// The CSV header, in column order.
pub(crate) const EXPORT_COLUMNS: [&str; 14] = [
    "delivery_id",
    "event_id",
    "webhook_id",
    "event_type",
    "job_id",
    "delivery_status",
    "delivery_created_at",
    "attempt",
    "attempted_at",
    "duration_ms",
    "status_code",
    "error_kind",
    "error",
    "response_excerpt",
];

/// The export's `Content-Disposition`.
pub(crate) const EXPORT_DISPOSITION: &str = "attachment; filename=\"cronflow-deliveries.csv\"";

#[derive(ApiResponse)]
enum CsvExport {
    /// The attempts as CSV (streamed).
    #[oai(status = 200, content_type = "text/csv")]
    Csv(Binary<Body>, #[oai(header = "Content-Disposition")] String),
}

/// The filters of a listing or an export; ids must have their kind's prefix (422
/// naming the parameter otherwise).
fn filter(
    webhook_id: Option<String>,
    job_id: Option<String>,
    event_type: Option<WebhookEvent>,
    status: Option<DeliveryStatus>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<DeliveryFilter, ApiError> {
    let checked = |id: Option<String>, field: &'static str, valid: fn(&str) -> bool| match id {
        Some(id) if !valid(&id) => Err(ValidationError::new(field, format!("`{id}` is not a {field}"))),
        id => Ok(id),
    };
    Ok(DeliveryFilter {
        webhook_id: checked(webhook_id, "webhook_id", |s| WebhookId::parse(s).is_some())?,
        job_id: checked(job_id, "job_id", |s| JobId::parse(s).is_some())?,
        event_type: event_type.map(WebhookEvent::wire),
        status: status.map(Into::into),
        since,
        until,
    })
}

/// Neutralises a cell a spreadsheet would evaluate as a formula.
fn safe_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

fn time_cell(ms: Option<i64>) -> String {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(format_time)
        .unwrap_or_default()
}

fn csv_chunk(rows: &[ExportRow], header: bool) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        let _ = w.write_record(EXPORT_COLUMNS);
    }
    for r in rows {
        let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        let record = [
            safe_cell(&r.delivery_id).into_owned(),
            safe_cell(&r.event_id).into_owned(),
            safe_cell(&r.webhook_id).into_owned(),
            safe_cell(&r.event_type).into_owned(),
            safe_cell(r.job_id.as_deref().unwrap_or("")).into_owned(),
            safe_cell(&r.delivery_status).into_owned(),
            time_cell(Some(r.delivery_created_at)),
            r.attempt.to_string(),
            time_cell(r.attempted_at),
            num(r.duration_ms),
            num(r.status_code),
            safe_cell(r.error_kind.as_deref().unwrap_or("")).into_owned(),
            safe_cell(r.error.as_deref().unwrap_or("")).into_owned(),
            safe_cell(r.response_excerpt.as_deref().unwrap_or("")).into_owned(),
        ];
        let _ = w.write_record(&record);
    }
    w.into_inner().unwrap_or_default()
}

/// The export as a stream of CSV chunks, one database page each (the dashboard's
/// "Export CSV" streams the same).
pub(crate) fn export_stream(
    store: Store,
    filter: DeliveryFilter,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    struct State {
        store: Store,
        filter: DeliveryFilter,
        cursor: Option<ExportCursor>,
        first: bool,
        done: bool,
    }
    let state = State {
        store,
        filter,
        cursor: None,
        first: true,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s
            .store
            .export_attempts(&s.filter, s.cursor.as_ref(), EXPORT_PAGE)
            .await
        {
            Ok(rows) => {
                s.done = (rows.len() as i64) < EXPORT_PAGE;
                let chunk = csv_chunk(&rows, s.first);
                s.first = false;
                s.cursor = rows
                    .last()
                    .map(|r| (r.delivery_created_at, r.delivery_id.clone(), r.attempt));
                Some((Ok(bytes::Bytes::from(chunk)), s))
            }
            Err(e) => {
                tracing::error!(error = ?e, "the CSV export failed mid-stream");
                s.done = true;
                Some((
                    Err(std::io::Error::other("the export failed; see the server log")),
                    s,
                ))
            }
        }
    })
}

pub(crate) struct DeliveriesApi;

#[OpenApi(tag = "ApiTags::Deliveries")]
impl DeliveriesApi {
    /// Webhook Activity: deliveries, newest first, with their status and last answer.
    #[oai(path = "/v1/deliveries", method = "get", operation_id = "list_deliveries")]
    async fn list(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// Only deliveries to this subscription (`wh_…`).
        #[oai(validator(pattern = "^wh_[0-9a-z]{1,64}$"))]
        webhook_id: Query<Option<String>>,
        /// Only events of this job (`wf_…`).
        #[oai(validator(pattern = "^wf_[0-9a-z]{1,64}$"))]
        job_id: Query<Option<String>>,
        /// Only this event type.
        event_type: Query<Option<WebhookEvent>>,
        /// Only this status.
        status: Query<Option<DeliveryStatus>>,
        /// Created at or after (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Created before (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
        /// Items per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveryList>, ApiError> {
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let f = filter(webhook_id.0, job_id.0, event_type.0, status.0, since.0, until.0)?;
        let page = state.store.list_deliveries(&f, &page).await?;
        Ok(Json(DeliveryList::from_page(page)))
    }

    /// Export every attempt of the deliveries matching the filters as CSV (streamed;
    /// columns documented in the README).
    #[oai(
        path = "/v1/deliveries/export.csv",
        method = "get",
        operation_id = "export_deliveries_csv"
    )]
    async fn export(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// Only deliveries to this subscription (`wh_…`).
        #[oai(validator(pattern = "^wh_[0-9a-z]{1,64}$"))]
        webhook_id: Query<Option<String>>,
        /// Only events of this job (`wf_…`).
        #[oai(validator(pattern = "^wf_[0-9a-z]{1,64}$"))]
        job_id: Query<Option<String>>,
        /// Only this event type.
        event_type: Query<Option<WebhookEvent>>,
        /// Only this status.
        status: Query<Option<DeliveryStatus>>,
        /// Created at or after (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Created before (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
    ) -> Result<CsvExport, ApiError> {
        let f = filter(webhook_id.0, job_id.0, event_type.0, status.0, since.0, until.0)?;
        let body = Body::from_bytes_stream(export_stream(state.store.clone(), f));
        Ok(CsvExport::Csv(Binary(body), EXPORT_DISPOSITION.to_owned()))
    }

    /// One delivery with its attempts (the retry history) and the time of the next one.
    #[oai(path = "/v1/deliveries/:id", method = "get", operation_id = "get_delivery")]
    async fn get(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<DeliveryOut>, ApiError> {
        let dlv = DeliveryId::parse(&id).ok_or_else(|| ApiError::not_found("delivery", &id))?;
        match state.store.get_delivery(&dlv).await? {
            Some((d, attempts)) => Ok(Json(DeliveryOut::new(d, Some(attempts)))),
            None => Err(ApiError::not_found("delivery", &id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_cell;

    #[test]
    fn formula_like_cells_are_neutralised() {
        for s in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx"] {
            assert!(safe_cell(s).starts_with('\''), "{s}");
        }
        assert_eq!(safe_cell("plain, text"), "plain, text");
    }
}
