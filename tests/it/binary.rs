//! The real `cronflow` program: first start, configuration errors, key creation,
//! graceful stop on SIGTERM.

use crate::{helpers::*, on_both_backends};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_cronflow-under-test");

/// `cronflow` in `dir` on the database at `db_url`, with nothing else set but, on
/// Postgres, the secret key it needs (on SQLite it makes its own key file).
fn cronflow(dir: &Path, db_url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CRONFLOW_DATABASE_URL", db_url)
        .env("CRONFLOW_LISTEN", "127.0.0.1:0");
    if db_url.starts_with("postgres") {
        c.env("CRONFLOW_SECRET_KEY", TEST_SECRET_KEY);
    }
    c
}

/// A running `cronflow serve` and the lines it printed up to the end of its banner.
struct Served {
    /// Killed when the test ends, also when it fails midway.
    child: KillOnDrop,
    base: String,
    banner: Vec<String>,
}

fn serve(dir: &Path, db_url: &str) -> Served {
    serve_with(cronflow(dir, db_url))
}

fn serve_with(mut command: Command) -> Served {
    let mut child = command
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cronflow");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The banner ends with the line telling how to stop.
    let mut banner = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let last = line.contains("ctrl-c to stop");
        banner.push(line);
        if last {
            break;
        }
    }
    let base = banner
        .iter()
        .find_map(|l| l.strip_prefix("CronFlow is listening on "))
        .unwrap_or_else(|| panic!("no listening line in {banner:?}"))
        .trim()
        .to_owned();
    Served {
        child: KillOnDrop(child),
        base,
        banner,
    }
}

impl Served {
    fn token(&self) -> Option<String> {
        self.banner
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("cf_"))
            .map(str::to_owned)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(Pid::from_raw(self.child.0.id() as i32), Signal::SIGTERM).unwrap();
        self.child.0.wait().unwrap()
    }
}

#[tokio::test]
async fn the_first_start_prints_an_admin_key_once_and_sigterm_stops_cleanly() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path(), &db.url);
    let token = first
        .token()
        .unwrap_or_else(|| panic!("a key in {:?}", first.banner));
    let client = http_client();
    let r = client
        .get(format!("{}/v1/jobs", first.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = first.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");

    let second = serve(dir.path(), &db.url);
    assert_eq!(
        second.token(),
        None,
        "no new key on a later start: {:?}",
        second.banner
    );
    let r = client
        .get(format!("{}/v1/jobs", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the first key still works");
    assert!(second.terminate().success());
}

#[test]
fn with_nothing_configured_serve_uses_cronflow_db_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .env("CRONFLOW_LISTEN", "127.0.0.1:0")
        .arg("migrate")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(dir.path().join("cronflow.db").exists());
    // And the key that seals its webhook secrets beside it, for its owner's eyes only.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("cronflow.db.key");
    let mode = std::fs::metadata(&key)
        .expect("cronflow.db.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn postgres_without_a_secret_key_is_refused_with_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .env(
            "CRONFLOW_DATABASE_URL",
            "postgres://cronflow@127.0.0.1:9/cronflow",
        )
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "cronflow: invalid setting CRONFLOW_SECRET_KEY (secret_key): required with Postgres"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("openssl rand -base64 32"), "{stderr}");
}

#[test]
fn an_invalid_setting_prints_one_line_naming_it_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("CRONFLOW_LISTEN", "not-an-address"),
        ("CRONFLOW_DATABASE_URL", "mysql://x"),
        ("CRONFLOW_RETRY_SCHEDULE", "30s,soon"),
        ("CRONFLOW_WEBHOOK_TIMEOUT", "10"),
        ("CRONFLOW_ALLOW_PRIVATE_TARGETS", "perhaps"),
        ("CRONFLOW_SECRET_KEY", "not-a-key"),
    ] {
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env(var, value)
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{var}: {stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    std::fs::write(
        dir.path().join("bad.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_adress = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .args(["--config", "bad.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_adress"));
}

#[tokio::test]
async fn a_toml_file_configures_and_the_environment_overrides_it() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cronflow.toml"),
        "listen = \"127.0.0.1:1\"\nadmin_token = \"from-the-file-0123456789\"\n",
    )
    .unwrap();
    // The environment's CRONFLOW_LISTEN (port 0) overrides the file's port 1.
    let served = serve(dir.path(), &db.url);
    let client = http_client();
    let r = client
        .get(format!("{}/v1/jobs", served.base))
        .bearer_auth("from-the-file-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "CRONFLOW_ADMIN_TOKEN from the file is an admin key"
    );
    assert_eq!(
        served.token(),
        None,
        "with an admin token configured no key is generated"
    );
    assert!(served.terminate().success());
}

async fn keys_create_prints_a_working_token_of_the_scope_asked_for(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let out = cronflow(dir.path(), &db.url)
        .args(["keys", "create", "--scope", "read", "--name", "ci"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("cf_"), "stdout is just the token: {token}");

    let app = TestApp::start_on(db).await;
    let r = app
        .client
        .get(app.url("/v1/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/v1/jobs"))
        .bearer_auth(&token)
        .json(&job_body("x"))
        .send()
        .await
        .unwrap();
    let (status, body): (u16, Value) = status_and_json(r).await;
    assert_eq!(status, 403, "{body}");
    app.stop().await;
}

on_both_backends!(keys_create_prints_a_working_token_of_the_scope_asked_for);

#[test]
fn the_openapi_command_prints_the_committed_document() {
    let out = Command::new(BIN).env_clear().arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), cronflow_api::spec_yaml());
}

