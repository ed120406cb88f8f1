//! Deliveries (Webhook Activity): what the delivery routes return.

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};

/// Where a delivery stands: `pending`, `retrying` (the next attempt is scheduled),
/// `held` (its subscription is disabled: kept until it is enabled again),
/// `delivered`, or `dead` (retries exhausted; in the dead letter queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum DeliveryStatus {
    Pending,
    Retrying,
    Held,
    Delivered,
    Dead,
}

impl From<DeliveryStatus> for cronflow_jobs::store::DeliveryStatus {
    fn from(s: DeliveryStatus) -> Self {
        use cronflow_jobs::store::DeliveryStatus as S;
        match s {
            DeliveryStatus::Pending => S::Pending,
            DeliveryStatus::Retrying => S::Retrying,
            DeliveryStatus::Delivered => S::Delivered,
            DeliveryStatus::Dead => S::Dead,
            DeliveryStatus::Held => S::Held,
        }
    }
}

impl From<cronflow_jobs::store::DeliveryStatus> for DeliveryStatus {
    fn from(s: cronflow_jobs::store::DeliveryStatus) -> Self {
        use cronflow_jobs::store::DeliveryStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Retrying => Self::Retrying,
            S::Delivered => Self::Delivered,
            S::Dead => Self::Dead,
            S::Held => Self::Held,
        }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Object)]
#[oai(rename = "DeliveryAttempt")]
pub(crate) struct AttemptOut {
    /// 1, 2, ... (replays continue the count).
    attempt: u32,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    /// The receiver's status code, if it answered.
    #[oai(skip_serializing_if_is_none)]
    status_code: Option<i32>,
    /// Why it failed: `http` (non-2xx), `redirect` (3xx, not followed), `timeout`,
    /// `connect`, `dns`, `tls`, `ssrf_blocked`, or `interrupted` (the process making it
    /// stopped before recording it: it may have been sent, its outcome is unknown; its
    /// time is when it was due).
    #[oai(skip_serializing_if_is_none)]
    error_kind: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    error: Option<String>,
    /// The first 4 KiB of the answer.
    #[oai(skip_serializing_if_is_none)]
    response_excerpt: Option<String>,
}

/// One event's delivery to one subscription.
#[derive(Debug, Object)]
#[oai(rename = "Delivery")]
pub(crate) struct DeliveryOut {
    /// `dlv_…`: also the `X-CronFlow-Idempotency-Key` and `webhook-id` of every attempt.
    id: String,
    event_id: String,
    webhook_id: String,
    event_type: String,
    #[oai(skip_serializing_if_is_none)]
    job_id: Option<String>,
    status: DeliveryStatus,
    attempts: u32,
    /// When the next attempt is due (while `retrying`).
    #[oai(skip_serializing_if_is_none)]
    next_attempt_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    last_status_code: Option<i32>,
    #[oai(skip_serializing_if_is_none)]
    last_error: Option<String>,
    /// A dead delivery someone acknowledged.
    acknowledged: bool,
    created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    delivered_at: Option<DateTime<Utc>>,
    /// The retry history (only in `GET /v1/deliveries/{id}`).
    #[oai(skip_serializing_if_is_none)]
    attempt_history: Option<Vec<AttemptOut>>,
}

impl DeliveryOut {
    /// The API view; with `attempts`, the retry history is inline.
    pub(crate) fn new(
        d: cronflow_jobs::store::Delivery,
        attempts: Option<Vec<cronflow_jobs::store::Attempt>>,
    ) -> Self {
        DeliveryOut {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            webhook_id: d.webhook_id.to_string(),
            event_type: d.event_type,
            job_id: d.job_id.map(|j| j.to_string()),
            status: d.status.into(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            acknowledged: d.acknowledged,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            attempt_history: attempts.map(|a| {
                a.into_iter()
                    .map(|a| AttemptOut {
                        attempt: a.attempt,
                        started_at: a.started_at,
                        duration_ms: a.duration_ms,
                        status_code: a.status_code,
                        error_kind: a.error_kind,
                        error: a.error,
                        response_excerpt: a.response_excerpt,
                    })
                    .collect()
            }),
        }
    }
}

/// One page of deliveries.
#[derive(Debug, Object)]
#[oai(rename = "DeliveryList")]
pub(crate) struct DeliveryList {
    pub(crate) items: Vec<DeliveryOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}

impl DeliveryList {
    /// One page of deliveries (without their attempts).
    pub(crate) fn from_page(page: cronflow_jobs::domain::Page<cronflow_jobs::store::Delivery>) -> Self {
        DeliveryList {
            items: page
                .items
                .into_iter()
                .map(|d| DeliveryOut::new(d, None))
                .collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }
    }
}
