//! The server refuses exactly what the OpenAPI document says is invalid, and every
//! refusal names the input at fault: unknown fields at any depth, no type coercion,
//! `null` is not "absent", id filters check their prefix, `limit` is 1 to 500, and a
//! route without the request's method answers 405 with `Allow`. Nothing refused is
//! stored.

use crate::helpers::{Backend, TestApp, TestReceiver, eventually, job_body, status_and_json};
use crate::on_both_backends;
use serde_json::{Value, json};

on_both_backends!(
    unknown_fields_are_refused_at_any_depth_on_create_and_patch,
    values_of_the_wrong_type_are_refused_not_coerced,
    a_null_name_in_a_patch_is_refused_and_changes_nothing,
);

/// Asserts that `body` sent with `method` to `path` is refused with `status` naming
/// `field`, and returns the error body.
async fn refused(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: &Value,
    status: u16,
    field: &str,
) -> Value {
    let r = app.request(method.clone(), path).json(body).send().await.unwrap();
    let (got, err) = status_and_json(r).await;
    assert_eq!(
        (got, err["field"].as_str()),
        (status, Some(field)),
        "{method} {path} {body} -> {err}"
    );
    assert!(err["code"].is_string() && err["message"].is_string(), "{err}");
    err
}

async fn jobs_stored(app: &TestApp) -> usize {
    app.get_json("/v1/jobs").await["items"].as_array().unwrap().len()
}

async fn unknown_fields_are_refused_at_any_depth_on_create_and_patch(backend: Backend) {
    let spawned = TestApp::spawn(backend).await;
    let app = &spawned;
    let with_target = |target: Value| {
        let mut body = job_body("typo");
        body["target"] = target;
        body
    };
    let cases = [
        (
            json!({"type": "command", "command": ["true"], "cwd": "/x"}),
            "target.cwd",
        ),
        (
            json!({"type": "command", "command": ["true"], "url": "https://example.com/"}),
            "target.url",
        ),
        (
            json!({"type": "http", "url": "https://example.com/", "command": ["true"]}),
            "target.command",
        ),
    ];
    for (target, field) in &cases {
        let err = refused(
            app,
            reqwest::Method::POST,
            "/v1/jobs",
            &with_target(target.clone()),
            400,
            field,
        )
        .await;
        assert!(
            err["message"].as_str().unwrap().contains("unknown field"),
            "{err}"
        );
    }
    assert_eq!(jobs_stored(app).await, 0, "a refused create stores nothing");

    let job = app.create_job(&job_body("kept")).await;
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    for (target, field) in &cases {
        refused(
            app,
            reqwest::Method::PATCH,
            &path,
            &json!({ "target": target }),
            400,
            field,
        )
        .await;
    }
    refused(
        app,
        reqwest::Method::PATCH,
        &path,
        &json!({"nmae": "x"}),
        400,
        "nmae",
    )
    .await;
    refused(
        app,
        reqwest::Method::POST,
        "/v1/webhooks",
        &json!({"url": "https://example.com/h", "events": ["job.failed"], "secert": "x"}),
        400,
        "secert",
    )
    .await;
    let mut after = app.get_json(&path).await;
    after.as_object_mut().unwrap().remove("health");
    assert_eq!(after, job, "refused patches change nothing");
    spawned.stop().await;
}

