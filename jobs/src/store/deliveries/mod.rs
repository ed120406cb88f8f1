//! Deliveries and their attempts: the state of every event's way to every subscriber.
//!
//! Each attempt is one queue task. A failed attempt records itself and, in the same
//! transaction, either schedules the next attempt as a delayed task (`retrying`: it lives
//! in the database and holds no worker) or, when the retry policy gives up
//! (`domain::DeliveryPolicy::decide`), marks the delivery `dead`, which puts it in the
//! dead letter queue (apalis's failed-task storage, see `store::queue`) until it is
//! replayed or acknowledged.
//!
//! # Layout
//! - this file: the row types and what the attempt path and the read side share.
//! - `attempts.rs`: the attempt path: loading deliveries for attempts, recording attempts
//!   and their consequences, acknowledging their tasks.
//! - `dlq.rs`: the read side: one delivery, listings, the export, and the dead letter
//!   queue (listing, replay, acknowledgement).
//! - `gauges.rs`: the figures derived from state, for `/metrics`.

mod attempts;
mod dlq;
mod gauges;

pub use attempts::{AttemptRecord, DeliveryLoad, DeliveryWork, TaskStart, Unattempted};
pub use dlq::{DeliveryFilter, ExportCursor, ExportRow, ReplayFilter};
pub use gauges::Gauges;

use crate::StoreError;
use crate::domain::{Delivery, DeliveryId, DeliveryStatus, EventId, JobId, WebhookId};
use chrono::{DateTime, Utc};

/// The columns of `deliveries` that [`DeliveryRow`] reads (a macro so queries stay
/// literals).
macro_rules! delivery_columns {
    () => {
        "id, event_id, webhook_id, event_type, job_id, status, attempts, next_attempt_at, last_status_code, \
         last_error, acknowledged, created_at, delivered_at"
    };
}
use delivery_columns;

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    id: String,
    event_id: String,
    webhook_id: String,
    event_type: String,
    job_id: Option<String>,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    acknowledged: bool,
    created_at: i64,
    delivered_at: Option<i64>,
}

fn time(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        let corrupt = |w: &str| StoreError::Corrupt(format!("delivery {}: {w}", r.id));
        Ok(Delivery {
            id: DeliveryId::parse(&r.id).ok_or_else(|| corrupt("id"))?,
            event_id: EventId::parse(&r.event_id).ok_or_else(|| corrupt("event_id"))?,
            webhook_id: WebhookId::parse(&r.webhook_id).ok_or_else(|| corrupt("webhook_id"))?,
            event_type: r.event_type,
            job_id: r
                .job_id
                .as_deref()
                .map(|j| JobId::parse(j).ok_or_else(|| corrupt("job_id")))
                .transpose()?,
            status: DeliveryStatus::parse(&r.status).ok_or_else(|| corrupt("status"))?,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            next_attempt_at: r.next_attempt_at.map(time).transpose()?,
            last_status_code: r.last_status_code.and_then(|c| i32::try_from(c).ok()),
            last_error: r.last_error,
            acknowledged: r.acknowledged,
            created_at: time(r.created_at)?,
            delivered_at: r.delivered_at.map(time).transpose()?,
        })
    }
}
