//! The dead-man's switch: `job.late` arrives once per slot even with the scheduler and
//! the workers stopped, while two processes' watchdogs look at the same database; a run
//! past its expected duration sends `job.overran` once; `GET /v1/jobs/{id}` shows the
//! job's health.

use crate::{helpers::*, on_both_backends};
use chrono::{DateTime, Utc};
use cronflow_jobs::{Store, clock::ManualClock};
use serde_json::{Value, json};
use std::sync::Arc;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn subscribe(app: &TestApp, receiver: &TestReceiver, events: Value) {
    let r = app
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/alerts"), "events": events}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// The stored events of `kind`, oldest first.
async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    app.events()
        .await
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

async fn job_late_is_sent_once_per_slot_with_the_scheduler_and_workers_stopped(backend: Backend) {
    let clock = ManualClock::new(utc("2026-06-01T12:00:30Z"));
    let app = TestApp::spawn_with_clock(backend, Arc::new(clock.clone())).await;
    let receiver = TestReceiver::start(&[200]).await;
    subscribe(&app, &receiver, json!(["job.late"])).await;
    let mut body = job_body("watched");
    body["schedule"] = json!("* * * * *");
    body["late_after_seconds"] = json!(30);
    let job = app.create_job(&body).await;
    assert_eq!(job["late_after_seconds"], 30);
    let job_id = job["id"].as_str().unwrap().to_owned();

    // Nothing fires or runs any more; two other processes' watchdogs look on.
    let stopped = app.stop_keeping_db(async {}).await;
    let watchers = [
        Store::connect(&stopped.db.url, test_secret_key()).await.unwrap(),
        Store::connect(&stopped.db.url, test_secret_key()).await.unwrap(),
    ];
    let mut sent = Vec::new();
    for at in [
        "2026-06-01T12:01:29Z", // 12:01 is not late yet
        "2026-06-01T12:01:30Z", // 12:01 is
        "2026-06-01T12:02:10Z",
        "2026-06-01T12:02:40Z", // 12:02 is
        "2026-06-01T12:02:41Z",
    ] {
        let now = utc(at);
        let (a, b) = tokio::join!(watchers[0].watch(now), watchers[1].watch(now));
        sent.push(a.unwrap().late + b.unwrap().late);
    }
    assert_eq!(sent, [0, 1, 0, 1, 0], "each slot alerted once, by one of the two");
    for w in watchers {
        w.close().await;
    }

    // Once delivery workers run again, each job.late reaches the receiver, signed.
    clock.set(utc("2026-06-01T12:02:41Z"));
    let app = stopped.start().await;
    let seen = eventually(30, "both job.late delivered", || async {
        let seen = receiver.requests();
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    let mut slots: Vec<String> = seen
        .iter()
        .map(|s| {
            assert_eq!(s.headers["x-cronflow-event"], "job.late");
            let body: Value = serde_json::from_slice(&s.body).unwrap();
            assert_eq!(body["job_id"], job_id.as_str());
            assert_eq!(body["data"]["run_id"], Value::Null, "never fired");
            assert_eq!(body["data"]["late_after_seconds"], 30);
            body["data"]["scheduled_for"].as_str().unwrap().to_owned()
        })
        .collect();
    slots.sort();
    assert_eq!(slots, ["2026-06-01T12:01:00Z", "2026-06-01T12:02:00Z"]);
    // The restarted application's own watchdog finds the same slots: still two events.
    app.store.watch(utc("2026-06-01T12:02:41Z")).await.unwrap();
    assert_eq!(events_of(&app, "job.late").await.len(), 2);

    // Health: on time now that the scheduler caught up; late once a slot is 30 s overdue.
    let job: Value = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["health"]["state"], "on_time", "{job}");
    let stored = app
        .store
        .get_job(&cronflow_jobs::domain::JobId::parse(&job_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let overdue = app
        .store
        .job_health(&stored, utc("2026-06-01T12:03:31Z"))
        .await
        .unwrap();
    assert!(overdue.late, "{overdue:?}");
    app.stop().await;
}

on_both_backends!(job_late_is_sent_once_per_slot_with_the_scheduler_and_workers_stopped);

async fn a_run_past_its_expected_duration_sends_job_overran_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    subscribe(&app, &receiver, json!(["job.overran"])).await;
    let mut body = shell_job("slow", "sleep 1000");
    body["expected_duration_seconds"] = json!(1);
    let job = app.create_job(&body).await;
    assert_eq!(job["expected_duration_seconds"], 1);
    let job_id = job["id"].as_str().unwrap();
    let run = app.trigger(job_id).await;
    let run_id = run["id"].as_str().unwrap();

    // The application's own watchdog sees it (a pass every 5 s).
    let seen = eventually(60, "job.overran delivered", || async {
        receiver.requests().into_iter().next()
    })
    .await;
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["event"], "job.overran");
    assert_eq!(body["data"]["run_id"], run_id);
    assert_eq!(body["data"]["basis"], "expected_duration");
    assert_eq!(body["data"]["threshold_ms"], 1000);
    assert!(body["data"]["running_for_ms"].as_i64().unwrap() >= 1000, "{body}");
    // Further passes send nothing more for this run.
    for _ in 0..2 {
        let report = app.store.watch(Utc::now()).await.unwrap();
        assert_eq!(report.overran, 0);
    }
    assert_eq!(events_of(&app, "job.overran").await.len(), 1);
    let health = app.get_json(&format!("/v1/jobs/{job_id}")).await["health"].clone();
    assert_eq!(
        (health["state"].as_str(), health["overran"].as_bool()),
        (Some("overran"), Some(true))
    );

    let r = app.post(&format!("/v1/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(r.status(), 202);
    app.finished_run(run_id, 30).await;
    let health = app.get_json(&format!("/v1/jobs/{job_id}")).await["health"].clone();
    assert_eq!(health["overran"], false, "{health}");

    // Bad settings are named (an expected duration at or past the timeout, 300 s here,
    // could never be passed).
    for (field, value) in [
        ("late_after_seconds", 10_000_000),
        ("expected_duration_seconds", 10_000_000),
        ("expected_duration_seconds", 300),
    ] {
        let (status, err) = status_and_json(
            app.patch(&format!("/v1/jobs/{job_id}"), &json!({ field: value }))
                .await,
        )
        .await;
        assert!((400..500).contains(&status), "{status} {err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    app.stop().await;
}

on_both_backends!(a_run_past_its_expected_duration_sends_job_overran_once);
