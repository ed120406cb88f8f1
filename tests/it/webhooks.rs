//! Webhook delivery: signatures (by the product page's recipe and by the official
//! Standard Webhooks library), retries and the DLQ, replay, rotation, durability across
//! restarts, the SSRF guard and isolation from a hung endpoint.

use crate::{helpers::*, on_both_backends};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeSet;

/// Subscribes `url` to every job event and returns (id, secret).
async fn subscribe(app: &TestApp, url: &str) -> (String, String) {
    let r = app
        .post(
            "/v1/webhooks",
            &json!({"url": url, "events": ["job.completed", "job.failed", "job.timed_out"]}),
        )
        .await;
    let (status, body) = status_and_json(r).await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn run_once(app: &TestApp, script: &str) -> String {
    let job = app.create_job(&shell_job("hooked", script)).await;
    let run = app.trigger(job["id"].as_str().unwrap()).await;
    run["id"].as_str().unwrap().to_owned()
}

/// Triggers `runs` runs of one `true` job that allows overlap, so their events (and
/// deliveries) come as fast as the worker finishes them.
async fn run_many(app: &TestApp, runs: usize) {
    let mut body = shell_job("many", "true");
    body["overlap_policy"] = json!("allow");
    let job = app.create_job(&body).await;
    for _ in 0..runs {
        app.trigger(job["id"].as_str().unwrap()).await;
    }
}

/// The product page's recipe: hex HMAC-SHA256 of the raw body keyed with the secret.
fn recipe_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies with the official `standardwebhooks` Python package.
fn verify_with_python(secret: &str, seen: &Seen) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &seen.body).unwrap();
    let script = "import sys, json\nfrom standardwebhooks.webhooks import Webhook\n\
        h = json.loads(sys.argv[2])\nWebhook(sys.argv[1]).verify(open(sys.argv[3], 'rb').read(), h)\nprint('ok')";
    let headers = json!({
        "webhook-id": seen.headers["webhook-id"],
        "webhook-timestamp": seen.headers["webhook-timestamp"],
        "webhook-signature": seen.headers["webhook-signature"],
    });
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret, &headers.to_string(), body.to_str().unwrap()])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn a_delivery_is_signed_by_both_recipes_and_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let (hook_id, secret) = subscribe(&app, &receiver.url("/hooks")).await;
    assert!(secret.starts_with("whsec_"));
    let run_id = run_once(&app, "echo done").await;
    let seen = eventually(30, "the delivery", || async {
        receiver.requests().into_iter().next()
    })
    .await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert!(
        seen.headers["user-agent"].starts_with("CronFlow-Webhooks/"),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["x-cronflow-event"], "job.completed");
    assert_eq!(
        seen.headers["x-cronflow-signature"],
        recipe_signature(&secret, &seen.body),
        "the product page's recipe"
    );
    let id = &seen.headers["x-cronflow-idempotency-key"];
    assert!(id.starts_with("dlv_"));
    assert_eq!(&seen.headers["webhook-id"], id);
    let ts: i64 = seen.headers["webhook-timestamp"].parse().unwrap();
    assert!(
        (ts - chrono::Utc::now().timestamp()).abs() < 60,
        "a current timestamp"
    );
    let now = chrono::Utc::now().timestamp();
    cronflow_jobs::delivery::signer::verify_standard(
        &secret,
        id,
        &seen.headers["webhook-timestamp"],
        &seen.headers["webhook-signature"],
        &seen.body,
        now,
    )
    .expect("our own verifier accepts it");
    if python_modules_available(&["standardwebhooks"]) {
        verify_with_python(&secret, &seen).expect("the official Standard Webhooks library accepts it");
        let mut forged = seen.clone();
        forged.body = b"{\"event\":\"job.completed\"}".to_vec();
        assert!(
            verify_with_python(&secret, &forged).is_err(),
            "and refuses a changed body"
        );
    }
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 5, "{body}");
    assert_eq!(body["event"], "job.completed");
    assert_eq!(body["data"]["run_id"], run_id.as_str());

    // The receiver answered; the attempt is recorded a moment later.
    let delivery = eventually(30, "the delivery to be recorded", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["webhook_id"], hook_id.as_str());
    let attempts = delivery["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["response_excerpt"], "status 200");
    app.stop().await;
}

