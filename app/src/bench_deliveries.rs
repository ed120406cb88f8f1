//! The webhook delivery part of `cronflow bench`: how many deliveries a second the
//! delivery worker sends, and how long an event takes from being published to arriving
//! at its endpoint, on fresh SQLite and Postgres databases. Like the rest of the bench
//! it asserts nothing; the targets are printed next to the figures.
//!
//! # What is measured
//! Five scenarios, each on its own fresh database (see `bench::on_fresh_database`):
//! 1. *One endpoint*: 1 subscription, a backlog of `--deliveries` events (default
//!    20,000): deliveries/s (target ≥ 10,000 on SQLite, ≥ 5,000 on Postgres).
//! 2. *Fan-out*: 100 subscriptions, `--deliveries` / 100 events, so about as many
//!    deliveries: deliveries/s (target ≥ 10,000).
//! 3. *One hung endpoint*: 10 subscriptions, one of which never answers until the
//!    scenario ends, at a steady `--delivery-rate` deliveries a second (a tenth of it in
//!    events a second) for `--delivery-secs` seconds: the latency of the 9 healthy
//!    endpoints, compared with
//! 4. *Ten healthy endpoints*: the same with 10 healthy subscriptions. The ratio of the
//!    two p99s is the hung endpoint's cost to the others (target ≤ 1.5).
//! 5. *Steady rate*: 1 subscription at `--delivery-rate` events a second (default 1,000)
//!    for `--delivery-secs` seconds (default 5): latency (target p99 < 50 ms).
//!
//! # How
//! - The endpoints are an in-process HTTP server (poem) on 127.0.0.1, reached over
//!   loopback: subscription `i` posts to `/s{i}`, the hung one to `/hung`. For each
//!   request the sink reads the body, parses only its `timestamp`, records the latency
//!   (receipt time − `timestamp`) and the `webhook-id` header (a repeated id is counted
//!   as a duplicate, not as a delivery), and answers 200 with an empty body. `/hung`
//!   counts the request and waits until the scenario is over, so the worker's webhook
//!   timeout (`CRONFLOW_WEBHOOK_TIMEOUT`, default 10 s) and its retry schedule apply.
//! - Load is published with `Store::publish_events`, which stores events and their
//!   deliveries and queues them as a finished run would. The payloads are those of a
//!   `job.completed` event; `timestamp` is the moment the batch is published (with
//!   sub-millisecond digits), so the latency covers the publishing transaction, the
//!   queue, the attempt and the HTTP exchange. Backlogs are published as fast as the
//!   store takes them, in calls of about 500 deliveries (500 events to one subscription,
//!   5 events to 100); steady loads every 10 ms, as many events as are due by then. A
//!   publish call that fails (on SQLite, `database is locked`) publishes nothing (it is
//!   one transaction); it is counted and retried, and 10 failures in a row fail the
//!   scenario.
//! - Subscriptions are created first, then the worker (`run_worker`, with the process's
//!   settings and private targets allowed) starts, and one warm-up event is published
//!   and awaited (not measured), so the worker's start-up is not measured. The
//!   measurement then starts with the first publish, while the worker runs: that is
//!   end to end, the worker draining the queue while it fills, as in production.
//!   Throughput is the deliveries received from the first publish to the last receipt.
//! - The bench waits for the expected number of deliveries (to the healthy endpoints)
//!   without polling: the sink signals when the last one arrives. It gives up when
//!   nothing arrives for 30 s, or after 300 s, and reports what arrived.
//! - CPU per delivery is this process's (worker, publisher and sink together) over the
//!   measurement, with how busy the whole machine was (Postgres included).

