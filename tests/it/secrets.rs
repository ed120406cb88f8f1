//! Webhook signing secrets at rest: the database holds them sealed with the secret key
//! (never in clear, after create or rotate), secrets an older CronFlow stored in clear
//! are sealed at start and still sign, a start with another key is refused, and a
//! secret that does not open fails only its own deliveries, with a clear error.

use crate::{helpers::*, on_both_backends};
use cronflow::Application;
use cronflow_jobs::{delivery::signer::verify_cronflow, domain::WebhookId};
use serde_json::{Value, json};

/// Another valid key than [`TEST_SECRET_KEY`].
const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Subscribes `url` to `job.completed` (with `secret`, if given); returns (id, secret).
async fn subscribe(app: &TestApp, url: &str, secret: Option<&str>) -> (String, String) {
    let mut body = json!({"url": url, "events": ["job.completed"]});
    if let Some(secret) = secret {
        body["secret"] = json!(secret);
    }
    let (status, created) = status_and_json(app.post("/v1/webhooks", &body).await).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// The `secret` and `previous_secret` columns of subscription `id`, as stored.
async fn stored_secrets(db: &TestDb, id: &str) -> (String, Option<String>) {
    let secret = db
        .query_strings(&format!("SELECT secret FROM webhooks WHERE id = '{id}'"))
        .await;
    let previous = db
        .query_strings(&format!(
            "SELECT previous_secret FROM webhooks WHERE id = '{id}' AND previous_secret IS NOT NULL"
        ))
        .await;
    (secret[0].clone(), previous.into_iter().next())
}

/// Sends a test event to subscription `id` and returns the request the receiver saw.
async fn test_delivery(app: &TestApp, receiver: &TestReceiver, id: &str) -> Seen {
    let before = receiver.requests().len();
    let r = app.post(&format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!(r.status(), 202);
    eventually(30, "the test delivery", || async {
        receiver.requests().into_iter().nth(before)
    })
    .await
}

/// The SQLite file of a test database.
fn sqlite_file(db: &TestDb) -> std::path::PathBuf {
    db.url.strip_prefix("sqlite://").expect("a SQLite URL").into()
}

async fn the_secret_column_never_holds_the_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let own = "my-own-signing-secret-0123456789";
    let (id, secret) = subscribe(&app, &receiver.url("/own"), Some(own)).await;
    assert_eq!(secret, own);
    let (generated_id, generated) = subscribe(&app, &receiver.url("/generated"), None).await;
    for (id, secret) in [(&id, own), (&generated_id, generated.as_str())] {
        let (stored, previous) = stored_secrets(&app.db, id).await;
        assert!(stored.starts_with("enc:v1:"), "{stored}");
        assert!(
            !stored.contains(secret),
            "the secret is stored in clear: {stored}"
        );
        assert_eq!(previous, None);
    }

    let (status, rotated) = status_and_json(
        app.post(&format!("/v1/webhooks/{id}/rotate-secret"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    let (stored, previous) = stored_secrets(&app.db, &id).await;
    let previous = previous.expect("the previous secret is kept for the grace period");
    for column in [&stored, &previous] {
        assert!(column.starts_with("enc:v1:"), "{column}");
        for secret in [own, new.as_str()] {
            assert!(!column.contains(secret), "a secret is stored in clear: {column}");
        }
    }

    // Both still sign, as the receiver checks them.
    let seen = test_delivery(&app, &receiver, &id).await;
    let header = &seen.headers["x-cronflow-signature"];
    for secret in [own, new.as_str()] {
        verify_cronflow(secret, header, &seen.body).unwrap_or_else(|e| panic!("{secret}: {e}"));
    }

    // A copy of the SQLite database's files holds none of the secrets anywhere.
    let stopped = app.stop_keeping_db(async {}).await;
    if backend == Backend::Sqlite {
        let file = sqlite_file(&stopped.db);
        let mut dump = std::fs::read(&file).unwrap();
        dump.extend(std::fs::read(format!("{}-wal", file.display())).unwrap_or_default());
        for secret in [own, new.as_str(), generated.as_str()] {
            assert!(
                !dump.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in the database file"
            );
        }
    }
    stopped.db.drop_database().await;
}

async fn a_secret_stored_in_clear_is_sealed_at_start_and_still_signs(backend: Backend) {
    let receiver = TestReceiver::start(&[200]).await;
    let db = TestDb::new(backend).await;
    let store = cronflow_jobs::Store::connect(&db.url, test_secret_key())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store.close().await;
    // A subscription as a CronFlow older than sealing stored it, mid-rotation.
    let id = WebhookId::generate().to_string();
    let (current, previous) = ("whsec_current0123456789abcdef", "previous-secret-0123456789");
    let at = chrono::Utc::now().timestamp_millis();
    let until = at + 3_600_000;
    let url = receiver.url("/old");
    db.execute_sql(&format!(
        "INSERT INTO webhooks (id, url, events, environment, job_ids, secret, previous_secret, \
         previous_secret_until, headers, description, enabled, disabled_reason, created_at, updated_at) \
         VALUES ('{id}', '{url}', '[\"job.completed\"]', NULL, NULL, '{current}', '{previous}', {until}, \
         '{{}}', 'from an older CronFlow', TRUE, NULL, {at}, {at})"
    ))
    .await;

    let app = TestApp::start_on(db).await;
    let (stored, stored_previous) = stored_secrets(&app.db, &id).await;
    let stored_previous = stored_previous.expect("the previous secret is kept");
    for (column, secret) in [(&stored, current), (&stored_previous, previous)] {
        assert!(column.starts_with("enc:v1:"), "not sealed: {column}");
        assert!(!column.contains(secret), "{column}");
    }
    let seen = test_delivery(&app, &receiver, &id).await;
    let header = &seen.headers["x-cronflow-signature"];
    assert_eq!(header.split(',').count(), 2, "{header}");
    for secret in [current, previous] {
        verify_cronflow(secret, header, &seen.body).unwrap_or_else(|e| panic!("{secret}: {e}"));
    }
    let now = chrono::Utc::now().timestamp();
    cronflow_jobs::delivery::signer::verify_standard(
        current,
        &seen.headers["webhook-id"],
        &seen.headers["webhook-timestamp"],
        &seen.headers["webhook-signature"],
        &seen.body,
        now,
    )
    .expect("the Standard Webhooks signature verifies with the original secret");

    // Sealing is done once: a restart leaves the sealed texts as they are.
    let app = app.restart().await;
    assert_eq!(
        stored_secrets(&app.db, &id).await,
        (stored, Some(stored_previous))
    );
    app.stop().await;
}

async fn a_start_with_another_key_is_refused_naming_the_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    subscribe(&app, "http://127.0.0.1:9/hook", None).await;
    let stopped = app.stop_keeping_db(async {}).await;
    let settings = test_settings(&stopped.db.url, &[("CRONFLOW_SECRET_KEY", OTHER_KEY)]);
    let Err(e) = Application::build(settings).await else {
        panic!("a start with another key than the one that sealed the secrets is refused");
    };
    let message = format!("{e:#}");
    assert!(
        message.starts_with("CRONFLOW_SECRET_KEY is not the key that sealed the webhook signing secrets"),
        "{message}"
    );
    assert!(!message.contains(OTHER_KEY) && !message.contains(TEST_SECRET_KEY));
    // The right key still starts.
    stopped.start().await.stop().await;
}

async fn a_secret_that_does_not_open_fails_only_its_own_deliveries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let receiver = TestReceiver::start(&[200]).await;
    let (good, secret) = subscribe(&app, &receiver.url("/good"), None).await;
    let (copied, _) = subscribe(&app, &receiver.url("/copied"), None).await;
    // Another row's sealed secret, copied by hand: sealed for another id, it does not open.
    app.db
        .execute_sql(&format!(
            "UPDATE webhooks SET secret = (SELECT secret FROM webhooks WHERE id = '{good}') WHERE id = '{copied}'"
        ))
        .await;
    let job = app.create_job(&shell_job("sealed", "true")).await;
    app.trigger(job["id"].as_str().unwrap()).await;

    let dead = eventually(
        30,
        "the delivery to the copied secret's subscription to die",
        || async {
            let rows = app
                .db
                .query_strings(&format!(
                    "SELECT last_error FROM deliveries WHERE webhook_id = '{copied}' AND status = 'dead'"
                ))
                .await;
            rows.into_iter().next()
        },
    )
    .await;
    assert!(
        dead.contains("signing secret cannot be decrypted with this CRONFLOW_SECRET_KEY"),
        "{dead}"
    );
    let seen = eventually(30, "the delivery to the other subscription", || async {
        receiver.requests().into_iter().find(|s| s.path == "/good")
    })
    .await;
    verify_cronflow(&secret, &seen.headers["x-cronflow-signature"], &seen.body).expect("signed");
    assert!(
        receiver.requests().iter().all(|s| s.path != "/copied"),
        "nothing is sent unsigned or signed with garbage"
    );
    app.stop().await;
}

on_both_backends!(
    the_secret_column_never_holds_the_secret,
    a_secret_stored_in_clear_is_sealed_at_start_and_still_signs,
    a_start_with_another_key_is_refused_naming_the_key,
    a_secret_that_does_not_open_fails_only_its_own_deliveries,
);

/// On SQLite with no key set, the first start makes `<db file>.key` (readable by its
/// owner only) and later starts use it; started without it, the database's secrets do
/// not open, so the start is refused and the new key file removed again.
#[tokio::test]
async fn without_a_key_sqlite_keeps_one_beside_the_database() {
    use std::os::unix::fs::PermissionsExt;
    let no_key = [("CRONFLOW_SECRET_KEY", "")];
    let app = TestApp::spawn_with(Backend::Sqlite, &no_key).await;
    let receiver = TestReceiver::start(&[200]).await;
    let (id, secret) = subscribe(&app, &receiver.url("/kept"), None).await;
    let key_file = format!("{}.key", sqlite_file(&app.db).display());
    let key = std::fs::read_to_string(&key_file).expect("the key file");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let app = app.restart().await;
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key, "the same key");
    let seen = test_delivery(&app, &receiver, &id).await;
    verify_cronflow(&secret, &seen.headers["x-cronflow-signature"], &seen.body).expect("signed");

    let stopped = app.stop_keeping_db(async {}).await;
    std::fs::remove_file(&key_file).unwrap();
    let settings = test_settings(&stopped.db.url, &no_key);
    let Err(e) = Application::build(settings).await else {
        panic!("a start with a new key file is refused");
    };
    let message = format!("{e:#}");
    assert!(
        message.starts_with(&format!(
            "the key file {key_file} (created just now) is not the key that sealed"
        )),
        "{message}"
    );
    assert!(
        !std::path::Path::new(&key_file).exists(),
        "the useless new key file is removed"
    );
    std::fs::write(&key_file, &key).unwrap();
    let app = stopped.start().await;
    let value: Value = app.get_json(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(value["id"], id.as_str());
    app.stop().await;
}