async fn six_failed_attempts_make_a_dead_delivery_that_replays_with_the_same_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[503, 500, 503, 404, 503, 503, 200]).await;
    subscribe(&app, &receiver.url("/flaky")).await;
    run_once(&app, "exit 4").await;
    let dead = eventually(90, "the delivery to be dead", || async {
        let dlq: Value = app.try_get_json("/v1/dlq").await?;
        dlq["items"].as_array()?.first().cloned()
    })
    .await;
    let id = dead["id"].as_str().unwrap().to_owned();
    assert_eq!(dead["status"], "dead");
    let detail: Value = app.get_json(&format!("/v1/deliveries/{id}")).await;
    let attempts = detail["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 6, "the first attempt and five retries: {detail}");
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [503, 500, 503, 404, 503, 503]);
    let starts: Vec<chrono::DateTime<chrono::Utc>> = attempts
        .iter()
        .map(|a| a["started_at"].as_str().unwrap().parse().unwrap())
        .collect();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::milliseconds(1000),
            "retries wait the configured 1 s: {starts:?}"
        );
    }
    assert_eq!(receiver.requests().len(), 6, "nothing after the last retry");

    let r = app.post(&format!("/v1/dlq/{id}/replay"), &json!({})).await;
    assert_eq!(r.status(), 202);
    eventually(30, "the replay to be delivered", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "delivered").then_some(())
    })
    .await;
    let seen = receiver.requests();
    assert_eq!(seen.len(), 7);
    assert!(
        seen.iter().all(|s| s.headers["x-cronflow-idempotency-key"] == id),
        "one key for every attempt and the replay"
    );
    let dlq: Value = app.get_json("/v1/dlq").await;
    assert!(dlq["items"].as_array().unwrap().is_empty());

    // Two more dead deliveries: one acknowledged (it leaves the DLQ, nothing is sent
    // again), the other replayed in bulk by its subscription (the same key again).
    let replayed = TestReceiver::start(&[500, 500, 500, 500, 500, 500, 200]).await;
    let acknowledged = TestReceiver::start(&[500]).await;
    let (replay_hook, _) = subscribe(&app, &replayed.url("/bulk")).await;
    let (ack_hook, _) = subscribe(&app, &acknowledged.url("/ack")).await;
    run_once(&app, "exit 5").await;
    let dead = eventually(90, "two dead deliveries", || async {
        let dlq: Value = app.try_get_json("/v1/dlq").await?;
        let items = dlq["items"].as_array()?.clone();
        (items.len() == 2).then_some(items)
    })
    .await;
    let of = |hook: &str| {
        dead.iter()
            .find(|d| d["webhook_id"] == hook)
            .and_then(|d| d["id"].as_str())
            .unwrap()
            .to_owned()
    };
    let (replay_id, ack_id) = (of(&replay_hook), of(&ack_hook));
    assert_eq!(app.delete(&format!("/v1/dlq/{ack_id}")).await.status(), 204);
    let dlq: Value = app.get_json("/v1/dlq").await;
    let listed: Vec<&str> = dlq["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(listed, [replay_id.as_str()], "the acknowledged one left the DLQ");

    let r = app
        .post("/v1/dlq/replay", &json!({"webhook_id": replay_hook}))
        .await;
    let (status, body) = status_and_json(r).await;
    assert_eq!((status, &body["replayed"]), (200, &json!(1)), "{body}");
    eventually(30, "the bulk replay to be delivered", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{replay_id}")).await?;
        (d["status"] == "delivered").then_some(())
    })
    .await;
    let seen = replayed.requests();
    assert_eq!(seen.len(), 7);
    assert!(
        seen.iter()
            .all(|s| s.headers["x-cronflow-idempotency-key"] == replay_id),
        "the bulk replay keeps the key"
    );
    let ack: Value = app.get_json(&format!("/v1/deliveries/{ack_id}")).await;
    assert_eq!(ack["status"], "dead", "{ack}");
    assert_eq!(
        acknowledged.requests().len(),
        6,
        "an acknowledged delivery is not sent again"
    );
    let dlq: Value = app.get_json("/v1/dlq").await;
    assert!(dlq["items"].as_array().unwrap().is_empty());

    // CronFlow acknowledges delivery tasks itself: every task has ended, the row of each
    // that did its work deleted. Each death left its task `Failed` (the DLQ), and the
    // replays took those tasks back and the acknowledgement deleted its one, so with the
    // DLQ empty no task is left.
    let ends = delivery_task_statuses(&app.db).await;
    assert!(ends.is_empty(), "{ends:?}");
    app.stop().await;
}

