//! The data scenario (`--only data`): how the reads under the dashboard's pages and
//! `/metrics` hold up as the history grows. A synthetic history of `--data-deliveries`
//! deliveries (`Store::load_synthetic_deliveries`: 20 subscriptions, 200 jobs, 1 %
//! `job.failed`, 1 % dead, 0.1 % retrying, none pending, spread over 30 days) is written
//! straight into a fresh database; then each read the Activity tab, the DLQ page and a
//! scrape make is timed through the engine's API (median of 5 calls after 8 unmeasured
//! ones), first without planner statistics (as on a young database), then with fresh ones.

use crate::{
    args::{BenchArgs, StatisticsArg},
    database::{BackendName, on_fresh_database},
    table::Table,
};
use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use cronflow::startup::connect_and_migrate;
use cronflow_jobs::{
    StoreError,
    domain::{Cursor, DeliveryStatus, PageRequest, WebhookId},
    store::{DeadFilter, DeliveryFilter, ExportCursor, ReplayFilter, Store},
};
use std::time::Instant;

/// Calls measured per read; the median is reported.
const CALLS: usize = 5;
/// Unmeasured calls before them: enough for each of the store's reading connections
/// to prepare the statement and load the schema and its statistics once (the first
/// call on a connection after an ANALYZE pays for that).
const WARMUP: usize = 8;
/// Rows per call of an export, as the API's streamed export reads them.
const EXPORT_PAGE: i64 = 1000;
/// The dashboard's caps on counts (`api::dashboard::layout`).
const COUNT_CAP: u64 = 10_000;
const BADGE_CAP: u64 = 999;
/// The span of the synthetic history.
const HISTORY_DAYS: i64 = 30;
/// Target for each list, count and gauge read (ms).
const LIST_TARGET: &str = "a few ms";

/// One column of the data table: where it was measured, and each figure's label,
/// target and value.
pub(crate) struct DataColumn {
    pub(crate) name: &'static str,
    pub(crate) figures: Vec<(String, &'static str, String)>,
}

/// Loads the history on a fresh database of `backend` and measures the reads, without
/// and (or) with statistics as `--data-statistics` says.
pub(crate) async fn measure(backend: BackendName, args: &BenchArgs) -> anyhow::Result<Vec<DataColumn>> {
    on_fresh_database(backend, |url| async move {
        let store = connect_and_migrate(&url, Some(&crate::database::fresh_secret_key())).await?;
        let n = i64::try_from(args.data_deliveries).context("--data-deliveries")?;
        let start = Utc::now() - Duration::days(HISTORY_DAYS);
        let step = (HISTORY_DAYS * 86_400_000 / n.max(1)).max(1);
        eprintln!("{}: loading {n} deliveries", backend.as_str());
        let t = Instant::now();
        store
            .load_synthetic_deliveries(n, start.timestamp_millis(), step)
            .await?;
        let load_secs = t.elapsed().as_secs_f64();
        eprintln!("{}: loaded in {load_secs:.1} s", backend.as_str());
        let history = History { n, start, step };
        let mut columns = Vec::new();
        let (bare, fresh) = match (backend, args.data_statistics) {
            (BackendName::Sqlite, StatisticsArg::Both) => ("sqlite, no statistics", "sqlite"),
            (BackendName::Sqlite, _) => ("sqlite", "sqlite"),
            (BackendName::Postgres, StatisticsArg::Both) => ("postgres, no statistics", "postgres"),
            (BackendName::Postgres, _) => ("postgres", "postgres"),
        };
        if args.data_statistics != StatisticsArg::Fresh {
            store.set_delivery_statistics(false).await?;
            columns.push(measure_reads(&store, &history, bare, load_secs).await?);
        }
        if args.data_statistics != StatisticsArg::None {
            store.set_delivery_statistics(true).await?;
            columns.push(measure_reads(&store, &history, fresh, load_secs).await?);
        }
        store.close().await;
        Ok(columns)
    })
    .await
    .with_context(|| format!("{}: the data bench failed", backend.as_str()))
}

/// The synthetic history: `n` deliveries, delivery `i` created at `start + i * step` ms.
struct History {
    n: i64,
    start: DateTime<Utc>,
    step: i64,
}

impl History {
    fn created(&self, i: i64) -> DateTime<Utc> {
        self.start + Duration::milliseconds(i * self.step)
    }

