//! Webhook delivery: signing, sending one attempt, and classifying its outcome.
//!
//! One queue task is one attempt ([`attempt_delivery`]). Its outcome and consequence
//! (delivered, retry scheduled, or dead) are stored atomically by
//! `Store::record_attempts`, batched with those of concurrent attempts into one
//! transaction (`crate::batch`); the reads an attempt needs are batched the same way.
//! That transaction also acknowledges the task (apalis's own acknowledgement is off for
//! deliveries: it cost a transaction of its own per batch), so a task is finished
//! exactly when its attempt is stored. A database that fails meanwhile is waited out
//! ([`stored`]): giving up would leave the task taken but never finished. A slow
//! or dead endpoint cannot hold more than
//! [`DeliveryConfig::per_endpoint`] requests in flight: a further attempt for it waits
//! up to [`SATURATED_WAIT`] for one of them to finish, and is otherwise put back on the
//! queue a second later instead of waiting in a worker slot, so other endpoints'
//! deliveries keep flowing.
//!
//! # Layout
//! - `signer`: `X-CronFlow-Signature` and Standard Webhooks signatures, and verifiers.
//! - this file: the delivery task handler (`handle_delivery`, wired by `crate::workers`)
//!   and the attempt. What does not live here: the retry policy (`domain::DeliveryPolicy`)
//!   and the SQL of recording attempts (`store`).

pub mod signer;

use crate::batch::{BatchError, Batcher};
use crate::drain::{Drain, on_own_task};
use crate::queue::{DELIVERY_QUEUE, DeliveryTask};
use crate::{
    Clock, Store, StoreError,
    domain::DeliveryId,
    domain::{AttemptOutcome, DeliveryPolicy, DeliveryStatus},
    metrics::Metrics,
    outbound,
    store::{AttemptRecord, DeliveryLoad, DeliveryWork, TaskStart, Unattempted},
};
use apalis::prelude::{Attempt, BoxDynError, Data, TaskId, WorkerContext};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::Semaphore;

/// Longest response excerpt kept per attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 4 * 1024;
/// How long an attempt waits before trying again when its endpoint is saturated.
const SATURATED_RETRY: Duration = Duration::from_secs(1);
/// How long an attempt waits for a slot of its saturated endpoint before it is put back
/// on the queue: long enough that a busy but healthy endpoint's attempts just queue up
/// behind each other, short enough that a hung endpoint's attempts hold worker slots
/// only briefly.
const SATURATED_WAIT: Duration = Duration::from_millis(250);

/// Batches of each kind (attempt reads, attempt records) served at once, on either
/// database. One, even on Postgres, where runs use two (`Store::write_lanes`): during a
/// backlog the machine's CPU is the limit, and a second lane only split the same work
/// into smaller batches, each paying its own round trips and commit, and made the two
/// wait for each other on the audit log's counter: with the delivery benchmark on
/// Postgres, one lane delivered more per second, and with a lower p99, than two.
const DELIVERY_LANES: usize = 1;

/// How deliveries behave.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Delays before each retry (default 30s, 2m, 10m, 1h, 6h).
    pub retry_schedule: Vec<Duration>,
    /// Per-attempt timeout (default 10 s).
    pub timeout: Duration,
    /// Allow loopback/private targets (and plain http).
    pub allow_private_targets: bool,
    /// Attempts in flight at once in this process (default 512).
    pub concurrency: usize,
    /// Attempts in flight at once to one subscription, in this process (default 128, a
    /// quarter of `concurrency`: a hung endpoint keeps three quarters of the slots free).
    pub per_endpoint: usize,
    /// A subscription whose every attempt failed for this long is disabled (default 5 days).
    pub disable_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_schedule: [30, 120, 600, 3600, 21600].map(Duration::from_secs).to_vec(),
            timeout: Duration::from_secs(10),
            allow_private_targets: false,
            concurrency: 512,
            per_endpoint: 128,
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl DeliveryConfig {
    /// The retry policy these settings make.
    pub fn policy(&self) -> DeliveryPolicy<'_> {
        DeliveryPolicy {
            schedule: &self.retry_schedule,
            disable_after: self.disable_after,
        }
    }
}