/// The statuses of every delivery queue task, sorted.
async fn delivery_task_statuses(db: &TestDb) -> Vec<String> {
    db.query_strings(&format!(
        "SELECT status FROM {} WHERE job_type = '{}' ORDER BY status",
        db.queue_table(),
        cronflow_jobs::queue::DELIVERY_QUEUE
    ))
    .await
}

async fn a_rotated_secret_signs_beside_the_old_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let (hook_id, old) = subscribe(&app, &receiver.url("/rotating")).await;
    let r = app
        .post(&format!("/v1/webhooks/{hook_id}/rotate-secret"), &json!({}))
        .await;
    let (status, rotated) = status_and_json(r).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let r = app
        .post(&format!("/v1/webhooks/{hook_id}/test"), &json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let seen = eventually(30, "the test event", || async {
        receiver.requests().into_iter().next()
    })
    .await;
    let header = &seen.headers["x-cronflow-signature"];
    assert_eq!(header.split(',').count(), 2, "{header}");
    for secret in [&old, &new] {
        assert!(
            header
                .split(',')
                .any(|e| e == recipe_signature(secret, &seen.body)),
            "{secret} signs"
        );
    }
    assert_eq!(seen.headers["webhook-signature"].split(' ').count(), 2);
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["event"], "webhook.test");
    assert_eq!(body.as_object().unwrap().len(), 5);
    let got: Value = app.get_json(&format!("/v1/webhooks/{hook_id}")).await;
    assert!(got.get("secret").is_none(), "the secret is not shown again");
    app.stop().await;
}

async fn a_redirect_is_not_followed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[302]).await;
    let (hook_id, _) = subscribe(&app, &receiver.url("/moved")).await;
    let r = app
        .post(&format!("/v1/webhooks/{hook_id}/test"), &json!({}))
        .await;
    let sent: Value = r.json().await.unwrap();
    let id = sent["delivery_id"].as_str().unwrap();
    let d = eventually(30, "the first attempt", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["attempts"].as_i64()? >= 1).then_some(d)
    })
    .await;
    assert_eq!(d["attempt_history"][0]["error_kind"], "redirect", "{d}");
    assert_eq!(d["attempt_history"][0]["status_code"], 302);
    assert_eq!(receiver.requests().len(), 1, "the Location was not requested");
    app.stop().await;
}

/// With 8 delivery slots and at most 4 per endpoint, a hung endpoint's 40 attempts
/// would fill every slot without the cap. Its attempts must stay hung for the whole test
/// (a loaded machine may take longer than the default 10 s timeout to deliver the 40
/// events; a timed-out attempt's retry would be a fifth request, not a fifth slot).
async fn a_hung_endpoint_does_not_delay_a_healthy_one(backend: Backend) {
    let app = spawn_with_eight_slots_four_per_endpoint(backend).await;
    hung_endpoint_scenario(&app).await;
    app.stop().await;
}

on_both_backends!(a_hung_endpoint_does_not_delay_a_healthy_one);

/// An application with 8 delivery slots, at most 4 per endpoint, and attempts that hang
/// for the whole test rather than time out (and be retried) before a test releases them.
async fn spawn_with_eight_slots_four_per_endpoint(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        &[
            ("CRONFLOW_DELIVERY_CONCURRENCY", "8"),
            ("CRONFLOW_DELIVERY_PER_ENDPOINT", "4"),
            ("CRONFLOW_WEBHOOK_TIMEOUT", "120s"),
        ],
    )
    .await
}

async fn hung_endpoint_scenario(app: &TestApp) {
    let hung = TestReceiver::start(&[0]).await;
    let healthy = TestReceiver::start(&[200]).await;
    subscribe(app, &hung.url("/hung")).await;
    subscribe(app, &healthy.url("/ok")).await;
    let runs = 40;
    run_many(app, runs).await;
    eventually(
        60,
        "every event at the healthy endpoint while the other hangs",
        || async { (healthy.requests().len() >= runs).then_some(()) },
    )
    .await;
    assert!(
        hung.requests().len() <= 4,
        "the hung endpoint holds at most its 4 of the 8 slots: {}",
        hung.requests().len()
    );
    hung.release();
}

