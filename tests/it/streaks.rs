//! Failure streaks: `job.failing` once when a job's final runs have failed
//! `alert_after_failures` times in a row, `job.recovered` once at the next completed
//! run, nothing in between, delivered like any event.

use crate::{helpers::*, on_both_backends};
use serde_json::{Value, json};

/// Triggers job `id` and waits for the run to end in `state`.
async fn run_to(app: &TestApp, id: &str, state: &str) {
    let run = app.trigger(id).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    eventually(30, "the run to end", || async {
        let r = app.run(&run_id).await;
        (r["state"].as_str()? != "running" && r["state"].as_str()? != "scheduled").then_some(())
    })
    .await;
    assert_eq!(app.run(&run_id).await["state"], state);
}

/// The streak events stored so far, in order: (type, data).
async fn streak_events(app: &TestApp) -> Vec<(String, Value)> {
    let page = cronflow_jobs::domain::PageRequest::parse(Some(500), None).unwrap();
    let events = app.store.list_events(&page).await.unwrap();
    events
        .items
        .iter()
        .map(|(_, p)| serde_json::from_str::<Value>(p).unwrap())
        .filter(|e| matches!(e["event"].as_str(), Some("job.failing" | "job.recovered")))
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect()
}

async fn a_failure_streak_alerts_once_and_its_recovery_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let hook = app
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/alerts"), "events": ["job.failing", "job.recovered"]}),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let mut body = shell_job("flaky", "exit 1");
    body["alert_after_failures"] = json!(2);
    let job = app.create_job(&body).await;
    assert_eq!(job["alert_after_failures"], 2);
    let id = job["id"].as_str().unwrap().to_owned();

    run_to(&app, &id, "failed").await;
    assert!(
        streak_events(&app).await.is_empty(),
        "one failure is below the threshold"
    );
    run_to(&app, &id, "failed").await;
    run_to(&app, &id, "failed").await;
    let events = streak_events(&app).await;
    assert_eq!(events.len(), 1, "one alert for the streak: {events:?}");
    assert_eq!(events[0].0, "job.failing");
    assert_eq!(events[0].1["consecutive_failures"], 2);
    assert_eq!(events[0].1["alert_after_failures"], 2);
    assert_eq!(events[0].1["last_state"], "failed");
    assert_eq!(
        app.get_json(&format!("/v1/jobs/{id}")).await["consecutive_failures"],
        3
    );

    let patched = app
        .patch(
            &format!("/v1/jobs/{id}"),
            &json!({"target": {"type": "command", "command": ["true"]}}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    run_to(&app, &id, "completed").await;
    run_to(&app, &id, "completed").await;
    let events = streak_events(&app).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["job.failing", "job.recovered"], "one recovery");
    assert_eq!(events[1].1["failures_before"], 3);
    assert_eq!(
        app.get_json(&format!("/v1/jobs/{id}")).await["consecutive_failures"],
        0
    );

    // Both reach the subscriber, signed like any event.
    let seen = eventually(30, "both alerts delivered", || async {
        let seen = receiver.requests();
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    let mut delivered: Vec<String> = seen
        .iter()
        .map(|s| s.headers["x-cronflow-event"].clone())
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, ["job.failing", "job.recovered"]);
    assert!(
        seen.iter()
            .all(|s| s.headers.contains_key("x-cronflow-signature"))
    );

    // Bad input is named.
    let (status, err) = status_and_json(
        app.patch(&format!("/v1/jobs/{id}"), &json!({"alert_after_failures": 5000}))
            .await,
    )
    .await;
    assert!((400..500).contains(&status), "{status} {err}");
    assert!(err.to_string().contains("alert_after_failures"), "{err}");
    app.stop().await;
}

on_both_backends!(a_failure_streak_alerts_once_and_its_recovery_once);
