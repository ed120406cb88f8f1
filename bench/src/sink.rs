//! The endpoints of the delivery scenarios: an in-process HTTP server (poem) on
//! 127.0.0.1, reached over loopback. Subscription `i` posts to `/s{i}`, the hung one to
//! `/hung`. For each request the sink reads the body, parses only its `timestamp`,
//! records the latency (receipt time − `timestamp`) and the `webhook-id` header (a
//! repeated id is counted as a duplicate, not as a delivery), and answers 200 with an
//! empty body. `/hung` counts the request and waits until the scenario is over, so the
//! worker's webhook timeout and its retry schedule apply. The bench waits for the
//! expected number of deliveries without polling: the sink signals when the last one
//! arrives.

use anyhow::Context;
use chrono::{DateTime, Utc};
use poem::{
    EndpointExt, Request, Server,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// The path of the hung endpoint.
pub(crate) const HUNG_PATH: &str = "/hung";

/// The endpoints: an HTTP server on 127.0.0.1 that records what it receives.
pub(crate) struct Sink {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// What it received.
    pub(crate) state: Arc<SinkState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Default)]
pub(crate) struct SinkState {
    receipts: Mutex<Receipts>,
    /// Signalled when the expected number of deliveries has arrived.
    done: tokio::sync::Notify,
    /// Requests to the hung endpoint (retries included).
    pub(crate) hung_requests: AtomicUsize,
    /// Cancelled when the hung endpoint may answer.
    release: CancellationToken,
}

/// What the healthy endpoints received since the last [`SinkState::arm`].
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    expected: usize,
    pub(crate) received: usize,
    pub(crate) latencies_us: Vec<i64>,
    pub(crate) last: Option<Instant>,
    pub(crate) unreadable: usize,
    /// Kept across `arm`, so a late repeat of a warm-up delivery is still a duplicate.
    pub(crate) duplicates: usize,
    seen: HashSet<String>,
}

/// The only field of a payload the sink reads.
#[derive(serde::Deserialize)]
struct Stamp {
    timestamp: DateTime<Utc>,
}

impl SinkState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Receipts> {
        self.receipts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts counting afresh, towards `expected` deliveries.
    pub(crate) fn arm(&self, expected: usize) {
        let mut r = self.lock();
        r.expected = expected;
        r.received = 0;
        r.latencies_us = Vec::with_capacity(expected);
        r.last = None;
        r.unreadable = 0;
    }

    pub(crate) fn received(&self) -> usize {
        self.lock().received
    }

    fn is_complete(&self) -> bool {
        let r = self.lock();
        r.received >= r.expected
    }

    /// What was received since [`SinkState::arm`].
    pub(crate) fn take(&self) -> Receipts {
        let mut r = self.lock();
        Receipts {
            expected: r.expected,
            received: r.received,
            latencies_us: std::mem::take(&mut r.latencies_us),
            last: r.last,
            unreadable: r.unreadable,
            duplicates: r.duplicates,
            seen: HashSet::new(),
        }
    }

    fn record(&self, id: Option<&str>, latency_us: Option<i64>, at: Instant) {
        let mut r = self.lock();
        if let Some(id) = id
            && !r.seen.insert(id.to_owned())
        {
            r.duplicates += 1;
            return;
        }
        r.received += 1;
        match latency_us {
            Some(l) => r.latencies_us.push(l),
            None => r.unreadable += 1,
        }
        r.last = Some(at);
        if r.received == r.expected {
            self.done.notify_one();
        }
    }

    /// Waits until every expected delivery has arrived: `true`; `false` when none
    /// arrived for `stall`, or after `overall`.
    pub(crate) async fn wait_all(&self, stall: Duration, overall: Duration) -> bool {
        let deadline = Instant::now() + overall;
        let mut progress = (self.received(), Instant::now());
        loop {
            let notified = self.done.notified();
            if self.is_complete() {
                return true;
            }
            let until = (progress.1 + stall).min(deadline);
            // A wake-up is a hint only (one left over from the warm-up may come early):
            // the count decides.
            let _ = tokio::time::timeout_at(until.into(), notified).await;
            if self.is_complete() {
                return true;
            }
            let now = Instant::now();
            let n = self.received();
            if n > progress.0 {
                progress = (n, now);
            } else if now >= progress.1 + stall {
                return false;
            }
            if now >= deadline {
                return false;
            }
        }
    }
}

/// Every request: `/hung` waits for the release; any other path is a healthy endpoint.
#[poem::handler]
async fn receive(req: &Request, body: poem::Body, Data(sink): Data<&Arc<SinkState>>) -> StatusCode {
    if req.uri().path() == HUNG_PATH {
        sink.hung_requests.fetch_add(1, Ordering::Relaxed);
        sink.release.cancelled().await;
        return StatusCode::OK;
    }
    let Ok(bytes) = body.into_bytes().await else {
        return StatusCode::BAD_REQUEST;
    };
    let (at, now) = (Instant::now(), Utc::now());
    let latency_us = serde_json::from_slice::<Stamp>(&bytes)
        .ok()
        .and_then(|s| (now - s.timestamp).num_microseconds());
    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok());
    sink.record(id, latency_us, at);
    StatusCode::OK
}

impl Sink {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .context("the webhook sink cannot listen")?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the webhook sink has no socket address")?;
        let state = Arc::new(SinkState::default());
        let stop = CancellationToken::new();
        let app = receive.data(state.clone());
        let task = tokio::spawn(Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            stop.clone().cancelled_owned(),
            Some(Duration::from_secs(1)),
        ));
        Ok(Sink {
            base: format!("http://{address}"),
            state,
            stop,
            task,
        })
    }

    /// Releases the hung endpoint and stops the server.
    pub(crate) async fn stop(self) {
        self.state.release.cancel();
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("bench: the webhook sink failed: {e}"),
            Err(e) => eprintln!("bench: the webhook sink panicked: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SinkState;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn the_sink_counts_each_delivery_once_and_signals_the_last() {
        let sink = SinkState::default();
        sink.arm(2);
        sink.record(Some("msg_a"), Some(1500), Instant::now());
        sink.record(Some("msg_a"), Some(1600), Instant::now());
        assert!(
            !sink
                .wait_all(Duration::from_millis(20), Duration::from_secs(1))
                .await
        );
        sink.record(Some("msg_b"), None, Instant::now());
        assert!(
            sink.wait_all(Duration::from_millis(20), Duration::from_secs(1))
                .await
        );
        let r = sink.take();
        assert_eq!((r.received, r.duplicates, r.unreadable), (2, 1, 1));
        assert_eq!(r.latencies_us, vec![1500]);
        // A repeat after re-arming is still a duplicate.
        sink.arm(1);
        sink.record(Some("msg_b"), Some(1), Instant::now());
        assert_eq!(sink.take().received, 0);
    }
}
