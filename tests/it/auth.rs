//! Every /v1 route needs a key, and a key's scope limits what it can do. The routes are
//! read from the OpenAPI document, so a new route is covered without editing this file.

use crate::{helpers::*, on_both_backends};
use cronflow_jobs::domain::Scope;
use reqwest::Method;
use serde_json::Value;

/// Every (method, path) of the API under /v1, with `{id}` filled with a plausible id.
fn v1_operations() -> Vec<(Method, String)> {
    let spec: Value = serde_json::from_str(&cronflow_api::spec_json()).expect("spec is JSON");
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path.replace("{id}", "wf_0000000000aa");
        for method in item.as_object().expect("path item").keys() {
            ops.push((method.to_uppercase().parse().expect("method"), concrete.clone()));
        }
    }
    assert!(ops.len() >= 10, "the spec lists the /v1 operations: {ops:?}");
    ops
}

async fn every_v1_route_refuses_a_missing_or_wrong_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path) in v1_operations() {
        let r = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(r).await;
        assert_eq!(status, 401, "{method} {path} without a key: {body}");
        assert_eq!(body["code"], "unauthorized", "{method} {path}");
        for wrong in [
            "nonsense",
            "cf_0000000000aa_secretsecretsecretsecretsecretse",
            &format!("{}x", app.admin_token),
        ] {
            let r = app
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(wrong)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with key {wrong}");
        }
    }
    app.stop().await;
}

async fn a_read_key_can_read_all_but_the_audit_log_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let read = app.key(Scope::Read).await;
    for (method, path) in v1_operations() {
        let r = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if path == "/v1/audit" || path.starts_with("/v1/audit/") {
            assert_eq!(status, 403, "{path}: the audit log needs an audit or admin key");
        } else if method == Method::GET {
            assert!(
                status != 401 && status != 403,
                "{method} {path} with a read key: {status}"
            );
        } else {
            assert_eq!(status, 403, "{method} {path} with a read key");
        }
    }
    app.stop().await;
}

async fn an_audit_key_cannot_read_jobs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let audit = app.key(Scope::Audit).await;
    let r = app
        .client
        .get(app.url("/v1/jobs"))
        .bearer_auth(&audit)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(r).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden");
    app.stop().await;
}

async fn a_revoked_key_stops_working(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post("/v1/keys", &serde_json::json!({"name": "ci", "scope": "read"}))
        .await;
    let (status, created) = status_and_json(r).await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("cf_"));
    let ok = app
        .client
        .get(app.url("/v1/jobs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let listed: Value = app.get_json("/v1/keys").await;
    let items = listed["items"].as_array().unwrap();
    assert!(items.iter().any(|k| k["id"] == created["id"]));
    assert!(
        items.iter().all(|k| k.get("token").is_none()),
        "tokens are never listed"
    );
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/v1/keys/{id}")).await.status(), 204);
    let gone = app
        .client
        .get(app.url("/v1/jobs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
    app.stop().await;
}

/// The key is checked before the input: a caller without a valid key, or with one whose
/// scope does not allow the operation, gets 401 or 403 for a malformed request too, never
/// a 400 that would tell it about the input.
async fn a_caller_without_the_right_key_learns_nothing_about_its_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (read, audit) = (app.key(Scope::Read).await, app.key(Scope::Audit).await);
    let bad_body = serde_json::json!({"name": 5, "no_such_field": true});
    let send = |method: Method, path: &str, key: &str| {
        app.client
            .request(method.clone(), app.url(path))
            .bearer_auth(key)
            .json(&if method == Method::POST {
                bad_body.clone()
            } else {
                Value::Null
            })
            .send()
    };
    let cases = [
        (
            Method::POST,
            "/v1/jobs",
            "cf_0000000000aa_secretsecretsecretsecretsecretse",
            401,
        ),
        (Method::GET, "/v1/deliveries?limit=100000", "nonsense", 401),
        (Method::POST, "/v1/jobs", read.as_str(), 403),
        (Method::GET, "/v1/deliveries?limit=100000", audit.as_str(), 403),
    ];
    for (method, path, key, expected) in cases {
        let (status, body) = status_and_json(send(method.clone(), path, key).await.unwrap()).await;
        assert_eq!(status, expected, "{method} {path} with key {key}: {body}");
    }
    // The same requests with the admin key are bad input, named.
    for (method, path) in [
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/deliveries?limit=100000"),
    ] {
        let (status, body) =
            status_and_json(send(method.clone(), path, &app.admin_token).await.unwrap()).await;
        assert!(
            (400..500).contains(&status) && status != 401 && status != 403,
            "{method} {path} with the admin key: {status} {body}"
        );
        assert!(body["field"].is_string(), "the error names the field: {body}");
    }
    app.stop().await;
}

on_both_backends!(
    a_caller_without_the_right_key_learns_nothing_about_its_input,
    every_v1_route_refuses_a_missing_or_wrong_key,
    a_read_key_can_read_all_but_the_audit_log_and_change_nothing,
    an_audit_key_cannot_read_jobs,
    a_revoked_key_stops_working,
);

#[tokio::test]
async fn probes_and_docs_need_no_key() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in ["/healthz", "/readyz", "/docs/", "/openapi.yaml"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");
    app.stop().await;
}
