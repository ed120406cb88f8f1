//! The scheduler's ledger as events: `job.skipped` for each slot (or manual trigger) the
//! overlap policy `skip` did not run, `job.missed` once per stretch of downtime the
//! catch-up policy did not fill; delivered, signed, only to subscriptions that chose them.

use crate::{helpers::*, on_both_backends};
use chrono::{DateTime, Utc};
use cronflow_jobs::{clock::ManualClock, delivery::signer::verify_cronflow};
use serde_json::{Value, json};
use std::sync::Arc;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Moves the injected clock to `at` and makes a scheduler pass there, then waits until
/// `job_id`'s next fire time is `next` (the application's own loop may have made the pass
/// that fired it; this waits for whichever did to commit).
async fn pass(app: &TestApp, clock: &ManualClock, at: &str, job_ids: &[&str], next: &str) {
    let now = utc(at);
    clock.set(now);
    app.store.fire_due(now).await.unwrap();
    for id in job_ids {
        eventually(10, "the pass to commit", || async {
            let job: Value = app.get_json(&format!("/v1/jobs/{id}")).await;
            (job["next_run_at"].as_str().map(utc) == Some(utc(next))).then_some(())
        })
        .await;
    }
}

/// The stored ledger events, oldest first: (type, job id, data).
async fn ledger_events(app: &TestApp) -> Vec<(String, String, Value)> {
    app.events()
        .await
        .into_iter()
        .filter(|e| matches!(e["event"].as_str(), Some("job.skipped" | "job.missed")))
        .map(|e| {
            let kind = e["event"].as_str().unwrap().to_owned();
            (kind, e["job_id"].as_str().unwrap().to_owned(), e["data"].clone())
        })
        .collect()
}

async fn skipped_slots_and_missed_stretches_are_delivered_as_events(backend: Backend) {
    let clock = ManualClock::new(utc("2026-06-01T12:00:30Z"));
    let app = TestApp::spawn_with_clock(backend, Arc::new(clock.clone())).await;
    let receiver = TestReceiver::start(&[200]).await;
    let mut secret = String::new();
    for (path, events) in [
        ("/ledger", json!(["job.skipped", "job.missed"])),
        ("/failures", json!(["job.failed"])),
    ] {
        let (status, hook) = status_and_json(
            app.post(
                "/v1/webhooks",
                &json!({"url": receiver.url(path), "events": events}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 201, "{hook}");
        if path == "/ledger" {
            secret = hook["secret"].as_str().unwrap().to_owned();
        }
    }

    // A job whose run goes on past its next slots.
    let mut body = shell_job("long", "sleep 1000");
    body["schedule"] = json!("* * * * *");
    body["overlap_policy"] = json!("skip");
    body["catch_up"] = json!("latest");
    let long = app.create_job(&body).await;
    let long_id = long["id"].as_str().unwrap();
    pass(
        &app,
        &clock,
        "2026-06-01T12:01:00Z",
        &[long_id],
        "2026-06-01T12:02:00Z",
    )
    .await;
    let first = app.get_json(&format!("/v1/jobs/{long_id}/runs")).await["items"][0].clone();
    assert_eq!(first["scheduled_for"], json!("2026-06-01T12:01:00+00:00"));
    let first_id = first["id"].as_str().unwrap();
    let manual = app.trigger(long_id).await;
    assert_eq!(manual["state"], "skipped");
    pass(
        &app,
        &clock,
        "2026-06-01T12:02:00Z",
        &[long_id],
        "2026-06-01T12:03:00Z",
    )
    .await;

    // A job that was down for ten slots, and the long job down beside it.
    let mut body = job_body("down");
    body["schedule"] = json!("* * * * *");
    body["catch_up"] = json!("none");
    let down = app.create_job(&body).await;
    let down_id = down["id"].as_str().unwrap();
    pass(
        &app,
        &clock,
        "2026-06-01T12:12:30Z",
        &[long_id, down_id],
        "2026-06-01T12:13:00Z",
    )
    .await;

    let events = ledger_events(&app).await;
    let summary: Vec<(&str, &str, Value, Value)> = events
        .iter()
        .map(|(kind, job, data)| {
            let what = if kind == "job.missed" {
                json!([
                    data["missed_count"],
                    data["first_slot"],
                    data["last_slot"],
                    data["catch_up"]
                ])
            } else {
                json!([data["scheduled_for"], data["origin"], data["active_run_id"]])
            };
            (kind.as_str(), job.as_str(), what, data["run_id"].clone())
        })
        .map(|(k, j, w, r)| (k, if j == long_id { "long" } else { "down" }, w, r))
        .collect();
    // Events of one pass share their creation time: compared in a fixed order.
    let mut shape: Vec<(&str, &str, Value)> =
        summary.iter().map(|(k, j, w, _)| (*k, *j, w.clone())).collect();
    shape.sort_by_key(|s| format!("{s:?}"));
    let at = |s: &str| json!(s);
    let mut want = vec![
        ("job.skipped", "long", json!([null, "manual", first_id])),
        (
            "job.skipped",
            "long",
            json!([at("2026-06-01T12:02:00Z"), "schedule", first_id]),
        ),
        (
            "job.missed",
            "long",
            json!([9, "2026-06-01T12:03:00Z", "2026-06-01T12:11:00Z", "latest"]),
        ),
        (
            "job.skipped",
            "long",
            json!([at("2026-06-01T12:12:00Z"), "catch_up", first_id]),
        ),
        (
            "job.missed",
            "down",
            json!([10, "2026-06-01T12:03:00Z", "2026-06-01T12:12:00Z", "none"]),
        ),
    ];
    want.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        shape, want,
        "one event per skipped slot, one per stretch: {events:?}"
    );
    // Each names its ledger row.
    for (_, _, _, run_id) in &summary {
        let run = app.run(run_id.as_str().unwrap()).await;
        assert!(
            matches!(run["state"].as_str(), Some("skipped" | "missed")),
            "{run}"
        );
    }

    // All five reach the subscription that chose them, signed; none reaches the other.
    let seen = eventually(30, "the ledger events delivered", || async {
        let seen = receiver.requests();
        (seen.len() >= 5).then_some(seen)
    })
    .await;
    assert!(seen.iter().all(|s| s.path == "/ledger"), "{seen:?}");
    for s in &seen {
        verify_cronflow(&secret, &s.headers["x-cronflow-signature"], &s.body).expect("signed");
    }
    let mut kinds: Vec<&str> = seen
        .iter()
        .map(|s| s.headers["x-cronflow-event"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "job.missed",
            "job.missed",
            "job.skipped",
            "job.skipped",
            "job.skipped"
        ]
    );

    let r = app.post(&format!("/v1/runs/{first_id}/cancel"), &json!({})).await;
    assert_eq!(r.status(), 202);
    app.finished_run(first_id, 30).await;
    app.stop().await;
}

on_both_backends!(skipped_slots_and_missed_stretches_are_delivered_as_events);
