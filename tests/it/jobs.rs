//! The jobs resource: create, read, list, change, pause, resume, delete; validation;
//! persistence.

use crate::{helpers::*, on_both_backends};
use chrono::{DateTime, Utc};
use cronflow_jobs::clock::ManualClock;
use serde_json::{Value, json};
use std::sync::Arc;

async fn a_job_round_trips_through_create_get_patch_and_delete(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({
        "name": "nightly-report",
        "schedule": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "target": {"type": "command", "command": ["sh", "-c", "./report.sh"], "env": {"MODE": "full"}, "working_dir": "/tmp"},
        "timeout_seconds": 120,
        "max_retries": 2,
        "environment": "staging",
        "overlap_policy": "queue",
        "catch_up": "all",
        "tags": ["reports", "daily"]
    });
    let job = app.create_job(&body).await;
    let id = job["id"].as_str().unwrap();
    assert!(id.starts_with("wf_"), "{id}");
    for field in [
        "name",
        "schedule",
        "timezone",
        "target",
        "timeout_seconds",
        "max_retries",
        "environment",
        "overlap_policy",
        "catch_up",
        "tags",
    ] {
        let mut expected = body[field].clone();
        if field == "target" {
            // Environment values are credentials: shown redacted, names kept.
            expected["env"]["MODE"] = json!("[redacted]");
        }
        assert_eq!(job[field], expected, "{field}");
    }
    assert_eq!(job["paused"], false);
    assert_eq!(job["next_run_times"].as_array().unwrap().len(), 5);
    assert_eq!(job["next_run_at"], job["next_run_times"][0]);

    let mut fetched: Value = app.get_json(&format!("/v1/jobs/{id}")).await;
    // A single job's view adds its health (see `watchdog`).
    let health = fetched.as_object_mut().unwrap().remove("health").expect("health");
    assert_eq!(health["state"], "on_time", "{health}");
    assert_eq!(fetched, job);

    let r = app.patch(&format!("/v1/jobs/{id}"), &json!({"name": "renamed", "target": {"type": "http", "url": "http://127.0.0.1:9/hook", "method": "POST"}})).await;
    let (status, patched) = status_and_json(r).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["target"]["type"], "http");
    assert_eq!(patched["target"]["method"], "POST");
    assert_eq!(patched["schedule"], "0 2 * * *", "fields not in the patch stay");
    assert_eq!(patched["tags"], body["tags"]);

    let paused: Value = app
        .post(&format!("/v1/jobs/{id}/pause"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert!(
        paused.get("next_run_at").is_none(),
        "a paused job has no next run: {paused}"
    );
    let resumed: Value = app
        .post(&format!("/v1/jobs/{id}/resume"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["paused"], false);
    assert!(resumed["next_run_at"].is_string());

    assert_eq!(app.delete(&format!("/v1/jobs/{id}")).await.status(), 204);
    let (status, body) = status_and_json(app.get(&format!("/v1/jobs/{id}")).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    assert_eq!(app.delete(&format!("/v1/jobs/{id}")).await.status(), 404);
    app.stop().await;
}

async fn invalid_jobs_are_refused_with_the_field_named_and_nothing_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let valid = job_body("ok");
    let with = |k: &str, v: Value| {
        let mut b = valid.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            with("schedule", json!("61 * * * *")),
            422,
            "schedule",
            "minute field `61`",
        ),
        (with("schedule", json!("* * *")), 422, "schedule", "found 3"),
        (
            with("schedule", json!("0 0 30 2 *")),
            422,
            "schedule",
            "never fires",
        ),
        (
            with("schedule", json!("@fortnightly")),
            422,
            "schedule",
            "unknown macro",
        ),
        (
            with("timezone", json!("Mars/Olympus")),
            422,
            "timezone",
            "unknown time zone",
        ),
        (with("name", json!("  ")), 422, "name", "empty"),
        (
            with("timeout_seconds", json!(0)),
            422,
            "timeout_seconds",
            "at least 1",
        ),
        (with("max_retries", json!(1000)), 422, "max_retries", "at most"),
        (with("tags", json!(["a", "a"])), 422, "tags", "twice"),
        (
            with("target", json!({"type": "command", "command": []})),
            422,
            "target.command",
            "at least 1 item",
        ),
        (
            with("target", json!({"type": "http", "url": "ftp://x"})),
            422,
            "target.url",
            "scheme",
        ),
        (
            with("target", json!({"type": "http", "url": "not a url"})),
            422,
            "target.url",
            "not a valid",
        ),
        (
            with("target", json!({"type": "command"})),
            400,
            "target.command",
            "required",
        ),
        (
            with("target", json!({"type": "shell", "command": ["true"]})),
            400,
            "target.type",
            "not one of",
        ),
        (
            with("environment", json!("prod")),
            400,
            "environment",
            "not one of",
        ),
        (with("max_retries", json!("three")), 400, "max_retries", "integer"),
        (
            with("timeout_seconds", json!(-1)),
            422,
            "timeout_seconds",
            "at least",
        ),
        (with("surprise", json!(1)), 400, "surprise", "unknown field"),
        (
            json!({"schedule": "* * * * *", "target": {"type": "command", "command": ["true"]}}),
            400,
            "name",
            "required",
        ),
    ];
    for (body, status, field, needle) in cases {
        let (got, err) = status_and_json(app.post("/v1/jobs", &body).await).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{body}: message {message:?} should mention {needle:?}"
        );
        assert!(err["code"].is_string());
    }
    let malformed = app
        .request(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (status, err) = status_and_json(malformed).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "bad_request");

    let listed: Value = app.get_json("/v1/jobs").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        0,
        "nothing was stored: {listed}"
    );

    let (status, err) = status_and_json(app.get("/v1/jobs/wf_doesnotexist").await).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    let (status, _) = status_and_json(app.get("/v1/jobs/not-an-id").await).await;
    assert_eq!(status, 404);
    let job = app.create_job(&valid).await;
    let r = app
        .patch(
            &format!("/v1/jobs/{}", job["id"].as_str().unwrap()),
            &json!({"timezone": "Nowhere/Land"}),
        )
        .await;
    let (status, err) = status_and_json(r).await;
    assert_eq!((status, err["field"].as_str()), (422, Some("timezone")));
    let unchanged: Value = app
        .get_json(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(unchanged["timezone"], "UTC", "a refused patch changes nothing");
    app.stop().await;
}