use crate::{
    Settings,
    bench::{
        BackendName, BackgroundWorker, BenchArgs, CpuSample, CpuUse, Stats, on_fresh_database, print_table,
        worker_settings, yes_no,
    },
    startup::connect_and_migrate,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use cronflow_jobs::{
    Store,
    domain::{
        EventFilter, EventType, RunId, WebhookSecret, WebhookSpec, event::format_time, target::UrlPolicy,
        webhook::parse_webhook_url,
    },
    store::NewEvent,
};
use poem::{
    EndpointExt, Request, Server,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// Deliveries a backlog publish call queues (events per call: this / subscriptions).
const DELIVERIES_PER_CALL: usize = 500;
/// Subscriptions of the fan-out scenario.
const FAN_OUT: usize = 100;
/// Subscriptions of the hung and healthy scenarios.
const TEN: usize = 10;
/// How often steady loads publish.
const TICK: Duration = Duration::from_millis(10);
/// The bench gives up on a scenario when no delivery arrives for this long…
const STALL: Duration = Duration::from_secs(30);
/// …or when the scenario has waited this long in all.
const OVERALL: Duration = Duration::from_secs(300);
/// Publish calls that may fail in a row (each is retried) before a scenario fails.
const PUBLISH_ATTEMPTS: usize = 10;
/// How long the warm-up delivery may take.
const WARM_UP: Duration = Duration::from_secs(30);
/// The path of the hung endpoint.
const HUNG_PATH: &str = "/hung";
/// The environment of the events.
const ENVIRONMENT: &str = "production";

/// Target: deliveries/s to one endpoint on SQLite.
const ONE_SQLITE_TARGET: f64 = 10_000.0;
/// Target: deliveries/s to one endpoint on Postgres.
const ONE_POSTGRES_TARGET: f64 = 5_000.0;
/// Target: deliveries/s fanned out.
const FAN_OUT_TARGET: f64 = 10_000.0;
/// Target: p99 latency at the steady rate, in milliseconds.
const STEADY_P99_TARGET_MS: f64 = 50.0;
/// Target: the healthy endpoints' p99 beside a hung one over their p99 without it.
const HUNG_RATIO_TARGET: f64 = 1.5;

// ---------------------------------------------------------------------------------------
// Scenarios and their reports

/// How a scenario publishes its events.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// All at once, as fast as the store takes them.
    Backlog { events: usize },
    /// `per_sec` events a second for `secs` seconds.
    Steady { per_sec: f64, secs: u64 },
}

impl Load {
    fn events(self) -> usize {
        match self {
            Load::Backlog { events } => events,
            Load::Steady { per_sec, secs } => (per_sec * secs as f64).round() as usize,
        }
    }
}

/// One scenario: its subscriptions (the last one hung if `hung`) and its load.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    subscriptions: usize,
    hung: bool,
    load: Load,
}

impl Scenario {
    fn healthy(&self) -> usize {
        self.subscriptions - usize::from(self.hung)
    }
}

/// What one scenario saw.
#[derive(Debug, Default)]
pub(crate) struct DeliveryReport {
    events: usize,
    /// Deliveries expected at the healthy endpoints.
    expected: usize,
    /// Distinct deliveries received by the healthy endpoints.
    received: usize,
    /// Requests to the healthy endpoints repeating a `webhook-id` already received.
    duplicates: usize,
    /// Received bodies without a readable `timestamp`.
    unreadable: usize,
    /// Requests to the hung endpoint (retries included).
    hung_requests: usize,
    /// Publish calls that failed and were retried.
    publish_errors: usize,
    /// Whether every expected delivery arrived before the bench gave up.
    complete: bool,
    /// From the first publish to the last publish call's return, in seconds.
    publish_secs: f64,
    /// From the first publish to the last receipt, in seconds.
    busy_secs: f64,
    /// Event `timestamp` to receipt, in microseconds.
    latency_us: Stats,
    /// CPU used from the first publish until the last delivery arrived.
    cpu: Option<CpuUse>,
}

impl DeliveryReport {
    fn throughput(&self) -> f64 {
        self.received as f64 / self.busy_secs.max(1e-3)
    }

    fn publish_rate(&self) -> f64 {
        self.events as f64 / self.publish_secs.max(1e-6)
    }

    fn p99_ms(&self) -> Option<f64> {
        (self.latency_us.count > 0).then(|| self.latency_us.p99 as f64 / 1000.0)
    }

    /// "received / expected", flagged when the bench gave up.
    fn arrivals(&self) -> String {
        let gave_up = if self.complete { "" } else { " (gave up)" };
        format!("{} / {}{gave_up}", self.received, self.expected)
    }

    /// "p50 / p99 / max" in milliseconds, one decimal.
    fn latency(&self) -> String {
        let s = &self.latency_us;
        if s.count == 0 {
            return "-".into();
        }
        let ms = |us: i64| us as f64 / 1000.0;
        format!("{:.1} / {:.1} / {:.1}", ms(s.p50), ms(s.p99), ms(s.max))
    }

    /// "CPU ms per delivery / machine busy %".
    fn cpu_per_delivery(&self) -> String {
        self.cpu.map_or("-".into(), |c| {
            format!(
                "{:.3} / {:.0}%",
                c.process_ms / self.received.max(1) as f64,
                c.machine_busy * 100.0
            )
        })
    }
}

