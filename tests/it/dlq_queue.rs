//! The dead letter queue is apalis's failed-task storage: after deaths, replays (one and
//! bulk), an acknowledgement and a retention pass, the `Failed` delivery tasks are
//! exactly the deliveries `GET /v1/dlq` lists.

use crate::{helpers::*, on_both_backends};
use chrono::{Duration, Utc};
use cronflow_jobs::{clock::ManualClock, store::RetentionPolicy};
use serde_json::{Value, json};
use std::sync::Arc;

/// The delivery ids of the `Failed` delivery tasks, sorted.
async fn failed_tasks(app: &TestApp) -> Vec<String> {
    app.db
        .query_strings(&format!(
            "SELECT COALESCE(idempotency_key, '(no key)') FROM {} WHERE job_type = '{}' AND status = 'Failed' \
             ORDER BY idempotency_key",
            app.db.queue_table(),
            cronflow_jobs::queue::DELIVERY_QUEUE
        ))
        .await
}

/// The ids `GET /v1/dlq` lists, sorted.
async fn dlq(app: &TestApp) -> Vec<String> {
    let page: Value = app.get_json("/v1/dlq?limit=100").await;
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

async fn assert_same_set(app: &TestApp, step: &str, expected: usize) {
    let (tasks, listed) = (failed_tasks(app).await, dlq(app).await);
    assert_eq!(tasks, listed, "after {step}: the Failed tasks are the DLQ");
    assert_eq!(listed.len(), expected, "after {step}: {listed:?}");
}

/// Subscribes `url` to every job event; returns the subscription's id.
async fn subscribe(app: &TestApp, url: &str) -> String {
    let r = app
        .post(
            "/v1/webhooks",
            &json!({"url": url, "events": ["job.completed", "job.failed"]}),
        )
        .await;
    let (status, body) = status_and_json(r).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn delivered(app: &TestApp, id: &str) {
    eventually(60, "the replayed delivery to be delivered", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "delivered").then_some(())
    })
    .await;
}

async fn failed_tasks_are_the_dlq(backend: Backend) {
    // The clock stands still: each retry (1 s after its attempt, by the test settings'
    // schedule) is due at once, so the five retries take no waiting.
    let start = Utc::now();
    let app = TestApp::spawn_with_clock(backend, Arc::new(ManualClock::new(start))).await;
    // Two receivers answer after their delivery died (so replays deliver), two never do.
    let replay_one = TestReceiver::start(&[500, 500, 500, 500, 500, 500, 200]).await;
    let replay_bulk = TestReceiver::start(&[500, 500, 500, 500, 500, 500, 200]).await;
    let acknowledged = TestReceiver::start(&[500]).await;
    let pruned = TestReceiver::start(&[500]).await;
    let one_hook = subscribe(&app, &replay_one.url("/one")).await;
    let bulk_hook = subscribe(&app, &replay_bulk.url("/bulk")).await;
    let ack_hook = subscribe(&app, &acknowledged.url("/ack")).await;
    subscribe(&app, &pruned.url("/pruned")).await;
    let job = app.create_job(&shell_job("dies", "exit 3")).await;
    app.trigger(job["id"].as_str().unwrap()).await;

    let dead = eventually(120, "four dead deliveries", || async {
        let page: Value = app.try_get_json("/v1/dlq").await?;
        let items = page["items"].as_array()?.clone();
        (items.len() == 4).then_some(items)
    })
    .await;
    let of = |hook: &str| {
        dead.iter()
            .find(|d| d["webhook_id"] == hook)
            .and_then(|d| d["id"].as_str())
            .expect("a dead delivery of the subscription")
            .to_owned()
    };
    assert_same_set(&app, "four deaths", 4).await;

    let one = of(&one_hook);
    let r = app.post(&format!("/v1/dlq/{one}/replay"), &json!({})).await;
    assert_eq!(r.status(), 202);
    delivered(&app, &one).await;
    assert_same_set(&app, "a replay of one", 3).await;

    let ack = of(&ack_hook);
    assert_eq!(app.delete(&format!("/v1/dlq/{ack}")).await.status(), 204);
    assert_same_set(&app, "an acknowledgement", 2).await;

    let r = app
        .post("/v1/dlq/replay", &json!({"webhook_id": bulk_hook}))
        .await;
    let (status, body) = status_and_json(r).await;
    assert_eq!((status, &body["replayed"]), (200, &json!(1)), "{body}");
    delivered(&app, &of(&bulk_hook)).await;
    assert_same_set(&app, "a bulk replay", 1).await;

    // Past the dead deliveries' retention, the last one leaves the DLQ with its task.
    let later = start + Duration::days(91);
    app.store
        .prune(later, &RetentionPolicy::default())
        .await
        .expect("retention");
    assert_same_set(&app, "a retention pass", 0).await;
    assert_eq!(replay_one.requests().len(), 7, "the replay was sent once");
    app.stop().await;
}

