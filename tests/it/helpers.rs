//! Starting applications and databases for tests.

#![allow(dead_code, unreachable_pub)]

use crate::pg_server::PgServer;
pub use crate::receiver::{Seen, TestReceiver};
use cronflow::{Application, Settings};
use cronflow_jobs::{
    Clock, Store, SystemClock,
    domain::{NewApiKey, Scope, SecretKey},
    store::ChangedBy,
};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The key that seals webhook signing secrets in the tests' databases (base64 of 32
/// bytes); fixed, so a test can open a store on an application's database.
pub const TEST_SECRET_KEY: &str = "Q3JvbkZsb3cgdGVzdHMnIHNlY3JldCBrZXkgKDMyQik=";

/// [`TEST_SECRET_KEY`], parsed.
pub fn test_secret_key() -> SecretKey {
    SecretKey::parse(TEST_SECRET_KEY).expect("the test key is a key")
}

/// The server tests create Postgres databases on.
pub const POSTGRES_URL_VAR: &str = "CRONFLOW_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The one way to run a test on both databases: `on_both_backends!(name, ...)` makes
/// `mod name { sqlite, postgres }`, two tests that each call `name(Backend)` (an `async
/// fn` that sets up its own application or database, e.g. with [`TestApp::spawn`]).
/// Attributes before a name (`#[ignore = "why"]`) go on both tests. The Postgres test
/// skips itself (one warning line) where no Postgres can be had; see
/// [`postgres_available`].
#[macro_export]
macro_rules! on_both_backends {
    ($($(#[$meta:meta])* $name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                $(#[$meta])*
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
                #[tokio::test]
                $(#[$meta])*
                async fn postgres() {
                    if $crate::helpers::postgres_available() {
                        super::$name($crate::helpers::Backend::Postgres).await;
                    }
                }
            }
        )+
    };
}

/// The server tests create Postgres databases on, found once per test process: the
/// one `CRONFLOW_TEST_POSTGRES_URL` names if it answers; else a private server started
/// from the installed binaries, shared by this process's tests and stopped when it
/// ends; else none.
enum PostgresServer {
    External(String),
    Private(PgServer),
    Missing,
}

static POSTGRES: OnceLock<PostgresServer> = OnceLock::new();

fn postgres_server() -> &'static PostgresServer {
    POSTGRES.get_or_init(|| {
        let url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        if answers(&url) {
            return PostgresServer::External(url);
        }
        let Some(bin) = crate::pg_server::installed_binaries() else {
            return PostgresServer::Missing;
        };
        match PgServer::start_new(&bin) {
            Ok(server) => {
                loud(&format!(
                    "note: no Postgres answers at {url}; these tests use a private server on port {} \
                     (from {}), stopped when they end",
                    server.port(),
                    bin.display()
                ));
                PostgresServer::Private(server)
            }
            Err(e) => panic!("no Postgres answers at {url}, and a private server would not start: {e}"),
        }
    })
}

/// Whether something accepts TCP connections at the host and port of `url`.
fn answers(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(5432);
    (host.as_str(), port).to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok())
    })
}

/// Writes one line to the terminal even while the test harness captures output.
pub fn loud(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether the Postgres half of the tests can run. Where no Postgres answers and none is
/// installed, it cannot: under `CI=true` that fails the test (CI installs Postgres);
/// elsewhere the test is skipped, with one warning per test process naming the
/// packages to install.
pub fn postgres_available() -> bool {
    match postgres_server() {
        PostgresServer::External(_) | PostgresServer::Private(_) => true,
        PostgresServer::Missing => {
            no_postgres_binaries(&format!("no Postgres answers at {POSTGRES_URL_VAR}"));
            false
        }
    }
}

/// The installed server binaries, for a test that starts a server of its own; `None`
/// (the test then skips itself; under `CI=true` it fails) if there are none.
pub fn postgres_binaries() -> Option<std::path::PathBuf> {
    let bin = crate::pg_server::installed_binaries();
    if bin.is_none() {
        no_postgres_binaries("a test needs a Postgres server of its own");
    }
    bin
}

fn no_postgres_binaries(why: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let message = format!(
        "{why}, and no server binaries were found (apt-get install {}, or set {})",
        crate::pg_server::PACKAGES,
        crate::pg_server::BIN_VAR
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message}; CI must run the Postgres tests"
    );
    WARNED.call_once(|| loud(&format!("warning: {message}: skipping the Postgres tests")));
}

