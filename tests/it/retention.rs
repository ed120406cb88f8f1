//! Retention removes only what is old: finished runs, delivered and acknowledged
//! deliveries (with their attempts), long-dead deliveries, old audit entries; never an
//! unfinished run, nor a dead or held delivery younger than the dead deliveries'
//! retention.

use crate::{helpers::*, on_both_backends};
use chrono::{Duration, Utc};
use cronflow_jobs::store::RetentionPolicy;

async fn ids(app: &TestApp, table: &str) -> Vec<String> {
    app.db
        .query_strings(&format!("SELECT id FROM {table} ORDER BY id"))
        .await
}

async fn retention_removes_only_what_is_old(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The app's own retention loop may run too (with the real clock): same result.
    let now = Utc::now();
    let day = |d: i64| (now - Duration::days(d)).timestamp_millis();
    let (d40, d100, d1) = (day(40), day(100), day(1));
    app.db
        .execute_sql(&format!(
            "INSERT INTO runs (id, job_id, origin, state, attempt, created_at) VALUES \
         ('run_oldfinished', 'wf_x', 'manual', 'completed', 1, {d40}), \
         ('run_oldrunning', 'wf_x', 'manual', 'running', 1, {d40}), \
         ('run_new', 'wf_x', 'manual', 'failed', 1, {d1})"
        ))
        .await;
    app.db.execute_sql(&format!(
        "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, acknowledged, created_at, updated_at, \
         dead_at) VALUES \
         ('dlv_olddelivered', 'evt_a', 'wh_x', 'job.failed', 'delivered', FALSE, {d40}, {d40}, NULL), \
         ('dlv_olddeadack', 'evt_b', 'wh_x', 'job.failed', 'dead', TRUE, {d40}, {d40}, {d40}), \
         ('dlv_olddead', 'evt_c', 'wh_x', 'job.failed', 'dead', FALSE, {d40}, {d40}, {d40}), \
         ('dlv_verydead', 'evt_d', 'wh_x', 'job.failed', 'dead', FALSE, {d100}, {d100}, {d100}), \
         ('dlv_oldretrying', 'evt_e', 'wh_x', 'job.failed', 'retrying', FALSE, {d100}, {d100}, NULL), \
         ('dlv_oldheld', 'evt_g', 'wh_x', 'job.failed', 'held', FALSE, {d40}, {d40}, NULL), \
         ('dlv_veryheld', 'evt_h', 'wh_x', 'job.failed', 'held', FALSE, {d100}, {d100}, NULL), \
         ('dlv_new', 'evt_f', 'wh_x', 'job.failed', 'delivered', FALSE, {d1}, {d1}, NULL)"
    ))
    .await;
    app.db
        .execute_sql(&format!(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms) VALUES \
         ('dlv_olddelivered', 1, {d40}, 5), ('dlv_new', 1, {d1}, 5)"
        ))
        .await;
    app.db.execute_sql(&format!(
        "INSERT INTO events (id, job_id, run_id, event_type, payload, created_at) VALUES \
         ('evt_a', 'wf_x', NULL, 'job.failed', '{{}}', {d40}), ('evt_c', 'wf_x', NULL, 'job.failed', '{{}}', {d40}), \
         ('evt_orphan', 'wf_x', NULL, 'job.failed', '{{}}', {d40}), ('evt_f', 'wf_x', NULL, 'job.failed', '{{}}', {d1})"
    ))
    .await;
    app.store.prune(now, &RetentionPolicy::default()).await.unwrap();
    assert_eq!(ids(&app, "runs").await, ["run_new", "run_oldrunning"]);
    assert_eq!(
        ids(&app, "deliveries").await,
        ["dlv_new", "dlv_olddead", "dlv_oldheld", "dlv_oldretrying"],
        "held deliveries are kept as long as dead ones"
    );
    assert_eq!(
        ids(&app, "events").await,
        ["evt_c", "evt_f"],
        "events a remaining delivery needs are kept"
    );
    let attempts: Vec<String> = {
        let mut v = Vec::new();
        for d in ["dlv_olddelivered", "dlv_new"] {
            let r: serde_json::Value = app
                .get(&format!("/v1/deliveries/{d}"))
                .await
                .json()
                .await
                .unwrap_or_default();
            if r["attempt_history"].as_array().is_some_and(|a| !a.is_empty()) {
                v.push(d.to_owned());
            }
        }
        v
    };
    assert_eq!(attempts, ["dlv_new"]);
    app.stop().await;
}

on_both_backends!(retention_removes_only_what_is_old);
