//! `TestReceiver`: a real HTTP server on 127.0.0.1 that records every request (raw body
//! and headers) and answers with a programmed sequence of statuses, or as a function of
//! the request decides.
//!
//! Every webhook delivery it receives (a request with `X-CronFlow-Event`) is validated
//! against the JSON Schema CronFlow serves for that event type; reading the requests
//! of a receiver that got an invalid one fails the test, so every end-to-end test that
//! receives deliveries checks that payloads and schemas agree.

#![allow(dead_code, unreachable_pub)]

use poem::{
    Endpoint, Request, Response, Server,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: chrono::DateTime<chrono::Utc>,
    /// How it was answered.
    pub answer: Answer,
    /// For a delivery: why its body does not fit its event type's schema, if it does not.
    pub schema_problem: Option<String>,
}

/// Why a delivery's body does not fit the schema of the event its header names.
fn schema_problem(headers: &BTreeMap<String, String>, body: &[u8]) -> Option<String> {
    use cronflow_jobs::domain::{EventType, event::event_kind};
    let event = headers.get("x-cronflow-event")?;
    let Some(kind) = EventType::parse(event).and_then(event_kind) else {
        return Some(format!("no schema for the event type `{event}`"));
    };
    let payload: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("the body is not JSON: {e}")),
    };
    if payload["event"] != event.as_str() {
        return Some(format!(
            "the body's event is {}, the header's {event}",
            payload["event"]
        ));
    }
    let validator = match jsonschema::validator_for(&kind.json_schema()) {
        Ok(v) => v,
        Err(e) => return Some(format!("the schema of {event} does not compile: {e}")),
    };
    let errors: Vec<String> = validator
        .iter_errors(&payload)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| format!("{event} payload {payload} does not fit its schema: {errors:?}"))
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// At once, with this status.
    Status(u16),
    /// Not until [`TestReceiver::release`], then 200 (a hung endpoint).
    HangUntilReleased,
    /// 200 after this long (past the sender's timeout, a hung attempt that ends).
    HangFor(std::time::Duration),
}

/// Chooses the answer to the `n`-th request (from 1), given its path.
pub type AnswerPlan = dyn Fn(&str, usize) -> Answer + Send + Sync;

#[derive(Clone)]
struct State {
    seen: Arc<Mutex<Vec<Seen>>>,
    plan: Arc<AnswerPlan>,
    release: Arc<tokio::sync::Notify>,
}

struct Handler(State);

impl Endpoint for Handler {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let body = req.take_body().into_vec().await.unwrap_or_default();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let schema_problem = schema_problem(&headers, &body);
        let path = req.uri().path().to_owned();
        let answer = {
            let mut seen = self.0.seen.lock().unwrap();
            let answer = (self.0.plan)(&path, seen.len() + 1);
            seen.push(Seen {
                method: req.method().to_string(),
                path,
                headers,
                body,
                at: chrono::Utc::now(),
                answer,
                schema_problem,
            });
            answer
        };
        let status = match answer {
            Answer::Status(status) => status,
            Answer::HangUntilReleased => {
                self.0.release.notified().await;
                return Ok(Response::builder().status(StatusCode::OK).body("released"));
            }
            Answer::HangFor(d) => {
                tokio::time::sleep(d).await;
                200
            }
        };
        let mut resp = Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
        if (300..400).contains(&status) {
            resp = resp.header("Location", "http://127.0.0.1:9/elsewhere");
        }
        if status == 429 {
            resp = resp.header("Retry-After", "3");
        }
        Ok(resp.body(format!("status {status}")))
    }
}

/// A receiver; stops when dropped.
pub struct TestReceiver {
    pub address: String,
    state: State,
    task: tokio::task::JoinHandle<()>,
}

impl TestReceiver {
    /// Starts a receiver answering `statuses` in turn (the last repeats); 0 means hang
    /// until [`TestReceiver::release`].
    pub async fn start(statuses: &[u16]) -> TestReceiver {
        let statuses = statuses.to_vec();
        Self::start_with(Arc::new(move |_, n| {
            match statuses.get(n - 1).or(statuses.last()).copied().unwrap_or(200) {
                0 => Answer::HangUntilReleased,
                status => Answer::Status(status),
            }
        }))
        .await
    }

    /// Starts a receiver whose `plan` chooses each answer.
    pub async fn start_with(plan: Arc<AnswerPlan>) -> TestReceiver {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind receiver");
        let addr = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("socket address");
        let state = State {
            seen: Arc::default(),
            plan,
            release: Arc::default(),
        };
        let handler = Handler(state.clone());
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(handler).await;
        });
        TestReceiver {
            address: format!("http://{addr}"),
            state,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Lets the requests hung right now (status 0) answer 200.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    /// The requests received so far; fails the test if a delivery among them does not
    /// fit its event type's schema.
    pub fn requests(&self) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap().clone();
        if let Some(problem) = seen.iter().find_map(|s| s.schema_problem.as_ref()) {
            panic!("{problem}");
        }
        seen
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