/// A graceful stop lets the attempts in flight finish and records them, and hands back
/// the tasks it takes meanwhile without starting them (due at once, not after its lease
/// lapses), so the next start sends each delivery once. Four attempts hang until a task
/// taken during the stop has been handed back; meanwhile the saturated endpoint's other
/// tasks keep the queue fetching. (On SQLite, apalis's fetch used to be left unpolled
/// once its worker was stopping, holding the one writing connection: the finished
/// attempts could not be recorded and were sent again after the restart.)
async fn a_graceful_stop_records_the_attempts_in_flight(backend: Backend) {
    let app = spawn_with_eight_slots_four_per_endpoint(backend).await;
    let receiver = TestReceiver::start(&[0, 0, 0, 0, 200]).await;
    subscribe(&app, &receiver.url("/slow")).await;
    let runs = 40;
    run_many(&app, runs).await;
    eventually(30, "four attempts in flight", || async {
        (receiver.requests().len() == 4).then_some(())
    })
    .await;
    let handed_back = format!(
        "SELECT id FROM {} WHERE CAST(last_result AS TEXT) LIKE '%Handed back by a stopping worker%'",
        app.db.queue_table()
    );
    let url = app.db.url.clone();
    let stopped = app
        .stop_keeping_db(async {
            eventually(30, "a task taken while stopping handed back", || async {
                let tasks = query_strings(backend, &url, &handed_back).await;
                (!tasks.is_empty()).then_some(())
            })
            .await;
            receiver.release();
        })
        .await;

    let sent: BTreeSet<String> = webhook_ids(&receiver).into_iter().collect();
    let delivered: BTreeSet<String> = deliveries_in(&stopped.db, "delivered")
        .await
        .into_iter()
        .collect();
    assert_eq!(
        sent, delivered,
        "every delivery sent before the stop ended is recorded as delivered, and no other"
    );
    let tasks = delivery_task_statuses(&stopped.db).await;
    assert!(
        tasks.iter().all(|s| s == "Pending"),
        "the stopped worker handed back every task it held: {tasks:?}"
    );
    let waiting = deliveries_in(&stopped.db, "pending").await;
    assert_eq!(tasks.len(), waiting.len(), "one task per delivery still to make");

    let app = stopped.start().await;
    eventually(60, "every event delivered after the restart", || async {
        (deliveries_in(&app.db, "delivered").await.len() == runs).then_some(())
    })
    .await;
    let ids = webhook_ids(&receiver);
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no delivery was sent twice: {ids:?}");
    app.stop().await;
}

/// The `webhook-id` of every request `receiver` got, in arrival order.
fn webhook_ids(receiver: &TestReceiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .map(|s| s.headers["webhook-id"].clone())
        .collect()
}

/// The ids of the deliveries in `status`.
async fn deliveries_in(db: &TestDb, status: &str) -> Vec<String> {
    db.query_strings(&format!("SELECT id FROM deliveries WHERE status = '{status}'"))
        .await
}

on_both_backends!(a_graceful_stop_records_the_attempts_in_flight);

on_both_backends!(
    a_delivery_is_signed_by_both_recipes_and_recorded,
    six_failed_attempts_make_a_dead_delivery_that_replays_with_the_same_key,
    a_rotated_secret_signs_beside_the_old_one,
    a_redirect_is_not_followed,
);

async fn a_waiting_retry_survives_a_restart(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "3s")]).await;
    let receiver = TestReceiver::start(&[503, 200]).await;
    let (hook_id, _) = subscribe(&app, &receiver.url("/later")).await;
    let id = app.send_test_event(&hook_id).await;
    eventually(30, "the first attempt to fail", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "retrying").then_some(())
    })
    .await;
    let app = app.restart().await;
    let d = eventually(30, "the retry after the restart", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(d["attempts"], 2);
    assert_eq!(receiver.requests().len(), 2);
    app.stop().await;
}

on_both_backends!(a_waiting_retry_survives_a_restart);