/// What delivery attempts share.
#[derive(Clone)]
pub(crate) struct DeliveryContext {
    pub(crate) metrics: Metrics,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<DeliveryConfig>,
    pub(crate) http: reqwest::Client,
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    loader: Batcher<TaskStart, DeliveryLoad>,
    recorder: Batcher<Arc<AttemptRecord>, DeliveryStatus>,
    finisher: Batcher<Unattempted, ()>,
}

impl DeliveryContext {
    pub(crate) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: DeliveryConfig,
        metrics: Metrics,
    ) -> reqwest::Result<Self> {
        let http = outbound::client(config.allow_private_targets, config.timeout)?;
        let config = Arc::new(config);
        let loader = {
            let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
            Batcher::spawn(DELIVERY_LANES, move |tasks: Arc<Vec<TaskStart>>| {
                let (store, now, config) = (store.clone(), clock.now(), config.clone());
                async move { store.begin_deliveries(&tasks, &config.policy(), now).await }
            })
        };
        let recorder = {
            let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
            Batcher::spawn(DELIVERY_LANES, move |batch: Arc<Vec<Arc<AttemptRecord>>>| {
                let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
                async move { store.record_attempts(&batch, &config.policy(), clock.now()).await }
            })
        };
        let finisher = {
            let store = store.clone();
            Batcher::spawn(1, move |batch: Arc<Vec<Unattempted>>| {
                let store = store.clone();
                async move {
                    store.finish_unattempted(&batch).await?;
                    Ok(vec![(); batch.len()])
                }
            })
        };
        Ok(DeliveryContext {
            metrics,
            clock,
            config,
            http,
            slots: Arc::default(),
            loader,
            recorder,
            finisher,
        })
    }

    fn slots_for(&self, webhook_id: &str) -> Arc<Semaphore> {
        let mut map = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(webhook_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_endpoint)))
            .clone()
    }
}

/// Why an attempt ended the delivery in the dead letter queue; returned as the task's
/// error so apalis keeps the task in its `Failed` state.
#[derive(Debug, thiserror::Error)]
#[error("delivery {0} exhausted its retries and is dead")]
pub struct DeadDelivery(pub String);

