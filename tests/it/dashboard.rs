//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven through WebDriver): sign in, create a job and a webhook through the pages,
//! watch the delivery in Webhook Activity, let a delivery die and replay it from the
//! DLQ, export the CSV, and the guards (read keys, CSRF, audit keys, sign-out).
//!
//! Every page visited is saved as a screenshot under `target/dashboard-screenshots/`.
//! Without Chromium these tests skip with a warning, except under `CI=true` where they
//! fail (`.ci/run` installs it).

use crate::helpers::{Backend, KillOnDrop, TestApp, TestReceiver, eventually, tool_available};
use cronflow_jobs::domain::Scope;
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};
use std::{path::PathBuf, time::Duration};

/// How long a page condition may take.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium under its own chromedriver, with a fresh profile; both end with it.
struct Browser {
    client: Client,
    /// Screenshots are named `<test>-<n>-<page>.png`.
    name: String,
    shots: std::cell::Cell<u32>,
    _driver: KillOnDrop,
    _profile: tempfile::TempDir,
}

fn chromium_installed() -> bool {
    let mut driver = std::process::Command::new("chromedriver");
    driver.arg("--version");
    let mut browser = std::process::Command::new("chromium");
    browser.arg("--version");
    tool_available(driver, "chromedriver (apt-get install chromium-driver)")
        && tool_available(browser, "Chromium (apt-get install chromium)")
}

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots")
}

