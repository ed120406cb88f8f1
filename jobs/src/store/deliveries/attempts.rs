//! The attempt path: loading what attempts need, recording attempts with their
//! consequences (retry, death, the subscription's health, the audit log), and
//! acknowledging the tasks that carried them, in one transaction per batch.

use super::{DeliveryRow, delivery_columns};
use crate::StoreError;
use crate::domain::{
    AttemptDecision, AttemptOutcome, Delivery, DeliveryId, DeliveryPolicy, DeliveryStatus, EventType,
    Webhook, WebhookId, credentials::endpoint_only,
};
use crate::store::{
    Store,
    audit::{NewAuditEntry, append_audit_batch},
    db::Statement,
    queue::{self, TaskEnd},
};
use chrono::{DateTime, Utc};
use std::borrow::Borrow;

/// The `last_error` of a delivery that died because its subscription's signing secret
/// does not open with the store's key.
const UNOPENED_SECRET: &str =
    "the subscription's signing secret cannot be decrypted with this CRONFLOW_SECRET_KEY; nothing was sent";

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

/// The `error` of an interrupted attempt.
const INTERRUPTED: &str = "the worker making this attempt stopped before recording it (killed, or its lease \
     lapsed); the request may have been sent, and its outcome is unknown";

/// A delivery task about to make its attempt.
#[derive(Debug, Clone)]
pub struct TaskStart {
    /// The delivery the task attempts.
    pub delivery_id: DeliveryId,
    /// The apalis task.
    pub task_id: String,
    /// Whether apalis handed the task out before (its attempt counter says so): then
    /// the worker that had it may have died mid-attempt, see
    /// [`Store::begin_deliveries`].
    pub handed_out_before: bool,
}

impl TaskStart {
    /// A task handed out for the first time.
    pub fn first(delivery_id: DeliveryId, task_id: String) -> Self {
        TaskStart {
            delivery_id,
            task_id,
            handed_out_before: false,
        }
    }
}

/// What loading a delivery for an attempt found.
#[derive(Debug, Clone)]
pub enum DeliveryLoad {
    /// It needs an attempt (`pending` or `retrying`).
    Attempt(Box<DeliveryWork>),
    /// Its subscription or event no longer exists, or its subscription's signing
    /// secret does not open with the store's key: it was marked `dead` instead.
    Dead,
    /// It needs no attempt (delivered, dead, or gone).
    Nothing,
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
/// dead or gone), died without one (`dead`: its subscription or event is gone), or its
/// endpoint had its maximum of attempts in flight and the attempt is queued again for
/// `again_at`.
#[derive(Debug, Clone)]
pub struct Unattempted {
    /// The apalis task.
    pub task_id: String,
    /// The delivery, and when to try it again.
    pub again_at: Option<(DeliveryId, DateTime<Utc>)>,
    /// The delivery, if it died without an attempt (its task then joins the DLQ).
    pub dead: Option<DeliveryId>,
}

/// A delivery with what an attempt needs from other tables.
#[derive(sqlx::FromRow)]
struct WorkRow {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    round_attempts: i64,
    payload: Option<String>,
}

/// What recording one attempt writes: the attempt, and what the policy decided.
struct Recorded<'a> {
    work: &'a DeliveryWork,
    outcome: &'a AttemptOutcome,
    attempt: i64,
    decision: AttemptDecision,
}

impl<'a> Recorded<'a> {
    fn new(record: &'a AttemptRecord, policy: &DeliveryPolicy<'_>, now: DateTime<Utc>) -> Self {
        Recorded {
            work: &record.work,
            outcome: &record.outcome,
            attempt: i64::from(record.work.delivery.attempts) + 1,
            decision: policy.decide(record.work.round_attempts, &record.outcome, now),
        }
    }

    fn id(&self) -> &'a str {
        self.work.delivery.id.as_str()
    }

    fn hook_id(&self) -> &'a str {
        self.work.webhook.id.as_str()
    }

    fn audit_entry(&self) -> NewAuditEntry<'a> {
        NewAuditEntry {
            actor: "system",
            action: "delivery.attempt",
            object_type: "delivery",
            object_id: Some(self.id()),
            source: None,
            detail: serde_json::json!({
                "webhook_id": self.hook_id(),
                // The endpoint without its query: a token there is a credential, and
                // audit keys must not read it.
                "url": endpoint_only(&self.work.webhook.url),
                "attempt": self.attempt,
                "status_code": self.outcome.status_code,
                "error_kind": self.outcome.error_kind,
                "duration_ms": self.outcome.duration_ms,
                "result": self.decision.status.as_str(),
            }),
        }
    }
}

