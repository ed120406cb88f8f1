//! Deliveries and their attempts: the state of every event's way to every subscriber,
//! the retry schedule, and the dead letter queue.
//!
//! Each attempt is one queue task. A failed attempt records itself and, in the same
//! transaction, either schedules the next attempt as a delayed task (`retrying`: it lives
//! in the database and holds no worker) or, when the schedule is exhausted, marks the
//! delivery `dead`, which puts it in the DLQ until it is replayed or acknowledged.

use super::{Store, with_pool, with_tx, with_writer};
use crate::StoreError;
use crate::domain::{Cursor, DeliveryId, Page, PageRequest, Webhook, WebhookId};
use crate::queue::TaskEnd;
use chrono::{DateTime, Duration, Utc};
use std::borrow::Borrow;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Pending,
    /// An attempt failed; the next one is scheduled (`next_attempt_at`).
    Retrying,
    /// A 2xx answer was received.
    Delivered,
    /// Every retry failed: in the dead letter queue.
    Dead,
}

impl DeliveryStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Retrying, Self::Delivered, Self::Dead]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A delivery as stored.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `dlv_…`; also the idempotency key and `webhook-id`.
    pub id: DeliveryId,
    /// The event delivered.
    pub event_id: String,
    /// The subscription it goes to.
    pub webhook_id: String,
    /// `job.failed`, ...
    pub event_type: String,
    /// The job the event is about (none for `webhook.test`).
    pub job_id: Option<String>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made, all rounds.
    pub attempts: u32,
    /// When the next attempt is due, while `retrying`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status code of the last attempt, if an answer came.
    pub last_status_code: Option<i32>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// A dead delivery someone acknowledged (it leaves the DLQ list).
    pub acknowledged: bool,
    /// When the event fanned out to this subscription.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One attempt as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1, 2, ... across all rounds.
    pub attempt: u32,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's status, if one came.
    pub status_code: Option<i32>,
    /// `timeout`, `connect`, `dns`, `tls`, `ssrf_blocked`, `redirect`, `http` (non-2xx).
    pub error_kind: Option<String>,
    /// Human-readable error.
    pub error: Option<String>,
    /// The first 4 KiB of the answer's body.
    pub response_excerpt: Option<String>,
}

/// What a worker needs to make an attempt.
#[derive(Debug, Clone)]
pub struct DeliveryWork {
    /// The delivery.
    pub delivery: Delivery,
    /// Its subscription.
    pub webhook: Webhook,
    /// The exact body to send (stored once when the event was written).
    pub payload: String,
    /// Attempts made since creation or the last replay.
    pub round_attempts: u32,
}

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

/// Binds a [`DeliveryFilter`] as `$1`–`$6` (subscription, job, event type, status,
/// since, until; empty or unbounded when unset) of a listing or export query.
macro_rules! bind_filter {
    ($q:expr, $filter:expr) => {{
        let f: &DeliveryFilter = $filter;
        $q.bind(f.webhook_id.as_deref().unwrap_or(""))
            .bind(f.job_id.as_deref().unwrap_or(""))
            .bind(f.event_type.as_deref().unwrap_or(""))
            .bind(f.status.map_or("", DeliveryStatus::as_str))
            .bind(f.since.map_or(i64::MIN, |t| t.timestamp_millis()))
            .bind(f.until.map_or(i64::MAX, |t| t.timestamp_millis()))
    }};
}

/// Where an export resumes: after this (delivery creation time, delivery id, attempt).
pub type ExportCursor = (i64, String, i64);

macro_rules! delivery_columns {
    () => {
        "id, event_id, webhook_id, event_type, job_id, status, attempts, next_attempt_at, last_status_code, \
         last_error, acknowledged, created_at, delivered_at"
    };
}

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
            event_id: r.event_id,
            webhook_id: r.webhook_id,
            event_type: r.event_type,
            job_id: r.job_id,
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

/// The result of one attempt, as the worker saw it.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's status, if one came.
    pub status_code: Option<i32>,
    /// Why it failed (`None` for a 2xx).
    pub error_kind: Option<&'static str>,
    /// Human-readable error.
    pub error: Option<String>,
    /// The first 4 KiB of the answer.
    pub response_excerpt: Option<String>,
    /// The receiver's `Retry-After` on a 429 or 503, if any.
    pub retry_after: Option<std::time::Duration>,
}

