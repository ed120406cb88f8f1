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

/// `cronflow audit verify`, on the database at `db_url` or (`file`) an exported stream:
/// its exit status and what it printed.
fn verify(db_url: &str, file: Option<&std::path::Path>) -> (bool, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cronflow-under-test"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CRONFLOW_DATABASE_URL", db_url)
        .args(["audit", "verify"]);
    if db_url.starts_with("postgres") {
        c.env("CRONFLOW_SECRET_KEY", TEST_SECRET_KEY);
    }
    if let Some(f) = file {
        c.arg("--file").arg(f);
    }
    let out = c.output().expect("cronflow audit verify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) if text.contains("broken at entry") => (false, text),
        other => panic!("exit status {other:?}: {text}"),
    }
}

/// The README's Python check of an exported audit stream (its first `python` block).
fn readme_audit_check() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("```python\n").expect("a python block in the README") + "```python\n".len();
    readme[start..start + readme[start..].find("```").unwrap()].to_owned()
}

/// Swaps the rows of entries `a` and `b` in the database (their content, not their seq).
async fn swap_entries(app: &TestApp, a: i64, b: i64) {
    let table_swap = |from: i64, to: i64| format!("UPDATE audit_log SET seq = {to} WHERE seq = {from}");
    app.db.execute_sql(&table_swap(a, -1)).await;
    app.db.execute_sql(&table_swap(b, a)).await;
    app.db.execute_sql(&table_swap(-1, b)).await;
}