async fn an_oversized_body_is_refused_with_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut body = job_body("big");
    body["target"]["command"] = json!(["echo", "x".repeat(2 * 1024 * 1024)]);
    let (status, err) = status_and_json(app.post("/v1/jobs", &body).await).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["code"], "payload_too_large");
    // Chunked, without a Content-Length.
    let chunks = futures_stream(serde_json::to_vec(&body).unwrap());
    let r = app
        .request(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let listed: Value = app.get_json("/v1/jobs").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);
    app.stop().await;
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks)
}

async fn jobs_are_listed_page_by_page_without_gaps_or_repeats(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            app.create_job(&job_body(&format!("job-{i}"))).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=3&cursor={c}"),
            None => "/v1/jobs?limit=3".to_owned(),
        };
        let page: Value = app.get_json(&path).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "oldest first, each job once");
    for bad in ["/v1/jobs?limit=0", "/v1/jobs?limit=501", "/v1/jobs?cursor=bogus!"] {
        let (status, err) = status_and_json(app.get(bad).await).await;
        assert_eq!(status, 422, "{bad}: {err}");
        assert!(
            ["limit", "cursor"].contains(&err["field"].as_str().unwrap()),
            "{bad}: {err}"
        );
    }
    app.stop().await;
}

on_both_backends!(
    a_job_round_trips_through_create_get_patch_and_delete,
    invalid_jobs_are_refused_with_the_field_named_and_nothing_stored,
    an_oversized_body_is_refused_with_413,
    jobs_are_listed_page_by_page_without_gaps_or_repeats,
);