/// The reports of the five scenarios on one backend.
#[derive(Debug, Default)]
pub(crate) struct DeliveryReports {
    one: DeliveryReport,
    fan_out: DeliveryReport,
    hung: DeliveryReport,
    healthy: DeliveryReport,
    steady: DeliveryReport,
}

impl DeliveryReports {
    /// The healthy endpoints' p99 beside a hung one over their p99 without it.
    fn hung_ratio(&self) -> Option<f64> {
        let (hung, healthy) = (self.hung.p99_ms()?, self.healthy.p99_ms()?);
        (healthy > 0.0).then(|| hung / healthy)
    }
}

fn scenarios(args: &BenchArgs) -> [Scenario; 5] {
    let rate = f64::from(args.delivery_rate.max(1));
    let secs = args.delivery_secs.max(1);
    [
        Scenario {
            name: "1 subscription, backlog",
            subscriptions: 1,
            hung: false,
            load: Load::Backlog {
                events: args.deliveries,
            },
        },
        Scenario {
            name: "100 subscriptions, backlog",
            subscriptions: FAN_OUT,
            hung: false,
            load: Load::Backlog {
                events: (args.deliveries / FAN_OUT).max(1),
            },
        },
        Scenario {
            name: "10 subscriptions, 1 hung, steady",
            subscriptions: TEN,
            hung: true,
            load: Load::Steady {
                per_sec: rate / TEN as f64,
                secs,
            },
        },
        Scenario {
            name: "10 subscriptions, steady",
            subscriptions: TEN,
            hung: false,
            load: Load::Steady {
                per_sec: rate / TEN as f64,
                secs,
            },
        },
        Scenario {
            name: "1 subscription, steady",
            subscriptions: 1,
            hung: false,
            load: Load::Steady { per_sec: rate, secs },
        },
    ]
}

/// Runs the five scenarios on `backend`, each on a fresh database, printing each one's
/// figures as it ends.
pub(crate) async fn measure_deliveries(
    backend: BackendName,
    settings: &Settings,
    args: &BenchArgs,
) -> anyhow::Result<DeliveryReports> {
    let mut reports = Vec::new();
    for scenario in scenarios(args) {
        let r = on_fresh_database(backend, |url| async move {
            run_scenario(&url, settings, &scenario, backend).await
        })
        .await
        .with_context(|| {
            format!(
                "{}: the delivery bench ({}) failed",
                backend.as_str(),
                scenario.name
            )
        })?;
        print_scenario(backend, &scenario, &r);
        reports.push(r);
    }
    let mut it = reports.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(DeliveryReports {
        one: next(),
        fan_out: next(),
        hung: next(),
        healthy: next(),
        steady: next(),
    })
}

async fn run_scenario(
    url: &str,
    settings: &Settings,
    scenario: &Scenario,
    backend: BackendName,
) -> anyhow::Result<DeliveryReport> {
    let name = backend.as_str();
    let store = connect_and_migrate(url).await?;
    let sink = Sink::start().await?;
    let healthy = scenario.healthy();
    for i in 0..healthy {
        subscribe(&store, &format!("{}/s{i}", sink.base)).await?;
    }
    if scenario.hung {
        subscribe(&store, &format!("{}{HUNG_PATH}", sink.base)).await?;
    }
    let mut worker_settings = worker_settings(settings, url, settings.worker_concurrency);
    worker_settings.allow_private_targets = true;
    let worker = BackgroundWorker::start(&store, worker_settings);
    let result = measure(&store, &sink, scenario, name).await;
    // Releasing the hung endpoint first lets the worker stop without waiting on it.
    sink.stop().await;
    worker.stop().await?;
    store.close().await;
    result
}

