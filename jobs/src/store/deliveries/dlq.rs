//! The read side of deliveries: one delivery with its attempts, listings, the activity
//! export, and the dead letter queue (listing, replay, acknowledgement). The DLQ is the
//! set of dead, unacknowledged deliveries; their `Failed` queue tasks are the same set
//! (see `store::queue`), kept so by replay and acknowledgement here and by retention.

use super::{DeliveryRow, delivery_columns, time};
use crate::StoreError;
use crate::domain::{Attempt, Cursor, Delivery, DeliveryId, DeliveryStatus, Page, PageRequest, WebhookId};
use crate::store::{Change, ChangedBy, Store, db::Statement, queue};
use chrono::{DateTime, Utc};

/// Filter of a bulk replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only deliveries to this subscription.
    pub webhook_id: Option<WebhookId>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

impl ReplayFilter {
    /// Appends a condition for each field that is set (columns prefixed by `d`, e.g.
    /// `"d."`), as [`DeliveryFilter::push_conditions`] does.
    pub(crate) fn push_conditions<'a>(&'a self, s: &mut Statement<'a>, d: &str) {
        if let Some(w) = &self.webhook_id {
            s.and().push(d).push("webhook_id = ").bind(w.as_str());
        }
        if let Some(e) = &self.event_type {
            s.and().push(d).push("event_type = ").bind(e.as_str());
        }
        if let Some(t) = self.since {
            s.and().push(d).push("created_at >= ").bind(t.timestamp_millis());
        }
        if let Some(t) = self.until {
            s.and().push(d).push("created_at < ").bind(t.timestamp_millis());
        }
    }
}

/// Which deliveries a listing or export shows; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only deliveries to this subscription.
    pub webhook_id: Option<String>,
    /// Only events of this job.
    pub job_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

impl DeliveryFilter {
    /// Appends the conditions of the fields that are set, on the columns of `d` (the
    /// deliveries table's alias with its dot, or `""`). Each field has an index in
    /// listing order (`20261207000002_deliveries_filter_indexes`).
    pub(crate) fn push_conditions<'a>(&'a self, s: &mut Statement<'a>, d: &str) {
        if let Some(w) = &self.webhook_id {
            s.and().push(d).push("webhook_id = ").bind(w.as_str());
        }
        if let Some(j) = &self.job_id {
            s.and().push(d).push("job_id = ").bind(j.as_str());
        }
        if let Some(e) = &self.event_type {
            s.and().push(d).push("event_type = ").bind(e.as_str());
        }
        if let Some(st) = self.status {
            s.and().push(d).push("status = ").bind(st.as_str());
        }
        if let Some(t) = self.since {
            s.and().push(d).push("created_at >= ").bind(t.timestamp_millis());
        }
        if let Some(t) = self.until {
            s.and().push(d).push("created_at < ").bind(t.timestamp_millis());
        }
    }
}

/// One row of the activity export: one attempt (or a delivery not attempted yet).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRow {
    /// `dlv_…`.
    pub delivery_id: String,
    /// `evt_…`.
    pub event_id: String,
    /// `wh_…`.
    pub webhook_id: String,
    /// `job.failed`, ...
    pub event_type: String,
    /// `wf_…`, empty for test events.
    pub job_id: Option<String>,
    /// The delivery's current status.
    pub delivery_status: String,
    /// When the delivery was created (ms).
    pub delivery_created_at: i64,
    /// Attempt number; 0 for a delivery not attempted yet.
    pub attempt: i64,
    /// When the attempt started (ms).
    pub attempted_at: Option<i64>,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// The answer's status.
    pub status_code: Option<i64>,
    /// Why it failed.
    pub error_kind: Option<String>,
    /// Human-readable error.
    pub error: Option<String>,
    /// First 4 KiB of the answer.
    pub response_excerpt: Option<String>,
}

/// Where an export resumes: after this (delivery creation time, delivery id, attempt).
pub type ExportCursor = (i64, String, i64);

/// An attempt as stored.
#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i64,
    started_at: i64,
    duration_ms: i64,
    status_code: Option<i64>,
    error_kind: Option<String>,
    error: Option<String>,
    response_excerpt: Option<String>,
}

/// A page of deliveries from `rows` (the page's limit and one more, to tell whether
/// another page follows).
fn delivery_page(rows: Vec<DeliveryRow>, page: &PageRequest) -> Result<Page<Delivery>, StoreError> {
    let items = rows
        .into_iter()
        .map(Delivery::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, page.limit, |d| {
        Cursor::after(d.created_at, d.id.as_str())
    }))
}

/// Dead deliveries replayed at most per call.
const REPLAY_LIMIT: i64 = 10_000;

