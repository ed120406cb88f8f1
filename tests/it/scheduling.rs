//! The scheduler: exactly one run per slot across schedulers, catch-up policies after
//! downtime, DST in the job's zone, lateness, and a worker killed mid-run. Cron
//! arithmetic runs on an injected clock, so these tests are exact.

use crate::{helpers::*, on_both_backends};
use chrono::{DateTime, Duration, Utc};
use cronflow_jobs::{Store, clock::ManualClock, domain::PageRequest};
use serde_json::{Value, json};
use std::sync::Arc;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn spawn_at(backend: Backend, at: &str) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(utc(at));
    (
        TestApp::spawn_with_clock(backend, Arc::new(clock.clone())).await,
        clock,
    )
}

/// All runs of a job, in slot order (runs written in one pass share a creation time).
async fn runs_of(app: &TestApp, job_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs/{job_id}/runs?limit=500&cursor={c}"),
            None => format!("/v1/jobs/{job_id}/runs?limit=500"),
        };
        let page: Value = app.get_json(&path).await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    out.sort_by_key(|r| (r["scheduled_for"].as_str().map(utc), r["attempt"].as_i64()));
    out
}

fn slots(runs: &[Value]) -> Vec<DateTime<Utc>> {
    runs.iter()
        .filter_map(|r| r["scheduled_for"].as_str())
        .map(utc)
        .collect()
}