/// The warm-up, then the measurement proper.
async fn measure(
    store: &Store,
    sink: &Sink,
    scenario: &Scenario,
    name: &str,
) -> anyhow::Result<DeliveryReport> {
    let healthy = scenario.healthy();
    sink.state.arm(healthy);
    let now = Utc::now();
    store.publish_events(&[bench_event(now)], now).await?;
    if !sink.state.wait_all(WARM_UP, WARM_UP).await {
        anyhow::bail!(
            "the warm-up event reached {} of {healthy} endpoints in {} s",
            sink.state.received(),
            WARM_UP.as_secs()
        );
    }

    let events = scenario.load.events();
    let expected = events * healthy;
    eprintln!(
        "{name}: deliveries, {}: {events} events, {expected} deliveries to healthy endpoints…",
        scenario.name
    );
    sink.state.arm(expected);
    let (start, cpu_start) = (Instant::now(), CpuSample::take());
    let publish_errors = publish(store, scenario.load, scenario.subscriptions).await?;
    let publish_secs = start.elapsed().as_secs_f64();
    let complete = sink.state.wait_all(STALL, OVERALL).await;
    let cpu = CpuUse::between(cpu_start, CpuSample::take());
    let receipts = sink.state.take();
    if !complete {
        eprintln!(
            "{name}: gave up waiting with {} of {expected} deliveries received",
            receipts.received
        );
    }
    Ok(DeliveryReport {
        events,
        expected,
        received: receipts.received,
        duplicates: receipts.duplicates,
        unreadable: receipts.unreadable,
        hung_requests: sink.state.hung_requests.load(Ordering::Relaxed),
        publish_errors,
        complete,
        publish_secs,
        busy_secs: receipts.last.map_or(0.0, |t| (t - start).as_secs_f64()),
        latency_us: Stats::of(receipts.latencies_us),
        cpu,
    })
}

/// Subscribes `url` to `job.completed`, validated as the API would with private targets
/// allowed.
async fn subscribe(store: &Store, url: &str) -> anyhow::Result<()> {
    let spec = WebhookSpec {
        url: parse_webhook_url(
            url,
            UrlPolicy {
                allow_plain_http: true,
            },
        )?,
        filter: EventFilter::parse(&[EventType::JobCompleted.as_str().to_owned()], None, None)?,
        headers: BTreeMap::new(),
        description: "cronflow bench".into(),
        enabled: true,
    };
    store
        .create_webhook(spec, WebhookSecret::generate(), Utc::now())
        .await?;
    Ok(())
}

/// A `job.completed` event stamped `now`, shaped like one of a finished run.
fn bench_event(now: DateTime<Utc>) -> NewEvent {
    let payload = json!({
        "event": EventType::JobCompleted.as_str(),
        "timestamp": format_time(now),
        "job_id": null,
        "environment": ENVIRONMENT,
        "data": {
            "run_id": RunId::generate().as_str(),
            "attempt": 1,
            "duration_ms": 3,
            "next_run_at": null,
            "scheduled_for": null,
            "lateness_ms": null,
            "output": "ok\n",
        },
    });
    NewEvent {
        kind: EventType::JobCompleted,
        job_id: None,
        environment: ENVIRONMENT.into(),
        payload,
    }
}

/// Publishes `count` events stamped now, in one call.
async fn publish_now(store: &Store, count: usize) -> Result<(), cronflow_jobs::StoreError> {
    let now = Utc::now();
    let events: Vec<NewEvent> = (0..count).map(|_| bench_event(now)).collect();
    store.publish_events(&events, now).await?;
    Ok(())
}

/// Counts failed publish calls, which are retried (with a fresh timestamp), and gives
/// up after [`PUBLISH_ATTEMPTS`] failures in a row.
#[derive(Debug, Default)]
struct PublishErrors {
    total: usize,
    in_a_row: usize,
}

impl PublishErrors {
    fn note(&mut self, result: Result<(), cronflow_jobs::StoreError>) -> anyhow::Result<bool> {
        match result {
            Ok(()) => {
                self.in_a_row = 0;
                Ok(true)
            }
            Err(e) => {
                self.total += 1;
                self.in_a_row += 1;
                if self.total == 1 {
                    eprintln!("bench: publishing failed ({e}); retrying");
                }
                if self.in_a_row >= PUBLISH_ATTEMPTS {
                    return Err(anyhow::Error::new(e)
                        .context(format!("{PUBLISH_ATTEMPTS} publish calls in a row failed")));
                }
                Ok(false)
            }
        }
    }
}