async fn jobs_and_keys_survive_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert!(
        app.first_admin_token.is_some(),
        "the first start creates an admin key"
    );
    let job = app.create_job(&job_body("durable")).await;
    let token = app.admin_token.clone();
    let app = app.restart().await;
    assert!(app.first_admin_token.is_none(), "later starts create no key");
    let r = app
        .client
        .get(app.url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, mut again) = status_and_json(r).await;
    assert_eq!(status, 200);
    again.as_object_mut().unwrap().remove("health");
    assert_eq!(again, job);
    app.stop().await;
}

on_both_backends!(jobs_and_keys_survive_a_restart);

#[tokio::test]
async fn http_targets_on_internal_addresses_or_with_a_host_header_are_refused_at_creation() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("CRONFLOW_ALLOW_PRIVATE_TARGETS", "false")]).await;
    let http = |url: &str, headers: Value| {
        let mut body = job_body("outbound");
        body["target"] = json!({"type": "http", "url": url, "headers": headers});
        body
    };
    let cases = [
        (http("https://127.0.0.1/x", json!({})), "target.url"),
        (http("https://10.0.0.1/x", json!({})), "target.url"),
        (
            http("https://169.254.169.254/latest/meta-data", json!({})),
            "target.url",
        ),
        (http("https://[::1]/x", json!({})), "target.url"),
        (http("https://[::ffff:127.0.0.1]/x", json!({})), "target.url"),
        (http("https://[::127.0.0.1]/x", json!({})), "target.url"),
        (
            http("https://example.com/x", json!({"Host": "metadata.internal"})),
            "target.headers",
        ),
    ];
    let job = app.create_job(&http("https://example.com/x", json!({}))).await;
    let id = job["id"].as_str().unwrap();
    for (body, field) in cases {
        let (status, err) = status_and_json(app.post("/v1/jobs", &body).await).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (422, Some(field)),
            "{body}: {err}"
        );
        let patch = json!({"target": body["target"]});
        let (status, err) = status_and_json(app.patch(&format!("/v1/jobs/{id}"), &patch).await).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (422, Some(field)),
            "PATCH {patch}: {err}"
        );
    }
    let (_, list) = status_and_json(app.get("/v1/jobs").await).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "nothing else stored: {list}"
    );
    app.stop().await;
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn times(v: &Value) -> Vec<DateTime<Utc>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| utc(t.as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn next_run_times_follow_the_job_zone_across_dst() {
    let clock = ManualClock::new(utc("2026-03-08T06:40:00Z"));
    let app = TestApp::spawn_with_clock(Backend::Sqlite, Arc::new(clock.clone())).await;
    // Every 15 minutes in New York across the spring-forward gap (02:00 -> 03:00 EDT).
    let mut body = job_body("dst");
    body["schedule"] = json!("*/15 * * * *");
    body["timezone"] = json!("America/New_York");
    let job = app.create_job(&body).await;
    assert_eq!(
        times(&job["next_run_times"]),
        ["06:45", "07:00", "07:15", "07:30", "07:45"].map(|t| utc(&format!("2026-03-08T{t}:00Z")))
    );
    // A daily 02:30 job fires at 03:00 EDT on the day 02:30 does not exist.
    clock.set(utc("2026-03-07T00:00:00Z"));
    let mut body = job_body("gap");
    body["schedule"] = json!("30 2 * * *");
    body["timezone"] = json!("America/New_York");
    let job = app.create_job(&body).await;
    assert_eq!(
        times(&job["next_run_times"])[..3],
        [
            utc("2026-03-07T07:30:00Z"),
            utc("2026-03-08T07:00:00Z"),
            utc("2026-03-09T06:30:00Z")
        ]
    );
    assert_eq!(
        job["created_at"],
        json!("2026-03-07T00:00:00+00:00"),
        "the injected clock is used"
    );
    app.stop().await;
}