/// A fresh, empty database that lives as long as the test needs it.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    /// SQLite: the directory holding the file.
    dir: Option<tempfile::TempDir>,
    /// Postgres: the database's name, dropped by [`TestDb::drop_database`].
    pg_name: Option<String>,
}

/// The URL of the server's database tests connect to for creating their own.
fn postgres_admin_url() -> String {
    match postgres_server() {
        PostgresServer::External(url) => url.clone(),
        PostgresServer::Private(server) => server.url("postgres"),
        PostgresServer::Missing => {
            panic!("no Postgres server: a Postgres test must check postgres_available() first")
        }
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("cronflow.db").display());
                TestDb {
                    backend,
                    url,
                    dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("cf_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = pg_admin_connection().await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                TestDb {
                    backend,
                    url: format!("{base}/{name}"),
                    dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Drops a Postgres database (SQLite files go with their temp dir).
    pub async fn drop_database(&self) {
        if let Some(name) = &self.pg_name {
            let mut conn = pg_admin_connection().await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// A connection to the server's maintenance database; panics (fails the test) if
/// Postgres cannot be reached.
async fn pg_admin_connection() -> sqlx::postgres::PgConnection {
    use sqlx::Connection;
    let url = postgres_admin_url();
    sqlx::postgres::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Postgres is required for these tests and {url} cannot be reached ({e}). \
             Start it or set {POSTGRES_URL_VAR}."
            )
        })
}

/// Settings for a test: the database given, the test secret key, port 0, private
/// targets allowed, short retry delays; `overrides` replace any of them (an empty
/// `CRONFLOW_SECRET_KEY` unsets the key, as in the environment).
pub fn test_settings(db_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut vars = BTreeMap::from([
        ("CRONFLOW_DATABASE_URL".to_owned(), db_url.to_owned()),
        ("CRONFLOW_SECRET_KEY".to_owned(), TEST_SECRET_KEY.to_owned()),
        ("CRONFLOW_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("CRONFLOW_ALLOW_PRIVATE_TARGETS".to_owned(), "true".to_owned()),
        ("CRONFLOW_SHUTDOWN_TIMEOUT".to_owned(), "5s".to_owned()),
        ("CRONFLOW_JOB_RETRY_BACKOFF".to_owned(), "1s".to_owned()),
        ("CRONFLOW_RETRY_SCHEDULE".to_owned(), "1s,1s,1s,1s,1s".to_owned()),
    ]);
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::load(None, &|k| vars.get(k).cloned()).expect("test settings are valid")
}

/// An application that stopped gracefully: its database, left as the stop left it.
pub struct StoppedApp {
    pub db: TestDb,
    clock: Arc<dyn Clock>,
    overrides: Vec<(String, String)>,
}

impl StoppedApp {
    /// Starts a new application on the database, with the same clock and settings.
    pub async fn start(self) -> TestApp {
        TestApp::start(self.db, self.clock, self.overrides).await
    }
}

/// A running application and what a test needs to talk to it.
pub struct TestApp {
    pub db: TestDb,
    pub address: String,
    pub store: Store,
    pub client: reqwest::Client,
    /// An admin key's token.
    pub admin_token: String,
    /// The token printed on the first start, if this start was the first.
    pub first_admin_token: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// Setting overrides this app was started with (kept across restarts).
    overrides: Vec<(String, String)>,
    shutdown: CancellationToken,
    /// The server task; its error, if any, as text.
    server: JoinHandle<Result<(), String>>,
}

impl TestApp {
    /// Starts an application on a fresh database with the system clock.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with_clock(backend, Arc::new(SystemClock)).await
    }

    /// Starts an application on a fresh database with the given clock.
    pub async fn spawn_with_clock(backend: Backend, clock: Arc<dyn Clock>) -> TestApp {
        let db = TestDb::new(backend).await;
        Self::start(db, clock, Vec::new()).await
    }

    /// Starts an application on a fresh database with setting overrides.
    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
        let db = TestDb::new(backend).await;
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start(db, Arc::new(SystemClock), overrides).await
    }

    /// Starts an application on an existing database (system clock).
    pub async fn start_on(db: TestDb) -> TestApp {
        Self::start(db, Arc::new(SystemClock), Vec::new()).await
    }

    async fn start(db: TestDb, clock: Arc<dyn Clock>, overrides: Vec<(String, String)>) -> TestApp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pairs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let app = Application::build_with_clock(test_settings(&db.url, &pairs), clock.clone())
            .await
            .expect("the application builds");
        let address = format!("http://{}", app.address());
        let store = app.store().clone();
        let first_admin_token = app.first_admin_token().map(str::to_owned);
        let key = NewApiKey::generate("test admin", Scope::Admin, clock.now());
        store
            .insert_api_key(&key, &ChangedBy::system("test"))
            .await
            .expect("insert the test admin key");
        let shutdown = CancellationToken::new();
        let run = app.run_until_stopped(shutdown.clone());
        let server = tokio::spawn(async move { run.await.map_err(|e| format!("{e:#}")) });
        TestApp {
            db,
            address,
            store,
            client: reqwest::Client::builder().build().expect("http client"),
            admin_token: key.token,
            first_admin_token,
            clock,
            overrides,
            shutdown,
            server,
        }
    }

    /// Stops the application gracefully and starts a new one on the same database.
    pub async fn restart(self) -> TestApp {
        self.stop_keeping_db(async {}).await.start().await
    }

    /// Stops the application gracefully, running `while_stopping` beside the stop once it
    /// has begun, and keeps its database (and what starting on it again needs).
    pub async fn stop_keeping_db(self, while_stopping: impl Future<Output = ()>) -> StoppedApp {
        self.shutdown.cancel();
        let (stopped, ()) = tokio::join!(self.server, while_stopping);
        stopped.expect("server task").expect("server stopped cleanly");
        StoppedApp {
            db: self.db,
            clock: self.clock,
            overrides: self.overrides,
        }
    }

    /// Stops the application and drops its database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        self.db.drop_database().await;
    }

    /// A key of `scope` for this application.
    pub async fn key(&self, scope: Scope) -> String {
        let key = NewApiKey::generate("test", scope, self.clock.now());
        self.store
            .insert_api_key(&key, &ChangedBy::system("test"))
            .await
            .expect("insert key");
        key.token
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with the admin key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("request")
    }

    /// GETs `path` and parses its body, or `None` if either fails (for `eventually`).
    pub async fn try_get_json(&self, path: &str) -> Option<Value> {
        self.get(path).await.json().await.ok()
    }

    /// GET `path` and its JSON body (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("a JSON body")
    }

    /// Sends a `webhook.test` event to subscription `hook_id`; returns its delivery's id.
    pub async fn send_test_event(&self, hook_id: &str) -> String {
        let sent: Value = self
            .post(&format!("/v1/webhooks/{hook_id}/test"), &serde_json::json!({}))
            .await
            .json()
            .await
            .expect("the test event's answer");
        sent["delivery_id"].as_str().expect("a delivery id").to_owned()
    }

    /// The whole audit log (NDJSON), read with `key` (an `audit` or `admin` key).
    pub async fn audit_log(&self, key: &str) -> String {
        let r = self
            .client
            .get(self.url("/v1/audit"))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "reading the audit log");
        r.text().await.expect("the audit log")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.expect("request")
    }

    /// Creates a job from `body` and returns it, asserting 201.
    pub async fn create_job(&self, body: &Value) -> Value {
        let r = self.post("/v1/jobs", body).await;
        assert_eq!(
            r.status(),
            201,
            "create job: {}",
            r.text().await.unwrap_or_default()
        );
        r.json().await.expect("job json")
    }
}