/// Publishes the load; returns how many publish calls failed (and were retried).
async fn publish(store: &Store, load: Load, subscriptions: usize) -> anyhow::Result<usize> {
    let mut errors = PublishErrors::default();
    match load {
        Load::Backlog { events } => {
            let per_call = (DELIVERIES_PER_CALL / subscriptions.max(1)).max(1);
            let mut left = events;
            while left > 0 {
                let n = left.min(per_call);
                if errors.note(publish_now(store, n).await)? {
                    left -= n;
                }
            }
        }
        Load::Steady { per_sec, .. } => {
            let total = load.events();
            let start = Instant::now();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut published = 0;
            while published < total {
                tick.tick().await;
                // As many as are due by now: a slow or failed call makes the next batch
                // larger rather than the rate lower.
                let due = ((start.elapsed().as_secs_f64() * per_sec) as usize).min(total);
                if due > published && errors.note(publish_now(store, due - published).await)? {
                    published = due;
                }
            }
        }
    }
    Ok(errors.total)
}

// ---------------------------------------------------------------------------------------
// The sink

/// The endpoints: an HTTP server on 127.0.0.1 that records what it receives.
struct Sink {
    /// `http://127.0.0.1:PORT`.
    base: String,
    state: Arc<SinkState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Default)]
struct SinkState {
    receipts: Mutex<Receipts>,
    /// Signalled when the expected number of deliveries has arrived.
    done: tokio::sync::Notify,
    hung_requests: AtomicUsize,
    /// Cancelled when the hung endpoint may answer.
    release: CancellationToken,
}

/// What the healthy endpoints received since the last [`SinkState::arm`].
#[derive(Debug, Default)]
struct Receipts {
    expected: usize,
    received: usize,
    latencies_us: Vec<i64>,
    last: Option<Instant>,
    unreadable: usize,
    /// Kept across `arm`, so a late repeat of a warm-up delivery is still a duplicate.
    duplicates: usize,
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
    fn arm(&self, expected: usize) {
        let mut r = self.lock();
        r.expected = expected;
        r.received = 0;
        r.latencies_us = Vec::with_capacity(expected);
        r.last = None;
        r.unreadable = 0;
    }

    fn received(&self) -> usize {
        self.lock().received
    }

    fn is_complete(&self) -> bool {
        let r = self.lock();
        r.received >= r.expected
    }

