//! Credentials held in definitions (a command's environment, an HTTP target's headers,
//! body and URL query, a subscription's headers and URL query) are shown redacted to every
//! key; a definition sent back redacted keeps them; an admin reveals them on purpose
//! through `POST /v1/reveal`, which is audited.

use crate::{helpers::*, on_both_backends};
use cronflow_jobs::domain::Scope;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "s3cret-Zq9";

async fn get_as(app: &TestApp, key: &str, path: &str) -> String {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.expect("body")
}

async fn every_key_sees_credentials_redacted_and_an_admin_reveals_them_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let command = app
        .create_job(&json!({
            "name": "with-env", "schedule": "0 0 1 1 *",
            "target": {"type": "command", "command": ["true"], "env": {"API_TOKEN": SECRET, "MODE": "fast"}},
        }))
        .await;
    let http = app
        .create_job(&json!({
            "name": "with-headers", "schedule": "0 0 1 1 *",
            "target": {"type": "http", "method": "POST",
                "url": format!("http://127.0.0.1:9/hook?token={SECRET}&x=1"),
                "headers": {"Authorization": format!("Bearer {SECRET}")},
                "body": format!("{{\"password\": \"{SECRET}\"}}")},
        }))
        .await;
    let hook = app
        .post(
            "/v1/webhooks",
            &json!({"url": format!("http://127.0.0.1:9/in?sig={SECRET}"), "events": ["job.failed"],
                "headers": {"X-Api-Key": SECRET}}),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let hook: Value = hook.json().await.unwrap();
    for created in [&command, &http, &hook] {
        assert!(
            !created.to_string().contains(SECRET),
            "the answer to a create: {created}"
        );
    }
    let (job_id, http_id, hook_id) = (
        command["id"].as_str().unwrap(),
        http["id"].as_str().unwrap(),
        hook["id"].as_str().unwrap(),
    );

    let read = app.key(Scope::Read).await;
    for key in [&read, &app.admin_token] {
        for path in [
            "/v1/jobs".to_owned(),
            format!("/v1/jobs/{job_id}"),
            format!("/v1/jobs/{http_id}"),
            "/v1/webhooks".to_owned(),
            format!("/v1/webhooks/{hook_id}"),
        ] {
            let body = get_as(&app, key, &path).await;
            assert!(!body.contains(SECRET), "{path} shows a credential: {body}");
        }
    }
    // Names stay, values are redacted.
    let job = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        job["target"]["env"],
        json!({"API_TOKEN": "[redacted]", "MODE": "[redacted]"})
    );
    let shown = app.get_json(&format!("/v1/jobs/{http_id}")).await;
    assert_eq!(shown["target"]["headers"], json!({"Authorization": "[redacted]"}));
    assert_eq!(shown["target"]["body"], "[redacted]");
    assert_eq!(
        shown["target"]["url"],
        "http://127.0.0.1:9/hook?token=%5Bredacted%5D&x=%5Bredacted%5D"
    );

    // The definition as read, sent back with one change, keeps its credentials.
    let r = app
        .patch(
            &format!("/v1/jobs/{http_id}"),
            &json!({"target": shown["target"], "schedule": "0 0 2 1 *"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .patch(
            &format!("/v1/webhooks/{hook_id}"),
            &json!({"url": hook["url"], "headers": hook["headers"], "description": "renamed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // A redacted value with nothing stored under its name is refused, naming the field.
    let r = app
        .patch(
            &format!("/v1/jobs/{job_id}"),
            &json!({"target": {"type": "command", "command": ["true"], "env": {"OTHER": "[redacted]"}}}),
        )
        .await;
    let (status, body) = status_and_json(r).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "target.env.OTHER", "{body}");

    // Revealing: admin only, and on the audit trail.
    let reveal = |key: String, id: &str| {
        app.client
            .request(Method::POST, app.url("/v1/reveal"))
            .bearer_auth(key)
            .json(&json!({"id": id}))
            .send()
    };
    assert_eq!(reveal(read.clone(), job_id).await.unwrap().status(), 403);
    let (status, revealed) = status_and_json(reveal(app.admin_token.clone(), http_id).await.unwrap()).await;
    assert_eq!(status, 200, "{revealed}");
    assert_eq!(
        revealed["values"],
        json!({
            "target.body": format!("{{\"password\": \"{SECRET}\"}}"),
            "target.headers.Authorization": format!("Bearer {SECRET}"),
            "target.url": format!("http://127.0.0.1:9/hook?token={SECRET}&x=1"),
        }),
        "the round trip kept every credential"
    );
    let (_, revealed) = status_and_json(reveal(app.admin_token.clone(), hook_id).await.unwrap()).await;
    assert_eq!(
        revealed["values"],
        json!({"headers.X-Api-Key": SECRET, "url": format!("http://127.0.0.1:9/in?sig={SECRET}")})
    );
    let (status, _) = status_and_json(reveal(app.admin_token.clone(), "wf_nosuchjob").await.unwrap()).await;
    assert_eq!(status, 404);

    let audit_key = app.key(Scope::Audit).await;
    let log = app.audit_log(&audit_key).await;
    assert!(!log.contains(SECRET), "the audit log holds no credential");
    let reveals: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "POST /v1/reveal")
        .collect();
    assert_eq!(reveals.len(), 2, "{reveals:?}");
    assert_eq!(reveals[0]["object_id"], http_id);
    assert_eq!(reveals[0]["object_type"], "job");
    assert_eq!(
        reveals[0]["detail"]["fields"],
        json!(["target.body", "target.headers.Authorization", "target.url"])
    );
    assert_eq!(reveals[1]["object_id"], hook_id);
    app.stop().await;
}

on_both_backends!(every_key_sees_credentials_redacted_and_an_admin_reveals_them_audited);
