//! Reads the dashboard needs beyond the API's listings: capped counts, the DLQ grouped
//! by failure signature, previews of bulk actions, the delivery success rate per
//! subscription, a delivery's payload and retry round, and a key by id (a signed-in
//! session ends when its key is revoked). Read-only; every change goes through the same
//! functions as the API.

use super::{Store, db::Statement};
use crate::StoreError;
use crate::domain::{ApiKey, ApiKeyId, Cursor, DeliveryId, Page, PageRequest, Scope};
use crate::store::{Delivery, DeliveryFilter, ReplayFilter};
use chrono::{DateTime, Utc};

/// Which dead deliveries a DLQ view or action covers; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// Subscription, event type and creation time, as a bulk replay takes them.
    pub replay: ReplayFilter,
    /// Only this failure signature of the last attempt: its error kind (`""` when the
    /// delivery died without an attempt) and status code.
    pub signature: Option<(String, Option<i32>)>,
    /// Also acknowledged ones (a bulk replay of the API takes them too).
    pub include_acknowledged: bool,
}

/// Dead deliveries sharing a subscription and a failure signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadGroup {
    /// The subscription.
    pub webhook_id: String,
    /// The last attempt's error kind (`""`: the delivery died without an attempt).
    pub error_kind: String,
    /// The last attempt's status code, if an answer came.
    pub status_code: Option<i32>,
    /// How many deliveries.
    pub count: u64,
    /// Creation time of the oldest and newest of them.
    pub first: DateTime<Utc>,
    /// See `first`.
    pub last: DateTime<Utc>,
}

/// A dead delivery with the error kind of its last attempt.
#[derive(Debug, Clone)]
pub struct DeadDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// Its last attempt's error kind, if it made one.
    pub error_kind: Option<String>,
}

/// Attempts to one subscription in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyAttempts {
    /// The subscription.
    pub webhook_id: String,
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// Attempts started in it.
    pub attempts: u64,
    /// Of which answered 2xx.
    pub succeeded: u64,
}

/// What a delivery page shows beside the delivery and its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryExtras {
    /// The exact body sent (gone if its event was pruned).
    pub payload: Option<String>,
    /// Attempts since creation or the last replay: the retry schedule's position.
    pub round_attempts: u32,
}

/// Appends the condition of a [`DeadFilter`] on `d` (a delivery) and `a` (its last
/// attempt): only the fields that are set. `dead_at` is set exactly while a delivery is
/// dead; without acknowledged ones the condition is that of the partial indexes of the
/// DLQ (in listing order, also by subscription and by event type), so the database
/// reads the DLQ alone; with them, `status` names the status index.
fn push_dead_conditions<'a>(s: &mut Statement<'a>, f: &'a DeadFilter) {
    if f.include_acknowledged {
        s.and().push("d.status = 'dead' AND d.dead_at IS NOT NULL");
    } else {
        s.and().push("d.dead_at IS NOT NULL AND NOT d.acknowledged");
    }
    f.replay.push_conditions(s, "d.");
    if let Some((kind, code)) = &f.signature {
        s.and().push("COALESCE(a.error_kind, '') = ").bind(kind.as_str());
        s.and()
            .push("COALESCE(a.status_code, -1) = ")
            .bind(code.map_or(-1, i64::from));
    }
}

/// The last attempt of each delivery `d` (none if it died without one).
const LAST_ATTEMPT: &str =
    "deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id AND a.attempt = d.attempts";

