//! `/metrics`: parses as Prometheus text, moves when runs and deliveries happen, and is
//! closed to non-loopback clients unless they have the metrics token (an IPv4 loopback
//! client of a dual-stack listener is a loopback client).

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

/// On a dual-stack listener (`[::]`) an IPv4 client arrives as `::ffff:127.0.0.1`; it is
/// still a loopback client, and the audit log records it as `127.0.0.1`.
#[tokio::test]
async fn a_dual_stack_listener_sees_an_ipv4_loopback_client_as_127_0_0_1() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("CRONFLOW_LISTEN", "[::]:0")]).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let over_ipv4 = format!("http://127.0.0.1:{port}");
    let r = app
        .client
        .get(format!("{over_ipv4}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = app
        .client
        .post(format!("{over_ipv4}/v1/jobs"))
        .bearer_auth(&app.admin_token)
        .json(&job_body("seen-over-ipv4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let audit = app
        .client
        .get(format!("{over_ipv4}/v1/audit"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let entry: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["action"] == "POST /v1/jobs")
        .expect("the job's creation is on record");
    assert_eq!(entry["source"], "127.0.0.1", "{entry}");
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

/// The deliveries' gauges (retries waiting, DLQ size) are kept by the database as
/// deliveries change, and stay equal to a count of the deliveries after inserts of every
/// status, retries, deaths, a replay, an acknowledgement, a deletion and a retention
/// pass.
async fn the_delivery_gauges_match_a_count_after_every_change(backend: Backend) {
    use cronflow_jobs::domain::{DeliveryId, WebhookId};
    use cronflow_jobs::store::{ChangedBy, ReplayFilter, RetentionPolicy};
    // Retries wait an hour, so the workers leave replayed deliveries' state alone long
    // enough for a count (they are compared until they agree, in case).
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "1h")]).await;
    let check = |what: &'static str| {
        let app = &app;
        async move {
            eventually(10, what, || async {
                let g = app.store.gauges().await.expect("gauges");
                let counted = |sql: &str| {
                    let sql = format!("SELECT CAST(COUNT(*) AS TEXT) FROM deliveries WHERE {sql}");
                    async move { app.db.query_strings(&sql).await[0].parse::<i64>().unwrap() }
                };
                let retrying = counted("status = 'retrying'").await;
                let dead = counted("dead_at IS NOT NULL AND NOT acknowledged").await;
                (g.retries_waiting == retrying && g.dlq_size == dead).then_some((retrying, dead))
            })
            .await
        }
    };
    assert_eq!(check("the gauges of an empty store").await, (0, 0));
    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<String> = (0..40)
        .map(|i| {
            let (status, next, dead_at, ack) = match i % 5 {
                0 | 1 => ("pending", "NULL".to_owned(), "NULL".to_owned(), "FALSE"),
                2 => (
                    "retrying",
                    (now + 3_600_000).to_string(),
                    "NULL".to_owned(),
                    "FALSE",
                ),
                3 => ("dead", "NULL".to_owned(), now.to_string(), "FALSE"),
                _ => ("dead", "NULL".to_owned(), now.to_string(), "TRUE"),
            };
            format!(
                "('dlv_g{i:04}', 'evt_g{i}', 'wh_g{}', 'job.failed', NULL, '{status}', 1, 1, {next}, {ack}, \
                 {}, {}, {dead_at})",
                i % 2,
                now - 1000 + i,
                now
            )
        })
        .collect();
    app.db
        .execute_sql(&format!(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, attempts, \
             round_attempts, next_attempt_at, acknowledged, created_at, updated_at, dead_at) VALUES {}",
            rows.join(", ")
        ))
        .await;
    assert_eq!(check("inserts").await, (8, 8));
    // Pending deliveries fail and wait for a retry; waiting ones die.
    app.db
        .execute_sql(&format!(
            "UPDATE deliveries SET status = 'retrying', next_attempt_at = {} WHERE id IN ('dlv_g0000', 'dlv_g0001')",
            now + 3_600_000
        ))
        .await;
    assert_eq!(check("retries").await, (10, 8));
    app.db
        .execute_sql(&format!(
            "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, dead_at = {now} \
             WHERE status = 'retrying' AND webhook_id = 'wh_g0'"
        ))
        .await;
    let (retrying, dead) = check("deaths").await;
    assert_eq!(retrying + dead, 18);
    assert!(dead > 8);
    let replayed = app
        .store
        .replay_dead(
            None,
            &ReplayFilter {
                webhook_id: WebhookId::parse("wh_g1"),
                ..Default::default()
            },
            &ChangedBy::system("test"),
            chrono::Utc::now(),
        )
        .await
        .expect("replay");
    assert!(replayed > 0);
    check("a replay").await;
    let acked = DeliveryId::parse("dlv_g0008").unwrap();
    assert!(
        app.store
            .acknowledge_dead(&acked, &ChangedBy::system("test"), chrono::Utc::now())
            .await
            .unwrap()
    );
    check("an acknowledgement").await;
    app.db
        .execute_sql("DELETE FROM deliveries WHERE id IN ('dlv_g0000', 'dlv_g0002')")
        .await;
    check("a deletion").await;
    app.store
        .prune(
            chrono::Utc::now() + chrono::Duration::days(400),
            &RetentionPolicy::default(),
        )
        .await
        .expect("retention");
    let after = check("a retention pass").await;
    assert_eq!(after.1, 0, "the DLQ is pruned past its retention");
    app.stop().await;
}

on_both_backends!(the_delivery_gauges_match_a_count_after_every_change);