/// One attempt to record: what it needed, how it went, and the queue task that made it,
/// which the same transaction acknowledges.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The delivery as the attempt began.
    pub work: DeliveryWork,
    /// How the attempt went.
    pub outcome: AttemptOutcome,
    /// The apalis task that carried the attempt.
    pub task_id: String,
}

/// A delivery task that made no attempt: its delivery needed none (already delivered,
/// dead or gone), or its endpoint had its maximum of attempts in flight and the attempt
/// is queued again for `again_at`.
#[derive(Debug, Clone)]
pub struct Unattempted {
    /// The apalis task.
    pub task_id: String,
    /// The delivery, and when to try it again.
    pub again_at: Option<(DeliveryId, DateTime<Utc>)>,
}

/// Upper bound on a receiver's `Retry-After`.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// What the delivery policy needs besides the attempt itself.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy<'a> {
    /// Delays before each retry.
    pub schedule: &'a [std::time::Duration],
    /// A subscription whose every attempt failed for this long is disabled.
    pub disable_after: std::time::Duration,
}

/// A delivery with what an attempt needs from other tables.
#[derive(sqlx::FromRow)]
struct WorkRow {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    round_attempts: i64,
    payload: Option<String>,
}

/// What recording one attempt writes: decided before the transaction, from the attempt's
/// outcome and the retry policy.
struct AttemptPlan<'a> {
    id: &'a str,
    hook_id: &'a str,
    url: &'a str,
    outcome: &'a AttemptOutcome,
    attempt: i64,
    delivered: bool,
    gone: bool,
    status: DeliveryStatus,
    next: Option<DateTime<Utc>>,
}

impl<'a> AttemptPlan<'a> {
    fn new(
        work: &'a DeliveryWork,
        outcome: &'a AttemptOutcome,
        policy: &DeliveryPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Self {
        let delivered = outcome.error_kind.is_none();
        let gone = outcome.status_code == Some(410);
        let round = work.round_attempts as usize;
        let (status, next) = if delivered {
            (DeliveryStatus::Delivered, None)
        } else if let Some(delay) = policy.schedule.get(round).filter(|_| !gone) {
            let wanted = outcome
                .retry_after
                .map_or(*delay, |r| (*delay).max(r.min(MAX_RETRY_AFTER)));
            let delay = Duration::from_std(wanted).unwrap_or(Duration::hours(24));
            (DeliveryStatus::Retrying, Some(now + delay))
        } else {
            (DeliveryStatus::Dead, None)
        };
        AttemptPlan {
            id: work.delivery.id.as_str(),
            hook_id: work.webhook.id.as_str(),
            url: &work.webhook.url,
            outcome,
            attempt: i64::from(work.delivery.attempts) + 1,
            delivered,
            gone,
            status,
            next,
        }
    }

    fn audit_entry(&self) -> super::audit::NewAuditEntry<'a> {
        super::audit::NewAuditEntry {
            actor: "system",
            action: "delivery.attempt",
            object_type: "delivery",
            object_id: Some(self.id),
            source: None,
            detail: serde_json::json!({
                "webhook_id": self.hook_id,
                "url": self.url,
                "attempt": self.attempt,
                "status_code": self.outcome.status_code,
                "error_kind": self.outcome.error_kind,
                "duration_ms": self.outcome.duration_ms,
                "result": self.status.as_str(),
            }),
        }
    }
}