impl Browser {
    /// Starts a browser, or `None` (after a warning) when Chromium is not installed.
    async fn start(name: &str, dark: bool) -> Option<Browser> {
        if !chromium_installed() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = KillOnDrop(
            std::process::Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let profile = tempfile::tempdir().expect("profile dir");
        // This test's screenshots from an earlier run would mix with the new ones.
        if let Ok(old) = std::fs::read_dir(screenshot_dir()) {
            for f in old.flatten() {
                if f.file_name().to_string_lossy().starts_with(&format!("{name}-")) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if dark {
            args.push("--force-dark-mode".into());
            args.push("--blink-settings=preferredColorScheme=0".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually(20, "chromedriver to accept a session", || {
            let (caps, url) = (caps.clone(), url.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        Some(Browser {
            client,
            name: name.to_owned(),
            shots: std::cell::Cell::new(0),
            _driver: driver,
            _profile: profile,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    /// The current value of the field `css`.
    async fn value(&self, css: &str) -> String {
        let field = self.find(css).await;
        field.prop("value").await.expect("value").unwrap_or_default()
    }

    async fn find_all_count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    async fn text(&self) -> String {
        self.find("body").await.text().await.expect("page text")
    }

    async fn path(&self) -> String {
        self.client.current_url().await.expect("url").path().to_owned()
    }

    /// Saves a screenshot of the page as it is now.
    async fn shot(&self, page: &str) {
        let n = self.shots.get() + 1;
        self.shots.set(n);
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{}-{n:02}-{page}.png", self.name)), png).expect("save screenshot");
    }

    /// Types `value` into the field `css`, replacing what it holds.
    async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear field");
        field.send_keys(value).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks the button or link whose text is `text` (inside `scope`).
    async fn click_text(&self, scope: &str, text: &str) {
        let xpath = format!("{scope}//*[(self::button or self::a) and normalize-space(.)='{text}']");
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no `{text}` button: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Reloads `url` until an element matching `css` holds `needle` in its text.
    async fn wait_for(&self, url: &str, css: &str, needle: &str) {
        let deadline = std::time::Instant::now() + PAGE_WAIT;
        loop {
            self.goto(url).await;
            let texts = self
                .client
                .execute(
                    "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);",
                    vec![json!(css)],
                )
                .await
                .expect("script");
            let found = texts
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t.as_str().is_some_and(|t| t.contains(needle))));
            if found {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`{needle}` never showed in `{css}` on {url}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fetches `path` from the page's origin with its cookies; `(status, body)`.
    async fn fetch(&self, path: &str, init: Value) -> (u16, String) {
        let out = self
            .client
            .execute_async(
                "const [path, init, done] = arguments; \
                 fetch(path, init).then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));",
                vec![json!(path), init],
            )
            .await
            .expect("fetch in the page");
        (
            out[0].as_u64().unwrap_or(0) as u16,
            out[1].as_str().unwrap_or_default().to_owned(),
        )
    }

    async fn sign_in(&self, app: &TestApp, token: &str) {
        self.goto(&app.url("/login")).await;
        self.fill("#api_key", token).await;
        self.click("button[type=submit]").await;
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// The audit log's first entries, as the audit stream shows them.
async fn audit_log(app: &TestApp) -> Vec<Value> {
    let entries = app.store.read_audit(0, 500).await.expect("audit");
    entries.iter().map(|e| e.to_json()).collect()
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Sign in, create a job (after a bad schedule is named next to its field) and a webhook
/// through the pages, see the secret once, run the job, watch the delivery arrive in
/// Activity with the receiver's status code, open it, export the CSV and read it back,
/// sign out.
async fn a_user_creates_a_job_and_a_webhook_and_watches_the_delivery(backend: Backend) {
    let spawned = TestApp::spawn(backend).await;
    let app = &spawned;
    let name = format!("flow-{}", backend_name(app.db.backend));
    let Some(b) = Browser::start(&name, false).await else {
        return;
    };
    let receiver = TestReceiver::start(&[201]).await;

    b.goto(&app.url("/jobs")).await;
    assert_eq!(
        b.path().await,
        "/login",
        "a page without a session sends to the sign-in"
    );
    b.shot("login").await;
    b.fill("#api_key", &app.admin_token).await;
    b.click("button[type=submit]").await;
    b.find("h1").await;
    assert_eq!(b.path().await, "/jobs", "back to the page asked for");
    assert!(
        b.text().await.contains("No jobs yet"),
        "the empty state explains itself"
    );
    b.shot("jobs-empty").await;

    // A job: first with a schedule the API refuses, which is named next to its field.
    b.click_text("//main", "New job").await;
    b.fill("#name", "nightly-report").await;
    b.fill("#schedule", "61 * * * *").await;
    b.click("#type-command").await;
    b.fill("textarea[name='target.command']", "echo report done")
        .await;
    b.click("form.job-form button[type=submit]").await;
    let error = b.find("#err-schedule").await.text().await.expect("error text");
    assert!(
        error.contains("schedule: minute field `61`: 61 is outside 0-59"),
        "the API's own message, next to the field: {error}"
    );
    assert_eq!(
        b.find("#schedule")
            .await
            .attr("aria-invalid")
            .await
            .expect("attr")
            .as_deref(),
        Some("true")
    );
    b.shot("job-form-error").await;
    b.fill("#schedule", "0 2 * * *").await;
    b.fill("#timezone", "Europe/Berlin").await;
    b.click("form.job-form button[type=submit]").await;
    b.find(".slots, .cards").await;
    let job_path = b.path().await;
    let job_id = job_path.trim_start_matches("/jobs/").to_owned();
    assert!(job_id.starts_with("wf_"), "the new job's page: {job_path}");
    let job = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["schedule"], "0 2 * * *");
    assert_eq!(job["timezone"], "Europe/Berlin");
    assert_eq!(job["target"]["command"], json!(["sh", "-c", "echo report done"]));
    let page = b.text().await;
    assert!(
        page.contains("CET") || page.contains("CEST"),
        "times in the job's zone too"
    );

    // Edit it: the form starts from the job as stored.
    b.click_text("//main", "Edit").await;
    assert_eq!(b.value("#schedule").await, "0 2 * * *");
    b.fill("#name", "nightly-report-v2").await;
    b.click("form.job-form button[type=submit]").await;
    b.find(".cards").await;
    assert_eq!(b.path().await, job_path);
    let job = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["name"], "nightly-report-v2");

    // A webhook through Settings → Integrations → Webhooks.
    b.goto(&app.url("/settings/integrations/webhooks")).await;
    b.fill("#url", &receiver.url("/hooks")).await;
    b.find("input[name=events][value='job.completed']")
        .await
        .click()
        .await
        .expect("tick");
    b.fill("#description", "ops receiver").await;
    b.click("#new button[type=submit]").await;
    let secret = b.value("#new-secret").await;
    assert!(secret.starts_with("whsec_"), "the secret, shown once: {secret}");
    b.find("button[data-copy='new-secret']").await;
    b.shot("webhook-created").await;
    b.goto(&app.url("/settings/integrations/webhooks")).await;
    b.shot("webhooks").await;
    let settings = b.text().await;
    assert!(
        !settings.contains(&secret),
        "afterwards only the fingerprint shows"
    );
    assert!(
        b.find("code.fingerprint")
            .await
            .text()
            .await
            .unwrap_or_default()
            .len()
            == 19
    );
    let hooks = app.get_json("/v1/webhooks").await;
    assert_eq!(hooks["items"][0]["url"], receiver.url("/hooks"));
    assert_eq!(
        hooks["items"][0]["events"],
        json!(["job.completed", "job.failed", "job.timed_out"])
    );

    // Run the job now; the delivery shows in Activity with the receiver's answer.
    b.goto(&app.url(&job_path)).await;
    b.click_text("//main", "Run now").await;
    b.find("h1 code").await;
    assert!(b.path().await.starts_with("/runs/run_"));
    let run_url = b.client.current_url().await.expect("url").to_string();
    b.wait_for(&run_url, "pre.output", "report done").await;
    b.shot("run").await;
    b.wait_for(&app.url("/activity"), "code.status-code", "201").await;
    assert!(b.text().await.contains("job.completed"));
    eventually(10, "the receiver to get the delivery", || async {
        (!receiver.requests().is_empty()).then_some(())
    })
    .await;

    // Live refresh: a new delivery is announced, not pushed under the reader.
    b.find("#live-toggle").await;
    app.trigger(&job_id).await;
    let announced = eventually(20, "the live notice of a new delivery", || async {
        let button = b.client.find(Locator::Css("#show-new")).await.ok()?;
        let shown = button.is_displayed().await.ok()?;
        let text = button.text().await.ok()?;
        (shown && text.contains("new")).then_some(text)
    })
    .await;
    assert_eq!(announced, "1 new — click to show");
    assert_eq!(
        b.find_all_count("table.activity tbody tr").await,
        1,
        "the list stays as it was"
    );
    b.click("#show-new").await;
    b.wait_for(&app.url("/activity"), "#delivery-count", "2 deliveries match")
        .await;
    eventually(10, "the receiver to get both deliveries", || async {
        (receiver.requests().len() == 2).then_some(())
    })
    .await;
    b.shot("activity").await;

    b.click("table.activity tbody a").await;
    b.find("ol.timeline").await;
    let delivery = b.text().await;
    assert!(
        delivery.contains("Attempt 1") && delivery.contains("201"),
        "{delivery}"
    );
    assert!(
        delivery.contains(r#""event":"job.completed""#),
        "the payload as sent"
    );
    b.shot("delivery").await;

    // "Export CSV" downloads exactly the filtered set, through the streamed export.
    b.goto(&app.url("/activity?event_type=job.completed&status=delivered"))
        .await;
    let href = b
        .find("a[download]")
        .await
        .attr("href")
        .await
        .expect("href")
        .unwrap_or_default();
    assert!(
        href.contains("event_type=job.completed") && href.contains("status=delivered"),
        "{href}"
    );
    let (status, csv) = b.fetch(&href, json!({})).await;
    assert_eq!(status, 200);
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().expect("header").clone();
    assert_eq!(&header[0], "delivery_id");
    let records: Vec<csv::StringRecord> = rows.records().map(|r| r.expect("row")).collect();
    assert_eq!(records.len(), 2, "two deliveries, one attempt each: {csv}");
    assert_eq!(&records[0][3], "job.completed");
    assert_eq!(&records[0][10], "201");
    let (_, none) = b.fetch("/activity/export.csv?status=dead", json!({})).await;
    assert_eq!(
        none.lines().count(),
        1,
        "a filter matching nothing exports the header only"
    );

    for (path, page) in [("/schemas/events", "schemas"), ("/dlq", "dlq-empty")] {
        b.goto(&app.url(path)).await;
        b.find("h1").await;
        b.shot(page).await;
    }
    assert!(b.text().await.contains("The dead letter queue is empty"));
    b.goto(&app.url("/jobs")).await;
    b.shot("jobs").await;
    b.client.set_window_size(390, 844).await.expect("phone size");
    for (path, page) in [
        ("/jobs", "jobs-phone"),
        ("/activity", "activity-phone"),
        (job_path.as_str(), "job-phone"),
    ] {
        b.goto(&app.url(path)).await;
        b.find("h1").await;
        let overflow = b
            .client
            .execute(
                "const w = document.documentElement.clientWidth; \
                 if (document.documentElement.scrollWidth <= w) return []; \
                 return [...document.querySelectorAll('body *')] \
                   .filter(e => e.getBoundingClientRect().right > w + 1) \
                   .map(e => e.tagName + '.' + e.className).slice(0, 5);",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(
            overflow,
            json!([]),
            "{path} fits a phone's width (tables scroll inside their frame)"
        );
        b.shot(page).await;
    }
    b.client.set_window_size(1280, 900).await.expect("desktop size");

    // Every change made here is in the audit log as the same API call would be.
    let audit: Vec<Value> = audit_log(app)
        .await
        .into_iter()
        .filter(|e| e["detail"]["via"] == "dashboard")
        .collect();
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "POST /v1/jobs",
            "PATCH /v1/jobs/{id}",
            "POST /v1/webhooks",
            "POST /v1/jobs/{id}/trigger"
        ]
    );
    assert!(audit.iter().all(|e| e["source"] == "127.0.0.1" && e["actor"].as_str().is_some_and(|a| a.starts_with("key_"))));
    assert_eq!(audit[0]["object_id"], job_id);

    // Sign-out ends the session.
    b.click_text("//header", "Sign out").await;
    b.find("#api_key").await;
    b.goto(&app.url("/activity")).await;
    assert_eq!(b.path().await, "/login");
    b.close().await;
    spawned.stop().await;
}

/// A receiver answering 500 kills a delivery after the shrunken retry schedule; the
/// navigation flags it with the DLQ badge; the DLQ groups it by cause; "Replay all
/// matching" previews "1 deliveries to 1 subscription", and the replay is delivered.
async fn a_dead_delivery_is_flagged_and_replayed_from_the_dlq(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_RETRY_SCHEDULE", "200ms")]).await;
    let name = format!("dlq-dark-{}", backend_name(backend));
    let Some(b) = Browser::start(&name, true).await else {
        app.stop().await;
        return;
    };
    // Two attempts fail (the first and its one retry); the replay's attempt succeeds.
    let receiver = TestReceiver::start(&[500, 500, 200]).await;
    let hook = app
        .post(
            "/v1/webhooks",
            &json!({ "url": receiver.url("/hook"), "events": ["job.completed"] }),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let job = app.create_job(&crate::helpers::shell_job("dies", "true")).await;
    app.trigger(job["id"].as_str().unwrap_or_default()).await;

    b.sign_in(&app, &app.admin_token).await;
    b.find("h1").await;
    b.wait_for(&app.url("/jobs"), "#dlq-badge", "1").await;
    assert_eq!(b.find("#dlq-badge").await.text().await.expect("badge"), "1");
    b.shot("jobs-with-dlq-badge").await;

    b.goto(&app.url("/dlq")).await;
    let dlq = b.text().await;
    assert!(
        dlq.contains("HTTP 500") && dlq.contains("receiver failed (5xx)"),
        "the cause in words: {dlq}"
    );
    b.shot("dlq").await;
    b.click("table.list tbody a[href^='/deliveries/']").await;
    let why = b.find(".why").await.text().await.expect("why");
    assert!(
        why.contains("HTTP 500") && why.contains("dead letter queue"),
        "{why}"
    );
    b.shot("delivery-dead").await;

    b.goto(&app.url("/dlq")).await;
    b.click_text("//main", "Replay all matching…").await;
    let preview = b.find("#preview-count").await.text().await.expect("preview");
    assert_eq!(preview, "1 delivery to 1 subscription");
    b.shot("dlq-preview").await;
    b.click("form[action='/dlq/bulk'] button[type=submit]").await;
    b.find("p.notice").await;
    assert!(b.text().await.contains("Replayed 1 dead delivery."));
    let list = app.get_json("/v1/deliveries").await;
    let id = list["items"][0]["id"].as_str().unwrap_or_default().to_owned();
    b.wait_for(
        &app.url(&format!("/deliveries/{id}")),
        ".heading .badge",
        "delivered",
    )
    .await;
    assert_eq!(receiver.requests().len(), 3);
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.headers.get("x-cronflow-idempotency-key") == Some(&id))
    );
    b.shot("delivery-replayed").await;
    b.goto(&app.url("/dlq")).await;
    b.find("h1").await;
    assert!(
        b.client.find(Locator::Css("#dlq-badge")).await.is_err(),
        "no badge once the DLQ is empty"
    );
    for (path, page) in [
        ("/activity", "activity"),
        ("/settings/integrations/webhooks", "webhooks"),
        ("/schemas/events", "schemas"),
    ] {
        b.goto(&app.url(path)).await;
        b.find("h1").await;
        b.shot(page).await;
    }
    b.goto(&app.url(&format!("/jobs/{}", job["id"].as_str().unwrap_or_default())))
        .await;
    b.find("ol.slots, .cards").await;
    b.shot("job").await;

    let replays: Vec<Value> = audit_log(&app)
        .await
        .into_iter()
        .filter(|e| e["action"] == "POST /v1/dlq/replay")
        .collect();
    assert_eq!(replays.len(), 1, "the replay is audited as the API's bulk replay");
    assert_eq!(replays[0]["detail"]["via"], "dashboard");
    b.close().await;
    app.stop().await;
}

/// A read key sees the pages without any button that changes something, and a change
/// posted anyway (with a valid CSRF token) is refused with 403; an audit key cannot sign
/// in at all; a form posted without its CSRF token is refused with 403.
async fn read_and_audit_keys_and_forms_without_a_csrf_token_change_nothing(app: &TestApp) {
    let Some(b) = Browser::start("guards", false).await else {
        return;
    };
    // Every second, each run lasting 1.5 s with overlap `skip`: the slot strip fills
    // with runs and skipped slots.
    let mut body = crate::helpers::shell_job("guarded", "sleep 1.5; echo done");
    body["schedule"] = json!("* * * * * *");
    let job = app.create_job(&body).await;
    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
    eventually(20, "a few slots to pass", || async {
        let runs = app.get_json(&format!("/v1/jobs/{job_id}/runs")).await;
        let items = runs["items"].as_array().cloned().unwrap_or_default();
        let done = |state: &str| items.iter().filter(|r| r["state"] == state).count();
        (done("completed") >= 2 && done("skipped") >= 2).then_some(())
    })
    .await;

    let audit_key = app.key(Scope::Audit).await;
    b.sign_in(app, &audit_key).await;
    let refused = b.find("#login-error").await.text().await.expect("message");
    assert!(refused.contains("audit key"), "{refused}");
    assert_eq!(b.path().await, "/login");
    b.shot("audit-key-refused").await;

    let read_key = app.key(Scope::Read).await;
    b.sign_in(app, &read_key).await;
    b.find("h1").await;
    b.goto(&app.url(&format!("/jobs/{job_id}"))).await;
    let page = b.text().await;
    assert!(page.contains("guarded") && page.contains("read key"));
    for label in ["Run now", "Edit", "Pause", "Delete…"] {
        let xpath = format!("//main//*[(self::button or self::a) and normalize-space(.)='{label}']");
        assert!(
            b.client.find(Locator::XPath(&xpath)).await.is_err(),
            "a read key sees no `{label}`"
        );
    }
    b.shot("read-key-job").await;
    // The sign-out form carries this page's CSRF token: post a change with it anyway.
    let token = b.value("header input[name=csrf_token]").await;
    let body = format!("csrf_token={}", urlencode(&token));
    let (status, text) = b
        .fetch(
            &format!("/jobs/{job_id}/pause"),
            json!({ "method": "POST", "headers": { "Content-Type": "application/x-www-form-urlencoded" }, "body": body }),
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("read key"));
    assert_eq!(app.get_json(&format!("/v1/jobs/{job_id}")).await["paused"], false);

    b.click_text("//header", "Sign out").await;
    b.sign_in(app, &app.admin_token).await;
    b.find("h1").await;
    b.goto(&app.url(&format!("/jobs/{job_id}"))).await;
    // Strip the token from the pause form, then submit it.
    b.client
        .execute(
            "document.querySelectorAll('main form input[name=csrf_token]').forEach(e => e.remove());",
            vec![],
        )
        .await
        .expect("script");
    b.click_text("//main", "Pause").await;
    let refused = b.find("p.error").await.text().await.expect("message");
    assert!(refused.contains("CSRF"), "{refused}");
    b.shot("csrf-refused").await;
    assert_eq!(app.get_json(&format!("/v1/jobs/{job_id}")).await["paused"], false);
    let (status, _) = b
        .fetch(
            &format!("/jobs/{job_id}/pause"),
            json!({ "method": "POST", "headers": { "Content-Type": "application/x-www-form-urlencoded" }, "body": "back=%2F" }),
        )
        .await;
    assert_eq!(status, 403, "a POST without the token is a 403");
    b.close().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The API and its neighbours answer as before beside the dashboard; the dashboard's
/// cookies are HttpOnly and SameSite=Strict, and Secure behind an HTTPS proxy.
async fn the_dashboard_mounts_beside_the_api_and_its_cookies_are_guarded(backend: Backend) {
    let spawned = TestApp::spawn(backend).await;
    let app = &spawned;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/openapi.yaml", 200),
        ("/docs", 200),
        ("/v1/jobs", 401),
    ] {
        let r = client.get(app.url(path)).send().await.expect("request");
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    let root = client.get(app.url("/")).send().await.expect("request");
    assert_eq!(root.status().as_u16(), 303, "/ sends to the sign-in");
    let login = client.get(app.url("/login")).send().await.expect("request");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let proxied = client
        .get(app.url("/login"))
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .expect("request");
    let cookie = proxied
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let no_token = client
        .post(app.url("/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("api_key={}", urlencode(&app.admin_token)))
        .send()
        .await
        .expect("request");
    assert_eq!(
        no_token.status().as_u16(),
        403,
        "signing in needs the form's CSRF token too"
    );
    spawned.stop().await;
}

crate::on_both_backends!(
    a_user_creates_a_job_and_a_webhook_and_watches_the_delivery,
    the_dashboard_mounts_beside_the_api_and_its_cookies_are_guarded,
    a_dead_delivery_is_flagged_and_replayed_from_the_dlq,
);

/// The guards do not depend on the database: SQLite only.
#[tokio::test]
async fn read_and_audit_keys_and_forms_without_a_csrf_token_change_nothing_on_sqlite() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    read_and_audit_keys_and_forms_without_a_csrf_token_change_nothing(&app).await;
    app.stop().await;
}
