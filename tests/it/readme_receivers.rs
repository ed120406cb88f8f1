//! The receivers shown in `docs/webhooks.md` ("Verifying webhooks", which the README's
//! tour uses) run as written (only the secret and port filled in), accept CronFlow's
//! deliveries, and refuse wrong signatures.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

/// The page the receivers are documented in.
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/webhooks.md");

/// The first code block of `lang` on [`PAGE`].
fn documented_block(lang: &str) -> String {
    let page = std::fs::read_to_string(PAGE).unwrap();
    let start = page
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("a {lang} block in {PAGE}"));
    let rest = &page[start + lang.len() + 4..];
    rest[..rest.find("```").unwrap()].to_owned()
}

async fn delivery_status(app: &TestApp, hook_id: &str) -> Value {
    let id = app.send_test_event(hook_id).await;
    eventually(30, "an attempt", || async {
        let d: Value = app.try_get_json(&format!("/v1/deliveries/{id}")).await?;
        (d["attempts"].as_i64()? >= 1).then_some(d)
    })
    .await
}

/// A free port on 127.0.0.1 for a receiver to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for the receiver on `port`, then checks that it accepts a delivery signed with
/// `secret` (204) and refuses one signed with another secret (401).
async fn assert_receiver_checks_signatures(_receiver: KillOnDrop, port: u16, secret: &str) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    eventually(20, "the receiver to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/hooks");
    let good = app
        .post(
            "/v1/webhooks",
            &json!({"url": url, "events": ["job.failed"], "secret": secret}),
        )
        .await;
    let good: Value = good.json().await.unwrap();
    let d = delivery_status(&app, good["id"].as_str().unwrap()).await;
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempt_history"][0]["status_code"], 204);
    let bad = app
        .post("/v1/webhooks", &json!({"url": url, "events": ["job.failed"]}))
        .await;
    let bad: Value = bad.json().await.unwrap();
    let d = delivery_status(&app, bad["id"].as_str().unwrap()).await;
    assert_eq!(
        d["attempt_history"][0]["status_code"], 401,
        "another secret's signature is refused: {d}"
    );
    app.stop().await;
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn the_documented_node_receiver_accepts_a_delivery_and_refuses_a_bad_signature() {
    let mut check = Command::new("node");
    check.arg("--version");
    if !tool_available(check, "node") {
        return;
    }
    let port = free_port();
    let code = documented_block("js")
        .replace(
            "const SECRET = \"whsec_…\";",
            &format!("const SECRET = \"{SECRET}\";"),
        )
        .replace(".listen(3000)", &format!(".listen({port}, \"127.0.0.1\")"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receiver.js");
    std::fs::write(&file, code).unwrap();
    let node = KillOnDrop(
        Command::new("node")
            .arg(&file)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    assert_receiver_checks_signatures(node, port, SECRET).await;
}

/// Run as the page says (`flask --app receiver run`), with the Standard Webhooks check
/// done by the official package.
#[tokio::test]
async fn the_documented_python_receiver_accepts_a_delivery_and_refuses_a_bad_signature() {
    if !python_modules_available(&["flask", "standardwebhooks"]) {
        return;
    }
    let port = free_port();
    let code = documented_block("python").replace("SECRET = \"whsec_…\"", &format!("SECRET = \"{SECRET}\""));
    assert!(
        code.contains(SECRET),
        "the documented Python receiver names its secret"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("receiver.py"), code).unwrap();
    let flask = KillOnDrop(
        Command::new("python3")
            .args(["-m", "flask", "--app", "receiver", "run", "--host", "127.0.0.1"])
            .arg("--port")
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_receiver_checks_signatures(flask, port, SECRET).await;
}