/// Sorted, without repeats.
fn sorted<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = ids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Store {
    /// For each of `ids` (in order), what an attempt finds: the delivery and what an
    /// attempt needs, if it still needs one (`pending` or `retrying`); two queries for
    /// the whole batch, and each subscription's secrets opened once. Deliveries whose
    /// subscription or event was deleted are marked `dead` here, and so are those whose
    /// subscription's secret does not open (signing with anything else would only be
    /// refused by the receiver); each with its reason.
    ///
    /// A task handed out again because the worker holding it died (apalis's orphan
    /// recovery marked it) first records the attempt that worker may have sent: an
    /// `interrupted` attempt, outcome unknown, timed when it was due, counted against
    /// the retry budget (`DeliveryPolicy::after_interruption`); if that was the last
    /// attempt allowed, the delivery is dead.
    pub async fn begin_deliveries(
        &self,
        tasks: &[TaskStart],
        policy: &DeliveryPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<DeliveryLoad>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&DeliveryId> = tasks.iter().map(|t| &t.delivery_id).collect();
        let mut s = Statement::new(concat!(
            "SELECT x.*, e.payload FROM (SELECT ",
            delivery_columns!(),
            ", round_attempts FROM deliveries WHERE id IN "
        ));
        s.list(ids.iter().map(|id| id.as_str()))
            .push(") x LEFT JOIN events e ON e.id = x.event_id");
        let rows: Vec<WorkRow> = self.reader().fetch_built(s).await?;
        let mut hook_ids: Vec<WebhookId> = rows
            .iter()
            .filter_map(|r| WebhookId::parse(&r.delivery.webhook_id))
            .collect();
        hook_ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        hook_ids.dedup();
        let hooks = self.webhooks_by_id(&hook_ids).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        let mut orphans = Vec::new();
        let mut unsigned = Vec::new();
        let mut to_hold = Vec::new();
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
                (Some(Ok(webhook)), Some(payload)) => {
                    // A test event goes out even while its subscription is disabled: it
                    // is how one checks an endpoint before enabling it again.
                    if !webhook.enabled && delivery.event_type != EventType::WebhookTest.as_str() {
                        to_hold.push((delivery.id.clone(), webhook.id.clone()));
                    }
                    let work = DeliveryWork {
                        webhook: webhook.clone(),
                        payload,
                        round_attempts: u32::try_from(round).unwrap_or(u32::MAX),
                        delivery,
                    };
                    found.insert(work.delivery.id.clone(), DeliveryLoad::Attempt(Box::new(work)));
                }
                (Some(Err(e)), Some(_)) => {
                    tracing::error!(delivery_id = %delivery.id, error = %e, "the delivery is dead: nothing signs it");
                    found.insert(delivery.id.clone(), DeliveryLoad::Dead);
                    unsigned.push(delivery.id);
                }
                _ => {
                    found.insert(delivery.id.clone(), DeliveryLoad::Dead);
                    orphans.push(delivery.id);
                }
            }
        }
        for (dead, reason) in [
            (&orphans, "the subscription or event no longer exists"),
            (&unsigned, UNOPENED_SECRET),
        ] {
            if dead.is_empty() {
                continue;
            }
            let mut s = Statement::new("UPDATE deliveries SET status = 'dead', last_error = ");
            s.bind(reason)
                .push(", next_attempt_at = NULL, dead_at = ")
                .bind(now.timestamp_millis())
                .push(", updated_at = ")
                .bind(now.timestamp_millis())
                .push(" WHERE id IN ")
                .list(dead.iter().map(DeliveryId::as_str));
            self.writer().run(s).await?;
        }
        if !to_hold.is_empty() {
            for id in self.hold(&to_hold, now).await? {
                found.insert(id, DeliveryLoad::Nothing);
            }
        }
        let again: Vec<&TaskStart> = tasks
            .iter()
            .filter(|t| {
                t.handed_out_before && matches!(found.get(&t.delivery_id), Some(DeliveryLoad::Attempt(_)))
            })
            .collect();
        if !again.is_empty() {
            self.record_interruptions(&again, &mut found, policy, now).await?;
        }
        Ok(ids
            .iter()
            .map(|id| found.remove(*id).unwrap_or(DeliveryLoad::Nothing))
            .collect())
    }

    /// Marks `held` (no attempt, no task) those of `deliveries` (delivery, subscription)
    /// still `pending` or `retrying` whose subscription is still disabled, and returns
    /// them. The subscriptions' rows are locked first (Postgres), so a re-enable running
    /// at the same time, which releases the held deliveries, either commits first (and
    /// these are attempted) or waits and then releases these too.
    async fn hold(
        &self,
        deliveries: &[(DeliveryId, WebhookId)],
        now: DateTime<Utc>,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let hooks = sorted(deliveries.iter().map(|(_, h)| h.as_str()));
        let mut tx = self.begin().await?;
        tx.lock_delivery_gauge().await?;
        let mut s = Statement::new("SELECT id FROM webhooks WHERE NOT enabled AND id IN ");
        s.list(hooks.iter().copied())
            .push(" ORDER BY id")
            .push(tx.dialect().for_share);
        let disabled: Vec<(String,)> = tx.fetch_built(s).await?;
        if disabled.is_empty() {
            return Ok(Vec::new());
        }
        let mut s =
            Statement::new("UPDATE deliveries SET status = 'held', next_attempt_at = NULL, updated_at = ");
        s.bind(now.timestamp_millis())
            .push(" WHERE status IN ('pending', 'retrying') AND id IN ")
            .list(deliveries.iter().map(|(d, _)| d.as_str()))
            .push(" AND webhook_id IN ")
            .list(disabled.iter().map(|(id,)| id.as_str()))
            .push(" RETURNING id");
        let held: Vec<(String,)> = tx.fetch_built(s).await?;
        tx.commit().await?;
        Ok(held
            .into_iter()
            .filter_map(|(id,)| DeliveryId::parse(&id))
            .collect())
    }

    /// Records, for each of `tasks` that apalis's orphan recovery put back, the attempt
    /// its previous holder may have sent (`interrupted`), with its consequence, and
    /// updates what `found` says of its delivery (one more attempt made; or dead), in one
    /// transaction.
    async fn record_interruptions(
        &self,
        tasks: &[&TaskStart],
        found: &mut std::collections::HashMap<DeliveryId, DeliveryLoad>,
        policy: &DeliveryPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at = now.timestamp_millis();
        let mut tx = self.begin().await?;
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let lapsed = queue::take_lapsed(&mut tx, &ids).await?;
        let mut entries = Vec::new();
        for task in tasks.iter().filter(|t| lapsed.contains(&t.task_id)) {
            let Some(DeliveryLoad::Attempt(work)) = found.get_mut(&task.delivery_id) else {
                continue;
            };
            let attempt = i64::from(work.delivery.attempts) + 1;
            let due = work.delivery.next_attempt_at.unwrap_or(work.delivery.created_at);
            let status = policy.after_interruption(work.round_attempts);
            let dead = status == DeliveryStatus::Dead;
            tx.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, error_kind, error) \
                 VALUES ($1, $2, $3, 0, 'interrupted', $4) ON CONFLICT (delivery_id, attempt) DO NOTHING",
                &[
                    work.delivery.id.as_str().into(),
                    attempt.into(),
                    due.timestamp_millis().into(),
                    INTERRUPTED.into(),
                ],
            )
            .await?;
            tx.execute(
                "UPDATE deliveries SET status = $2, attempts = $3, round_attempts = round_attempts + 1, \
                 next_attempt_at = $4, last_status_code = NULL, last_error = $5, dead_at = $6, updated_at = $7 \
                 WHERE id = $1",
                &[
                    work.delivery.id.as_str().into(),
                    status.as_str().into(),
                    attempt.into(),
                    (!dead).then_some(at).into(),
                    INTERRUPTED.into(),
                    dead.then_some(at).into(),
                    at.into(),
                ],
            )
            .await?;
            entries.push(NewAuditEntry {
                actor: "system",
                action: "delivery.attempt",
                object_type: "delivery",
                object_id: Some(task.delivery_id.as_str()),
                source: None,
                detail: serde_json::json!({
                    "webhook_id": work.webhook.id.as_str(),
                    "url": endpoint_only(&work.webhook.url),
                    "attempt": attempt,
                    "status_code": null,
                    "error_kind": "interrupted",
                    "duration_ms": 0,
                    "result": status.as_str(),
                }),
            });
            tracing::warn!(delivery_id = %task.delivery_id, attempt, "an attempt was interrupted by its worker's end; recorded as interrupted");
            if dead {
                found.insert(task.delivery_id.clone(), DeliveryLoad::Dead);
            } else {
                work.delivery.attempts += 1;
                work.round_attempts += 1;
                work.delivery.status = status;
            }
        }
        append_audit_batch(&mut tx, &entries, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records attempts and their consequences, all in one transaction (one commit for
    /// the batch, with multi-row statements): each delivery becomes what the retry
    /// policy decides (`DeliveryPolicy::decide`): `delivered`, `retrying` with its next
    /// attempt queued, or `dead`. Returns the new statuses, in order.
    ///
    /// The subscriptions' health moves with them: a success clears a subscription's
    /// failing streak (a success and a failure of one subscription in the same batch
    /// count as a success); a `410 Gone`, or failures without a success for
    /// `policy.disable_after`, disable it with the reason recorded (and in the audit
    /// log).
    ///
    /// Each attempt's task is acknowledged in the same transaction: deleted, or left
    /// `Failed` (the DLQ) for a delivery that is now dead. A crash before the commit
    /// leaves both the attempt unrecorded and its task taken, and the task is handed out
    /// again once this worker's lease lapses (at least once).
    pub async fn record_attempts(
        &self,
        batch: &[impl Borrow<AttemptRecord>],
        policy: &DeliveryPolicy<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<DeliveryStatus>, StoreError> {
        /// Rows per multi-row statement (at most 8 parameters a row).
        const ROWS: usize = 500;
        let recorded: Vec<Recorded<'_>> = batch
            .iter()
            .map(|r| Recorded::new(r.borrow(), policy, now))
            .collect();
        let succeeded = sorted(
            recorded
                .iter()
                .filter(|r| r.outcome.delivered())
                .map(|r| r.hook_id()),
        );
        let failing = sorted(
            recorded
                .iter()
                .filter(|r| !r.outcome.delivered() && succeeded.binary_search(&r.hook_id()).is_err())
                .map(|r| r.hook_id()),
        );
        let gone = sorted(recorded.iter().filter(|r| r.outcome.gone()).map(|r| r.hook_id()));
        let at = now.timestamp_millis();
        let mut tx = self.begin().await?;
        for chunk in recorded.chunks(ROWS) {
            let mut s = Statement::new(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, \
                 error_kind, error, response_excerpt) ",
            );
            s.values(chunk, |row, r| {
                row.bind(r.id())
                    .bind(r.attempt)
                    .bind(r.outcome.started_at.timestamp_millis())
                    .bind(r.outcome.duration_ms)
                    .bind(r.outcome.status_code.map(i64::from))
                    .bind(r.outcome.error_kind)
                    .bind(r.outcome.error.as_deref())
                    .bind(r.outcome.response_excerpt.as_deref());
            });
            s.push(" ON CONFLICT (delivery_id, attempt) DO NOTHING");
            tx.run(s).await?;

            let mut s = Statement::new(
                "WITH v (id, status, attempts, next_attempt_at, last_status_code, last_error, delivered_at, dead_at) AS (",
            );
            s.values(chunk, |row, r| {
                let status = r.decision.status;
                row.bind(r.id())
                    .bind(status.as_str())
                    .bind(r.attempt)
                    .bind(r.decision.next.map(|t| t.timestamp_millis()))
                    .bind(r.outcome.status_code.map(i64::from))
                    .bind(r.outcome.error.as_deref())
                    .bind((status == DeliveryStatus::Delivered).then_some(at))
                    .bind((status == DeliveryStatus::Dead).then_some(at));
            });
            // `next_attempt_at` and `dead_at` stay NULL for a delivery that succeeds at
            // once, so (on Postgres) its update touches no index: see the migration
            // `20261128000005_deliveries_hot_updates`.
            s.push(
                ") UPDATE deliveries SET status = v.status, attempts = v.attempts, \
                 round_attempts = deliveries.round_attempts + 1, next_attempt_at = v.next_attempt_at, \
                 last_status_code = v.last_status_code, last_error = v.last_error, dead_at = v.dead_at, \
                 delivered_at = COALESCE(v.delivered_at, deliveries.delivered_at), updated_at = ",
            )
            .bind(at)
            .push(" FROM v WHERE deliveries.id = v.id");
            tx.run(s).await?;
        }
        // Acknowledge first: a retry's new task must not meet the failed one's key.
        let ends: Vec<_> = batch
            .iter()
            .zip(&recorded)
            .map(|(b, r)| {
                let end = if r.decision.status == DeliveryStatus::Dead {
                    TaskEnd::Dead(r.id())
                } else {
                    TaskEnd::Done
                };
                (b.borrow().task_id.as_str(), end)
            })
            .collect();
        queue::finish_delivery_tasks(&mut tx, &ends).await?;

        if !succeeded.is_empty() {
            let mut s = Statement::new(
                "UPDATE webhooks SET failing_since = NULL WHERE failing_since IS NOT NULL AND id IN ",
            );
            s.list(succeeded.iter().copied());
            tx.run(s).await?;
        }
        let mut to_disable: Vec<(&str, String)> = gone
            .iter()
            .map(|id| (*id, "the endpoint answered 410 Gone".to_owned()))
            .collect();
        if !failing.is_empty() {
            let mut s = Statement::new("UPDATE webhooks SET failing_since = COALESCE(failing_since, ");
            s.bind(at)
                .push(") WHERE id IN ")
                .list(failing.iter().copied())
                .push(" RETURNING id, failing_since");
            let rows: Vec<(String, Option<i64>)> = tx.fetch_built(s).await?;
            for (id, since) in rows {
                let failing_for = since.map_or(0, |s| at - s);
                let failing_for_std =
                    std::time::Duration::from_millis(u64::try_from(failing_for).unwrap_or(0));
                if policy.disables(failing_for_std)
                    && gone.binary_search(&id.as_str()).is_err()
                    && let Some(hook) = failing.iter().find(|h| **h == id)
                {
                    to_disable.push((
                        hook,
                        format!(
                            "every attempt failed for {} s (the limit is {} s)",
                            failing_for / 1000,
                            policy.disable_after.as_secs()
                        ),
                    ));
                }
            }
        }
        let mut entries: Vec<_> = recorded.iter().map(Recorded::audit_entry).collect();
        for (hook_id, reason) in &to_disable {
            let n = tx
                .execute(
                    "UPDATE webhooks SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE id = $1 AND enabled",
                    &[(*hook_id).into(), reason.into(), at.into()],
                )
                .await?;
            if n == 1 {
                tracing::warn!(webhook_id = %hook_id, %reason, "webhook subscription disabled");
                entries.push(NewAuditEntry {
                    actor: "system",
                    action: "webhook.disabled",
                    object_type: "webhook",
                    object_id: Some(hook_id),
                    source: None,
                    detail: serde_json::json!({ "reason": reason }),
                });
            }
        }
        let mut retries: Vec<_> = recorded
            .iter()
            .filter_map(|r| Some((r.id().to_owned(), Some(r.decision.next?))))
            .collect();
        let mut held = Vec::new();
        if !retries.is_empty() {
            // The retry of a subscription now disabled (just above, or by someone while
            // the attempt was in flight) is held instead of queued. The subscription's row
            // is locked (Postgres), so a concurrent enable, which releases held
            // deliveries, commits first or sees this one.
            let mut s =
                Statement::new("UPDATE deliveries SET status = 'held', next_attempt_at = NULL WHERE id IN ");
            s.list(retries.iter().map(|(id, _)| id.as_str()))
                .push(" AND webhook_id IN (SELECT id FROM webhooks WHERE NOT enabled")
                .push(tx.dialect().for_share)
                .push(") RETURNING id");
            held = tx.fetch_built::<(String,)>(s).await?;
            retries.retain(|(id, _)| !held.iter().any(|(h,)| h == id));
        }
        queue::push_deliveries(&mut tx, &retries).await?;
        for entry in entries.iter_mut().filter(|e| e.action == "delivery.attempt") {
            if entry.object_id.is_some_and(|id| held.iter().any(|(h,)| h == id)) {
                entry.detail["result"] = DeliveryStatus::Held.as_str().into();
            }
        }
        // Last, just before the commit: taking sequence numbers locks the audit counter
        // until then, and every transaction that audits waits for it.
        append_audit_batch(&mut tx, &entries, now).await?;
        tx.commit().await?;
        Ok(recorded
            .iter()
            .map(|r| {
                if held.iter().any(|(h,)| h == r.id()) {
                    DeliveryStatus::Held
                } else {
                    r.decision.status
                }
            })
            .collect())
    }

    /// Acknowledges delivery tasks that made no attempt (deleted; left `Failed` for a
    /// delivery that died without one), queuing a new task for each that has a time to
    /// try again, in one transaction.
    pub async fn finish_unattempted(&self, tasks: &[Unattempted]) -> Result<(), StoreError> {
        let again: Vec<_> = tasks
            .iter()
            .filter_map(|t| t.again_at.as_ref().map(|(id, at)| (id.to_string(), Some(*at))))
            .collect();
        let ends: Vec<_> = tasks
            .iter()
            .map(|t| {
                let end = t
                    .dead
                    .as_ref()
                    .map_or(TaskEnd::Done, |d| TaskEnd::Dead(d.as_str()));
                (t.task_id.as_str(), end)
            })
            .collect();
        let mut tx = self.begin().await?;
        queue::finish_delivery_tasks(&mut tx, &ends).await?;
        queue::push_deliveries(&mut tx, &again).await?;
        tx.commit().await?;
        Ok(())
    }
}
