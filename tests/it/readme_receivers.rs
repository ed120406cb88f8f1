//! The receivers shown in README's "Verifying webhooks" run as written (only the secret
//! and port filled in) and accept CronFlow's deliveries, and refuse wrong signatures.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

fn readme_block(lang: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("a {lang} block in README"));
    let rest = &readme[start + lang.len() + 4..];
    rest[..rest.find("```").unwrap()].to_owned()
}

async fn delivery_status(app: &TestApp, hook_id: &str) -> Value {
    let sent: Value = app
        .post(&format!("/v1/webhooks/{hook_id}/test"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = sent["delivery_id"].as_str().unwrap().to_owned();
    eventually(30, "an attempt", || async {
        let d: Value = app.get(&format!("/v1/deliveries/{id}")).await.json().await.ok()?;
        (d["attempts"].as_i64()? >= 1).then_some(d)
    })
    .await
}

#[tokio::test]
async fn the_readme_node_receiver_accepts_a_delivery_and_refuses_a_bad_signature() {
    if Command::new("node").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs node for this test");
        eprintln!("warning: node is not installed; skipping the README receiver check");
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let code = readme_block("js")
        .replace(
            "const SECRET = \"whsec_…\";",
            &format!("const SECRET = \"{secret}\";"),
        )
        .replace(".listen(3000)", &format!(".listen({port}, \"127.0.0.1\")"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receiver.js");
    std::fs::write(&file, code).unwrap();
    let mut node = Command::new("node")
        .arg(&file)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    eventually(20, "the node receiver to listen", || async {
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
    let _ = node.kill();
    let _ = node.wait();
    app.stop().await;
}
