//! Webhook deliveries: how many deliveries a second the delivery worker sends, and how
//! long an event takes from being published to arriving at its endpoint. The targets
//! are printed next to the figures.
//!
//! # What is measured
//! Five scenarios, each on its own fresh database:
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
//! - The endpoints are the [`crate::sink`]; the load is published by [`crate::publish`].
//! - Subscriptions are created first, then the worker (`run_worker`, with the process's
//!   settings and private targets allowed) starts, and one warm-up event is published
//!   and awaited (not measured), so the worker's start-up is not measured. The
//!   measurement then starts with the first publish, while the worker runs: that is
//!   end to end, the worker draining the queue while it fills, as in production.
//!   Throughput is the deliveries received from the first publish to the last receipt.
//! - The bench waits for the expected number of deliveries (to the healthy endpoints).
//!   It gives up when nothing arrives for 30 s, or after 300 s, and reports what
//!   arrived.
//! - CPU per delivery is this process's (worker, publisher and sink together) over the
//!   measurement, with how busy the whole machine was (Postgres included).

use crate::{
    args::BenchArgs,
    cpu::{CpuSample, CpuUse},
    database::{BackendName, on_fresh_database},
    publish::{Load, bench_event, publish},
    sink::{HUNG_PATH, Sink},
    stats::Stats,
    table::{Table, yes_no},
    worker::{BackgroundWorker, worker_settings},
};
use anyhow::Context;
use chrono::Utc;
use cronflow::{Settings, startup::connect_and_migrate};
use cronflow_jobs::{
    Store,
    domain::{
        EventFilter, EventType, WebhookSecret, WebhookSpec, target::UrlPolicy, webhook::parse_webhook_url,
    },
    signals::Signals,
    store::ChangedBy,
};
use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

/// Subscriptions of the fan-out scenario.
const FAN_OUT: usize = 100;
/// Subscriptions of the hung and healthy scenarios.
const TEN: usize = 10;
/// The bench gives up on a scenario when no delivery arrives for this long…
const STALL: Duration = Duration::from_secs(30);
/// …or when the scenario has waited this long in all.
const OVERALL: Duration = Duration::from_secs(300);
/// How long the warm-up delivery may take.
const WARM_UP: Duration = Duration::from_secs(30);

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
pub(crate) async fn measure(
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
    let (store, signals) =
        Signals::listen_to(connect_and_migrate(url, Some(&crate::database::fresh_secret_key())).await?);
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
    let worker = BackgroundWorker::start(&store, &signals, worker_settings);
    let result = measure_scenario(&store, &sink, scenario, name).await;
    // Releasing the hung endpoint first lets the worker stop without waiting on it.
    sink.stop().await;
    worker.stop().await?;
    store.close().await;
    result
}

/// The warm-up, then the measurement proper.
async fn measure_scenario(
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
                allow_private_targets: true,
            },
        )?,
        filter: EventFilter::parse(&[EventType::JobCompleted.as_str().to_owned()], None, None)?,
        headers: BTreeMap::new(),
        description: "cronflow-bench".into(),
        enabled: true,
    };
    store
        .create_webhook(
            spec,
            WebhookSecret::generate(),
            &ChangedBy::system("bench"),
            Utc::now(),
        )
        .await?;
    Ok(())
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

/// The figures every scenario has.
fn common_rows(
    t: &mut Table<'_, Column>,
    pick: fn(&DeliveryReports) -> &DeliveryReport,
    latency_target: &str,
) {
    t.row("failed publish calls (retried)", "0", |(_, r)| {
        pick(r).publish_errors.to_string()
    });
    t.row("received / expected", "", |(_, r)| pick(r).arrivals());
    t.row("duplicates (repeated webhook-id)", "0", |(_, r)| {
        pick(r).duplicates.to_string()
    });
    t.row(
        "event→receipt p50 / p99 / max (ms)",
        latency_target,
        |(_, r)| pick(r).latency(),
    );
    t.row("CPU ms/delivery / machine busy", "", |(_, r)| {
        pick(r).cpu_per_delivery()
    });
}

/// The figures of a backlog scenario.
fn backlog_rows(
    t: &mut Table<'_, Column>,
    pick: fn(&DeliveryReports) -> &DeliveryReport,
    target: &str,
    goal: fn(BackendName) -> f64,
) {
    t.row("publish (events/s)", "", |(_, r)| {
        format!("{:.0}", pick(r).publish_rate())
    });
    t.row("first publish to last receipt (s)", "", |(_, r)| {
        format!("{:.2}", pick(r).busy_secs)
    });
    t.row("throughput (deliveries/s)", target, |(_, r)| {
        format!("{:.0}", pick(r).throughput())
    });
    t.row("throughput within target", "", |(b, r)| {
        yes_no(pick(r).complete && pick(r).throughput() >= goal(*b))
    });
    common_rows(t, pick, "");
}

/// One column of the delivery table: a backend and its scenarios' reports.
type Column = (BackendName, DeliveryReports);

/// Prints the delivery table: a row per figure, a column per backend, and the target.
pub(crate) fn print_summary(args: &BenchArgs, settings: &Settings, reports: &[Column]) {
    let mut t = Table::new(reports, |r| r.0);
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
    backlog_rows(
        &mut t,
        |r| &r.one,
        ">= 10000 sqlite, >= 5000 postgres",
        one_target,
    );

    t.section(format!(
        "DELIVERIES FANNED OUT TO {FAN_OUT} SUBSCRIPTIONS (backlog of {} events)",
        fan_out.load.events()
    ));
    backlog_rows(&mut t, |r| &r.fan_out, ">= 10000", |_| FAN_OUT_TARGET);

    t.section(format!(
        "{TEN} SUBSCRIPTIONS, 1 HUNG ({}, to each)",
        steady_events(&hung)
    ));
    common_rows(&mut t, |r| &r.hung, "");
    t.row("requests to the hung endpoint", "", |(_, r)| {
        r.hung.hung_requests.to_string()
    });
    t.section(format!("{TEN} HEALTHY SUBSCRIPTIONS (the same load)"));
    common_rows(&mut t, |r| &r.healthy, "");
    t.row("p99 beside a hung endpoint / without", "<= 1.5", |(_, r)| {
        r.hung_ratio().map_or("-".into(), |x| format!("{x:.2}"))
    });
    t.row("ratio within target", "", |(_, r)| {
        yes_no(r.hung.complete && r.hung_ratio().is_some_and(|x| x <= HUNG_RATIO_TARGET))
    });

    t.section(format!(
        "STEADY RATE, 1 SUBSCRIPTION ({})",
        steady_events(&steady)
    ));
    t.row("publish (events/s)", "", |(_, r)| {
        format!("{:.0}", r.steady.publish_rate())
    });
    common_rows(&mut t, |r| &r.steady, "p99 < 50");
    t.row("p99 within target", "", |(_, r)| {
        yes_no(r.steady.complete && r.steady.p99_ms().is_some_and(|p| p < STEADY_P99_TARGET_MS))
    });
    t.print();
}