on_both_backends!(failed_tasks_are_the_dlq);

/// Two tasks of one delivery (a copy handed out again after a slow worker's lease
/// lapsed) that both made its last attempt, recorded in one batch: the delivery dies once
/// and keeps one `Failed` task, and neither task is left behind. (Both failing it in one
/// transaction once broke the batch on the task key, and every task of the batch stayed
/// held by its live worker.)
async fn two_tasks_of_a_dying_delivery_leave_one_failed_task(backend: Backend) {
    use cronflow_jobs::domain::{AttemptOutcome, DeliveryPolicy};
    use cronflow_jobs::store::{AttemptRecord, DeliveryLoad, TaskStart};
    // One retry, an hour after the first attempt: its task waits, untouched by the worker.
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "1h")]).await;
    let receiver = TestReceiver::start(&[500]).await;
    subscribe(&app, &receiver.url("/never")).await;
    let job = app.create_job(&shell_job("dies", "exit 3")).await;
    app.trigger(job["id"].as_str().unwrap()).await;
    let id = eventually(60, "the first attempt to fail", || async {
        let page: Value = app.try_get_json("/v1/deliveries").await?;
        let d = page["items"].as_array()?.first()?.clone();
        (d["status"] == "retrying").then(|| d["id"].as_str().unwrap().to_owned())
    })
    .await;

    // The retry's task gets a copy (its id a ULID still: the last character changed).
    let (table, queue) = (app.db.queue_table(), cronflow_jobs::queue::DELIVERY_QUEUE);
    app.db
        .execute_sql(&format!(
            "INSERT INTO {table} (job, id, job_type, status, attempts, max_attempts, run_at, priority, metadata) \
             SELECT job, substr(id, 1, 25) || CASE WHEN substr(id, 26, 1) = 'Z' THEN 'Y' ELSE 'Z' END, \
             job_type, status, attempts, max_attempts, run_at, priority, metadata \
             FROM {table} WHERE job_type = '{queue}' AND status = 'Pending'"
        ))
        .await;
    let tasks = app
        .db
        .query_strings(&format!(
            "SELECT id FROM {table} WHERE job_type = '{queue}' ORDER BY id"
        ))
        .await;
    assert_eq!(tasks.len(), 2, "the retry's task and its copy: {tasks:?}");

    // Each task made the last attempt, and both are recorded together.
    let now = Utc::now();
    let delivery_id = cronflow_jobs::domain::DeliveryId::parse(&id).expect("a delivery id");
    let schedule = [std::time::Duration::from_secs(3600)];
    let policy = DeliveryPolicy {
        schedule: &schedule,
        disable_after: std::time::Duration::from_secs(5 * 86_400),
    };
    let start = TaskStart::first(delivery_id, tasks[0].clone());
    let loaded = app
        .store
        .begin_deliveries(&[start], &policy, now)
        .await
        .expect("load");
    let Some(DeliveryLoad::Attempt(work)) = loaded.into_iter().next() else {
        panic!("the delivery needs an attempt");
    };
    let failed = AttemptOutcome {
        started_at: now,
        duration_ms: 3,
        status_code: Some(500),
        error_kind: Some("http_5xx"),
        error: Some("HTTP 500".to_owned()),
        response_excerpt: None,
        retry_after: None,
    };
    let records: Vec<AttemptRecord> = tasks
        .iter()
        .map(|task_id| AttemptRecord {
            work: (*work).clone(),
            outcome: failed.clone(),
            task_id: task_id.clone(),
        })
        .collect();
    let statuses = app
        .store
        .record_attempts(&records, &policy, now)
        .await
        .expect("both attempts recorded in one transaction");
    assert!(statuses.iter().all(|s| s.as_str() == "dead"), "{statuses:?}");

    let left = app
        .db
        .query_strings(&format!("SELECT status FROM {table} WHERE job_type = '{queue}'"))
        .await;
    assert_eq!(left, vec!["Failed".to_owned()], "one Failed task, nothing else");
    assert_same_set(&app, "two tasks of one delivery died", 1).await;
    assert_eq!(failed_tasks(&app).await, vec![id]);
    app.stop().await;
}

on_both_backends!(two_tasks_of_a_dying_delivery_leave_one_failed_task);