/// A minimal valid job body.
pub fn job_body(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "schedule": "*/5 * * * *",
        "target": {"type": "command", "command": ["true"]},
    })
}

/// Reads a response as JSON, with the status, for assertions.
pub async fn status_and_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `secs` seconds
/// with `what` (a deadline, not a sleep standing in for synchronisation).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl TestApp {
    /// A run as the API shows it.
    pub async fn run(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(r.status(), 200, "GET run {id}");
        r.json().await.expect("run json")
    }

    /// Waits until the run reaches a final state and returns it.
    pub async fn finished_run(&self, id: &str, secs: u64) -> Value {
        eventually(secs, &format!("run {id} to finish"), || async {
            let run = self.run(id).await;
            let state = run["state"].as_str().unwrap_or_default().to_owned();
            (!["scheduled", "queued", "running"].contains(&state.as_str())).then_some(run)
        })
        .await
    }

    /// Triggers a job and returns the run.
    pub async fn trigger(&self, job_id: &str) -> Value {
        let r = self
            .post(&format!("/v1/jobs/{job_id}/trigger"), &serde_json::json!({}))
            .await;
        assert_eq!(r.status(), 202, "trigger {job_id}");
        r.json().await.expect("run json")
    }

    /// Every stored event payload, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut page = cronflow_jobs::domain::PageRequest::parse(Some(500), None).unwrap();
        loop {
            let p = self.store.list_events(&page).await.expect("events");
            out.extend(
                p.items
                    .iter()
                    .map(|(_, payload)| serde_json::from_str::<Value>(payload).unwrap()),
            );
            match p.next_cursor {
                Some(c) => page.after = Some(c),
                None => return out,
            }
        }
    }
}