impl Store {
    /// A delivery and its attempts, oldest first.
    pub async fn get_delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        let row: Option<DeliveryRow> = self
            .reader()
            .fetch_optional(
                concat!("SELECT ", delivery_columns!(), " FROM deliveries WHERE id = $1"),
                &[id.as_str().into()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let attempts: Vec<AttemptRow> = self
            .reader()
            .fetch_all(
                "SELECT attempt, started_at, duration_ms, status_code, error_kind, error, response_excerpt \
                 FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
                &[id.as_str().into()],
            )
            .await?;
        let attempts = attempts
            .into_iter()
            .map(|a| {
                Ok(Attempt {
                    attempt: u32::try_from(a.attempt).unwrap_or(u32::MAX),
                    started_at: time(a.started_at)?,
                    duration_ms: a.duration_ms,
                    status_code: a.status_code.and_then(|c| i32::try_from(c).ok()),
                    error_kind: a.error_kind,
                    error: a.error,
                    response_excerpt: a.response_excerpt,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((Delivery::try_from(row)?, attempts)))
    }

    /// Deliveries matching `filter`, newest first, one page at a time.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let mut s = Statement::new(concat!("SELECT ", delivery_columns!(), " FROM deliveries"));
        filter.push_conditions(&mut s, "");
        s.keyset_page("", page, true);
        let rows: Vec<DeliveryRow> = self.reader().fetch_built(s).await?;
        delivery_page(rows, page)
    }

    /// Up to `limit` export rows (one per attempt, oldest delivery first) after `after`.
    /// Callers stream an export by calling this until it returns fewer than `limit`.
    ///
    /// Each call costs its own rows, however far the export has come: the deliveries
    /// are read first, at most `limit + 1` of them from the cursor's one on (a row-value
    /// bound on an index in this order), and only they are joined to their attempts.
    /// Every delivery has at least one row, so `limit + 1` deliveries (the cursor's own
    /// may have no rows left) fill a page whenever more rows follow.
    pub async fn export_attempts(
        &self,
        filter: &DeliveryFilter,
        after: Option<&ExportCursor>,
        limit: i64,
    ) -> Result<Vec<ExportRow>, StoreError> {
        let mut s = Statement::new(
            "SELECT d.id AS delivery_id, d.event_id, d.webhook_id, d.event_type, d.job_id, \
             d.status AS delivery_status, d.created_at AS delivery_created_at, COALESCE(a.attempt, 0) AS attempt, \
             a.started_at AS attempted_at, a.duration_ms, a.status_code, a.error_kind, a.error, a.response_excerpt \
             FROM (SELECT id, event_id, webhook_id, event_type, job_id, status, created_at FROM deliveries",
        );
        filter.push_conditions(&mut s, "");
        if let Some((at, id, _)) = after {
            s.and()
                .push("(created_at, id) >= (")
                .bind(*at)
                .push(", ")
                .bind(id.as_str())
                .push(")");
        }
        s.push(" ORDER BY created_at, id LIMIT ")
            .bind(limit.saturating_add(1))
            .push(") d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id");
        if let Some((at, id, attempt)) = after {
            s.push(" WHERE (d.created_at, d.id, COALESCE(a.attempt, 0)) > (")
                .bind(*at)
                .push(", ")
                .bind(id.as_str())
                .push(", ")
                .bind(*attempt)
                .push(")");
        }
        s.push(" ORDER BY d.created_at, d.id, COALESCE(a.attempt, 0) LIMIT ")
            .bind(limit);
        Ok(self.reader().fetch_built(s).await?)
    }

    /// The dead letter queue: dead, unacknowledged deliveries, oldest first.
    pub async fn list_dlq(&self, page: &PageRequest) -> Result<Page<Delivery>, StoreError> {
        // The condition of the partial index `deliveries_dead`, which is in listing order.
        let mut s = Statement::new(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE dead_at IS NOT NULL AND NOT acknowledged"
        ));
        s.in_where().keyset_page("", page, false);
        let rows: Vec<DeliveryRow> = self.reader().fetch_built(s).await?;
        delivery_page(rows, page)
    }

    /// Replays dead deliveries matching `filter` (or the one `only`; at most
    /// 10,000 a call): each goes back to `pending` with a fresh retry schedule, and its
    /// `Failed` task is taken back (due now, attempts reset), keeping its id, so
    /// receivers see the same idempotency key. Returns how many were replayed.
    pub async fn replay_dead(
        &self,
        only: Option<&DeliveryId>,
        filter: &ReplayFilter,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut s = Statement::new("SELECT id FROM deliveries WHERE status = 'dead'");
        s.in_where();
        if let Some(d) = only {
            s.and().push("id = ").bind(d.as_str());
        }
        filter.push_conditions(&mut s, "");
        s.push(" ORDER BY created_at, id LIMIT ").bind(REPLAY_LIMIT);
        let ids: Vec<(String,)> = self.reader().fetch_built(s).await?;
        let mut replayed = Vec::new();
        let mut tx = self.begin().await?;
        for (id,) in &ids {
            let n = tx
                .execute(
                    "UPDATE deliveries SET status = 'pending', round_attempts = 0, acknowledged = FALSE, \
                     next_attempt_at = NULL, dead_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'",
                    &[id.into(), now.timestamp_millis().into()],
                )
                .await?;
            if n == 1 {
                replayed.push(id.as_str());
            }
        }
        queue::revive_dead(&mut tx, &replayed).await?;
        if !replayed.is_empty() {
            let mut by = by.clone();
            if let Some(detail) = by.detail.as_object_mut() {
                detail.insert("replayed".to_owned(), replayed.len().into());
            }
            by.record(&mut tx, "delivery", only.map(DeliveryId::as_str), now)
                .await?;
        }
        tx.commit().await?;
        if !replayed.is_empty() {
            self.changed(Change::DeliveriesPushed);
        }
        Ok(replayed.len() as u64)
    }

    /// Acknowledges a dead delivery: it leaves the DLQ (and stays on record), and its
    /// `Failed` task is deleted. `false` if there is no dead delivery with this id.
    pub async fn acknowledge_dead(
        &self,
        id: &DeliveryId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n = tx
            .execute(
                "UPDATE deliveries SET acknowledged = TRUE, updated_at = $2 WHERE id = $1 AND status = 'dead'",
                &[id.as_str().into(), now.timestamp_millis().into()],
            )
            .await?;
        if n > 0 {
            queue::remove_dead(&mut tx, &[id.as_str()]).await?;
            by.record(&mut tx, "delivery", Some(id.as_str()), now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
