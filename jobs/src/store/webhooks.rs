//! Webhook subscriptions, and the fan-out of events to them.
//!
//! Signing secrets are stored sealed with the store's key (`domain::secret_box`, the
//! webhook's id as associated data): sealed on every write of a secret (create,
//! rotate), opened on every read of a whole subscription. The fan-out reads only the
//! filters, and the delivery path opens each subscription's secrets once per batch.

use super::{
    Change, ChangedBy, Store,
    db::{Statement, Tx},
    queue,
};
use crate::StoreError;
use crate::domain::{
    Cursor, DeliveryId, Environment, EventFilter, EventId, EventType, JobId, Page, PageRequest, SecretKey,
    Webhook, WebhookId, WebhookSecret, WebhookSpec, event::webhook_test_payload, secret_box,
    webhook::ROTATION_GRACE_HOURS,
};
use chrono::{DateTime, Duration, Utc};

macro_rules! webhook_columns {
    () => {
        "id, url, events, environment, job_ids, secret, previous_secret, previous_secret_until, \
         headers, description, enabled, disabled_reason, created_at, updated_at"
    };
}

/// The columns the fan-out reads: which events a subscription wants (no secret).
macro_rules! filter_columns {
    () => {
        "id, events, environment, job_ids"
    };
}

/// What a subscription wants: the columns of `filter_columns!`.
#[derive(sqlx::FromRow)]
pub(super) struct FilterRow {
    id: String,
    events: String,
    environment: Option<String>,
    job_ids: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    #[sqlx(flatten)]
    filter: FilterRow,
    url: String,
    /// Sealed (`domain::secret_box`), like `previous_secret`.
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<i64>,
    headers: String,
    description: String,
    enabled: bool,
    disabled_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

fn time(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

fn corrupt(id: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("webhook {id}: {what}"))
}

impl FilterRow {
    /// The subscription's id and filter.
    fn parse(self) -> Result<FanOutHook, StoreError> {
        let id = &self.id;
        let events: Vec<String> = serde_json::from_str(&self.events).map_err(|_| corrupt(id, "events"))?;
        let job_ids: Option<Vec<String>> = self
            .job_ids
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt(id, "job_ids"))?;
        let environment = self
            .environment
            .as_deref()
            .map(|e| Environment::parse(e).ok_or_else(|| corrupt(id, "environment")))
            .transpose()?;
        Ok(FanOutHook {
            id: WebhookId::parse(id).ok_or_else(|| corrupt(id, "id"))?,
            filter: EventFilter::parse(&events, environment, job_ids).map_err(|_| corrupt(id, "filter"))?,
            enabled: true,
        })
    }
}

/// The secret sealed in `stored` for the subscription `id`.
fn open_secret(key: &SecretKey, id: &str, stored: &str) -> Result<WebhookSecret, StoreError> {
    let plain = key.open(id, stored).map_err(|source| StoreError::SealedSecret {
        webhook_id: id.to_owned(),
        source,
    })?;
    WebhookSecret::parse(&plain).map_err(|_| corrupt(id, "secret"))
}

impl WebhookRow {
    /// The subscription, its secrets opened with `key`. A previous secret that does not
    /// open is left out (with a warning) rather than failing the read: it only signs
    /// beside the current one for a while, and leaving it out lets a rotation replace a
    /// current secret that does not open.
    fn open(self, key: &SecretKey) -> Result<Webhook, StoreError> {
        let id = self.filter.id.clone();
        let secret = open_secret(key, &id, &self.secret)?;
        let previous_secret = match (self.previous_secret, self.previous_secret_until) {
            (Some(s), Some(until)) => match open_secret(key, &id, &s) {
                Ok(previous) => Some((previous, time(until)?)),
                Err(e) => {
                    tracing::warn!(webhook_id = %id, error = %e, "the previous signing secret is left out");
                    None
                }
            },
            _ => None,
        };
        let FanOutHook {
            id: hook_id, filter, ..
        } = self.filter.parse()?;
        Ok(Webhook {
            id: hook_id,
            url: self.url,
            filter,
            secret,
            previous_secret,
            headers: serde_json::from_str(&self.headers).map_err(|_| corrupt(&id, "headers"))?,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
        })
    }
}

