//! Clients generated from the committed `openapi.yaml`, used for real against a served
//! CronFlow: Python (openapi-python-client, which must print no warning), TypeScript
//! (openapi-typescript + openapi-fetch) and Rust (progenitor, the `cronflow-client`
//! crate). The generated Python and TypeScript code is written to a temporary
//! directory, never committed. Outside CI a missing generator skips its test with a
//! warning; under `CI=true` it fails (`.ci/run` installs them).

use crate::helpers::{Backend, TestApp, TestReceiver, tool_available};
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd` to completion (killed after `secs` seconds) without blocking the runtime
/// the application under test runs on; returns whether it succeeded and its output.
async fn run(mut cmd: tokio::process::Command, secs: u64) -> (bool, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{cmd:?}");
    let out = tokio::time::timeout(Duration::from_secs(secs), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn command(program: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    cmd
}

#[tokio::test]
async fn a_python_client_generated_without_warnings_drives_cronflow() {
    let mut version = std::process::Command::new("openapi-python-client");
    version.arg("--version");
    if !tool_available(
        version,
        "openapi-python-client (pip install openapi-python-client)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("cronflow_client");
    let spec = repo().join("openapi.yaml");
    let config = repo().join("tests/clients/openapi-python-client.yaml");
    let (ok, output) = run(
        command(
            "openapi-python-client",
            &[
                "generate",
                "--path",
                spec.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--meta",
                "none",
                "--output-path",
                package.to_str().unwrap(),
            ],
        ),
        300,
    )
    .await;
    assert!(ok, "openapi-python-client failed:\n{output}");
    let warnings: Vec<&str> = output
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("warning"))
        .collect();
    assert!(warnings.is_empty(), "openapi-python-client warned:\n{output}");

    let app = TestApp::spawn_with(Backend::Sqlite, &[("CRONFLOW_RETRY_SCHEDULE", "10ms,10ms")]).await;
    let ok_receiver = TestReceiver::start(&[200]).await;
    let failing_receiver = TestReceiver::start(&[500]).await;
    let mut script = command(
        "python3",
        &[repo().join("tests/clients/python_client.py").to_str().unwrap()],
    );
    script
        .env("PYTHONPATH", dir.path())
        .env("CRONFLOW_URL", &app.address)
        .env("CRONFLOW_TOKEN", &app.admin_token)
        .env("RECEIVER_OK", &ok_receiver.address)
        .env("RECEIVER_FAILING", &failing_receiver.address);
    let (ok, output) = run(script, 300).await;
    assert!(ok, "the Python client script failed:\n{output}");
    assert!(output.contains("every step passed"), "{output}");
    // Reading the receivers checks every delivery against its event type's schema.
    assert!(!ok_receiver.requests().is_empty());
    assert!(!failing_receiver.requests().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_typescript_client_creates_a_job_and_lists_its_runs() {
    let package = repo().join("tests/clients/typescript");
    let bin = |tool: &str| package.join("node_modules/.bin").join(tool);
    let mut version = std::process::Command::new(bin("openapi-typescript"));
    version.arg("--version");
    if !tool_available(
        version,
        "openapi-typescript, openapi-fetch and typescript (`npm ci --prefix tests/clients/typescript`; Node 20)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("package.json"), r#"{"type": "module"}"#).unwrap();
    std::os::unix::fs::symlink(package.join("node_modules"), work.join("node_modules")).unwrap();
    std::fs::copy(package.join("client.ts"), work.join("client.ts")).unwrap();
    let spec = repo().join("openapi.yaml");
    let schema = work.join("schema.d.ts");
    let (ok, output) = run(
        command(
            bin("openapi-typescript").to_str().unwrap(),
            // A property with a `default` is optional in a request: the server fills it
            // in (openapi-typescript otherwise types it as always present).
            &[
                spec.to_str().unwrap(),
                "--default-non-nullable=false",
                "--output",
                schema.to_str().unwrap(),
            ],
        ),
        300,
    )
    .await;
    assert!(ok, "openapi-typescript failed:\n{output}");
    assert!(
        !output.to_ascii_lowercase().contains("warn"),
        "openapi-typescript warned:\n{output}"
    );
    let out = work.join("out");
    let (ok, output) = run(
        command(
            bin("tsc").to_str().unwrap(),
            &[
                "--strict",
                "--target",
                "es2022",
                "--module",
                "nodenext",
                "--moduleResolution",
                "nodenext",
                "--skipLibCheck",
                "--outDir",
                out.to_str().unwrap(),
                work.join("client.ts").to_str().unwrap(),
            ],
        ),
        300,
    )
    .await;
    assert!(
        ok,
        "client.ts does not type-check against the generated types:\n{output}"
    );

    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut script = command("node", &[out.join("client.js").to_str().unwrap()]);
    script
        .current_dir(work)
        .env("CRONFLOW_URL", &app.address)
        .env("CRONFLOW_TOKEN", &app.admin_token);
    let (ok, output) = run(script, 300).await;
    assert!(ok, "the TypeScript client failed:\n{output}");
    assert!(output.contains("every step passed"), "{output}");
    app.stop().await;
}

#[tokio::test]
async fn the_rust_client_generated_by_progenitor_creates_a_job_and_reads_it_back() {
    use cronflow_client::types;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let auth = format!("Bearer {}", app.admin_token);
    let http = reqwest::Client::builder()
        .default_headers(
            [(reqwest::header::AUTHORIZATION, auth.parse().unwrap())]
                .into_iter()
                .collect(),
        )
        .build()
        .unwrap();
    let api = cronflow_client::Client::new_with_client(&app.address, http);
    let body = types::JobIn {
        name: "rust-client".parse().unwrap(),
        schedule: "0 2 * * *".parse().unwrap(),
        timezone: "Europe/Berlin".parse().unwrap(),
        target: types::Target::CommandTarget(types::CommandTarget {
            type_: types::CommandTargetType::Command,
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: Default::default(),
            working_dir: None,
        }),
        timeout_seconds: std::num::NonZeroU32::new(60).unwrap(),
        max_retries: 2,
        environment: Some(types::Environment::Staging),
        overlap_policy: None,
        catch_up: None,
        tags: vec!["rust".parse().unwrap()],
        alert_after_failures: 3,
        late_after_seconds: Some(120),
        expected_duration_seconds: None,
    };
    let created = api.create_job(&body).await.expect("create a job").into_inner();
    assert!(created.id.starts_with("wf_"));
    let read = api.get_job(&created.id).await.expect("read it back").into_inner();
    assert_eq!(read.name, "rust-client");
    assert_eq!(read.timezone, "Europe/Berlin");
    assert_eq!(read.timeout_seconds, 60);
    assert!(read.tags.iter().any(|t| t == "rust"));
    assert_eq!(read.environment, types::Environment::Staging);
    assert_eq!(read.next_run_times.len(), 5);
    match api.get_job("wf_doesnotexist").await {
        Err(cronflow_client::Error::ErrorResponse(e)) => {
            assert_eq!(e.status(), 404);
            assert_eq!(e.code, "not_found");
        }
        other => panic!("a missing job: {other:?}"),
    }
    app.stop().await;
}
