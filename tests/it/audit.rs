//! The audit stream: every API change and delivery attempt, a cursor that neither skips
//! nor repeats while writes happen, and follow mode.

use crate::{helpers::*, on_both_backends};
use cronflow_jobs::domain::Scope;
use futures::StreamExt;
use serde_json::{Value, json};

async fn read_audit(app: &TestApp, key: &str, cursor: i64) -> Vec<Value> {
    let r = app
        .client
        .get(app.url(&format!("/v1/audit?cursor={cursor}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn api_changes_are_audited_with_who_what_and_where(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let audit_key = app.key(Scope::Audit).await;
    let job = app.create_job(&job_body("audited")).await;
    let id = job["id"].as_str().unwrap();
    app.post(&format!("/v1/jobs/{id}/pause"), &json!({})).await;
    let hook = app
        .post(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/x", "events": ["job.failed"]}),
        )
        .await;
    let hook: Value = hook.json().await.unwrap();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/jobs/{id}")).await;
    let bad = app.post("/v1/jobs", &json!({"name": ""})).await;
    assert_eq!(bad.status(), 400);

    let text = app.audit_log(&audit_key).await;
    assert!(
        !text.contains(&secret),
        "secrets are never written to the audit log"
    );
    let entries: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The keys made without the API (the first start's, the test's own) are on record too.
    let (system, entries): (Vec<Value>, Vec<Value>) =
        entries.into_iter().partition(|e| e["actor"] == "system");
    assert_eq!(system[0]["action"], "first start");
    assert_eq!(system[0]["object_type"], "key");
    assert!(system.iter().all(|e| e["object_type"] == "key"), "{system:?}");
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "POST /v1/jobs",
            "POST /v1/jobs/{id}/pause",
            "POST /v1/webhooks",
            "DELETE /v1/jobs/{id}"
        ],
        "successful changes only, in order"
    );
    let admin_key_id = format!(
        "key_{}",
        app.admin_token
            .trim_start_matches("cf_")
            .split('_')
            .next()
            .unwrap()
    );
    for e in &entries {
        assert_eq!(e["actor"], admin_key_id.as_str(), "{e}");
        assert_eq!(e["source"], "127.0.0.1");
        assert!(e["at"].is_string() && e["seq"].is_i64());
    }
    assert_eq!(entries[0]["object_id"], id);
    assert_eq!(entries[0]["object_type"], "job");
    assert_eq!(entries[2]["object_id"], hook["id"]);
    let read = app.key(Scope::Read).await;
    let r = app
        .client
        .get(app.url("/v1/audit"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a read key cannot read the audit log");
    app.stop().await;
}

async fn the_cursor_neither_skips_nor_repeats_while_writes_happen(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let audit_key = app.key(Scope::Audit).await;
    let job = app.create_job(&job_body("toggled")).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let start = last_seq(&app, &audit_key).await;
    let writes = 150;
    let writer = {
        let (client, url, token, id) = (
            app.client.clone(),
            app.address.clone(),
            app.admin_token.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            for i in 0..writes {
                let action = if i % 2 == 0 { "pause" } else { "resume" };
                let r = client
                    .post(format!("{url}/v1/jobs/{id}/{action}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let mut seen: Vec<i64> = Vec::new();
    let mut cursor = start;
    loop {
        let done = writer.is_finished();
        for e in read_audit(&app, &audit_key, cursor).await {
            seen.push(e["seq"].as_i64().unwrap());
        }
        cursor = seen.last().copied().unwrap_or(start);
        if done && seen.len() as i64 >= writes {
            break;
        }
    }
    writer.await.unwrap();
    let expected: Vec<i64> = (start + 1..=start + writes).collect();
    assert_eq!(seen, expected, "every entry exactly once, in order");
    app.stop().await;
}

async fn follow_mode_streams_new_entries_as_they_happen(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let audit_key = app.key(Scope::Audit).await;
    let start = last_seq(&app, &audit_key).await;
    let r = app
        .client
        .get(app.url(&format!("/v1/audit?follow=true&cursor={start}")))
        .bearer_auth(&audit_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let job = app.create_job(&job_body("followed")).await;
    let line = eventually_line(&mut stream).await;
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["action"], "POST /v1/jobs");
    assert_eq!(entry["object_id"], job["id"]);
    app.stop().await;
}

/// The `seq` of the log's last entry so far.
async fn last_seq(app: &TestApp, key: &str) -> i64 {
    let entries = read_audit(app, key, 0).await;
    entries.last().map_or(0, |e| e["seq"].as_i64().unwrap())
}

async fn eventually_line<S>(stream: &mut S) -> String
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !buf.contains(&b'\n') {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an entry within 10 s");
        buf.extend_from_slice(&chunk.expect("stream open").expect("chunk"));
    }
    let text = String::from_utf8(buf).unwrap();
    text.lines().next().unwrap().to_owned()
}

/// A change and its audit entry commit together: when the entry cannot be written, the
/// change is not made either (and the caller is told), so no change goes unaudited.
async fn a_change_is_never_made_without_its_audit_entry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let audit_key = app.key(Scope::Audit).await;
    match backend {
        Backend::Sqlite => {
            app.db
                .execute_sql(
                    "CREATE TRIGGER audit_down BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'the audit log is down'); END",
                )
                .await
        }
        Backend::Postgres => {
            app.db
                .execute_sql(
                    "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'the audit log is down'; END $$",
                )
                .await;
            app.db
                .execute_sql(
                    "CREATE TRIGGER audit_down BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION audit_down()",
                )
                .await
        }
    }
    let r = app.post("/v1/jobs", &job_body("unaudited")).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let jobs = app.get_json("/v1/jobs").await;
    assert_eq!(
        jobs["items"],
        json!([]),
        "the change was rolled back with its entry"
    );

    app.db
        .execute_sql(match backend {
            Backend::Sqlite => "DROP TRIGGER audit_down",
            Backend::Postgres => "DROP TRIGGER audit_down ON audit_log",
        })
        .await;
    let job = app.create_job(&job_body("audited")).await;
    let entries = read_audit(&app, &audit_key, 0).await;
    let creates: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "POST /v1/jobs")
        .collect();
    assert_eq!(creates.len(), 1, "{entries:?}");
    assert_eq!(creates[0]["object_id"], job["id"]);
    app.stop().await;
}

on_both_backends!(
    a_change_is_never_made_without_its_audit_entry,
    api_changes_are_audited_with_who_what_and_where,
    the_cursor_neither_skips_nor_repeats_while_writes_happen,
    follow_mode_streams_new_entries_as_they_happen,
);

#[tokio::test]
async fn delivery_attempts_are_audited() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let receiver = TestReceiver::start(&[500, 200]).await;
    let hook = app
        .post(
            "/v1/webhooks",
            &json!({"url": receiver.url("/a"), "events": ["job.failed"]}),
        )
        .await;
    let hook: Value = hook.json().await.unwrap();
    app.post(
        &format!("/v1/webhooks/{}/test", hook["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    let audit_key = app.key(Scope::Audit).await;
    let attempts = eventually(30, "two audited attempts", || async {
        let entries = read_audit(&app, &audit_key, 0).await;
        let attempts: Vec<Value> = entries
            .into_iter()
            .filter(|e| e["action"] == "delivery.attempt")
            .collect();
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    assert_eq!(attempts[0]["actor"], "system");
    assert_eq!(attempts[0]["detail"]["status_code"], 500);
    assert_eq!(attempts[0]["detail"]["result"], "retrying");
    assert_eq!(attempts[1]["detail"]["result"], "delivered");
    app.stop().await;
}