fn events_json(f: &EventFilter) -> String {
    serde_json::to_string(&f.events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).unwrap_or_default()
}

fn job_ids_json(f: &EventFilter) -> Option<String> {
    f.job_ids.as_ref().map(|ids| {
        serde_json::to_string(&ids.iter().map(JobId::as_str).collect::<Vec<_>>()).unwrap_or_default()
    })
}

/// A subscription as the fan-out sees it: which events it wants, and whether it is
/// enabled (a disabled one's deliveries are `held`). Without its secret, so fanning out
/// opens none.
pub(crate) struct FanOutHook {
    pub(crate) id: WebhookId,
    pub(crate) filter: EventFilter,
    pub(crate) enabled: bool,
}

/// Every subscription, read inside `tx` (for [`deliveries_for`]).
pub(crate) async fn fan_out_hooks(tx: &mut Tx) -> Result<Vec<FanOutHook>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        filter: FilterRow,
        enabled: bool,
    }
    let rows: Vec<Row> = tx
        .fetch_all(
            concat!("SELECT ", filter_columns!(), ", enabled FROM webhooks"),
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            let mut hook = r.filter.parse()?;
            hook.enabled = r.enabled;
            Ok(hook)
        })
        .collect()
}

/// A delivery to create: one event for one subscription.
pub(crate) struct NewDelivery<'a> {
    pub(crate) id: DeliveryId,
    pub(crate) event_id: &'a str,
    pub(crate) webhook_id: &'a str,
    pub(crate) kind: EventType,
    pub(crate) job_id: Option<&'a str>,
    /// For a disabled subscription: stored `held`, with no queue task.
    pub(crate) held: bool,
}

/// The deliveries of one event: one for every subscription of `hooks` (from
/// [`fan_out_hooks`]) whose filter matches it, `held` for a disabled one. `job_id` is
/// empty for an event about no job.
pub(crate) fn deliveries_for<'a>(
    hooks: &'a [FanOutHook],
    event_id: &'a str,
    kind: EventType,
    job_id: &'a str,
    environment: &str,
) -> impl Iterator<Item = NewDelivery<'a>> {
    hooks
        .iter()
        .filter(move |h| h.filter.matches(kind, job_id, environment))
        .map(move |h| NewDelivery {
            id: DeliveryId::generate(),
            event_id,
            webhook_id: h.id.as_str(),
            kind,
            job_id: Some(job_id).filter(|j| !j.is_empty()),
            held: !h.enabled,
        })
}

/// An event row to insert.
pub(crate) struct NewEventRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) job_id: Option<&'a str>,
    pub(crate) run_id: Option<&'a str>,
    pub(crate) kind: EventType,
    pub(crate) payload: String,
}

/// Stores `events` inside `tx` with multi-row inserts: the one way events enter the
/// outbox (a finishing run's, a published batch, a test event).
pub(crate) async fn insert_events(
    tx: &mut Tx,
    events: &[NewEventRow<'_>],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    /// Events per multi-row INSERT (6 parameters each, well under both databases' limits).
    const ROWS: usize = 500;
    let at = now.timestamp_millis();
    for chunk in events.chunks(ROWS) {
        let mut s =
            Statement::new("INSERT INTO events (id, job_id, run_id, event_type, payload, created_at) ");
        s.values(chunk, |row, e| {
            row.bind(e.id)
                .bind(e.job_id)
                .bind(e.run_id)
                .bind(e.kind.as_str())
                .bind(e.payload.as_str())
                .bind(at);
        });
        tx.run(s).await?;
    }
    Ok(())
}