/// A token in a subscription's URL is a credential: it shows in the subscription and
/// nowhere else (not in the audit stream an `audit` key reads, nor in the attempts,
/// `last_error` or the CSV export), even when the HTTP client's error names the URL.
async fn a_url_token_stays_in_the_subscription(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[500, 200]).await;
    let answering = receiver.url("/a?token=SECRET_A#SECRET_FRAGMENT");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refusing = format!("http://127.0.0.1:{closed_port}/b?token=SECRET_B");
    let mut deliveries = Vec::new();
    for url in [&answering, &refusing] {
        let (hook_id, _) = subscribe(&app, url).await;
        let revealed: Value = app
            .post("/v1/reveal", &json!({"id": hook_id}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            revealed["values"]["url"],
            url.as_str(),
            "the subscription keeps its URL"
        );
        deliveries.push(app.send_test_event(&hook_id).await);
    }
    eventually(30, "a retried delivery and a refused attempt", || async {
        let a: Value = app
            .try_get_json(&format!("/v1/deliveries/{}", deliveries[0]))
            .await?;
        let b: Value = app
            .try_get_json(&format!("/v1/deliveries/{}", deliveries[1]))
            .await?;
        (a["status"] == "delivered" && b["attempts"].as_i64()? >= 1 && b["last_error"].is_string())
            .then_some(())
    })
    .await;
    let audit_key = app.key(cronflow_jobs::domain::Scope::Audit).await;
    let audit = app.audit_log(&audit_key).await;
    let attempt_urls: BTreeSet<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "delivery.attempt")
        .map(|e| e["detail"]["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        attempt_urls,
        BTreeSet::from([receiver.url("/a"), format!("http://127.0.0.1:{closed_port}/b")]),
        "attempts name the endpoint without its query or fragment"
    );
    let mut seen = vec![("audit stream", audit)];
    for id in &deliveries {
        seen.push((
            "delivery",
            app.get(&format!("/v1/deliveries/{id}"))
                .await
                .text()
                .await
                .unwrap(),
        ));
    }
    seen.push((
        "delivery list",
        app.get("/v1/deliveries").await.text().await.unwrap(),
    ));
    seen.push((
        "CSV export",
        app.get("/v1/deliveries/export.csv").await.text().await.unwrap(),
    ));
    assert!(seen[1].1.contains("HTTP 500"), "{}", seen[1].1);
    assert!(
        seen[2].1.contains("127.0.0.1"),
        "the error still names the endpoint: {}",
        seen[2].1
    );
    for (what, text) in seen {
        assert!(!text.contains("SECRET"), "{what} leaks the URL's token: {text}");
    }
    app.stop().await;
}

on_both_backends!(a_url_token_stays_in_the_subscription);

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("CRONFLOW_ALLOW_PRIVATE_TARGETS", "false")]).await;
    for url in [
        "https://127.0.0.1/x",
        "https://10.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[::127.0.0.1]/x",
        "http://example.com/plain",
    ] {
        let r = app
            .post("/v1/webhooks", &json!({"url": url, "events": ["job.failed"]}))
            .await;
        let (status, body) = status_and_json(r).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some("url")),
            "{url}: {body}"
        );
    }
    // A name that resolves to loopback passes validation but is refused at connect time.
    let receiver = TestReceiver::start(&[200]).await;
    let port = receiver.address.rsplit(':').next().unwrap().to_owned();
    let (hook_id, _) = subscribe(&app, &format!("https://localhost:{port}/x")).await;
    let id = app.send_test_event(&hook_id).await;
    let d = eventually(30, "the refused attempt", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["attempts"].as_i64()? >= 1).then_some(d)
    })
    .await;
    assert_eq!(d["attempt_history"][0]["error_kind"], "ssrf_blocked", "{d}");
    assert!(receiver.requests().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn subscriptions_validate_their_fields() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let cases = [
        (
            json!({"url": "https://example.com/h", "events": []}),
            422,
            "events",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["job.started"]}),
            400,
            "events[0]",
        ),
        (
            json!({"url": "ftp://example.com/h", "events": ["job.failed"]}),
            422,
            "url",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["job.failed"], "secret": "short"}),
            422,
            "secret",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["job.failed"], "headers": {"X-CronFlow-Signature": "x"}}),
            422,
            "headers",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["job.failed"], "job_ids": ["nope"]}),
            422,
            "job_ids[0]",
        ),
    ];
    for (body, status, field) in cases {
        let (got, err) = status_and_json(app.post("/v1/webhooks", &body).await).await;
        assert_eq!(
            (got, err["field"].as_str()),
            (status, Some(field)),
            "{body}: {err}"
        );
    }
    let r = app
        .post("/v1/webhooks", &json!({"url": "https://example.com/h", "events": ["job.failed"], "secret": "my-own-secret-0123456789"}))
        .await;
    let (status, created) = status_and_json(r).await;
    assert_eq!(status, 201);
    assert_eq!(created["secret"], "my-own-secret-0123456789");
    let id = created["id"].as_str().unwrap();
    let patched: Value = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &json!({"enabled": false, "description": "paused"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (patched["enabled"].as_bool(), patched["description"].as_str()),
        (Some(false), Some("paused"))
    );
    assert_eq!(patched["events"], json!(["job.failed"]));
    assert_eq!(app.delete(&format!("/v1/webhooks/{id}")).await.status(), 204);
    assert_eq!(app.get(&format!("/v1/webhooks/{id}")).await.status(), 404);
    app.stop().await;
}