impl Store {
    /// For each of `ids` (in order), the delivery and what an attempt needs, if it still
    /// needs one (`pending` or `retrying`); two queries for the whole batch. Deliveries
    /// whose subscription or event was deleted are marked `dead` here.
    pub async fn begin_deliveries(
        &self,
        ids: &[DeliveryId],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<DeliveryWork>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<WorkRow> = with_pool!(self, pool => {
            let mut b = sqlx::QueryBuilder::new(concat!(
                "SELECT x.*, e.payload FROM (SELECT ", delivery_columns!(), ", round_attempts FROM deliveries WHERE id IN "));
            super::push_list(&mut b, ids.iter().map(DeliveryId::as_str));
            b.push(") x LEFT JOIN events e ON e.id = x.event_id");
            b.build_query_as().fetch_all(pool).await
        })?;
        let mut hook_ids: Vec<WebhookId> = rows
            .iter()
            .filter_map(|r| WebhookId::parse(&r.delivery.webhook_id))
            .collect();
        hook_ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        hook_ids.dedup();
        let hooks = self.webhooks_by_id(&hook_ids).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        let mut orphans = Vec::new();
        for row in rows {
            let payload = row.payload;
            let round = row.round_attempts;
            let delivery = Delivery::try_from(row.delivery)?;
            if !matches!(
                delivery.status,
                DeliveryStatus::Pending | DeliveryStatus::Retrying
            ) {
                continue;
            }
            match (hooks.get(delivery.webhook_id.as_str()), payload) {
                (Some(webhook), Some(payload)) => {
                    let work = DeliveryWork {
                        webhook: webhook.clone(),
                        payload,
                        round_attempts: u32::try_from(round).unwrap_or(u32::MAX),
                        delivery,
                    };
                    found.insert(work.delivery.id.to_string(), work);
                }
                _ => orphans.push(delivery.id),
            }
        }
        if !orphans.is_empty() {
            with_writer!(self, pool => {
                let mut b = sqlx::QueryBuilder::new(
                    "UPDATE deliveries SET status = 'dead', last_error = 'the subscription or event no longer exists', \
                     next_attempt_at = NULL, dead_at = ");
                b.push_bind(now.timestamp_millis()).push(", updated_at = ");
                b.push_bind(now.timestamp_millis()).push(" WHERE id IN ");
                super::push_list(&mut b, orphans.iter().map(DeliveryId::as_str));
                b.build().execute(pool).await.map(|_| ())
            })?;
        }
        Ok(ids.iter().map(|id| found.remove(id.as_str())).collect())
    }