/// Stores `deliveries` inside `tx` with multi-row inserts and queues a task for each
/// that is not held; returns how many were stored. The subscriptions a delivery would be
/// held for are read again first, locked (Postgres), so that a concurrent enable (which
/// releases held deliveries) or delete either commits first (and these go out, or are
/// not made) or waits for this transaction and then sees them.
pub(crate) async fn insert_deliveries(
    tx: &mut Tx,
    mut deliveries: Vec<NewDelivery<'_>>,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    if deliveries.iter().any(|d| d.held) {
        let mut held: Vec<&str> = deliveries
            .iter()
            .filter(|d| d.held)
            .map(|d| d.webhook_id)
            .collect();
        held.sort_unstable();
        held.dedup();
        tx.lock_delivery_gauge().await?;
        let mut s = Statement::new("SELECT id, enabled FROM webhooks WHERE id IN ");
        s.list(held.iter().copied())
            .push(" ORDER BY id")
            .push(tx.dialect().for_share);
        let now_enabled: std::collections::HashMap<String, bool> =
            tx.fetch_built::<(String, bool)>(s).await?.into_iter().collect();
        deliveries.retain_mut(|d| {
            if d.held {
                match now_enabled.get(d.webhook_id) {
                    Some(enabled) => d.held = !enabled,
                    None => return false,
                }
            }
            true
        });
    }
    let deliveries = &deliveries;
    /// Rows per multi-row INSERT (8 parameters each, well under both databases' limits).
    const ROWS: usize = 500;
    let at = now.timestamp_millis();
    for chunk in deliveries.chunks(ROWS) {
        let mut s = Statement::new(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, created_at, updated_at) ",
        );
        s.values(chunk, |row, d| {
            row.bind(d.id.as_str())
                .bind(d.event_id)
                .bind(d.webhook_id)
                .bind(d.kind.as_str())
                .bind(d.job_id)
                .bind(if d.held { "held" } else { "pending" })
                .bind(at)
                .bind(at);
        });
        tx.run(s).await?;
        let tasks: Vec<_> = chunk
            .iter()
            .filter(|d| !d.held)
            .map(|d| (d.id.to_string(), None))
            .collect();
        queue::push_deliveries(tx, &tasks).await?;
    }
    Ok(deliveries.len())
}

/// Deletes subscription `id`'s held deliveries (with the attempts they made before they
/// were held) inside `tx`; returns how many.
async fn delete_held(tx: &mut Tx, id: &WebhookId) -> Result<u64, StoreError> {
    tx.execute(
        "DELETE FROM delivery_attempts WHERE delivery_id IN \
         (SELECT id FROM deliveries WHERE webhook_id = $1 AND status = 'held')",
        &[id.as_str().into()],
    )
    .await?;
    tx.execute(
        "DELETE FROM deliveries WHERE webhook_id = $1 AND status = 'held'",
        &[id.as_str().into()],
    )
    .await
    .map_err(Into::into)
}

