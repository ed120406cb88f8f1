//! "View Payload Schema": every event type's JSON Schema is served, with a real example
//! that fits it, and every event type delivered fits the schema served for it.

use crate::helpers::{Backend, TestApp, TestReceiver, eventually, shell_job, status_and_json};
use crate::on_both_backends;
use serde_json::{Value, json};

on_both_backends!(every_event_type_delivered_fits_the_schema_served_for_it,);

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("a served schema compiles")
}

async fn every_event_type_delivered_fits_the_schema_served_for_it(backend: Backend) {
    let spawned = TestApp::spawn(backend).await;
    let app = &spawned;
    let listed = app.get_json("/v1/schemas/events").await;
    let items = listed["items"].as_array().expect("a list");
    let types: Vec<&str> = items.iter().filter_map(|i| i["event_type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "job.completed",
            "job.failed",
            "job.timed_out",
            "job.skipped",
            "job.missed",
            "job.late",
            "job.overran",
            "job.failing",
            "job.recovered",
            "webhook.test"
        ]
    );
    for item in items {
        let event_type = item["event_type"].as_str().unwrap();
        let served = app.get_json(&format!("/v1/schemas/events/{event_type}")).await;
        assert_eq!(
            served, item["schema"],
            "{event_type}: the list and the single schema agree"
        );
        assert_eq!(served["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(served["title"], item["schema_name"]);
        let example = &item["example"];
        assert_eq!(example["event"], event_type);
        let errors: Vec<String> = validator(&served)
            .iter_errors(example)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{event_type}: the example does not fit: {errors:?}"
        );
        let mut extra = example.clone();
        extra["surprise"] = json!(1);
        assert!(
            !validator(&served).is_valid(&extra),
            "{event_type}: a sixth top-level field is refused"
        );
    }
    let (status, err) = status_and_json(app.get("/v1/schemas/events/job.started").await).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")), "{err}");

    // One delivery of each type, each checked against the schema served for it.
    let receiver = TestReceiver::start(&[200]).await;
    let hook: Value = app
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/h"), "events": [
                "job.completed", "job.failed", "job.timed_out", "job.skipped", "job.failing",
                "job.recovered"
            ]}),
        )
        .await
        .json()
        .await
        .unwrap();
    for script in ["echo done", "echo broken >&2; exit 3"] {
        let job = app.create_job(&shell_job("payloads", script)).await;
        app.trigger(job["id"].as_str().unwrap()).await;
    }
    // A job that alerts at its first failure, then completes: job.failing, job.recovered.
    let mut flaky = shell_job("streak", "exit 1");
    flaky["alert_after_failures"] = json!(1);
    let flaky = app.create_job(&flaky).await;
    let flaky_id = flaky["id"].as_str().unwrap();
    let run = app.trigger(flaky_id).await;
    eventually(30, "the failed run", || async {
        let r = app.run(run["id"].as_str()?).await;
        (r["state"] == "failed").then_some(())
    })
    .await;
    let patched = app
        .patch(
            &format!("/v1/jobs/{flaky_id}"),
            &json!({"target": {"type": "command", "command": ["true"]}}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    app.trigger(flaky_id).await;
    let mut slow = shell_job("slow", "sleep 30");
    slow["timeout_seconds"] = json!(1);
    let job = app.create_job(&slow).await;
    app.trigger(job["id"].as_str().unwrap()).await;
    // Triggered again while it runs: skipped (overlap `skip`), job.skipped. (job.missed
    // needs a downtime, job.late and job.overran the watchdog: `ledger_events` and
    // `watchdog` deliver them to receivers that check each against its schema.)
    let again = app.trigger(job["id"].as_str().unwrap()).await;
    assert_eq!(again["state"], "skipped");
    app.post(
        &format!("/v1/webhooks/{}/test", hook["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    let received = eventually(60, "one delivery of each event type", || async {
        let seen = receiver.requests();
        let mut types: Vec<String> = seen
            .iter()
            .filter_map(|s| s.headers.get("x-cronflow-event").cloned())
            .collect();
        types.sort();
        types.dedup();
        (types.len() == 7).then_some(seen)
    })
    .await;
    for seen in received {
        let event_type = &seen.headers["x-cronflow-event"];
        let served = app.get_json(&format!("/v1/schemas/events/{event_type}")).await;
        let payload: Value = serde_json::from_slice(&seen.body).unwrap();
        let errors: Vec<String> = validator(&served)
            .iter_errors(&payload)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{event_type} delivery {payload}: {errors:?}");
    }
    spawned.stop().await;
}