/// A job body running `sh -c script`.
pub fn shell_job(name: &str, script: &str) -> Value {
    serde_json::json!({
        "name": name,
        "schedule": "0 0 1 1 *",
        "target": {"type": "command", "command": ["sh", "-c", script]},
    })
}

/// Whether any process that is not a zombie still belongs to process group `pgid`.
pub fn group_has_live_members(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// An HTTP client for tests (installs the TLS crypto provider reqwest needs first).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The first column, as text, of the rows `sql` selects from the `backend` database at
/// `url`.
pub async fn query_strings(backend: Backend, url: &str, sql: &str) -> Vec<String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
            let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.expect("query");
            pool.close().await;
            rows
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("postgres");
            let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.expect("query");
            pool.close().await;
            rows
        }
    }
}

impl TestDb {
    /// The first column, as text, of the rows `sql` selects from the database.
    pub async fn query_strings(&self, sql: &str) -> Vec<String> {
        query_strings(self.backend, &self.url, sql).await
    }

    /// apalis's task table.
    pub fn queue_table(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "Jobs",
            Backend::Postgres => "apalis.jobs",
        }
    }

    /// Runs fixture SQL on the database (for bulk test data only).
    pub async fn execute_sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.expect("sqlite");
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&pool)
                    .await
                    .expect("fixture sql");
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.expect("postgres");
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&pool)
                    .await
                    .expect("fixture sql");
                pool.close().await;
            }
        }
    }
}

/// A child process that is killed (and reaped) when dropped, so that a test failing
/// midway leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `what`, a tool some tests need, is installed: `check` runs and exits 0.
/// `.ci/run` installs every such tool, so under CI a missing one fails the test;
/// elsewhere the caller skips its check, and a warning says what is missing.
pub fn tool_available(mut check: std::process::Command, what: &str) -> bool {
    let ok = check
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must install {what}");
        loud(&format!(
            "warning: {what} is not installed; skipping a check that needs it"
        ));
    }
    ok
}

/// Whether `python3` can import each of `modules` (see [`tool_available`]).
pub fn python_modules_available(modules: &[&str]) -> bool {
    let mut check = std::process::Command::new("python3");
    check.args(["-c", &format!("import {}", modules.join(", "))]);
    tool_available(
        check,
        &format!(
            "the Python packages {modules:?} (pip install {})",
            modules.join(" ")
        ),
    )
}