impl Store {
    /// Stores a new subscription with `secret`.
    pub async fn create_webhook(
        &self,
        spec: WebhookSpec,
        secret: WebhookSecret,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Webhook, StoreError> {
        let hook = Webhook {
            id: WebhookId::generate(),
            url: spec.url,
            filter: spec.filter,
            secret,
            previous_secret: None,
            headers: spec.headers,
            description: spec.description,
            enabled: spec.enabled,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.begin().await?;
        tx.execute(
            concat!(
                "INSERT INTO webhooks (",
                webhook_columns!(),
                ") ",
                "VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8, $9, NULL, $10, $10)"
            ),
            &[
                hook.id.as_str().into(),
                (&hook.url).into(),
                events_json(&hook.filter).into(),
                hook.filter.environment.map(|e| e.as_str()).into(),
                job_ids_json(&hook.filter).into(),
                self.secret_key()
                    .seal(hook.id.as_str(), hook.secret.expose())
                    .into(),
                serde_json::to_string(&hook.headers).unwrap_or_default().into(),
                (&hook.description).into(),
                hook.enabled.into(),
                now.timestamp_millis().into(),
            ],
        )
        .await?;
        by.record(&mut tx, "webhook", Some(hook.id.as_str()), now).await?;
        tx.commit().await?;
        Ok(hook)
    }

    /// The subscription with this id.
    pub async fn get_webhook(&self, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
        let row: Option<WebhookRow> = self
            .reader()
            .fetch_optional(
                concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id = $1"),
                &[id.as_str().into()],
            )
            .await?;
        row.map(|r| r.open(self.secret_key())).transpose()
    }

    /// Subscriptions in creation order.
    pub async fn list_webhooks(&self, page: &PageRequest) -> Result<Page<Webhook>, StoreError> {
        let (after_ms, after_id) = page
            .after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<WebhookRow> = self
            .reader()
            .fetch_all(
                concat!(
                    "SELECT ",
                    webhook_columns!(),
                    " FROM webhooks ",
                    "WHERE created_at > $1 OR (created_at = $1 AND id > $2) ORDER BY created_at, id LIMIT $3"
                ),
                &[
                    after_ms.into(),
                    after_id.into(),
                    (i64::from(page.limit) + 1).into(),
                ],
            )
            .await?;
        let items = rows
            .into_iter()
            .map(|r| r.open(self.secret_key()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, page.limit, |w| {
            Cursor::after(w.created_at, w.id.as_str())
        }))
    }

    /// Replaces a subscription's definition; `None` if there is no such subscription.
    /// Enabling it clears the reason it was disabled and releases its held deliveries
    /// (`pending` again with a whole retry budget, as a replay gets; their tasks queued in
    /// the order the deliveries were created), unless `discard_held`, which deletes them instead (enabled or not). The audit entry
    /// says how many were released or discarded.
    pub async fn update_webhook(
        &self,
        id: &WebhookId,
        spec: WebhookSpec,
        discard_held: bool,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Option<Webhook>, StoreError> {
        let at = now.timestamp_millis();
        let mut tx = self.begin().await?;
        tx.lock_delivery_gauge().await?;
        let n = tx
            .execute(
                "UPDATE webhooks SET url = $2, events = $3, environment = $4, job_ids = $5, headers = $6, \
                 description = $7, enabled = $8, \
                 disabled_reason = CASE WHEN $8 THEN NULL ELSE disabled_reason END, \
                 failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END, updated_at = $9 WHERE id = $1",
                &[
                    id.as_str().into(),
                    (&spec.url).into(),
                    events_json(&spec.filter).into(),
                    spec.filter.environment.map(|e| e.as_str()).into(),
                    job_ids_json(&spec.filter).into(),
                    serde_json::to_string(&spec.headers).unwrap_or_default().into(),
                    (&spec.description).into(),
                    spec.enabled.into(),
                    at.into(),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let mut by = by.clone();
        if discard_held {
            let discarded = delete_held(&mut tx, id).await?;
            by.add_detail("held_discarded", discarded.into());
        } else if spec.enabled {
            let mut released: Vec<(String, i64)> = tx
                .fetch_all(
                    "UPDATE deliveries SET status = 'pending', round_attempts = 0, updated_at = $2 \
                     WHERE webhook_id = $1 AND status = 'held' RETURNING id, created_at",
                    &[id.as_str().into(), at.into()],
                )
                .await?;
            if !released.is_empty() {
                released.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                let tasks: Vec<_> = released.iter().map(|(id, _)| (id.clone(), None)).collect();
                queue::push_deliveries(&mut tx, &tasks).await?;
                by.add_detail("held_released", released.len().into());
            }
        }
        by.record(&mut tx, "webhook", Some(id.as_str()), now).await?;
        tx.commit().await?;
        if by.detail.get("held_released").is_some() {
            self.changed(Change::DeliveriesPushed);
        }
        self.get_webhook(id).await
    }

    /// Deletes a subscription; `false` if there was none. Its pending deliveries end
    /// `dead` at their next attempt; its held ones, which have nowhere to go, are deleted
    /// with it.
    pub async fn delete_webhook(
        &self,
        id: &WebhookId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_delivery_gauge().await?;
        let n = tx
            .execute("DELETE FROM webhooks WHERE id = $1", &[id.as_str().into()])
            .await?;
        if n > 0 {
            delete_held(&mut tx, id).await?;
            by.record(&mut tx, "webhook", Some(id.as_str()), now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Makes `new` the signing secret; the current one keeps signing beside it for 24 h.
    pub async fn rotate_webhook_secret(
        &self,
        id: &WebhookId,
        new: WebhookSecret,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Option<Webhook>, StoreError> {
        let until = now + Duration::hours(ROTATION_GRACE_HOURS);
        let mut tx = self.begin().await?;
        let n = tx
            .execute(
                "UPDATE webhooks SET previous_secret = secret, previous_secret_until = $3, secret = $2, updated_at = $4 \
                 WHERE id = $1",
                &[
                    id.as_str().into(),
                    self.secret_key().seal(id.as_str(), new.expose()).into(),
                    until.timestamp_millis().into(),
                    now.timestamp_millis().into(),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        by.record(&mut tx, "webhook", Some(id.as_str()), now).await?;
        tx.commit().await?;
        self.get_webhook(id).await
    }

    /// Sends a `webhook.test` event to one subscription: stores the event and its
    /// delivery, and queues the delivery. `None` if there is no such subscription.
    pub async fn send_test_event(
        &self,
        id: &WebhookId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryId>, StoreError> {
        let Some(hook) = self.get_webhook(id).await? else {
            return Ok(None);
        };
        let event_id = EventId::generate();
        let delivery_id = DeliveryId::generate();
        let payload = webhook_test_payload(&hook.id, hook.filter.environment.unwrap_or_default(), now);
        let mut tx = self.begin().await?;
        let event = NewEventRow {
            id: event_id.as_str(),
            job_id: None,
            run_id: None,
            kind: EventType::WebhookTest,
            payload: payload.to_string(),
        };
        insert_events(&mut tx, std::slice::from_ref(&event), now).await?;
        tx.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, 'pending', $5, $5)",
            &[
                delivery_id.as_str().into(),
                event_id.as_str().into(),
                hook.id.as_str().into(),
                EventType::WebhookTest.as_str().into(),
                now.timestamp_millis().into(),
            ],
        )
        .await?;
        queue::push_deliveries(&mut tx, &[(delivery_id.to_string(), None)]).await?;
        by.record(&mut tx, "webhook", Some(hook.id.as_str()), now).await?;
        tx.commit().await?;
        self.changed(Change::DeliveriesPushed);
        Ok(Some(delivery_id))
    }

    /// Stores `events` and fans each out to the subscriptions that match it, in one
    /// transaction with multi-row inserts; returns how many deliveries were created
    /// (queued, or held for a disabled subscription).
    /// Job results go through the run's own transaction instead (`finish_run`); this is
    /// for events made elsewhere (the delivery benchmark publishes its load with it).
    pub async fn publish_events(&self, events: &[NewEvent], now: DateTime<Utc>) -> Result<usize, StoreError> {
        let ids: Vec<EventId> = events.iter().map(|_| EventId::generate()).collect();
        let mut tx = self.begin().await?;
        let hooks = fan_out_hooks(&mut tx).await?;
        let deliveries: Vec<NewDelivery<'_>> = events
            .iter()
            .zip(&ids)
            .flat_map(|(e, id)| {
                let job = e.job_id.as_ref().map_or("", JobId::as_str);
                deliveries_for(&hooks, id.as_str(), e.kind, job, &e.environment)
            })
            .collect();
        let rows: Vec<NewEventRow<'_>> = events
            .iter()
            .zip(&ids)
            .map(|(e, id)| NewEventRow {
                id: id.as_str(),
                job_id: e.job_id.as_ref().map(JobId::as_str),
                run_id: None,
                kind: e.kind,
                payload: e.payload.to_string(),
            })
            .collect();
        insert_events(&mut tx, &rows, now).await?;
        let queued = insert_deliveries(&mut tx, deliveries, now).await?;
        tx.commit().await?;
        if queued > 0 {
            self.changed(Change::DeliveriesPushed);
        }
        Ok(queued)
    }

    /// The subscriptions with these ids that exist, by id; each one's secrets opened
    /// once for the whole batch. A subscription whose secret does not open is there as
    /// its [`StoreError::SealedSecret`], so that it fails only its own deliveries.
    pub(super) async fn webhooks_by_id(
        &self,
        ids: &[WebhookId],
    ) -> Result<std::collections::HashMap<String, Result<Webhook, StoreError>>, StoreError> {
        let ids: Vec<&str> = ids.iter().map(WebhookId::as_str).collect();
        let rows: Vec<WebhookRow> = self
            .select_by_ids(
                concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id IN "),
                &ids,
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let id = r.filter.id.clone();
                match r.open(self.secret_key()) {
                    Ok(hook) => Ok((id, Ok(hook))),
                    Err(e @ StoreError::SealedSecret { .. }) => Ok((id, Err(e))),
                    Err(e) => Err(e),
                }
            })
            .collect()
    }
}

impl Store {
    /// Prepares the stored signing secrets for this store's key, in one transaction:
    /// first checks that the key opens one sealed secret (the most recently written), so
    /// that a store given another key than the one that sealed them fails here, at
    /// start-up, rather than at each delivery; then seals the secrets still in clear
    /// (written by a CronFlow older than sealing; a migration cannot do it, as it has no
    /// key). Returns how many subscriptions it sealed. Idempotent, and safe beside
    /// another process doing the same: each row is rewritten only if it still holds the
    /// clear text read.
    pub async fn check_key_and_seal_secrets(&self) -> Result<usize, StoreError> {
        #[derive(sqlx::FromRow)]
        struct StoredSecrets {
            id: String,
            secret: String,
            previous_secret: Option<String>,
        }
        let key = self.secret_key();
        let mut tx = self.begin().await?;
        let rows: Vec<StoredSecrets> = tx
            .fetch_all(
                "SELECT id, secret, previous_secret FROM webhooks ORDER BY updated_at DESC, id",
                &[],
            )
            .await?;
        if let Some(sample) = rows.iter().find(|r| secret_box::is_sealed(&r.secret)) {
            key.open(&sample.id, &sample.secret)
                .map_err(|source| StoreError::SealedSecret {
                    webhook_id: sample.id.clone(),
                    source,
                })?;
        }
        let mut clear: Vec<&StoredSecrets> = rows
            .iter()
            .filter(|r| {
                !secret_box::is_sealed(&r.secret)
                    || r.previous_secret
                        .as_deref()
                        .is_some_and(|p| !secret_box::is_sealed(p))
            })
            .collect();
        // One order for every process, so two of them sealing at once cannot deadlock.
        clear.sort_by(|a, b| a.id.cmp(&b.id));
        let seal = |text: &str, id: &str| {
            if secret_box::is_sealed(text) {
                text.to_owned()
            } else {
                key.seal(id, text)
            }
        };
        let mut sealed = 0;
        for r in clear {
            sealed += tx
                .execute(
                    "UPDATE webhooks SET secret = $2, previous_secret = $3 WHERE id = $1 AND secret = $4",
                    &[
                        r.id.as_str().into(),
                        seal(&r.secret, &r.id).into(),
                        r.previous_secret.as_deref().map(|p| seal(p, &r.id)).into(),
                        r.secret.as_str().into(),
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(usize::try_from(sealed).unwrap_or(usize::MAX))
    }
}

/// An event for [`Store::publish_events`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its type.
    pub kind: EventType,
    /// The job it is about, if any (subscriptions' job filters match on it).
    pub job_id: Option<JobId>,
    /// The environment (subscriptions' environment filters match on it).
    pub environment: String,
    /// The payload, exactly as subscribers receive it.
    pub payload: serde_json::Value,
}