    /// Records attempts and their consequences, all in one transaction (one commit for
    /// the batch, with multi-row statements): each delivery becomes `delivered` on a 2xx;
    /// otherwise `retrying` with its next attempt queued after
    /// `schedule[round_attempts]`, or `dead` when the schedule is exhausted. Returns the
    /// new statuses, in order.
    ///
    /// The subscriptions' health moves with them: a success clears a subscription's
    /// failing streak (a success and a failure of one subscription in the same batch
    /// count as a success); a `410 Gone`, or failures without a success for
    /// `policy.disable_after`, disable it with the reason recorded (and in the audit
    /// log). A `Retry-After` on a 429 or 503 delays the retry to at least that (at most
    /// [`MAX_RETRY_AFTER`]); a 410 makes the delivery dead at once.
    ///
    /// Each attempt's task is acknowledged in the same transaction: deleted (`Done`), or `Failed`
    /// (apalis's dead letter state) for a delivery that is now dead. A crash before the
    /// commit leaves both the attempt unrecorded and its task taken, and the task is
    /// handed out again once this worker's lease lapses (at least once).
    pub async fn record_attempts(
        &self,
        batch: &[impl Borrow<AttemptRecord>],
        policy: &DeliveryPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<DeliveryStatus>, StoreError> {
        /// Rows per multi-row statement (at most 8 parameters a row).
        const ROWS: usize = 500;
        let plans: Vec<AttemptPlan<'_>> = batch
            .iter()
            .map(|r| AttemptPlan::new(&r.borrow().work, &r.borrow().outcome, policy, now))
            .collect();
        let mut succeeded: Vec<&str> = plans.iter().filter(|p| p.delivered).map(|p| p.hook_id).collect();
        succeeded.sort_unstable();
        succeeded.dedup();
        let mut failing: Vec<&str> = plans
            .iter()
            .filter(|p| !p.delivered && succeeded.binary_search(&p.hook_id).is_err())
            .map(|p| p.hook_id)
            .collect();
        failing.sort_unstable();
        failing.dedup();
        let mut gone: Vec<&str> = plans.iter().filter(|p| p.gone).map(|p| p.hook_id).collect();
        gone.sort_unstable();
        gone.dedup();
        let at = now.timestamp_millis();
        let limit = i64::try_from(policy.disable_after.as_millis()).unwrap_or(i64::MAX);
        with_tx!(self, tx, q => {
            for chunk in plans.chunks(ROWS) {
                let mut b = sqlx::QueryBuilder::new(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, \
                     error_kind, error, response_excerpt) ");
                b.push_values(chunk, |mut row, p| {
                    row.push_bind(p.id)
                        .push_bind(p.attempt)
                        .push_bind(p.outcome.started_at.timestamp_millis())
                        .push_bind(p.outcome.duration_ms)
                        .push_bind(p.outcome.status_code.map(i64::from))
                        .push_bind(p.outcome.error_kind)
                        .push_bind(p.outcome.error.as_deref())
                        .push_bind(p.outcome.response_excerpt.as_deref());
                });
                b.push(" ON CONFLICT (delivery_id, attempt) DO NOTHING");
                b.build().execute(&mut *tx).await?;

                let mut b = sqlx::QueryBuilder::new(
                    "WITH v (id, status, attempts, next_attempt_at, last_status_code, last_error, delivered_at, dead_at) AS (");
                b.push_values(chunk, |mut row, p| {
                    row.push_bind(p.id)
                        .push_bind(p.status.as_str())
                        .push_bind(p.attempt)
                        .push_bind(p.next.map(|t| t.timestamp_millis()))
                        .push_bind(p.outcome.status_code.map(i64::from))
                        .push_bind(p.outcome.error.as_deref())
                        .push_bind(p.delivered.then_some(at))
                        .push_bind((p.status == DeliveryStatus::Dead).then_some(at));
                });
                // `next_attempt_at` and `dead_at` stay NULL for a delivery that succeeds
                // at once, so (on Postgres) its update touches no index: see the
                // migration `20261128000005_deliveries_hot_updates`.
                b.push(
                    ") UPDATE deliveries SET status = v.status, attempts = v.attempts, \
                     round_attempts = deliveries.round_attempts + 1, next_attempt_at = v.next_attempt_at, \
                     last_status_code = v.last_status_code, last_error = v.last_error, dead_at = v.dead_at, \
                     delivered_at = COALESCE(v.delivered_at, deliveries.delivered_at), updated_at = ");
                b.push_bind(at).push(" FROM v WHERE deliveries.id = v.id");
                b.build().execute(&mut *tx).await?;
            }
            let retries: Vec<_> = plans.iter().filter_map(|p| Some((p.id.to_owned(), Some(p.next?)))).collect();
            q::push_deliveries(&mut tx, &retries).await?;

            if !succeeded.is_empty() {
                let mut b = sqlx::QueryBuilder::new("UPDATE webhooks SET failing_since = NULL WHERE failing_since IS NOT NULL AND id IN ");
                super::push_list(&mut b, succeeded.iter().copied());
                b.build().execute(&mut *tx).await?;
            }
            let mut to_disable: Vec<(&str, String)> = gone
                .iter()
                .map(|id| (*id, "the endpoint answered 410 Gone".to_owned()))
                .collect();
            if !failing.is_empty() {
                let mut b = sqlx::QueryBuilder::new("UPDATE webhooks SET failing_since = COALESCE(failing_since, ");
                b.push_bind(at).push(") WHERE id IN ");
                super::push_list(&mut b, failing.iter().copied());
                b.push(" RETURNING id, failing_since");
                let rows: Vec<(String, Option<i64>)> = b.build_query_as().fetch_all(&mut *tx).await?;
                for (id, since) in rows {
                    let failing_for = since.map_or(0, |s| at - s);
                    if failing_for >= limit && gone.binary_search(&id.as_str()).is_err()
                        && let Some(hook) = failing.iter().find(|h| **h == id)
                    {
                        to_disable.push((hook, format!(
                            "every attempt failed for {} s (the limit is {} s)",
                            failing_for / 1000,
                            limit / 1000
                        )));
                    }
                }
            }
            let ends: Vec<_> = batch
                .iter()
                .zip(&plans)
                .map(|(r, p)| {
                    let end = if p.status == DeliveryStatus::Dead { TaskEnd::Failed } else { TaskEnd::Done };
                    (r.borrow().task_id.as_str(), end)
                })
                .collect();
            q::finish_tasks(&mut tx, &ends).await?;
            let mut entries: Vec<_> = plans.iter().map(|p| p.audit_entry()).collect();
            for (hook_id, reason) in &to_disable {
                let n = sqlx::query(
                    "UPDATE webhooks SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE id = $1 AND enabled")
                    .bind(*hook_id)
                    .bind(reason)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    tracing::warn!(webhook_id = %hook_id, %reason, "webhook subscription disabled");
                    entries.push(super::audit::NewAuditEntry {
                        actor: "system",
                        action: "webhook.disabled",
                        object_type: "webhook",
                        object_id: Some(hook_id),
                        source: None,
                        detail: serde_json::json!({ "reason": reason }),
                    });
                }
            }
            // Last, just before the commit: taking sequence numbers locks the audit
            // counter until then, and every transaction that audits waits for it.
            super::audit::append_audit_batch!(tx, &entries, now);
        });
        Ok(plans.iter().map(|p| p.status).collect())
    }