    /// The cursor after delivery `i` (in the listings' order).
    fn cursor_after(&self, i: i64) -> Cursor {
        Cursor::after(self.created(i), &format!("dlv_bench{i}"))
    }
}

/// The median time of `CALLS` calls of `call`, in ms, after `WARMUP` unmeasured calls.
async fn median_ms<T, F, Fut>(mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    for _ in 0..WARMUP {
        call().await?;
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        call().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[CALLS / 2])
}

/// Reads the whole export of `filter` as the API streams it; returns its rows.
async fn export(store: &Store, filter: &DeliveryFilter) -> Result<usize, StoreError> {
    let mut rows = 0;
    let mut cursor: Option<ExportCursor> = None;
    loop {
        let page = store
            .export_attempts(filter, cursor.as_ref(), EXPORT_PAGE)
            .await?;
        rows += page.len();
        if (page.len() as i64) < EXPORT_PAGE {
            return Ok(rows);
        }
        cursor = page
            .last()
            .map(|r| (r.delivery_created_at, r.delivery_id.clone(), r.attempt));
    }
}

/// Rows a second of the export of `filter`: the median of `CALLS` whole exports.
async fn export_rate(store: &Store, filter: &DeliveryFilter) -> anyhow::Result<String> {
    let mut rates = Vec::with_capacity(CALLS);
    let mut rows = 0;
    for _ in 0..CALLS {
        let t = Instant::now();
        rows = export(store, filter).await?;
        rates.push(rows as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(format!("{:.0} ({rows} rows)", rates[CALLS / 2]))
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

async fn measure_reads(
    store: &Store,
    h: &History,
    name: &'static str,
    load_secs: f64,
) -> anyhow::Result<DataColumn> {
    eprintln!("{name}: timing the reads");
    let mut figures = vec![(
        format!("load {} deliveries (s)", h.n),
        "",
        format!("{load_secs:.1}"),
    )];
    let first = PageRequest {
        limit: 50,
        after: None,
    };
    let deep = PageRequest {
        limit: 50,
        after: Some(h.cursor_after(h.n / 2)),
    };
    let mid = h.created(h.n / 2);
    let filter = |f: fn(&mut DeliveryFilter)| {
        let mut d = DeliveryFilter::default();
        f(&mut d);
        d
    };
    let lists: Vec<(&str, DeliveryFilter, &PageRequest)> = vec![
        ("no filter", DeliveryFilter::default(), &first),
        (
            "subscription (1 of 20)",
            filter(|f| f.webhook_id = Some("wh_bench3".into())),
            &first,
        ),
        (
            "job (1 of 200)",
            filter(|f| f.job_id = Some("wf_bench17".into())),
            &first,
        ),
        (
            "event type job.failed (1 %)",
            filter(|f| f.event_type = Some("job.failed".into())),
            &first,
        ),
        (
            "status dead (1 %)",
            filter(|f| f.status = Some(DeliveryStatus::Dead)),
            &first,
        ),
        (
            "status retrying (0.1 %)",
            filter(|f| f.status = Some(DeliveryStatus::Retrying)),
            &first,
        ),
        (
            "time range (1 hour, mid-history)",
            DeliveryFilter {
                since: Some(mid),
                until: Some(mid + Duration::hours(1)),
                ..Default::default()
            },
            &first,
        ),
        (
            "subscription and status dead",
            filter(|f| {
                f.webhook_id = Some("wh_bench3".into());
                f.status = Some(DeliveryStatus::Dead);
            }),
            &first,
        ),
        (
            "matching nothing (status pending)",
            filter(|f| f.status = Some(DeliveryStatus::Pending)),
            &first,
        ),
        (
            "matching nothing (event type job.timed_out)",
            filter(|f| f.event_type = Some("job.timed_out".into())),
            &first,
        ),
        (
            "no filter, page deep in the cursor (mid-history)",
            DeliveryFilter::default(),
            &deep,
        ),
        (
            "subscription, page deep in the cursor",
            filter(|f| f.webhook_id = Some("wh_bench3".into())),
            &deep,
        ),
    ];
    for (label, f, page) in &lists {
        let t = median_ms(|| store.list_deliveries(f, page)).await?;
        figures.push((format!("Activity page of 50: {label} (ms)"), LIST_TARGET, ms(t)));
    }
    let none = DeliveryFilter::default();
    let t = median_ms(|| store.count_deliveries(&none, COUNT_CAP)).await?;
    figures.push(("Activity count, capped at 10,000 (ms)".into(), LIST_TARGET, ms(t)));
    let nothing = filter(|f| f.status = Some(DeliveryStatus::Pending));
    let t = median_ms(|| store.count_deliveries(&nothing, COUNT_CAP)).await?;
    figures.push(("Activity count matching nothing (ms)".into(), LIST_TARGET, ms(t)));

    let t = median_ms(|| store.list_dlq(&first)).await?;
    figures.push(("DLQ page of 50, API (ms)".into(), LIST_TARGET, ms(t)));
    let dead = DeadFilter::default();
    let t = median_ms(|| store.list_dead(&dead, &first)).await?;
    figures.push(("DLQ page of 50, dashboard (ms)".into(), LIST_TARGET, ms(t)));
    let dead_of_one = DeadFilter {
        replay: ReplayFilter {
            webhook_id: WebhookId::parse("wh_bench3"),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = median_ms(|| store.list_dead(&dead_of_one, &first)).await?;
    figures.push(("DLQ page of 50, one subscription (ms)".into(), LIST_TARGET, ms(t)));
    let t = median_ms(|| store.count_dead(&dead, BADGE_CAP)).await?;
    figures.push(("DLQ badge count, capped at 999 (ms)".into(), LIST_TARGET, ms(t)));
    let t = median_ms(|| store.gauges()).await?;
    figures.push(("/metrics gauges (ms)".into(), LIST_TARGET, ms(t)));

    eprintln!("{name}: timing the exports");
    let dead_only = filter(|f| f.status = Some(DeliveryStatus::Dead));
    figures.push((
        "CSV export, dead only (rows/s)".into(),
        "",
        export_rate(store, &dead_only).await?,
    ));
    figures.push((
        "CSV export, everything (rows/s)".into(),
        "",
        export_rate(store, &none).await?,
    ));
    Ok(DataColumn { name, figures })
}

/// Prints the data table: a row per figure, a column per database (and statistics).
pub(crate) fn print_summary(args: &BenchArgs, columns: &[DataColumn]) {
    let Some(first) = columns.first() else { return };
    let mut t = Table::with_columns(columns, columns.iter().map(|c| c.name).collect());
    t.section(format!(
        "DATA UNDER THE PAGES ({} deliveries; median of {CALLS} calls)",
        args.data_deliveries
    ));
    for (i, (label, target, _)) in first.figures.iter().enumerate() {
        t.row(label, target, |c| c.figures[i].2.clone());
    }
    t.print();
}