async fn the_audit_trail_is_a_hash_chain_that_catches_edits_deletions_and_reorderings(backend: Backend) {
    let start = chrono::Utc::now() - chrono::Duration::days(400);
    let clock = std::sync::Arc::new(cronflow_jobs::clock::ManualClock::new(start));
    let app = TestApp::spawn_with_clock(backend, clock.clone()).await;
    let audit_key = app.key(Scope::Audit).await;
    for i in 0..6 {
        clock.set(start + chrono::Duration::seconds(i + 1));
        app.create_job(&job_body(&format!("chained-{i}"))).await;
    }
    let text = app.audit_log(&audit_key).await;
    let entries: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let n = entries.len();
    assert!(n >= 8, "{text}");
    assert_eq!(
        entries[0]["prev_hash"],
        "0".repeat(64),
        "the first entry follows the genesis hash"
    );
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "each entry links to the one before"
        );
    }
    // The CSV export carries the same entries and chain, cell for field.
    let r = app
        .client
        .get(app.url("/v1/audit/export.csv"))
        .bearer_auth(&audit_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csv_text = r.text().await.unwrap();
    let mut rows = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header.last().map(String::as_str), Some("hash"), "{header:?}");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), n, "{csv_text}");
    for (row, entry) in rows.iter().zip(&entries) {
        for (column, cell) in header.iter().zip(row.iter()) {
            let field = match &entry[column.as_str()] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(cell, field, "{column} of entry {}", entry["seq"]);
        }
    }

    // Intact, in the database and in the exported stream.
    let (ok, said) = verify(&app.db.url, None);
    assert!(ok && said.contains(&format!("intact: {n} entries")), "{said}");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.ndjson");
    std::fs::write(&export, &text).unwrap();
    let (ok, said) = verify(&app.db.url, Some(&export));
    assert!(ok && said.contains(&format!("intact: {n} entries")), "{said}");

    // The exported file, tampered three ways.
    let lines: Vec<&str> = text.lines().collect();
    let write = |name: &str, lines: &[String]| {
        let p = dir.path().join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    };
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[4] = edited[4].replace("\"status\":201", "\"status\":200");
    assert_ne!(edited[4], lines[4], "the entry records the answer's status");
    let (ok, said) = verify(&app.db.url, Some(&write("edited", &edited)));
    assert!(
        !ok && said.contains("broken at entry 5") && said.contains("changed"),
        "{said}"
    );
    // The README's Python check agrees, on its own.
    let python = |file: &std::path::Path| {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(readme_audit_check())
            .arg(file)
            .output()
            .expect("python3 runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = python(&export);
    assert!(ok && said.trim() == "intact", "{said}");
    let (ok, said) = python(&dir.path().join("edited"));
    assert!(!ok && said.contains("broken at entry 5"), "{said}");
    let mut deleted: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    deleted.remove(3);
    let (ok, said) = verify(&app.db.url, Some(&write("deleted", &deleted)));
    assert!(
        !ok && said.contains("broken at entry 4") && said.contains("missing"),
        "{said}"
    );
    let mut reordered: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    reordered.swap(5, 6);
    let (ok, said) = verify(&app.db.url, Some(&write("reordered", &reordered)));
    assert!(!ok && said.contains("broken at entry 6"), "{said}");

    // The database, tampered three ways (each undone before the next).
    let detail = app
        .db
        .query_strings("SELECT detail FROM audit_log WHERE seq = 5")
        .await
        .remove(0);
    app.db
        .execute_sql("UPDATE audit_log SET detail = '{\"status\":204}' WHERE seq = 5")
        .await;
    let (ok, said) = verify(&app.db.url, None);
    assert!(
        !ok && said.contains("broken at entry 5") && said.contains("changed"),
        "{said}"
    );
    app.db
        .execute_sql(&format!(
            "UPDATE audit_log SET detail = '{}' WHERE seq = 5",
            detail.replace('\'', "''")
        ))
        .await;
    let (ok, said) = verify(&app.db.url, None);
    assert!(ok, "restored: {said}");

    swap_entries(&app, 3, 4).await;
    let (ok, said) = verify(&app.db.url, None);
    assert!(!ok && said.contains("broken at entry 3"), "{said}");
    swap_entries(&app, 3, 4).await;
    let (ok, said) = verify(&app.db.url, None);
    assert!(ok, "restored: {said}");

    app.db.execute_sql("DELETE FROM audit_log WHERE seq = 6").await;
    let (ok, said) = verify(&app.db.url, None);
    assert!(
        !ok && said.contains("broken at entry 6") && said.contains("missing"),
        "{said}"
    );
    app.db
        .execute_sql(&format!("DELETE FROM audit_log WHERE seq = {n}"))
        .await;
    // The newest entry removed too: still caught at the first gap.
    assert!(!verify(&app.db.url, None).0);

    // Retention keeps the rest verifiable from the first kept entry.
    let fresh = TestApp::spawn_with_clock(backend, clock.clone()).await;
    for i in 0..4 {
        clock.set(start + chrono::Duration::seconds(10 * (i + 1)));
        fresh.create_job(&job_body(&format!("kept-{i}"))).await;
    }
    let before: Vec<i64> = fresh
        .db
        .query_strings("SELECT CAST(seq AS TEXT) FROM audit_log ORDER BY seq")
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    // Everything up to the second job's entry is older than a year at this `now`.
    let now = start + chrono::Duration::days(365) + chrono::Duration::seconds(25);
    let report = fresh
        .store
        .prune(now, &cronflow_jobs::store::RetentionPolicy::default())
        .await
        .unwrap();
    assert!(
        report.audit >= 2 && (report.audit as usize) < before.len(),
        "{report:?}"
    );
    let (ok, said) = verify(&fresh.db.url, None);
    let kept = before.len() - report.audit as usize;
    assert!(ok && said.contains(&format!("intact: {kept} entries")), "{said}");
    // And the tail: the newest entry removed is caught by the counter.
    let last = before.last().unwrap();
    fresh
        .db
        .execute_sql(&format!("DELETE FROM audit_log WHERE seq = {last}"))
        .await;
    let (ok, said) = verify(&fresh.db.url, None);
    assert!(!ok && said.contains(&format!("broken at entry {last}")), "{said}");
    fresh.stop().await;
    app.stop().await;
}

on_both_backends!(the_audit_trail_is_a_hash_chain_that_catches_edits_deletions_and_reorderings);