    /// Acknowledges delivery tasks that made no attempt (`Done`: deleted), queuing a new task for
    /// each that has a time to try again, in one transaction.
    pub async fn finish_unattempted(&self, tasks: &[Unattempted]) -> Result<(), StoreError> {
        let again: Vec<_> = tasks
            .iter()
            .filter_map(|t| t.again_at.as_ref().map(|(id, at)| (id.to_string(), Some(*at))))
            .collect();
        let ends: Vec<_> = tasks
            .iter()
            .map(|t| (t.task_id.as_str(), TaskEnd::Done))
            .collect();
        with_tx!(self, tx, q => {
            q::push_deliveries(&mut tx, &again).await?;
            q::finish_tasks(&mut tx, &ends).await?;
        });
        Ok(())
    }

    /// A delivery and its attempts, oldest first.
    pub async fn get_delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        let row: Option<DeliveryRow> = with_pool!(self, pool => sqlx::query_as(
            concat!("SELECT ", delivery_columns!(), " FROM deliveries WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await)?;
        let Some(row) = row else { return Ok(None) };
        type AttemptRow = (
            i64,
            i64,
            i64,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let attempts: Vec<AttemptRow> = with_pool!(self, pool => sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, status_code, error_kind, error, response_excerpt \
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt")
            .bind(id.as_str())
            .fetch_all(pool)
            .await)?;
        let attempts = attempts
            .into_iter()
            .map(|(attempt, started, duration_ms, code, kind, error, excerpt)| {
                Ok(Attempt {
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    started_at: time(started)?,
                    duration_ms,
                    status_code: code.and_then(|c| i32::try_from(c).ok()),
                    error_kind: kind,
                    error,
                    response_excerpt: excerpt,
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
        let (before_ms, before_id) = page
            .after
            .as_ref()
            .map_or((i64::MAX, "~"), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<DeliveryRow> = with_pool!(self, pool => bind_filter!(sqlx::query_as(concat!(
            "SELECT ", delivery_columns!(), " FROM deliveries WHERE ",
            "($1 = '' OR webhook_id = $1) AND ($2 = '' OR job_id = $2) AND ($3 = '' OR event_type = $3) ",
            "AND ($4 = '' OR status = $4) AND created_at >= $5 AND created_at < $6 ",
            "AND (created_at < $7 OR (created_at = $7 AND id < $8)) ORDER BY created_at DESC, id DESC LIMIT $9")), filter)
            .bind(before_ms)
            .bind(before_id)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await)?;
        let items = rows
            .into_iter()
            .map(Delivery::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, page.limit, |d| {
            Cursor::after(d.created_at, d.id.as_str())
        }))
    }

    /// Up to `limit` export rows (one per attempt, oldest delivery first) after `after`.
    /// Callers stream an export by calling this until it returns fewer than `limit`.
    pub async fn export_attempts(
        &self,
        filter: &DeliveryFilter,
        after: Option<&ExportCursor>,
        limit: i64,
    ) -> Result<Vec<ExportRow>, StoreError> {
        let (k_at, k_id, k_attempt) = after.map_or((i64::MIN, "", -1), |(a, b, c)| (*a, b.as_str(), *c));
        let rows: Vec<ExportRow> = with_pool!(self, pool => bind_filter!(sqlx::query_as(
            "SELECT d.id AS delivery_id, d.event_id, d.webhook_id, d.event_type, d.job_id, \
             d.status AS delivery_status, d.created_at AS delivery_created_at, COALESCE(a.attempt, 0) AS attempt, \
             a.started_at AS attempted_at, a.duration_ms, a.status_code, a.error_kind, a.error, a.response_excerpt \
             FROM deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id WHERE \
             ($1 = '' OR d.webhook_id = $1) AND ($2 = '' OR d.job_id = $2) AND ($3 = '' OR d.event_type = $3) \
             AND ($4 = '' OR d.status = $4) AND d.created_at >= $5 AND d.created_at < $6 \
             AND (d.created_at > $7 OR (d.created_at = $7 AND (d.id > $8 OR (d.id = $8 AND COALESCE(a.attempt, 0) > $9)))) \
             ORDER BY d.created_at, d.id, COALESCE(a.attempt, 0) LIMIT $10"), filter)
            .bind(k_at)
            .bind(k_id)
            .bind(k_attempt)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// The dead letter queue: dead, unacknowledged deliveries, oldest first.
    pub async fn list_dlq(&self, page: &PageRequest) -> Result<Page<Delivery>, StoreError> {
        let (after_ms, after_id) = page
            .after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<DeliveryRow> = with_pool!(self, pool => sqlx::query_as(concat!(
            "SELECT ", delivery_columns!(), " FROM deliveries WHERE dead_at IS NOT NULL AND NOT acknowledged ",
            "AND (created_at > $1 OR (created_at = $1 AND id > $2)) ORDER BY created_at, id LIMIT $3"))
            .bind(after_ms)
            .bind(after_id)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await)?;
        let items = rows
            .into_iter()
            .map(Delivery::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, page.limit, |d| {
            Cursor::after(d.created_at, d.id.as_str())
        }))
    }

    /// Replays dead deliveries matching `filter` (or the one `only`): each goes back to
    /// `pending` with a fresh retry schedule and is queued again, keeping its id, so
    /// receivers see the same idempotency key. Returns how many were replayed.
    pub async fn replay_dead(
        &self,
        only: Option<&DeliveryId>,
        filter: &ReplayFilter,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let ids: Vec<String> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE status = 'dead' \
             AND ($1 = '' OR id = $1) AND ($2 = '' OR webhook_id = $2) AND ($3 = '' OR event_type = $3) \
             AND created_at >= $4 AND created_at < $5 ORDER BY created_at, id LIMIT 10000")
            .bind(only.map_or("", |d| d.as_str()))
            .bind(filter.webhook_id.as_ref().map_or("", |w| w.as_str()))
            .bind(filter.event_type.as_deref().unwrap_or(""))
            .bind(filter.since.map_or(i64::MIN, |t| t.timestamp_millis()))
            .bind(filter.until.map_or(i64::MAX, |t| t.timestamp_millis()))
            .fetch_all(pool)
            .await)?;
        let mut replayed = Vec::new();
        with_tx!(self, tx, q => {
            for id in &ids {
                let n = sqlx::query(
                    "UPDATE deliveries SET status = 'pending', round_attempts = 0, acknowledged = FALSE, \
                     next_attempt_at = NULL, dead_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'")
                    .bind(id)
                    .bind(now.timestamp_millis())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    replayed.push((id.clone(), None));
                }
            }
            q::push_deliveries(&mut tx, &replayed).await?;
        });
        if !replayed.is_empty() {
            self.wake_deliveries.notify_one();
        }
        Ok(replayed.len() as u64)
    }

    /// Acknowledges a dead delivery: it leaves the DLQ list (and stays on record).
    /// `false` if there is no dead delivery with this id.
    pub async fn acknowledge_dead(&self, id: &DeliveryId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = with_writer!(self, pool => sqlx::query(
            "UPDATE deliveries SET acknowledged = TRUE, updated_at = $2 WHERE id = $1 AND status = 'dead'")
            .bind(id.as_str())
            .bind(now.timestamp_millis())
            .execute(pool)
            .await.map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }
}

/// State-derived figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Deliveries in `retrying`.
    pub retries_waiting: i64,
    /// Dead, unacknowledged deliveries.
    pub dlq_size: i64,
    /// Disabled subscriptions.
    pub disabled_webhooks: i64,
    /// Tasks waiting per queue (due or delayed; not those a worker has taken).
    pub queue_depth: Vec<(String, i64)>,
}

impl Store {
    /// Reads the gauges' values.
    pub async fn gauges(&self) -> Result<Gauges, StoreError> {
        // `next_attempt_at` and `dead_at` name the partial indexes these counts read (see
        // the migration `20261128000005_deliveries_hot_updates`).
        let (retrying, dead, disabled): (i64, i64, i64) = with_pool!(self, pool => sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE next_attempt_at IS NOT NULL AND status = 'retrying'), \
             (SELECT COUNT(*) FROM deliveries WHERE dead_at IS NOT NULL AND NOT acknowledged), \
             (SELECT COUNT(*) FROM webhooks WHERE NOT enabled)")
            .fetch_one(pool)
            .await)?;
        let depth: Vec<(String, i64)> = super::with_pool_for!(self, read, pool, q =>
            sqlx::query_as(q::QUEUE_DEPTH_SQL).fetch_all(pool).await)?;
        let mut queue_depth: Vec<(String, i64)> = [crate::queue::RUN_QUEUE, crate::queue::DELIVERY_QUEUE]
            .iter()
            .map(|q| ((*q).to_owned(), 0))
            .collect();
        for (q, n) in depth {
            if let Some(e) = queue_depth.iter_mut().find(|(name, _)| *name == q) {
                e.1 = n;
            }
        }
        Ok(Gauges {
            retries_waiting: retrying,
            dlq_size: dead,
            disabled_webhooks: disabled,
            queue_depth,
        })
    }
}