    /// What was received since [`SinkState::arm`].
    fn take(&self) -> Receipts {
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
    async fn wait_all(&self, stall: Duration, overall: Duration) -> bool {
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
    async fn start() -> anyhow::Result<Self> {
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
    async fn stop(self) {
        self.state.release.cancel();
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("bench: the webhook sink failed: {e}"),
            Err(e) => eprintln!("bench: the webhook sink panicked: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Printing

fn print_scenario(backend: BackendName, scenario: &Scenario, r: &DeliveryReport) {
    let hung = if scenario.hung {
        format!("; {} requests to the hung endpoint", r.hung_requests)
    } else {
        String::new()
    };
    println!(
        "{}: deliveries, {}: {} events published in {:.2} s ({:.0} events/s, {} failed calls retried); {} received \
         ({} duplicates, {} unreadable) in {:.2} s: {:.0} deliveries/s; event→receipt \
         p50/p99/max {} ms; CPU ms/delivery / machine busy {}{hung}",
        backend.as_str(),
        scenario.name,
        r.events,
        r.publish_secs,
        r.publish_rate(),
        r.publish_errors,
        r.arrivals(),
        r.duplicates,
        r.unreadable,
        r.busy_secs,
        r.throughput(),
        r.latency(),
        r.cpu_per_delivery(),
    );
}

/// The one-endpoint throughput target of `backend`.
fn one_target(backend: BackendName) -> f64 {
    match backend {
        BackendName::Sqlite => ONE_SQLITE_TARGET,
        BackendName::Postgres => ONE_POSTGRES_TARGET,
    }
}

/// The rows of the delivery table.
struct Rows<'a> {
    reports: &'a [(BackendName, DeliveryReports)],
    rows: Vec<(String, Vec<String>, String)>,
}

impl Rows<'_> {
    fn section(&mut self, title: String) {
        self.rows.push((title, Vec::new(), String::new()));
    }

    fn row(&mut self, label: &str, target: &str, f: impl Fn(BackendName, &DeliveryReports) -> String) {
        let values = self.reports.iter().map(|(b, r)| f(*b, r)).collect();
        self.rows.push((format!("  {label}"), values, target.to_owned()));
    }

    /// The rows every scenario has.
    fn common(&mut self, pick: fn(&DeliveryReports) -> &DeliveryReport, latency_target: &str) {
        self.row("failed publish calls (retried)", "0", |_, r| {
            pick(r).publish_errors.to_string()
        });
        self.row("received / expected", "", |_, r| pick(r).arrivals());
        self.row("duplicates (repeated webhook-id)", "0", |_, r| {
            pick(r).duplicates.to_string()
        });
        self.row("event→receipt p50 / p99 / max (ms)", latency_target, |_, r| {
            pick(r).latency()
        });
        self.row("CPU ms/delivery / machine busy", "", |_, r| {
            pick(r).cpu_per_delivery()
        });
    }

    /// The rows of a backlog scenario.
    fn backlog(
        &mut self,
        pick: fn(&DeliveryReports) -> &DeliveryReport,
        target: &str,
        goal: fn(BackendName) -> f64,
    ) {
        self.row("publish (events/s)", "", |_, r| {
            format!("{:.0}", pick(r).publish_rate())
        });
        self.row("first publish to last receipt (s)", "", |_, r| {
            format!("{:.2}", pick(r).busy_secs)
        });
        self.row("throughput (deliveries/s)", target, |_, r| {
            format!("{:.0}", pick(r).throughput())
        });
        self.row("throughput within target", "", |b, r| {
            yes_no(pick(r).complete && pick(r).throughput() >= goal(b))
        });
        self.common(pick, "");
    }
}

/// Prints the delivery table: a row per figure, a column per backend, and the target.
pub(crate) fn print_summary(
    args: &BenchArgs,
    settings: &Settings,
    reports: &[(BackendName, DeliveryReports)],
) {
    let mut t = Rows {
        reports,
        rows: Vec::new(),
    };
    t.section(format!(
        "WEBHOOK DELIVERIES (delivery concurrency {}, {} per endpoint, webhook timeout {} s)",
        settings.delivery_concurrency,
        settings.delivery_per_endpoint,
        settings.webhook_timeout.as_secs_f64()
    ));
    let [one, fan_out, hung, _, steady] = scenarios(args);
    let steady_events = |s: &Scenario| match s.load {
        Load::Steady { per_sec, secs } => format!("{per_sec:.0} events/s for {secs} s"),
        Load::Backlog { events } => format!("{events} events"),
    };

    t.section(format!(
        "DELIVERIES TO 1 SUBSCRIPTION (backlog of {} events)",
        one.load.events()
    ));
    t.backlog(|r| &r.one, ">= 10000 sqlite, >= 5000 postgres", one_target);

    t.section(format!(
        "DELIVERIES FANNED OUT TO {FAN_OUT} SUBSCRIPTIONS (backlog of {} events)",
        fan_out.load.events()
    ));
    t.backlog(|r| &r.fan_out, ">= 10000", |_| FAN_OUT_TARGET);

    t.section(format!(
        "{TEN} SUBSCRIPTIONS, 1 HUNG ({}, to each)",
        steady_events(&hung)
    ));
    t.common(|r| &r.hung, "");
    t.row("requests to the hung endpoint", "", |_, r| {
        r.hung.hung_requests.to_string()
    });
    t.section(format!("{TEN} HEALTHY SUBSCRIPTIONS (the same load)"));
    t.common(|r| &r.healthy, "");
    t.row("p99 beside a hung endpoint / without", "<= 1.5", |_, r| {
        r.hung_ratio().map_or("-".into(), |x| format!("{x:.2}"))
    });
    t.row("ratio within target", "", |_, r| {
        yes_no(r.hung.complete && r.hung_ratio().is_some_and(|x| x <= HUNG_RATIO_TARGET))
    });

    t.section(format!(
        "STEADY RATE, 1 SUBSCRIPTION ({})",
        steady_events(&steady)
    ));
    t.row("publish (events/s)", "", |_, r| {
        format!("{:.0}", r.steady.publish_rate())
    });
    t.common(|r| &r.steady, "p99 < 50");
    t.row("p99 within target", "", |_, r| {
        yes_no(r.steady.complete && r.steady.p99_ms().is_some_and(|p| p < STEADY_P99_TARGET_MS))
    });

    let columns: Vec<&str> = reports.iter().map(|(b, _)| b.as_str()).collect();
    print_table(&columns, &t.rows);
}

#[cfg(test)]
mod tests {
    use super::{Load, SinkState};
    use std::time::{Duration, Instant};

    #[test]
    fn steady_loads_publish_rate_times_seconds() {
        assert_eq!(
            Load::Steady {
                per_sec: 100.0,
                secs: 5
            }
            .events(),
            500
        );
        assert_eq!(Load::Backlog { events: 7 }.events(), 7);
    }

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
