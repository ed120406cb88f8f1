//! Running jobs: commands and their outcomes, timeouts, output capture, retries,
//! overlap, cancel, and the event written with every final state.

use crate::{helpers::*, on_both_backends};
use serde_json::{Value, json};

async fn exit_codes_and_signals_map_to_states_with_their_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ok = app.create_job(&shell_job("ok", "echo hello")).await;
    let fail = app
        .create_job(&shell_job("fail", "echo fine; echo boom >&2; exit 7"))
        .await;
    let signal = app.create_job(&shell_job("signal", "kill -9 $$")).await;
    let missing = app
        .create_job(&json!({"name": "missing", "schedule": "0 0 1 1 *",
        "target": {"type": "command", "command": ["/no/such/program"]}}))
        .await;
    let ids: Vec<String> = [&ok, &fail, &signal, &missing]
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    let mut runs = Vec::new();
    for id in &ids {
        let run = app.trigger(id).await;
        assert_eq!(run["origin"], "manual");
        assert!(run.get("scheduled_for").is_none());
        runs.push(run["id"].as_str().unwrap().to_owned());
    }
    let ok_run = app.finished_run(&runs[0], 30).await;
    assert_eq!(ok_run["state"], "completed", "{ok_run}");
    assert_eq!(ok_run["exit_code"], 0);
    assert_eq!(ok_run["output"], "hello\n");
    assert!(ok_run["duration_ms"].as_i64().unwrap() >= 0);

    let failed = app.finished_run(&runs[1], 30).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["exit_code"], 7);
    assert_eq!(
        failed["stack_trace"], "boom\n",
        "the stack trace is the stderr tail"
    );
    assert!(failed["output"].as_str().unwrap().contains("fine"));

    let killed = app.finished_run(&runs[2], 30).await;
    assert_eq!(killed["state"], "failed", "{killed}");
    assert_eq!(killed["exit_code"], 137, "128 + SIGKILL");
    assert!(killed["error"].as_str().unwrap().contains("signal 9"), "{killed}");

    let not_found = app.finished_run(&runs[3], 30).await;
    assert_eq!(not_found["state"], "failed", "{not_found}");
    assert_eq!(not_found["exit_code"], 127);
    assert!(not_found["error"].is_string());

    let events = app.events().await;
    let by_run = |id: &str| {
        events
            .iter()
            .find(|e| e["data"]["run_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("event for {id}"))
    };
    let e = by_run(&runs[0]);
    assert_eq!(e["event"], "job.completed");
    assert_eq!(
        e.as_object().unwrap().len(),
        5,
        "exactly five top-level fields: {e}"
    );
    for k in ["event", "timestamp", "job_id", "environment", "data"] {
        assert!(e.get(k).is_some(), "{k} in {e}");
    }
    assert_eq!(e["job_id"], ids[0].as_str());
    assert_eq!(e["environment"], "production");
    assert_eq!(e["data"]["output"], "hello\n");
    assert!(
        e["data"]["scheduled_for"].is_null() && e["data"]["lateness_ms"].is_null(),
        "manual: {e}"
    );
    assert!(e["data"]["next_run_at"].is_string());
    let e = by_run(&runs[1]);
    assert_eq!(e["event"], "job.failed");
    assert_eq!(e["data"]["error_code"], 7);
    assert_eq!(e["data"]["message"], "exited with code 7");
    assert_eq!(e["data"]["stack_trace"], "boom\n");
    assert_eq!(e["data"]["retries"], 0);
    assert_outbox_is_consistent(&app).await;
    app.stop().await;
}

async fn a_timeout_kills_the_whole_process_group(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pgid");
    let mut body = shell_job(
        "slow",
        &format!("echo $$ > {}; sleep 1000 & sleep 1000", pidfile.display()),
    );
    body["timeout_seconds"] = json!(1);
    let job = app.create_job(&body).await;
    let run = app.trigger(job["id"].as_str().unwrap()).await;
    let done = app.finished_run(run["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["state"], "timed_out", "{done}");
    let pgid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(
        !group_has_live_members(pgid),
        "no process of group {pgid} survives the timeout"
    );
    let events = app.events().await;
    let e = events
        .iter()
        .find(|e| e["data"]["run_id"] == done["id"])
        .expect("timed_out event");
    assert_eq!(e["event"], "job.timed_out");
    assert_eq!(e["data"]["timeout_seconds"], 1);
    app.stop().await;
}

async fn output_over_the_limit_keeps_head_and_tail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let job = app
        .create_job(&shell_job(
            "chatty",
            "echo START; head -c 300000 /dev/zero | tr '\\0' x; echo; echo END",
        ))
        .await;
    let run = app.trigger(job["id"].as_str().unwrap()).await;
    let done = app.finished_run(run["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["state"], "completed");
    let output = done["output"].as_str().unwrap();
    assert!(output.starts_with("START\n"), "head kept");
    assert!(output.ends_with("END\n"), "tail kept");
    assert!(output.contains("omitted"), "the cut is marked");
    assert!(output.len() <= 64 * 1024 + 100, "bounded: {} bytes", output.len());
    app.stop().await;
}

async fn a_failing_job_is_retried_with_each_attempt_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut body = shell_job("flaky", "echo nope >&2; exit 1");
    body["max_retries"] = json!(2);
    let job = app.create_job(&body).await;
    let job_id = job["id"].as_str().unwrap();
    app.trigger(job_id).await;
    let runs = eventually(60, "three failed attempts", || async {
        let list: Value = app.get_json(&format!("/v1/jobs/{job_id}/runs")).await;
        let items = list["items"].as_array().unwrap().clone();
        (items.len() == 3 && items.iter().all(|r| r["state"] == "failed")).then_some(items)
    })
    .await;
    let attempts: Vec<i64> = runs.iter().map(|r| r["attempt"].as_i64().unwrap()).collect();
    assert_eq!(attempts, [3, 2, 1], "newest first");
    assert_eq!(runs[0]["origin"], "retry");
    let events: Vec<Value> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e["job_id"] == job_id)
        .collect();
    let retries: Vec<(i64, bool)> = events
        .iter()
        .map(|e| {
            (
                e["data"]["retries"].as_i64().unwrap(),
                e["data"]["will_retry"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(retries, [(0, true), (1, true), (2, false)]);
    assert_outbox_is_consistent(&app).await;
    app.stop().await;
}

async fn overlap_skip_records_a_skipped_run_and_cancel_stops_the_running_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pgid");
    let job = app
        .create_job(&shell_job(
            "long",
            &format!("echo $$ > {}; sleep 1000 & sleep 1000", pidfile.display()),
        ))
        .await;
    let job_id = job["id"].as_str().unwrap();
    let first = app.trigger(job_id).await;
    let second = app.trigger(job_id).await;
    assert_eq!(second["state"], "skipped", "overlap skip: {second}");
    let first_id = first["id"].as_str().unwrap();
    eventually(30, "the first run to be running", || async {
        (app.run(first_id).await["state"] == "running" && pidfile.exists()).then_some(())
    })
    .await;
    let r = app.post(&format!("/v1/runs/{first_id}/cancel"), &json!({})).await;
    assert_eq!(r.status(), 202);
    let done = app.finished_run(first_id, 30).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let pgid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!group_has_live_members(pgid), "cancel stops the whole group");
    let r = app.post(&format!("/v1/runs/{first_id}/cancel"), &json!({})).await;
    let (status, body) = status_and_json(r).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(
        app.events().await.iter().all(|e| e["data"]["run_id"] != first_id),
        "no event for a cancel"
    );
    app.stop().await;
}

async fn an_http_target_completes_on_2xx_and_fails_with_the_status_otherwise(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200, 503]).await;
    let mut body = job_body("ping");
    body["target"] = json!({"type": "http", "method": "POST", "url": receiver.url("/hook"), "body": "{\"x\":1}",
                            "headers": {"X-Test": "yes"}});
    let job = app.create_job(&body).await;
    let job_id = job["id"].as_str().unwrap();
    let first = app.trigger(job_id).await;
    let done = app.finished_run(first["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["exit_code"], 200);
    let second = app.trigger(job_id).await;
    let done = app.finished_run(second["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["exit_code"], 503);
    let seen = receiver.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, b"{\"x\":1}");
    assert_eq!(seen[0].headers.get("x-test").map(String::as_str), Some("yes"));
    app.stop().await;
}

async fn overlap_queue_starts_the_next_run_when_the_previous_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let mut body = shell_job(
        "serial",
        &format!("while [ ! -f {} ]; do sleep 0.05; done", go.display()),
    );
    body["overlap_policy"] = json!("queue");
    let job = app.create_job(&body).await;
    let job_id = job["id"].as_str().unwrap();
    let first = app.trigger(job_id).await;
    let second = app.trigger(job_id).await;
    assert_eq!(second["state"], "queued", "{second}");
    let first_id = first["id"].as_str().unwrap();
    eventually(30, "the first run to be running", || async {
        (app.run(first_id).await["state"] == "running").then_some(())
    })
    .await;
    assert_eq!(
        app.run(second["id"].as_str().unwrap()).await["state"],
        "queued",
        "it waits while the first runs"
    );
    std::fs::write(&go, b"").unwrap();
    let first = app.finished_run(first_id, 30).await;
    let second = app.finished_run(second["id"].as_str().unwrap(), 30).await;
    assert_eq!(
        (first["state"].as_str(), second["state"].as_str()),
        (Some("completed"), Some("completed"))
    );
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(
        time(&second["started_at"]) >= time(&first["finished_at"]),
        "one after the other"
    );
    app.stop().await;
}

on_both_backends!(
    overlap_queue_starts_the_next_run_when_the_previous_ends,
    exit_codes_and_signals_map_to_states_with_their_events,
    a_timeout_kills_the_whole_process_group,
    output_over_the_limit_keeps_head_and_tail,
    a_failing_job_is_retried_with_each_attempt_recorded,
    overlap_skip_records_a_skipped_run_and_cancel_stops_the_running_one,
    an_http_target_completes_on_2xx_and_fails_with_the_status_otherwise,
);

/// Every run in a final state that has an event type has exactly one event, and every
/// event belongs to such a run.
pub(crate) async fn assert_outbox_is_consistent(app: &TestApp) {
    let events = app.events().await;
    let mut page = cronflow_jobs::domain::PageRequest::parse(Some(500), None).unwrap();
    let jobs = app.store.list_jobs(&page).await.unwrap().items;
    let mut final_runs = Vec::new();
    for job in jobs {
        page.after = None;
        for run in app.store.list_runs(&job.id, &page).await.unwrap().items {
            if let Some(kind) = cronflow_jobs::domain::EventType::for_state(run.state) {
                final_runs.push((run.id.to_string(), kind.as_str()));
            }
        }
    }
    for (run_id, kind) in &final_runs {
        let matching: Vec<_> = events
            .iter()
            .filter(|e| e["data"]["run_id"] == run_id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "one event for run {run_id}");
        assert_eq!(matching[0]["event"], *kind);
    }
    assert_eq!(events.len(), final_runs.len(), "no event without its final run");
}

/// A job deleted while one of its runs is going: the run still ends with its final state
/// recorded, and its event is written and delivered.
async fn a_job_deleted_mid_run_still_records_the_run_and_sends_its_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let r = app
        .post(
            "/v1/webhooks",
            &serde_json::json!({"url": receiver.url("/hook"), "events": ["job.completed"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let job = app
        .create_job(&shell_job(
            "deleted-mid-run",
            &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
        ))
        .await;
    let job_id = job["id"].as_str().unwrap();
    let run = app.trigger(job_id).await;
    let run_id = run["id"].as_str().unwrap();
    eventually(30, "the run to be running", || async {
        (app.run(run_id).await["state"] == "running").then_some(())
    })
    .await;
    assert_eq!(app.delete(&format!("/v1/jobs/{job_id}")).await.status(), 204);
    std::fs::write(&go, "").unwrap();
    let seen = eventually(30, "the run's event at the receiver", || async {
        let seen = receiver.requests();
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["event"], "job.completed");
    assert_eq!(body["data"]["run_id"], run_id);
    assert_eq!(app.run(run_id).await["state"], "completed");
    app.stop().await;
}

on_both_backends!(a_job_deleted_mid_run_still_records_the_run_and_sends_its_event);