const ADMIN: &str = "test-admin-token-0123456789";

async fn a_worker_killed_mid_run_is_recovered_and_its_processes_stopped(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        let mut c = cronflow(dir, &db.url);
        c.env("CRONFLOW_ADMIN_TOKEN", ADMIN);
        c
    };
    let first = serve_with(start(dir.path()));
    let client = http_client();
    let pidfile = dir.path().join("pgid");
    let job: Value = client
        .post(format!("{}/v1/jobs", first.base))
        .bearer_auth(ADMIN)
        .json(&shell_job(
            "victim",
            &format!("echo $$ > {}; sleep 1000 & sleep 1000", pidfile.display()),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!(
            "{}/v1/jobs/{}/trigger",
            first.base,
            job["id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let get_run = |base: String| {
        let client = client.clone();
        let run_id = run_id.clone();
        async move {
            let r = client
                .get(format!("{base}/v1/runs/{run_id}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .ok()?;
            r.json::<Value>().await.ok()
        }
    };
    // The worker records the process group just after spawning it (that is what the
    // recovering worker kills); kill the worker once it has.
    let observer = cronflow_jobs::Store::connect(&db.url, test_secret_key())
        .await
        .unwrap();
    let run_key = cronflow_jobs::domain::RunId::parse(&run_id).unwrap();
    eventually(
        30,
        "the run to be running, its process group recorded",
        || async {
            let run = get_run(first.base.clone()).await?;
            observer.process_group_of(&run_key).await.ok()??;
            (run["state"] == "running" && pidfile.exists()).then_some(())
        },
    )
    .await;
    observer.close().await;
    let pgid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let mut first = first;
    first.child.0.kill().unwrap(); // SIGKILL: no chance to clean up
    first.child.0.wait().unwrap();
    assert!(
        group_has_live_members(pgid),
        "the job outlives its killed worker until recovery"
    );

    let second = serve_with(start(dir.path()));
    let recovered = eventually(60, "the orphaned run to be recovered", || async {
        let run = get_run(second.base.clone()).await?;
        (run["state"] != "running").then_some(run)
    })
    .await;
    assert_eq!(recovered["state"], "failed", "{recovered}");
    assert!(
        recovered["error"]
            .as_str()
            .unwrap()
            .contains("stopped unexpectedly"),
        "{recovered}"
    );
    assert!(
        !group_has_live_members(pgid),
        "recovery kills the orphaned process group"
    );
    let store = cronflow_jobs::Store::connect(&db.url, test_secret_key())
        .await
        .unwrap();
    let events = store
        .list_events(&cronflow_jobs::domain::PageRequest::parse(Some(50), None).unwrap())
        .await
        .unwrap();
    let events: Vec<Value> = events
        .items
        .iter()
        .map(|(_, p)| serde_json::from_str(p).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "job.failed" && e["data"]["run_id"] == run_id.as_str()),
        "the recovered run has its event: {events:?}"
    );
    store.close().await;
    assert!(second.terminate().success());
    db.drop_database().await;
}

on_both_backends!(a_worker_killed_mid_run_is_recovered_and_its_processes_stopped);

async fn a_worker_killed_mid_delivery_delivers_after_restart(backend: Backend) {
    let (d, seen) = kill_mid_delivery_and_restart(backend).await;
    assert!(seen.len() >= 2, "attempted again: {}", seen.len());
    assert!(
        seen.iter()
            .all(|s| s.headers["x-cronflow-idempotency-key"] == d["id"].as_str().unwrap()),
        "the same idempotency key"
    );
    assert_eq!(d["status"], "delivered");
}

on_both_backends!(a_worker_killed_mid_delivery_delivers_after_restart);

/// The attempt in flight when its process was killed went out (the receiver got it), so
/// the delivery's history records it, as `interrupted` (its outcome unknown), and it
/// counts against the retry budget.
async fn an_attempt_cut_short_by_a_crash_is_recorded_as_interrupted(backend: Backend) {
    let (d, seen) = kill_mid_delivery_and_restart(backend).await;
    let history = d["attempt_history"].as_array().unwrap();
    assert_eq!(
        history.len(),
        seen.len(),
        "every attempt sent is in the history: {d}"
    );
    assert_eq!(history[0]["error_kind"], "interrupted", "{d}");
    assert_eq!(d["attempts"].as_u64(), Some(seen.len() as u64), "{d}");
}

on_both_backends!(an_attempt_cut_short_by_a_crash_is_recorded_as_interrupted);

/// Starts `serve`, sends a test event to a receiver that hangs on the first attempt,
/// SIGKILLs the process while that attempt is in flight, starts it again, and returns the
/// delivery once delivered, with the requests the receiver got.
async fn kill_mid_delivery_and_restart(backend: Backend) -> (Value, Vec<Seen>) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        let mut c = cronflow(dir, &db.url);
        c.env("CRONFLOW_ADMIN_TOKEN", ADMIN)
            .env("CRONFLOW_ALLOW_PRIVATE_TARGETS", "true");
        c
    };
    let receiver = TestReceiver::start(&[0, 200]).await;
    let mut first = serve_with(start(dir.path()));
    let client = http_client();
    let hook: Value = client
        .post(format!("{}/v1/webhooks", first.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"url": receiver.url("/slow"), "events": ["job.failed"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent: Value = client
        .post(format!(
            "{}/v1/webhooks/{}/test",
            first.base,
            hook["id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sent["delivery_id"].as_str().unwrap().to_owned();
    eventually(30, "the first attempt to be in flight", || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;
    first.child.0.kill().unwrap(); // SIGKILL while the request is in flight
    first.child.0.wait().unwrap();

    let second = serve_with(start(dir.path()));
    let d = eventually(60, "the delivery after the restart", || async {
        let r = client
            .get(format!("{}/v1/deliveries/{id}", second.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        let d: Value = r.json().await.ok()?;
        (d["status"] == "delivered").then_some(d)
    })
    .await;
    let seen = receiver.requests();
    assert!(second.terminate().success());
    receiver.release();
    db.drop_database().await;
    (d, seen)
}

#[test]
fn worker_refuses_a_sqlite_database_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .env("CRONFLOW_DATABASE_URL", "sqlite://cronflow.db")
        .arg("worker")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Postgres"), "{stderr}");
    assert!(!dir.path().join("cronflow.db").exists(), "nothing was created");
    let help = Command::new(BIN).args(["worker", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Postgres"));
}