/// Errors of one attempt task.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    #[error(transparent)]
    Dead(#[from] DeadDelivery),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Runs queue task `task_id`, which names delivery `delivery_id`: one attempt of it
/// (`handed_out_before`: see [`TaskStart`]). A task naming no valid delivery is logged
/// and acknowledged without an attempt.
async fn attempt_task(
    ctx: &DeliveryContext,
    delivery_id: &str,
    task_id: String,
    handed_out_before: bool,
) -> Result<(), AttemptError> {
    match DeliveryId::parse(delivery_id) {
        Some(id) => {
            let start = TaskStart {
                delivery_id: id,
                task_id,
                handed_out_before,
            };
            attempt_delivery(ctx, start).await
        }
        None => {
            tracing::error!(delivery_id, "a delivery task names no valid delivery; dropped");
            let dropped = Unattempted {
                task_id,
                again_at: None,
                dead: None,
            };
            finish_unattempted(ctx, dropped).await
        }
    }
}

/// Makes one attempt of a delivery as its queue task, records it, schedules what
/// follows, and acknowledges the task.
async fn attempt_delivery(ctx: &DeliveryContext, start: TaskStart) -> Result<(), AttemptError> {
    let (id, task_id) = (&start.delivery_id, start.task_id.clone());
    let work = match stored(|| ctx.loader.call(start.clone())).await? {
        DeliveryLoad::Attempt(work) => *work,
        DeliveryLoad::Dead => {
            let died = Unattempted {
                task_id,
                again_at: None,
                dead: Some(id.clone()),
            };
            return finish_unattempted(ctx, died).await;
        }
        DeliveryLoad::Nothing => {
            let unattempted = Unattempted {
                task_id,
                again_at: None,
                dead: None,
            };
            return finish_unattempted(ctx, unattempted).await;
        }
    };
    let slots = ctx.slots_for(work.webhook.id.as_str());
    let Ok(Ok(permit)) = tokio::time::timeout(SATURATED_WAIT, slots.acquire()).await else {
        let later = ctx.clock.now() + chrono::Duration::from_std(SATURATED_RETRY).unwrap_or_default();
        let unattempted = Unattempted {
            task_id,
            again_at: Some((id.clone(), later)),
            dead: None,
        };
        return finish_unattempted(ctx, unattempted).await;
    };
    let outcome = send(ctx, &work).await;
    // The cap is on requests to the endpoint: the slot is free while the outcome is stored.
    drop(permit);
    let (created_at, hook_id) = (work.delivery.created_at, work.webhook.id.clone());
    let (error_kind, duration_ms) = (outcome.error_kind, outcome.duration_ms);
    let record = Arc::new(AttemptRecord {
        work,
        outcome,
        task_id,
    });
    let status = stored(|| ctx.recorder.call(record.clone())).await?;
    let since_event = (status == DeliveryStatus::Delivered)
        .then(|| (ctx.clock.now() - created_at).num_milliseconds() as f64 / 1000.0);
    ctx.metrics.attempt_finished(
        error_kind.unwrap_or("delivered"),
        duration_ms as f64 / 1000.0,
        since_event,
    );
    if status == DeliveryStatus::Dead {
        tracing::warn!(delivery_id = %id, webhook_id = %hook_id, "delivery is dead after its last retry");
        return Err(DeadDelivery(id.to_string()).into());
    }
    Ok(())
}

/// Acknowledges a task that makes no attempt (`Done`).
async fn finish_unattempted(ctx: &DeliveryContext, task: Unattempted) -> Result<(), AttemptError> {
    stored(|| ctx.finisher.call(task.clone())).await?;
    Ok(())
}

/// One delivery task: one attempt. The task is acknowledged by the attempt's own
/// transaction, not by apalis.
pub(crate) async fn handle_delivery(
    task: DeliveryTask,
    ctx: Data<Arc<DeliveryContext>>,
    drain: Data<Drain>,
    worker: WorkerContext,
    task_id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let task_id = task_id.to_string();
    // apalis counts this hand-out before the handler runs; a delivery task is pushed
    // with none, and only apalis's recovery of a stopped worker's tasks adds one.
    let handed_out_before = attempt.current() > 1;
    let Some(_started) = drain.admit_or_park(DELIVERY_QUEUE, &worker, &task_id).await else {
        return Ok(());
    };
    let ctx = Arc::clone(&ctx);
    let held = task_id.clone();
    let result =
        on_own_task(async move { attempt_task(&ctx, &task.delivery_id, task_id, handed_out_before).await })
            .await;
    if let Err(e) = &result
        && !matches!(e, AttemptError::Dead(_))
    {
        // Nothing was stored (the batch's transaction failed for a reason other than
        // the database being unreachable): the task is not acknowledged, so it goes
        // back to the queue now instead of staying held by this live worker.
        tracing::error!(error = %e, task_id = %held, "a delivery task failed; handing it back to the queue");
        drain.hand_back_task(DELIVERY_QUEUE, &worker, &held).await;
    }
    result.map_err(|e| Box::new(e) as BoxDynError)
}

/// The first wait of [`stored`] after a failed call; each further wait doubles, up to
/// [`STORE_RETRY_MAX`].
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait of [`stored`] between calls.
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Calls `call` (a batched read or write of the attempt) until it succeeds, as long as
/// it fails because the database is unreachable or busy (a restart, a lost connection):
/// the task is acknowledged only by what the attempt stores, so giving up would leave it
/// taken by this worker and unfinished until the worker stops. Any other error is
/// returned at once (the task is then handed out again after this worker stops).
async fn stored<T, F, Fut>(mut call: F) -> Result<T, BatchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BatchError>>,
{
    let mut wait = STORE_RETRY_FIRST;
    loop {
        match call().await {
            Err(e) if e.0.is_transient() => {
                tracing::warn!(error = %e.0, retry_in_ms = wait.as_millis() as u64, "the database failed a delivery's call; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(STORE_RETRY_MAX);
            }
            r => return r,
        }
    }
}

async fn send(ctx: &DeliveryContext, work: &DeliveryWork) -> AttemptOutcome {
    let now = ctx.clock.now();
    let started = Instant::now();
    let elapsed = || i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let fail =
        |kind: &'static str, error: String, status: Option<i32>, excerpt: Option<String>| AttemptOutcome {
            started_at: now,
            duration_ms: elapsed(),
            status_code: status,
            error_kind: Some(kind),
            error: Some(error),
            response_excerpt: excerpt,
            retry_after: None,
        };
    let url = match reqwest::Url::parse(&work.webhook.url) {
        Ok(u) => u,
        Err(e) => return fail("connect", format!("invalid URL: {e}"), None, None),
    };
    if let Err(e) = outbound::check_literal_host(&url, ctx.config.allow_private_targets) {
        return fail("ssrf_blocked", e.to_string(), None, None);
    }
    let body = work.payload.as_bytes();
    let id = work.delivery.id.as_str();
    let secrets = work.webhook.signing_secrets(now);
    let timestamp = now.timestamp();
    let mut req = ctx
        .http
        .post(url)
        .timeout(ctx.config.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("CronFlow-Webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-CronFlow-Event", &work.delivery.event_type)
        .header("X-CronFlow-Signature", signer::cronflow_signature(&secrets, body))
        .header("X-CronFlow-Idempotency-Key", id)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signer::standard_signature(&secrets, id, timestamp, body),
        );
    for (k, v) in &work.webhook.headers {
        req = req.header(k, v);
    }
    let exchange = async {
        let mut resp = req.body(work.payload.clone()).send().await?;
        let status = resp.status();
        let retry_after = [429, 503]
            .contains(&status.as_u16())
            .then(|| {
                resp.headers()
                    .get(reqwest::header::RETRY_AFTER)?
                    .to_str()
                    .ok()
                    .and_then(|v| parse_retry_after(v, now))
            })
            .flatten();
        let mut excerpt = Vec::new();
        while excerpt.len() < RESPONSE_EXCERPT_BYTES {
            match resp.chunk().await? {
                Some(c) => {
                    excerpt.extend_from_slice(&c[..c.len().min(RESPONSE_EXCERPT_BYTES - excerpt.len())])
                }
                None => break,
            }
        }
        Ok::<_, reqwest::Error>((
            status,
            String::from_utf8_lossy(&excerpt).into_owned(),
            retry_after,
        ))
    };
    match exchange.await {
        Ok((status, excerpt, _)) if status.is_success() => AttemptOutcome {
            started_at: now,
            duration_ms: elapsed(),
            status_code: Some(i32::from(status.as_u16())),
            error_kind: None,
            error: None,
            response_excerpt: Some(excerpt),
            retry_after: None,
        },
        Ok((status, excerpt, retry_after)) => {
            let kind = if status.is_redirection() {
                "redirect"
            } else {
                "http"
            };
            let msg = if status.is_redirection() {
                format!("HTTP {status}: redirects are not followed")
            } else {
                format!("HTTP {status}")
            };
            AttemptOutcome {
                retry_after,
                ..fail(kind, msg, Some(i32::from(status.as_u16())), Some(excerpt))
            }
        }
        Err(e) => {
            let (kind, text) = classify(&e);
            fail(kind, text, None, None)
        }
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

/// The error kind of a failed request, and its full text (reqwest's own omits causes).
fn classify(e: &reqwest::Error) -> (&'static str, String) {
    let (text, forbidden) = outbound::describe_error(e);
    let lower = text.to_ascii_lowercase();
    let kind = if e.is_timeout() {
        "timeout"
    } else if forbidden || lower.contains("is private, loopback") {
        "ssrf_blocked"
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        "dns"
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        "tls"
    } else {
        "connect"
    };
    (kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn failing(e: StoreError) -> BatchError {
        BatchError(Arc::new(e))
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_call_is_repeated_while_the_database_is_away_with_growing_waits() {
        let calls = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let got = stored(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(failing(StoreError::Timeout)),
                1 => Err(failing(StoreError::Database(sqlx::Error::PoolTimedOut))),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            started.elapsed(),
            STORE_RETRY_FIRST * 3,
            "waits of 100 ms, then 200 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_call_that_fails_for_good_is_not_repeated() {
        let calls = AtomicUsize::new(0);
        let got: Result<(), _> = stored(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(failing(StoreError::Corrupt("a bad row".into())))
        })
        .await;
        assert!(matches!(*got.unwrap_err().0, StoreError::Corrupt(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