/// Four schedulers share one Postgres: the application's own loop and three passes the
/// test makes per tick of the injected clock (its store's and two more stores'). A pass
/// skips a job another pass holds (`FOR UPDATE SKIP LOCKED`), so a slot may be fired by
/// the application's loop rather than by the test's passes, and after the last tick that
/// loop may still be committing it: the test reads each job's next fire time first, so
/// that every slot before it must already be on record (a lost slot fails here), then
/// waits until every job's next fire time is past the last tick.
#[tokio::test]
async fn three_schedulers_on_one_postgres_fire_every_slot_exactly_once() {
    if !postgres_available() {
        return;
    }
    let (app, clock) = spawn_at(Backend::Postgres, "2026-06-01T12:00:00Z").await;
    let others = [
        Store::connect(&app.db.url, test_secret_key()).await.unwrap(),
        Store::connect(&app.db.url, test_secret_key()).await.unwrap(),
    ];
    let mut job_ids = Vec::new();
    for i in 0..4 {
        let mut body = job_body(&format!("every-second-{i}"));
        body["schedule"] = json!("* * * * * *");
        body["overlap_policy"] = json!("allow");
        body["target"] = json!({"type": "command", "command": ["true"]});
        job_ids.push(app.create_job(&body).await["id"].as_str().unwrap().to_owned());
    }
    let start = utc("2026-06-01T12:00:00Z");
    let ticks = 40;
    let slot = |t: i64| start + Duration::seconds(t);
    for t in 1..=ticks {
        let now = slot(t);
        clock.set(now);
        let (a, b, c) = tokio::join!(
            app.store.fire_due(now),
            others[0].fire_due(now),
            others[1].fire_due(now)
        );
        for r in [a, b, c] {
            r.expect("a scheduler pass succeeds while others run");
        }
        for job_id in &job_ids {
            assert_no_slot_before_the_next_is_missing(&app, job_id, start).await;
        }
    }
    for job_id in &job_ids {
        eventually(30, "every pass that took the job to commit", || async {
            let job = app.try_get_json(&format!("/v1/jobs/{job_id}")).await?;
            (utc(job["next_run_at"].as_str()?) == slot(ticks + 1)).then_some(())
        })
        .await;
        let runs = runs_of(&app, job_id).await;
        let want: Vec<_> = (1..=ticks).map(slot).collect();
        assert_eq!(
            slots(&runs),
            want,
            "job {job_id}: one run per slot, none missing, none twice"
        );
        assert!(runs.iter().all(|r| r["origin"] == "schedule"));
    }
    let tasks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apalis.jobs")
        .fetch_one(&sqlx::PgPool::connect(&app.db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(tasks, 4 * ticks, "one queue task per run");
    for s in others {
        s.close().await;
    }
    app.stop().await;
}

/// The job's slots from `start` up to its next fire time are each on record exactly once
/// (a pass moves the next fire time in the transaction that records the slots before it).
async fn assert_no_slot_before_the_next_is_missing(app: &TestApp, job_id: &str, start: DateTime<Utc>) {
    let job: Value = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    let next = utc(job["next_run_at"].as_str().expect("a next fire time"));
    let runs = runs_of(app, job_id).await;
    let recorded: Vec<_> = slots(&runs).into_iter().filter(|s| *s < next).collect();
    let want: Vec<_> = (1..)
        .map(|t| start + Duration::seconds(t))
        .take_while(|s| *s < next)
        .collect();
    assert_eq!(
        recorded, want,
        "job {job_id}: every slot before {next} is on record once"
    );
}

async fn catch_up(backend: Backend, policy: &str) -> Vec<Value> {
    let (app, clock) = spawn_at(backend, "2026-06-01T12:00:30Z").await;
    let mut body = job_body(&format!("catch-up-{policy}"));
    body["schedule"] = json!("* * * * *");
    body["catch_up"] = json!(policy);
    let job = app.create_job(&body).await;
    let job_id = job["id"].as_str().unwrap();
    // Down from 12:00:30 to 12:10:30: slots 12:01 ... 12:10 were not fired.
    let now = utc("2026-06-01T12:10:30Z");
    clock.set(now);
    app.store.fire_due(now).await.unwrap();
    // The app's own scheduler loop may have taken the job first (on Postgres this pass
    // then skips the locked job): wait for whichever pass handled it to commit.
    eventually(10, "the next slot after the outage", || async {
        let after: Value = app.get_json(&format!("/v1/jobs/{job_id}")).await;
        (after["next_run_at"] == json!("2026-06-01T12:11:00+00:00")).then_some(())
    })
    .await;
    let runs = runs_of(&app, job_id).await;
    app.stop().await;
    runs
}

async fn catch_up_latest_runs_once_for_the_outage_and_records_the_rest_as_missed(backend: Backend) {
    let runs = catch_up(backend, "latest").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let missed = &runs[0];
    assert_eq!(missed["state"], "missed");
    assert_eq!(missed["missed_count"], 9);
    assert_eq!(missed["scheduled_for"], json!("2026-06-01T12:01:00+00:00"));
    assert_eq!(missed["missed_last"], json!("2026-06-01T12:09:00+00:00"));
    assert_eq!(runs[1]["origin"], "catch_up");
    assert_eq!(runs[1]["scheduled_for"], json!("2026-06-01T12:10:00+00:00"));
}

on_both_backends!(catch_up_latest_runs_once_for_the_outage_and_records_the_rest_as_missed);

async fn catch_up_all_runs_every_missed_slot_and_none_runs_none(backend: Backend) {
    let all = catch_up(backend, "all").await;
    assert_eq!(all.len(), 10, "{all:?}");
    assert!(
        all.iter()
            .all(|r| r["origin"] == "catch_up" && r["state"] != "missed")
    );
    let none = catch_up(backend, "none").await;
    assert_eq!(none.len(), 1, "{none:?}");
    assert_eq!(none[0]["state"], "missed");
    assert_eq!(none[0]["missed_count"], 10);
}

on_both_backends!(catch_up_all_runs_every_missed_slot_and_none_runs_none);

#[tokio::test]
async fn a_long_outage_is_one_missed_row_not_a_cliff() {
    let (app, clock) = spawn_at(Backend::Sqlite, "2026-06-01T00:00:00Z").await;
    let mut body = job_body("per-second");
    body["schedule"] = json!("* * * * * *");
    body["catch_up"] = json!("none");
    let job = app.create_job(&body).await;
    let now = utc("2026-06-03T00:00:00Z"); // two days of per-second slots
    clock.set(now);
    app.store.fire_due(now).await.unwrap();
    let runs = runs_of(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["state"], "missed");
    assert!(
        runs[0]["missed_count"].as_i64().unwrap() >= 100_000,
        "{}",
        runs[0]
    );
    let after: Value = app
        .get_json(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(after["next_run_at"], json!("2026-06-03T00:00:01+00:00"));
    app.stop().await;
}

#[tokio::test]
async fn slots_follow_the_zone_through_both_dst_changes() {
    // Every 30 minutes in New York from 00:00 local on the fall-back day (2026-11-01):
    // both passes of the repeated 01:00-02:00 hour fire, in real-time order.
    let (app, clock) = spawn_at(Backend::Sqlite, "2026-11-01T03:59:59Z").await;
    let mut body = job_body("half-hourly");
    body["schedule"] = json!("*/30 * * * *");
    body["timezone"] = json!("America/New_York");
    body["overlap_policy"] = json!("allow");
    let job = app.create_job(&body).await;
    let mut now = utc("2026-11-01T03:59:59Z");
    while now < utc("2026-11-01T08:10:00Z") {
        now += Duration::minutes(5);
        clock.set(now);
        app.store.fire_due(now).await.unwrap();
    }
    let got = slots(&runs_of(&app, job["id"].as_str().unwrap()).await);
    let want: Vec<_> = [
        "04:00", "04:30", "05:00", "05:30", "06:00", "06:30", "07:00", "07:30", "08:00",
    ]
    .iter()
    .map(|t| utc(&format!("2026-11-01T{t}:00Z")))
    .collect();
    assert_eq!(
        got, want,
        "00:00, 00:30, 01:00 EDT, 01:30 EDT, 01:00 EST, 01:30 EST, 02:00, 02:30, 03:00 EST"
    );

    // A daily 02:30 job on the spring-forward day (2026-03-08) fires at 03:00 EDT.
    clock.set(utc("2026-03-07T12:00:00Z"));
    let mut body = job_body("gap");
    body["schedule"] = json!("30 2 * * *");
    body["timezone"] = json!("America/New_York");
    let job = app.create_job(&body).await;
    for t in [
        "2026-03-08T06:59:00Z",
        "2026-03-08T07:00:00Z",
        "2026-03-08T08:00:00Z",
    ] {
        clock.set(utc(t));
        app.store.fire_due(utc(t)).await.unwrap();
    }
    let got = slots(&runs_of(&app, job["id"].as_str().unwrap()).await);
    assert_eq!(got, [utc("2026-03-08T07:00:00Z")]);
    app.stop().await;
}

/// On the wall clock: a `skip` job is fired at its slot, an `allow` job ahead of it (its
/// task due early on Postgres and held by the worker); neither run starts before its slot.
async fn scheduled_runs_record_their_slot_and_lateness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for overlap in ["skip", "allow"] {
        let mut body = job_body(&format!("tick-{overlap}"));
        body["schedule"] = json!("* * * * * *");
        body["overlap_policy"] = json!(overlap);
        ids.push(app.create_job(&body).await["id"].as_str().unwrap().to_owned());
    }
    if backend == Backend::Postgres {
        assert_runs_queued_ahead_are_due_50ms_before_their_slot(&app).await;
    }
    for job_id in &ids {
        let done = eventually(30, "two completed scheduled runs", || async {
            let runs = runs_of(&app, job_id).await;
            let done: Vec<Value> = runs.into_iter().filter(|r| r["state"] == "completed").collect();
            (done.len() >= 2).then_some(done)
        })
        .await;
        for r in &done {
            assert_eq!(r["origin"], "schedule");
            let slot = utc(r["scheduled_for"].as_str().unwrap());
            let started = utc(r["started_at"].as_str().unwrap());
            assert_eq!(
                r["lateness_ms"].as_i64().unwrap(),
                (started - slot).num_milliseconds()
            );
            assert!(r["lateness_ms"].as_i64().unwrap() >= 0, "never early: {r}");
        }
        let events: Vec<Value> = app
            .events()
            .await
            .into_iter()
            .filter(|e| e["job_id"] == job_id.as_str())
            .collect();
        assert!(
            events
                .iter()
                .all(|e| e["data"]["scheduled_for"].is_string() && e["data"]["lateness_ms"].is_i64())
        );
    }
    app.stop().await;
}

on_both_backends!(scheduled_runs_record_their_slot_and_lateness);

/// Waits for a run task queued ahead of its slot and checks that every such task is due
/// exactly 50 ms before the slot it carries.
async fn assert_runs_queued_ahead_are_due_50ms_before_their_slot(app: &TestApp) {
    let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
    let tasks: Vec<(Value, i64)> = eventually(10, "a run task queued ahead of its slot", || async {
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT job, (extract(epoch FROM run_at) * 1000)::bigint FROM apalis.jobs \
             WHERE job_type = 'cronflow-runs'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let ahead: Vec<(Value, i64)> = rows
            .into_iter()
            .map(|(job, due)| (serde_json::from_slice::<Value>(&job).unwrap(), due))
            .filter(|(task, _)| task.get("start_at").is_some())
            .collect();
        (!ahead.is_empty()).then_some(ahead)
    })
    .await;
    for (task, due) in tasks {
        let slot = utc(task["start_at"].as_str().unwrap());
        assert_eq!(due, slot.timestamp_millis() - 50, "{task}");
    }
    pool.close().await;
}

#[tokio::test]
async fn a_job_edited_to_a_new_schedule_fires_on_the_new_one() {
    let (app, clock) = spawn_at(Backend::Sqlite, "2026-06-01T12:00:00Z").await;
    let job = app.create_job(&job_body("edit")).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["next_run_at"], json!("2026-06-01T12:05:00+00:00"));
    let patched: Value = app
        .patch(&format!("/v1/jobs/{id}"), &json!({"schedule": "0 13 * * *"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["next_run_at"], json!("2026-06-01T13:00:00+00:00"));
    for t in ["2026-06-01T12:05:00Z", "2026-06-01T13:00:00Z"] {
        clock.set(utc(t));
        app.store.fire_due(utc(t)).await.unwrap();
    }
    assert_eq!(slots(&runs_of(&app, id).await), [utc("2026-06-01T13:00:00Z")]);
    let page = PageRequest::parse(None, None).unwrap();
    assert_eq!(app.store.list_jobs(&page).await.unwrap().items.len(), 1);
    app.stop().await;
}

/// Jobs with overlap `allow` are fired ahead of their slots (runs and tasks written
/// early, so they start on time); `skip` jobs wait for their slot, since whether they run
/// depends on what is running then.
async fn allow_jobs_are_fired_ahead_of_their_slot_and_skip_jobs_at_it(backend: Backend) {
    let (app, _clock) = spawn_at(backend, "2026-06-01T12:00:00.200Z").await;
    let mut allow = job_body("ahead");
    allow["schedule"] = json!("* * * * * *");
    allow["overlap_policy"] = json!("allow");
    let allow = app.create_job(&allow).await;
    let mut skip = job_body("at-slot");
    skip["schedule"] = json!("* * * * * *");
    let skip = app.create_job(&skip).await;
    let (allow_id, skip_id) = (allow["id"].as_str().unwrap(), skip["id"].as_str().unwrap());

    let report = app
        .store
        .fire_due_ahead(utc("2026-06-01T12:00:00.200Z"), Duration::milliseconds(1500))
        .await
        .unwrap();
    assert_eq!(report.fired, 1, "{report:?}");
    let runs = runs_of(&app, allow_id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["scheduled_for"], json!("2026-06-01T12:00:01+00:00"));
    let after: Value = app.get_json(&format!("/v1/jobs/{allow_id}")).await;
    assert_eq!(after["next_run_at"], json!("2026-06-01T12:00:02+00:00"));

    assert!(
        runs_of(&app, skip_id).await.is_empty(),
        "a skip job is not fired ahead"
    );
    let after: Value = app.get_json(&format!("/v1/jobs/{skip_id}")).await;
    assert_eq!(after["next_run_at"], json!("2026-06-01T12:00:01+00:00"));
    app.stop().await;
}

on_both_backends!(allow_jobs_are_fired_ahead_of_their_slot_and_skip_jobs_at_it);