fn time(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[derive(sqlx::FromRow)]
struct DeadRow {
    #[sqlx(flatten)]
    delivery: super::deliveries::DeliveryRow,
    error_kind: Option<String>,
}

impl Store {
    /// The key with this id, if it still exists.
    pub async fn api_key(&self, id: &ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<(String, String, String, i64)> = self
            .reader()
            .fetch_optional(
                "SELECT id, name, scope, created_at FROM api_keys WHERE id = $1",
                &[id.as_str().into()],
            )
            .await?;
        row.map(|(id, name, scope, created_at)| {
            let corrupt = |what: &str| StoreError::Corrupt(format!("api key {id}: {what}"));
            Ok(ApiKey {
                id: ApiKeyId::parse(&id).ok_or_else(|| corrupt("id"))?,
                scope: Scope::parse(&scope).ok_or_else(|| corrupt("scope"))?,
                created_at: time(created_at)?,
                name,
            })
        })
        .transpose()
    }

    /// How many deliveries match `filter`, counting no further than `cap + 1` (so a
    /// result over `cap` means "more than `cap`" and costs no more than `cap` rows).
    pub async fn count_deliveries(&self, filter: &DeliveryFilter, cap: u64) -> Result<u64, StoreError> {
        let mut s = Statement::new("SELECT COUNT(*) FROM (SELECT 1 FROM deliveries");
        filter.push_conditions(&mut s, "");
        s.push(" LIMIT ")
            .bind(i64::try_from(cap).unwrap_or(i64::MAX).saturating_add(1))
            .push(") x");
        let rows: Vec<(i64,)> = self.reader().fetch_built(s).await?;
        let n = rows.first().map_or(0, |r| r.0);
        Ok(count(n))
    }

    /// How many dead deliveries match `filter` and how many subscriptions they go to,
    /// among the first `cap` in replay order (oldest first): the preview of a bulk
    /// action that takes at most `cap`.
    pub async fn count_dead(&self, filter: &DeadFilter, cap: u64) -> Result<(u64, u64), StoreError> {
        let mut s = Statement::new(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT webhook_id) FROM (SELECT d.webhook_id FROM {LAST_ATTEMPT}"
        ));
        push_dead_conditions(&mut s, filter);
        s.push(" ORDER BY d.created_at, d.id LIMIT ")
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .push(") x");
        let rows: Vec<(i64, i64)> = self.reader().fetch_built(s).await?;
        let (n, hooks) = rows.first().copied().unwrap_or((0, 0));
        Ok((count(n), count(hooks)))
    }

    /// Dead deliveries matching `filter` grouped by subscription and the failure
    /// signature of their last attempt, largest group first.
    pub async fn dead_groups(&self, filter: &DeadFilter) -> Result<Vec<DeadGroup>, StoreError> {
        let mut s = Statement::new(&format!(
            "SELECT d.webhook_id, COALESCE(a.error_kind, '') AS kind, a.status_code, COUNT(*) AS n, \
             MIN(d.created_at) AS first, MAX(d.created_at) AS last FROM {LAST_ATTEMPT}"
        ));
        push_dead_conditions(&mut s, filter);
        s.push(
            " GROUP BY d.webhook_id, COALESCE(a.error_kind, ''), a.status_code \
             ORDER BY n DESC, d.webhook_id LIMIT 500",
        );
        type Row = (String, String, Option<i64>, i64, i64, i64);
        let rows: Vec<Row> = self.reader().fetch_built(s).await?;
        rows.into_iter()
            .map(|(webhook_id, error_kind, code, n, first, last)| {
                Ok(DeadGroup {
                    webhook_id,
                    error_kind,
                    status_code: code.and_then(|c| i32::try_from(c).ok()),
                    count: count(n),
                    first: time(first)?,
                    last: time(last)?,
                })
            })
            .collect()
    }

    /// Dead deliveries matching `filter`, oldest first, one page at a time, each with
    /// its last attempt's error kind.
    pub async fn list_dead(
        &self,
        filter: &DeadFilter,
        page: &PageRequest,
    ) -> Result<Page<DeadDelivery>, StoreError> {
        let mut s = Statement::new(&format!(
            "SELECT d.id, d.event_id, d.webhook_id, d.event_type, d.job_id, d.status, d.attempts, \
             d.next_attempt_at, d.last_status_code, d.last_error, d.acknowledged, d.created_at, d.delivered_at, \
             a.error_kind FROM {LAST_ATTEMPT}"
        ));
        push_dead_conditions(&mut s, filter);
        s.keyset_page("d.", page, false);
        let rows: Vec<DeadRow> = self.reader().fetch_built(s).await?;
        let items = rows
            .into_iter()
            .map(|r| {
                Ok(DeadDelivery {
                    delivery: Delivery::try_from(r.delivery)?,
                    error_kind: r.error_kind,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(items, page.limit, |d| {
            Cursor::after(d.delivery.created_at, d.delivery.id.as_str())
        }))
    }

    /// Attempts per subscription and hour since `since` (hours counted from `since`),
    /// with how many of them succeeded.
    pub async fn hourly_attempts(&self, since: DateTime<Utc>) -> Result<Vec<HourlyAttempts>, StoreError> {
        let from = since.timestamp_millis();
        let rows: Vec<(String, i64, i64, i64)> = self
            .reader()
            .fetch_all(
                "SELECT d.webhook_id, (a.started_at - $1) / 3600000 AS h, COUNT(*), \
                 SUM(CASE WHEN a.error_kind IS NULL THEN 1 ELSE 0 END) \
                 FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
                 WHERE a.started_at >= $1 GROUP BY 1, 2 ORDER BY 1, 2",
                &[from.into()],
            )
            .await?;
        rows.into_iter()
            .map(|(webhook_id, h, attempts, succeeded)| {
                Ok(HourlyAttempts {
                    webhook_id,
                    hour: time(from + h * 3_600_000)?,
                    attempts: count(attempts),
                    succeeded: count(succeeded),
                })
            })
            .collect()
    }

    /// The payload a delivery carries and its position in the retry schedule.
    pub async fn delivery_extras(&self, id: &DeliveryId) -> Result<Option<DeliveryExtras>, StoreError> {
        let row: Option<(Option<String>, i64)> = self
            .reader()
            .fetch_optional(
                "SELECT e.payload, d.round_attempts FROM deliveries d LEFT JOIN events e ON e.id = d.event_id \
                 WHERE d.id = $1",
                &[id.as_str().into()],
            )
            .await?;
        Ok(row.map(|(payload, round)| DeliveryExtras {
            payload,
            round_attempts: u32::try_from(round).unwrap_or(u32::MAX),
        }))
    }
}