async fn values_of_the_wrong_type_are_refused_not_coerced(backend: Backend) {
    let spawned = TestApp::spawn(backend).await;
    let app = &spawned;
    let job = |patch: Value| {
        let mut body = job_body("types");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let http = |extra: Value| {
        let mut target = json!({"type": "http", "url": "https://example.com/"});
        for (k, v) in extra.as_object().unwrap() {
            target[k] = v.clone();
        }
        job(json!({ "target": target }))
    };
    let cases = [
        (job(json!({"name": 123})), "name", "must be a string"),
        (job(json!({"tags": [1]})), "tags[0]", "must be a string"),
        (
            job(json!({"target": {"type": "command", "command": [1, 2]}})),
            "target.command[0]",
            "must be a string",
        ),
        (
            job(json!({"target": {"type": "command", "command": ["true"], "env": {"A": 1}}})),
            "target.env.A",
            "must be a string",
        ),
        (
            job(json!({"target": {"type": "command", "command": ["true"], "working_dir": 5}})),
            "target.working_dir",
            "must be a string",
        ),
        (
            http(json!({"headers": {"A": 1}})),
            "target.headers.A",
            "must be a string",
        ),
        (
            job(json!({"timeout_seconds": "60"})),
            "timeout_seconds",
            "must be an integer",
        ),
        (
            job(json!({"timeout_seconds": 1.5})),
            "timeout_seconds",
            "must be an integer",
        ),
    ];
    for (body, field, needle) in &cases {
        let err = refused(app, reqwest::Method::POST, "/v1/jobs", body, 400, field).await;
        assert!(err["message"].as_str().unwrap().contains(needle), "{body}: {err}");
    }
    let keys = || async { app.get_json("/v1/keys").await["items"].as_array().unwrap().len() };
    let before = keys().await;
    refused(
        app,
        reqwest::Method::POST,
        "/v1/keys",
        &json!({"name": false, "scope": "read"}),
        400,
        "name",
    )
    .await;
    assert_eq!(keys().await, before, "no key was made");
    assert_eq!(jobs_stored(app).await, 0, "nothing refused was stored");
    spawned.stop().await;
}

async fn a_null_name_in_a_patch_is_refused_and_changes_nothing(backend: Backend) {
    let spawned = TestApp::spawn(backend).await;
    let app = &spawned;
    let job = app.create_job(&job_body("named")).await;
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let err = refused(
        app,
        reqwest::Method::PATCH,
        &path,
        &json!({"name": null}),
        400,
        "name",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("null"), "{err}");
    refused(
        app,
        reqwest::Method::PATCH,
        &path,
        &json!({"target": null}),
        400,
        "target",
    )
    .await;
    let after = app.get_json(&path).await;
    assert_eq!(after["name"], "named");
    assert_eq!(
        after["updated_at"], job["updated_at"],
        "a refused patch does not bump updated_at"
    );
    spawned.stop().await;
}

#[tokio::test]
async fn numbers_past_the_documented_range_name_their_field() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for field in ["timeout_seconds", "max_retries"] {
        let mut body = job_body("huge");
        body[field] = json!(4_294_967_296_u64);
        let err = refused(&app, reqwest::Method::POST, "/v1/jobs", &body, 422, field).await;
        assert!(err["message"].as_str().unwrap().contains("at most"), "{err}");
    }
    for limit in ["0", "501", "-1"] {
        let (status, err) = status_and_json(app.get(&format!("/v1/jobs?limit={limit}")).await).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (422, Some("limit")),
            "limit={limit}: {err}"
        );
    }
    let (status, err) = status_and_json(app.get("/v1/jobs?limit=ten").await).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("limit")), "{err}");
    let (status, page) = status_and_json(app.get("/v1/jobs?limit=500").await).await;
    assert_eq!(status, 200, "{page}");
    app.stop().await;
}

#[tokio::test]
async fn query_parameters_of_the_wrong_type_name_the_parameter() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, err) = status_and_json(app.get("/v1/audit?follow=maybe").await).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("follow")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("maybe"), "{err}");
    let (status, err) = status_and_json(app.get("/v1/deliveries?since=garbage").await).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("since")), "{err}");
    let (status, err) = status_and_json(app.get("/v1/deliveries?status=lost").await).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("status")), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn id_filters_with_the_wrong_prefix_are_refused_naming_the_filter() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in ["/v1/deliveries", "/v1/deliveries/export.csv"] {
        for (query, field) in [("webhook_id=wf_x", "webhook_id"), ("job_id=garbage", "job_id")] {
            let (status, err) = status_and_json(app.get(&format!("{path}?{query}")).await).await;
            assert_eq!(
                (status, err["field"].as_str()),
                (422, Some(field)),
                "{path}?{query}: {err}"
            );
        }
        let ok = app.get(&format!("{path}?webhook_id=wh_abc&job_id=wf_abc")).await;
        assert_eq!(ok.status(), 200, "{path}");
    }
    let err = refused(
        &app,
        reqwest::Method::POST,
        "/v1/dlq/replay",
        &json!({"webhook_id": "wf_x"}),
        422,
        "webhook_id",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("wh_"), "{err}");
    refused(
        &app,
        reqwest::Method::POST,
        "/v1/dlq/replay",
        &json!({"since": "garbage"}),
        400,
        "since",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_route_without_the_method_answers_405_with_allow() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path, allowed) in [
        (reqwest::Method::PUT, "/v1/jobs", vec!["GET", "HEAD", "POST"]),
        (
            reqwest::Method::POST,
            "/v1/jobs/wf_abc",
            vec!["DELETE", "GET", "HEAD", "PATCH"],
        ),
        (reqwest::Method::DELETE, "/v1/audit", vec!["GET", "HEAD"]),
        (reqwest::Method::TRACE, "/v1/dlq/replay", vec!["POST"]),
    ] {
        let r = app.request(method.clone(), path).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let mut allow: Vec<String> = r
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        allow.sort();
        assert_eq!(allow, allowed, "{method} {path}");
        let (_, err) = status_and_json(r).await;
        assert_eq!(err["code"], "method_not_allowed", "{err}");
    }
    app.stop().await;
}

