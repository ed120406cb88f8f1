//! The Postgres queue table after CronFlow's migrations: workers are told of new due
//! tasks once per inserting statement and queue (not once per task), with the payload
//! apalis's listener reads, and never of tasks due later.

use crate::helpers::*;
use cronflow_jobs::Store;
use sqlx::postgres::PgListener;

/// apalis's channel for new tasks.
const CHANNEL: &str = "apalis::job::insert";

#[tokio::test]
async fn postgres_notifies_each_queue_once_per_inserting_statement() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&db.url, test_secret_key()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
    let mut listener = PgListener::connect_with(&pool).await.expect("listen");
    listener.listen(CHANNEL).await.expect("listen");

    // One statement: two tasks of queue `a` due now, one of `b` due now, one of `c` due
    // in an hour.
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata) \
         VALUES ('01KB0000000000000000000002', 'a', '\\x7b7d', 'Pending', 0, 1, now(), 0, ''::hstore), \
                ('01KB0000000000000000000001', 'a', '\\x7b7d', 'Pending', 0, 1, now(), 0, ''::hstore), \
                ('01KB0000000000000000000003', 'b', '\\x7b7d', 'Pending', 0, 1, now(), 0, ''::hstore), \
                ('01KB0000000000000000000004', 'c', '\\x7b7d', 'Pending', 0, 1, now() + interval '1 hour', 0, ''::hstore)",
    )
    .execute(&pool)
    .await
    .expect("insert tasks");
    // Notifications arrive in commit order: everything the insert sent comes before this.
    sqlx::query("SELECT pg_notify($1, 'end')")
        .bind(CHANNEL)
        .execute(&pool)
        .await
        .expect("notify");

    let mut seen = Vec::new();
    loop {
        let n = listener.recv().await.expect("a notification");
        if n.payload() == "end" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(n.payload()).expect("JSON payload");
        seen.push((
            v["job_type"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a".to_owned(), "01KB0000000000000000000001".to_owned()),
            ("b".to_owned(), "01KB0000000000000000000003".to_owned()),
        ],
        "one notification per queue with due tasks, naming one of its tasks; none for a task due later"
    );
    drop(listener);
    pool.close().await;
    db.drop_database().await;
}

/// The columns of apalis's task table that CronFlow's own queue SQL (its push, its
/// acknowledgement, the DLQ operations) names, with the types it relies on, are those
/// apalis's migrations create: an apalis upgrade that renames, drops or retypes one
/// fails here rather than in production.
async fn apalis_task_table_has_the_columns_cronflow_writes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, test_secret_key()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.close().await;
    let sql = match backend {
        Backend::Sqlite => "SELECT name || ' ' || type FROM pragma_table_info('Jobs')",
        Backend::Postgres => {
            "SELECT column_name || ' ' || data_type FROM information_schema.columns \
             WHERE table_schema = 'apalis' AND table_name = 'jobs'"
        }
    };
    let found = db.query_strings(sql).await;
    for (column, sqlite_type, pg_type) in cronflow_jobs::store::APALIS_COLUMNS_RELIED_ON {
        let ty = match backend {
            Backend::Sqlite => sqlite_type,
            Backend::Postgres => pg_type,
        };
        let wanted = format!("{column} {ty}");
        assert!(
            found.contains(&wanted),
            "apalis's table lacks `{wanted}`: {found:?}"
        );
    }
    db.drop_database().await;
}

crate::on_both_backends!(apalis_task_table_has_the_columns_cronflow_writes);
