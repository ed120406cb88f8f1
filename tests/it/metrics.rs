//! `/metrics`: parses as Prometheus text, moves when runs and deliveries happen, and is
//! closed to non-loopback clients unless they have the metrics token.

use crate::{helpers::*, on_both_backends};
use serde_json::json;

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// Scrapes `/metrics` (as a loopback client, without a token), or `None` if the request
/// or the body fails (for `eventually`).
async fn scrape(app: &TestApp) -> Option<prometheus_parse::Scrape> {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(parse(&text))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref b) => b.last().map_or(0.0, |b| b.count),
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_move_when_runs_and_deliveries_happen() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let before = scrape(&app).await.expect("a scrape");
    assert_eq!(
        value(&before, "cronflow_runs_total", Some(("state", "completed"))),
        0.0
    );
    let receiver = TestReceiver::start(&[200]).await;
    app.post(
        "/v1/webhooks",
        &json!({"url": receiver.url("/m"), "events": ["job.completed"]}),
    )
    .await;
    let job = app.create_job(&shell_job("measured", "true")).await;
    let run = app.trigger(job["id"].as_str().unwrap()).await;
    app.finished_run(run["id"].as_str().unwrap(), 30).await;
    eventually(30, "the delivery", || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;
    let after = eventually(30, "the metrics to move", || async {
        let s = scrape(&app).await?;
        (value(
            &s,
            "cronflow_delivery_attempts_total",
            Some(("outcome", "delivered")),
        ) >= 1.0)
            .then_some(s)
    })
    .await;
    assert_eq!(
        value(&after, "cronflow_runs_total", Some(("state", "completed"))),
        1.0
    );
    assert!(value(&after, "cronflow_run_duration_seconds_count", None) >= 1.0);
    assert!(value(&after, "cronflow_event_to_delivered_seconds_count", None) >= 1.0);
    assert_eq!(value(&after, "cronflow_dlq_size", None), 0.0);
    assert!(
        after.samples.iter().any(|s| s.metric == "cronflow_queue_depth"),
        "queue depth exported"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_metrics_token_guards_the_endpoint() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("CRONFLOW_METRICS_TOKEN", "scrape-me-0123456789")],
    )
    .await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    app.stop().await;
}

/// A retry waiting in the database is a task waiting in the delivery queue, and the
/// queue-depth gauge counts it (on SQLite it reads apalis's partial index of pending
/// tasks; on both, a task being attempted is not waiting).
async fn the_queue_depth_counts_a_waiting_retry(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "1h")]).await;
    let receiver = TestReceiver::start(&[500]).await;
    let hook: serde_json::Value = app
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/down"), "events": ["job.completed"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    app.post(
        &format!("/v1/webhooks/{}/test", hook["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    let scrape = eventually(30, "the retry to wait", || async {
        let s = scrape(&app).await?;
        (value(&s, "cronflow_delivery_retries_waiting", None) == 1.0).then_some(s)
    })
    .await;
    let depth = |queue| value(&scrape, "cronflow_queue_depth", Some(("queue", queue)));
    assert_eq!(depth("cronflow-deliveries"), 1.0, "{backend:?}");
    assert_eq!(depth("cronflow-runs"), 0.0, "{backend:?}");
    assert_eq!(receiver.requests().len(), 1, "one attempt so far");
    app.stop().await;
}

on_both_backends!(the_queue_depth_counts_a_waiting_retry);