/// An explicit `null` filter is refused, not read as "no filter": the bulk replay
/// replays nothing.
async fn a_null_filter_does_not_replay_the_whole_dlq(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "10ms")]).await;
    let receiver = TestReceiver::start(&[500]).await;
    let hook: Value = app
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/hook"), "events": ["job.failed"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let sent: Value = app
        .post(
            &format!("/v1/webhooks/{}/test", hook["id"].as_str().unwrap()),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = sent["delivery_id"].as_str().unwrap().to_owned();
    eventually(60, "the delivery to die", || async {
        let d = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["status"] == "dead").then_some(())
    })
    .await;
    for body in [
        json!({"webhook_id": null}),
        json!({"event_type": null}),
        json!({"since": null}),
    ] {
        let field = body.as_object().unwrap().keys().next().unwrap().clone();
        refused(&app, reqwest::Method::POST, "/v1/dlq/replay", &body, 400, &field).await;
    }
    let dlq = app.get_json("/v1/dlq").await;
    assert_eq!(dlq["items"].as_array().unwrap().len(), 1, "still dead: {dlq}");
    let d = app.get_json(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(d["status"], "dead", "{d}");
    app.stop().await;
}

crate::on_both_backends!(a_null_filter_does_not_replay_the_whole_dlq);

#[test]
fn the_document_states_the_limits_the_server_enforces() {
    let spec: Value = serde_json::from_str(&cronflow_api::spec_json()).unwrap();
    let mut limits = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "limit" {
                    limits += 1;
                    assert_eq!(
                        (p["schema"]["minimum"].as_f64(), p["schema"]["maximum"].as_f64()),
                        (Some(1.0), Some(500.0)),
                        "{method} {path}"
                    );
                }
            }
            for (_, media) in op["requestBody"]["content"].as_object().into_iter().flatten() {
                assert_closed(&spec, &media["schema"], &format!("{method} {path}"));
            }
        }
    }
    assert!(limits >= 5, "every listing takes a limit");
    let schemas = &spec["components"]["schemas"];
    let prop = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
    assert_eq!(prop("JobIn", "name")["maxLength"], 200);
    assert_eq!(prop("JobIn", "name")["minLength"], 1);
    assert_eq!(prop("JobIn", "timeout_seconds")["maximum"], 604_800.0);
    assert_eq!(prop("JobIn", "max_retries")["maximum"], 100.0);
    assert_eq!(prop("JobIn", "tags")["maxItems"], 32);
    assert_eq!(prop("WebhookIn", "secret")["minLength"], 16);
    assert_eq!(prop("WebhookIn", "secret")["maxLength"], 256);
    assert_eq!(prop("WebhookIn", "events")["minItems"], 1);
    assert_eq!(prop("KeyIn", "name")["maxLength"], 200);
    assert!(
        prop("DlqReplayIn", "webhook_id")["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^wh_")
    );
}

/// Every object schema `schema` reaches is closed (`additionalProperties: false`), or is
/// a map (`additionalProperties` a schema) or a union of closed variants.
fn assert_closed(spec: &Value, schema: &Value, at: &str) {
    let mut seen = std::collections::BTreeSet::new();
    let mut pending = vec![schema.clone()];
    while let Some(s) = pending.pop() {
        if let Some(r) = s["$ref"].as_str() {
            if seen.insert(r.to_owned()) {
                pending.push(spec.pointer(r.trim_start_matches('#')).unwrap().clone());
            }
            continue;
        }
        if s.get("properties").is_some() {
            assert_eq!(s["additionalProperties"], false, "{at}: {s}");
            pending.extend(s["properties"].as_object().unwrap().values().cloned());
        }
        pending.extend(s["oneOf"].as_array().into_iter().flatten().cloned());
        if s["items"].is_object() {
            pending.push(s["items"].clone());
        }
    }
}