async fn attempts_of(app: &TestApp, id: &str, n: i64) -> Value {
    eventually(60, &format!("{n} attempts of {id}"), || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["attempts"].as_i64()? >= n).then_some(d)
    })
    .await
}

async fn a_410_disables_the_subscription_with_its_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[410]).await;
    let (hook_id, _) = subscribe(&app, &receiver.url("/gone")).await;
    let id = app.send_test_event(&hook_id).await;
    attempts_of(&app, &id, 1).await;
    let d = eventually(30, "the delivery to be dead", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "dead").then_some(d)
    })
    .await;
    assert_eq!(d["attempts"], 1, "a 410 is not retried");
    let hook: Value = app.get_json(&format!("/v1/webhooks/{hook_id}")).await;
    assert_eq!(hook["enabled"], false);
    assert!(
        hook["disabled_reason"].as_str().unwrap().contains("410"),
        "{hook}"
    );
    let audit_key = app.key(cronflow_jobs::domain::Scope::Audit).await;
    let log = app.audit_log(&audit_key).await;
    assert!(
        log.lines()
            .any(|l| l.contains("webhook.disabled") && l.contains(&hook_id)),
        "audited"
    );
    let re: Value = app
        .patch(&format!("/v1/webhooks/{hook_id}"), &json!({"enabled": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(re["enabled"], true);
    assert!(
        re.get("disabled_reason").is_none(),
        "re-enabling is one PATCH and clears the reason"
    );
    app.stop().await;
}

on_both_backends!(a_410_disables_the_subscription_with_its_reason);

#[tokio::test]
async fn sustained_failure_disables_a_subscription() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("CRONFLOW_WEBHOOK_DISABLE_AFTER", "2s")]).await;
    let receiver = TestReceiver::start(&[500]).await;
    let (hook_id, _) = subscribe(&app, &receiver.url("/down")).await;
    app.post(&format!("/v1/webhooks/{hook_id}/test"), &json!({}))
        .await;
    let hook = eventually(60, "the subscription to be disabled", || async {
        let h: Value = app.try_get_json(&format!("/v1/webhooks/{hook_id}")).await?;
        (h["enabled"] == false).then_some(h)
    })
    .await;
    assert!(
        hook["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("every attempt failed"),
        "{hook}"
    );
    // New events no longer go out: they are held for it (see `held`).
    let job = app.create_job(&shell_job("after", "exit 1")).await;
    let run = app.trigger(job["id"].as_str().unwrap()).await;
    app.finished_run(run["id"].as_str().unwrap(), 30).await;
    let deliveries: Value = app
        .get_json(&format!("/v1/deliveries?webhook_id={hook_id}"))
        .await;
    let statuses: Vec<&str> = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["held", "held"],
        "the run's event held, and the retry the disabling attempt called for"
    );
    app.stop().await;
}

#[tokio::test]
async fn retry_after_on_a_429_is_honoured() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let receiver = TestReceiver::start(&[429, 200]).await;
    let (hook_id, _) = subscribe(&app, &receiver.url("/busy")).await;
    let sent: Value = app
        .post(&format!("/v1/webhooks/{hook_id}/test"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let d = attempts_of(&app, sent["delivery_id"].as_str().unwrap(), 2).await;
    let at = |i: usize| {
        d["attempt_history"][i]["started_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert!(
        at(1) - at(0) >= chrono::Duration::seconds(3),
        "the retry waited for Retry-After: 3 (schedule says 1 s): {d}"
    );
    assert_eq!(d["status"], "delivered");
    app.stop().await;
}
