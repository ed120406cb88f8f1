//! Held deliveries: while a subscription is disabled (by hand, or by `410 Gone`), the
//! events it would receive are kept as `held` deliveries, listed, exported and counted;
//! enabling it again releases them, or `discard_held` drops them (audited); a retry that
//! was waiting when it was disabled is held too, not attempted and not dead.

use crate::{helpers::*, on_both_backends};
use cronflow_jobs::domain::Scope;
use serde_json::{Value, json};
use std::sync::Arc;

/// The deliveries of subscription `hook` with `status`, newest first.
async fn deliveries(app: &TestApp, hook: &str, status: &str) -> Vec<Value> {
    let page = app
        .get_json(&format!(
            "/v1/deliveries?webhook_id={hook}&status={status}&limit=100"
        ))
        .await;
    page["items"].as_array().unwrap().clone()
}

/// The value of `cronflow_deliveries_held` in `/metrics`.
async fn held_gauge(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("cronflow_deliveries_held "))
        .expect("the held gauge")
        .trim()
        .parse()
        .unwrap()
}

async fn create_hook(app: &TestApp, url: &str) -> String {
    let (status, hook) = status_and_json(
        app.post("/v1/webhooks", &json!({"url": url, "events": ["job.completed"]}))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    hook["id"].as_str().unwrap().to_owned()
}

async fn set_enabled(app: &TestApp, hook: &str, body: Value) -> Value {
    let (status, out) = status_and_json(app.patch(&format!("/v1/webhooks/{hook}"), &body).await).await;
    assert_eq!(status, 200, "{out}");
    out
}

/// Triggers `job` and waits for the run to complete.
async fn complete_a_run(app: &TestApp, job: &str) {
    let run = app.trigger(job).await;
    let done = app.finished_run(run["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["state"], "completed");
}

async fn events_for_a_disabled_subscription_are_held_then_released_or_discarded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let hook = create_hook(&app, &receiver.url("/held")).await;
    let job = app.create_job(&job_body("held-events")).await;
    let job = job["id"].as_str().unwrap();

    set_enabled(&app, &hook, json!({"enabled": false})).await;
    for _ in 0..3 {
        complete_a_run(&app, job).await;
    }
    let held = eventually(10, "three held deliveries", || async {
        let held = deliveries(&app, &hook, "held").await;
        (held.len() == 3).then_some(held)
    })
    .await;
    assert!(held.iter().all(|d| d["attempts"] == 0), "{held:?}");
    assert_eq!(held_gauge(&app).await, 3.0);
    let csv = app
        .get(&format!(
            "/v1/deliveries/export.csv?webhook_id={hook}&status=held"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 4, "a header and three held rows: {csv}");
    // A test event still goes out, so the endpoint can be checked before enabling it.
    let test = app.send_test_event(&hook).await;
    eventually(30, "the test event delivered", || async {
        let d = app.get_json(&format!("/v1/deliveries/{test}")).await;
        (d["status"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(receiver.requests().len(), 1, "only the test event went out");

    // Enabling releases them: each delivered once, with its own id.
    set_enabled(&app, &hook, json!({"enabled": true})).await;
    let seen = eventually(30, "the held deliveries delivered", || async {
        let seen = receiver.requests();
        (seen.len() == 4).then_some(seen)
    })
    .await;
    let mut ids: Vec<&str> = seen[1..]
        .iter()
        .map(|s| s.headers["webhook-id"].as_str())
        .collect();
    ids.sort();
    let mut want: Vec<&str> = held.iter().map(|d| d["id"].as_str().unwrap()).collect();
    want.sort();
    assert_eq!(ids, want);
    eventually(30, "the released deliveries recorded", || async {
        (deliveries(&app, &hook, "delivered").await.len() == 4).then_some(())
    })
    .await;
    assert!(deliveries(&app, &hook, "held").await.is_empty());
    assert_eq!(held_gauge(&app).await, 0.0);

    // Disabled again, two more held, then discarded: gone, and said so in the audit log.
    set_enabled(&app, &hook, json!({"enabled": false})).await;
    for _ in 0..2 {
        complete_a_run(&app, job).await;
    }
    eventually(10, "two held deliveries", || async {
        (deliveries(&app, &hook, "held").await.len() == 2).then_some(())
    })
    .await;
    let out = set_enabled(&app, &hook, json!({"enabled": true, "discard_held": true})).await;
    assert_eq!(out["enabled"], true);
    assert!(deliveries(&app, &hook, "held").await.is_empty());
    assert_eq!(held_gauge(&app).await, 0.0);
    let audit = app.audit_log(&app.key(Scope::Audit).await).await;
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let patch_details: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["object_id"] == hook.as_str() && e["action"].as_str().is_some_and(|a| a.starts_with("PATCH"))
        })
        .map(|e| &e["detail"])
        .collect();
    assert!(
        patch_details.iter().any(|d| d["held_released"] == 3),
        "{patch_details:?}"
    );
    assert!(
        patch_details.iter().any(|d| d["held_discarded"] == 2),
        "{patch_details:?}"
    );
    // Enabled, the next event goes out at once; the discarded ones never do.
    complete_a_run(&app, job).await;
    // (The receiver sees a request before its delivery is recorded: wait for both.)
    eventually(30, "the next event delivered", || async {
        (receiver.requests().len() == 5 && deliveries(&app, &hook, "delivered").await.len() == 5)
            .then_some(())
    })
    .await;
    assert_eq!(receiver.requests().len(), 5, "the discarded ones never went out");
    app.stop().await;
}

on_both_backends!(events_for_a_disabled_subscription_are_held_then_released_or_discarded);

async fn a_waiting_retry_and_the_events_after_a_410_are_held(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "5s")]).await;
    // `/flaky` fails its first request; `/gone` answers 410 to its first.
    let receiver = TestReceiver::start_with(Arc::new(|path: &str, _| {
        crate::receiver::Answer::Status(if path == "/flaky" { 500 } else { 410 })
    }))
    .await;
    let flaky = create_hook(&app, &receiver.url("/flaky")).await;
    let gone = create_hook(&app, &receiver.url("/gone")).await;
    let job = app.create_job(&job_body("held-retries")).await;
    let job = job["id"].as_str().unwrap();
    complete_a_run(&app, job).await;

    // The failed attempt waits for its retry (5 s) while its subscription is disabled.
    let retrying = eventually(30, "the first attempt to fail", || async {
        let r = deliveries(&app, &flaky, "retrying").await;
        (r.len() == 1).then_some(r)
    })
    .await;
    set_enabled(&app, &flaky, json!({"enabled": false})).await;
    // The 410 disables its subscription.
    eventually(30, "the 410 to disable its subscription", || async {
        let h = app.get_json(&format!("/v1/webhooks/{gone}")).await;
        (h["enabled"] == false).then_some(())
    })
    .await;
    // When its retry comes due, it is held: not attempted, not dead.
    eventually(30, "the waiting retry to be held", || async {
        (deliveries(&app, &flaky, "held").await.len() == 1).then_some(())
    })
    .await;
    let held = app
        .get_json(&format!("/v1/deliveries/{}", retrying[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (held["status"].as_str(), held["attempts"].as_u64()),
        (Some("held"), Some(1))
    );

    // The next event is held for both.
    complete_a_run(&app, job).await;
    eventually(10, "the next event held for both", || async {
        let (a, b) = (
            deliveries(&app, &flaky, "held").await,
            deliveries(&app, &gone, "held").await,
        );
        (a.len() == 2 && b.len() == 1).then_some(())
    })
    .await;
    assert_eq!(held_gauge(&app).await, 3.0);
    let per_path = |path: &str| receiver.requests().iter().filter(|s| s.path == path).count();
    assert_eq!(
        (per_path("/flaky"), per_path("/gone")),
        (1, 1),
        "nothing was sent while held"
    );
    app.stop().await;
}

on_both_backends!(a_waiting_retry_and_the_events_after_a_410_are_held);
