//! Upgrading a database: what an older CronFlow stored keeps its meaning once the new
//! migrations have run. The database is migrated only up to an older version, written
//! as that version would have written it, and then opened by the current application.

use crate::{helpers::*, on_both_backends};
use cronflow_jobs::Store;
use serde_json::Value;

/// The last migration before the DLQ and retrying indexes moved off `status`
/// (`20261128000005_deliveries_hot_updates`).
const BEFORE_HOT_UPDATES: i64 = 20261128000004;

/// A fresh database migrated only up to CronFlow's migration `last`.
async fn older_database(backend: Backend, last: i64) -> TestDb {
    let db = TestDb::new(backend).await;
    let old = Store::connect(&db.url, test_secret_key()).await.expect("connect");
    old.migrate_up_to(Some(last)).await.expect("the older migrations");
    old.close().await;
    db
}

/// Dead, retrying and delivered deliveries written before `dead_at` existed: after the
/// upgrade the DLQ lists exactly the dead, unacknowledged one (and acknowledging it
/// empties the DLQ), and the gauges count it and the waiting retry.
async fn deliveries_keep_their_place_across_the_upgrade(backend: Backend) {
    let db = older_database(backend, BEFORE_HOT_UPDATES).await;
    // Recent enough that retention at start-up keeps them.
    let at = chrono::Utc::now().timestamp_millis();
    let later = at + 60_000;
    db.execute_sql(&format!(
        "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, next_attempt_at, \
         acknowledged, created_at, updated_at) VALUES \
         ('dlv_01kbdead0000000000000000', 'evt_a', 'wh_x', 'job.failed', 'dead', 6, NULL, FALSE, {at}, {at}), \
         ('dlv_01kbdeadack0000000000000', 'evt_b', 'wh_x', 'job.failed', 'dead', 6, NULL, TRUE, {at}, {at}), \
         ('dlv_01kbretrying000000000000', 'evt_c', 'wh_x', 'job.failed', 'retrying', 1, {later}, FALSE, {at}, {at}), \
         ('dlv_01kbdelivered00000000000', 'evt_d', 'wh_x', 'job.failed', 'delivered', 1, NULL, FALSE, {at}, {at})"
    ))
    .await;

    let app = TestApp::start_on(db).await;
    let dlq: Value = app.get_json("/v1/dlq").await;
    let listed: Vec<&str> = dlq["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, ["dlv_01kbdead0000000000000000"], "{dlq}");
    let gauges = app.store.gauges().await.expect("gauges");
    assert_eq!((gauges.dlq_size, gauges.retries_waiting), (1, 1));

    let r = app.delete("/v1/dlq/dlv_01kbdead0000000000000000").await;
    assert_eq!(r.status(), 204);
    let dlq: Value = app.get_json("/v1/dlq").await;
    assert_eq!(dlq["items"].as_array().map(Vec::len), Some(0), "{dlq}");
    assert_eq!(app.store.gauges().await.expect("gauges").dlq_size, 0);
    app.stop().await;
}

on_both_backends!(deliveries_keep_their_place_across_the_upgrade);

/// The last migration before the audit trail was a hash chain
/// (`20261207000005_audit_chain`).
const BEFORE_AUDIT_CHAIN: i64 = 20261207000004;

/// Audit entries written before the chain existed, some already pruned by retention: the
/// upgraded application chains them at start (from the first kept one), and the entries
/// it writes afterwards continue the chain.
async fn audit_entries_written_before_the_chain_are_chained_at_start(backend: Backend) {
    let db = older_database(backend, BEFORE_AUDIT_CHAIN).await;
    let at = chrono::Utc::now().timestamp_millis();
    // Entries 1 and 2 were pruned; 3 to 5 remain.
    db.execute_sql(&format!(
        "INSERT INTO audit_log (seq, at, actor, action, object_type, object_id, source, detail) VALUES \
         (3, {at}, 'system', 'first start', 'key', 'key_a', NULL, '{{}}'), \
         (4, {at}, 'key_a', 'POST /v1/jobs', 'job', 'wf_a', '127.0.0.1', '{{\"status\":201}}'), \
         (5, {at}, 'key_a', 'DELETE /v1/jobs/{{id}}', 'job', 'wf_a', '127.0.0.1', '{{\"status\":204}}')"
    ))
    .await;
    db.execute_sql("UPDATE audit_counter SET last = 5").await;

    let app = TestApp::start_on(db).await;
    app.create_job(&job_body("after the upgrade")).await;
    let verdict = app.store.verify_audit().await.expect("verify");
    let cronflow_jobs::domain::audit_chain::Verdict::Intact { count, last_seq, .. } = verdict else {
        panic!("the upgraded chain is intact: {verdict:?}");
    };
    assert_eq!(count as i64, last_seq - 2, "entries 3 to {last_seq}");
    assert!(last_seq > 5, "the new entries continue the chain");
    app.stop().await;
}

on_both_backends!(audit_entries_written_before_the_chain_are_chained_at_start);

/// The last migration before the DLQ became apalis's failed-task storage
/// (`20261207000001_dlq_is_failed_tasks`).
const BEFORE_DLQ_TASKS: i64 = 20261128000005;

/// A `Failed` task for delivery `delivery`, as an older CronFlow left it (no key).
fn failed_task(backend: Backend, task: &str, delivery: &str) -> String {
    let queue = cronflow_jobs::queue::DELIVERY_QUEUE;
    let body = format!(r#"{{"delivery_id":"{delivery}"}}"#);
    match backend {
        Backend::Sqlite => format!(
            "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, metadata, done_at) \
             VALUES (CAST('{body}' AS BLOB), '{task}', '{queue}', 'Failed', 1, 1, 0, 0, '{{}}', 0)"
        ),
        Backend::Postgres => format!(
            "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority, metadata, \
             done_at) VALUES (convert_to('{body}', 'UTF8'), '{task}', '{queue}', 'Failed', 1, 1, now(), 0, ''::hstore, now())"
        ),
    }
}

/// `Failed` delivery tasks an older CronFlow left behind (a replay left the old task; an
/// acknowledgement or a delivery replayed and since delivered left theirs) are
/// reconciled by the upgrade: each delivery in the DLQ keeps its newest task, keyed by
/// its id, and the others go, so the `Failed` tasks are the DLQ.
async fn leftover_failed_tasks_are_reconciled_with_the_dlq(backend: Backend) {
    let db = older_database(backend, BEFORE_DLQ_TASKS).await;
    let at = chrono::Utc::now().timestamp_millis();
    db.execute_sql(&format!(
        "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, acknowledged, created_at, \
         updated_at, dead_at) VALUES \
         ('dlv_01kbdiedtwice000000000000', 'evt_a', 'wh_x', 'job.failed', 'dead', 12, FALSE, {at}, {at}, {at}), \
         ('dlv_01kbreplayed0000000000000', 'evt_b', 'wh_x', 'job.failed', 'delivered', 7, FALSE, {at}, {at}, NULL), \
         ('dlv_01kbacknowledged000000000', 'evt_c', 'wh_x', 'job.failed', 'dead', 6, TRUE, {at}, {at}, {at})"
    ))
    .await;
    for (task, delivery) in [
        ("01KB0000000000000000000001", "dlv_01kbdiedtwice000000000000"),
        ("01KB0000000000000000000002", "dlv_01kbdiedtwice000000000000"),
        ("01KB0000000000000000000003", "dlv_01kbreplayed0000000000000"),
        ("01KB0000000000000000000004", "dlv_01kbacknowledged000000000"),
    ] {
        db.execute_sql(&failed_task(backend, task, delivery)).await;
    }

    let app = TestApp::start_on(db).await;
    let failed = app
        .db
        .query_strings(&format!(
            "SELECT id || ' ' || COALESCE(idempotency_key, '(no key)') FROM {} WHERE status = 'Failed' ORDER BY id",
            app.db.queue_table()
        ))
        .await;
    assert_eq!(
        failed,
        ["01KB0000000000000000000002 dlv_01kbdiedtwice000000000000"],
        "the newest task of the one delivery in the DLQ, keyed by it"
    );
    let dlq: Value = app.get_json("/v1/dlq").await;
    let listed: Vec<&str> = dlq["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, ["dlv_01kbdiedtwice000000000000"], "{dlq}");
    app.stop().await;
}

on_both_backends!(leftover_failed_tasks_are_reconciled_with_the_dlq);

/// Migrations whose comments were edited after they shipped, with the checksum (SHA-384
/// of the text) databases recorded for them, and the text as it is now.
fn edited_migrations(backend: Backend) -> [(i64, &'static str, &'static str); 3] {
    match backend {
        Backend::Sqlite => [
            (
                20261128000001,
                "8b3c51da4a17648d0746b03151f075754df5330a6d27dd36a590db117011af67c9b64667d8ca1afa69b53d74e8a7e76a",
                include_str!("../../migrations/sqlite/20261128000001_queue_ack_index.sql"),
            ),
            (
                20261128000002,
                "80e35b4eacc148c0c4a12ca1b6320f09926eb8743cfa9cf34d69aaaad101e3a1e7914e3d914ce67095a94ac63cd129ee",
                include_str!("../../migrations/sqlite/20261128000002_queue_fewer_indexes.sql"),
            ),
            (
                20261128000003,
                "9c9faf0ca7af7ad57b8743a39adeb15ee6d1b5b9a57d0112b3876bdd508cbea950f88195e6df2bfbcc160e02514a8757",
                include_str!("../../migrations/sqlite/20261128000003_queue_held_index.sql"),
            ),
        ],
        Backend::Postgres => [
            (
                20261128000002,
                "1b7e1aae91acd163fc27b4b7f764f14a66841c9fdd7391e6689f1c50882e5681c1fb2e9467c35b91857d00b1ec65f017",
                include_str!("../../migrations/postgres/20261128000002_queue_lighter_writes.sql"),
            ),
            (
                20261128000003,
                "2ce7f2aff26692ff025a29e46162f6246a0d28733bc4ca18aa5a49ce06c3b5a5d500a6331ee1eefaae41aca560fb93b0",
                include_str!("../../migrations/postgres/20261128000003_queue_lock_by_partial.sql"),
            ),
            (
                20261128000005,
                "4e5eedf54619b019981711a61b13d64701be39f1e1bf442f52514fc1c2e3bcff95c1d5fcc91d263b3ac3aa1fcfe86684",
                include_str!("../../migrations/postgres/20261128000005_deliveries_hot_updates.sql"),
            ),
        ],
    }
}

/// A database migrated by a release before the comments of some migrations were edited
/// recorded those migrations' released checksums; it still starts and upgrades, and the
/// recorded checksums stay as they were.
async fn databases_migrated_before_comment_edits_still_start(backend: Backend) {
    use sha2::Digest;
    let db = older_database(backend, BEFORE_DLQ_TASKS).await;
    let recorded = |version: i64| match backend {
        Backend::Sqlite => {
            format!("SELECT lower(hex(checksum)) FROM cronflow_migrations WHERE version = {version}")
        }
        Backend::Postgres => {
            format!("SELECT encode(checksum, 'hex') FROM cronflow_migrations WHERE version = {version}")
        }
    };
    for (version, released, text) in edited_migrations(backend) {
        let now = hex::encode(sha2::Sha384::digest(text.as_bytes()));
        assert_ne!(
            now, released,
            "migration {version}'s text changed since it shipped"
        );
        let set = match backend {
            Backend::Sqlite => format!("X'{released}'"),
            Backend::Postgres => format!("'\\x{released}'::bytea"),
        };
        db.execute_sql(&format!(
            "UPDATE cronflow_migrations SET checksum = {set} WHERE version = {version}"
        ))
        .await;
    }

    let app = TestApp::start_on(db).await;
    for (version, released, _) in edited_migrations(backend) {
        assert_eq!(app.db.query_strings(&recorded(version)).await, [released]);
    }
    let applied = app
        .db
        .query_strings("SELECT CAST(MAX(version) AS TEXT) FROM cronflow_migrations")
        .await;
    assert_eq!(
        applied,
        [latest_migration(backend)],
        "the newer migrations applied"
    );
    app.stop().await;
}

on_both_backends!(databases_migrated_before_comment_edits_still_start);

/// The version of the newest migration of `backend` in the source tree.
fn latest_migration(backend: Backend) -> String {
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(dir);
    std::fs::read_dir(dir)
        .expect("the migrations")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.split('_').next()?.to_owned())
        })
        .max()
        .expect("a migration")
}
