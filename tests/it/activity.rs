//! Webhook Activity: filters and pagination over thousands of deliveries, and the CSV
//! export read back with a standard CSV reader.

use crate::{helpers::*, on_both_backends};
use serde_json::Value;

const N: usize = 3000;
const TRICKY: [&str; 5] = [
    "plain",
    "comma, \"quoted\"\nand a newline",
    "=HYPERLINK(\"x\")",
    "-5",
    "@SUM(A1)",
];

/// Inserts `N` deliveries with one attempt each, straight into the tables (fixture data:
/// going through real runs would take minutes). Delivery i: webhook `wh_a` or `wh_b`
/// alternately, status cycling pending/retrying/delivered/dead, job `wf_job{i % 10}`,
/// created at `base() + i` ms, attempt error text cycling through `TRICKY`.
async fn insert_fixture(app: &TestApp) {
    let statuses = ["pending", "retrying", "delivered", "dead"];
    let mut deliveries = Vec::new();
    let mut attempts = Vec::new();
    for i in 0..N {
        let id = format!("dlv_fx{i:06}");
        let hook = if i % 2 == 0 { "wh_a" } else { "wh_b" };
        let at = base() + i as i64;
        deliveries.push(format!(
            "('{id}', 'evt_fx{i}', '{hook}', 'job.failed', 'wf_job{}', '{}', 1, 1, {at}, {at}, {})",
            i % 10,
            statuses[i % 4],
            if statuses[i % 4] == "dead" {
                at.to_string()
            } else {
                "NULL".into()
            }
        ));
        let err = TRICKY[i % TRICKY.len()].replace('\'', "''");
        attempts.push(format!("('{id}', 1, {at}, 12, 500, 'http', '{err}', 'body {i}')"));
    }
    for chunk in deliveries.chunks(500) {
        app.db.execute_sql(&format!(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, attempts, round_attempts, \
             created_at, updated_at, dead_at) VALUES {}",
            chunk.join(", ")
        ))
        .await;
    }
    for chunk in attempts.chunks(500) {
        app.db.execute_sql(&format!(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error_kind, \
             error, response_excerpt) VALUES {}",
            chunk.join(", ")
        ))
        .await;
    }
}

/// A recent whole second (a day ago), so the app's own retention keeps the fixture.
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (chrono::Utc::now().timestamp() - 86_400) * 1000)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every delivery `query` (filters, without `?`) lists, 500 a page.
async fn all_pages(app: &TestApp, query: &str) -> Vec<Value> {
    page_items(app, &format!("/v1/deliveries?{query}"), 500).await
}

async fn deliveries_filter_and_paginate_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    insert_fixture(&app).await;
    let all = all_pages(&app, "").await;
    assert_eq!(all.len(), N);
    let ids: Vec<&str> = all.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first, no repeats");
    let dead = all_pages(&app, "status=dead").await;
    assert_eq!(dead.len(), N / 4);
    assert!(dead.iter().all(|d| d["status"] == "dead"));
    let a_jobs = all_pages(&app, "webhook_id=wh_a&job_id=wf_job4").await;
    assert_eq!(a_jobs.len(), N / 10);
    assert!(
        a_jobs
            .iter()
            .all(|d| d["webhook_id"] == "wh_a" && d["job_id"] == "wf_job4")
    );
    // created_at of delivery i is base + i ms: [base + 100, base + 200) holds 100.
    let query = format!("since={}&until={}", rfc3339(base() + 100), rfc3339(base() + 200));
    let window = all_pages(&app, &query).await;
    assert_eq!(window.len(), 100);
    let (status, err) = status_and_json(app.get("/v1/deliveries?status=lost").await).await;
    assert_eq!(status, 400, "{err}");
    app.stop().await;
}

async fn the_csv_export_reads_back_to_the_same_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    insert_fixture(&app).await;
    let r = app.get("/v1/deliveries/export.csv?webhook_id=wh_b").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let text = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[0], "delivery_id");
    assert_eq!(header.len(), 14);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), N / 2, "one row per attempt of wh_b's deliveries");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (k, row) in rows.iter().enumerate() {
        let i = 2 * k + 1; // wh_b holds the odd deliveries, oldest first
        assert_eq!(&row[col("delivery_id")], format!("dlv_fx{i:06}"));
        assert_eq!(&row[col("webhook_id")], "wh_b");
        assert_eq!(&row[col("attempt")], "1");
        assert_eq!(&row[col("status_code")], "500");
        let original = TRICKY[i % TRICKY.len()];
        let expected = if original.starts_with(['=', '+', '-', '@']) {
            format!("'{original}")
        } else {
            original.to_owned()
        };
        assert_eq!(&row[col("error")], expected, "row {k}");
    }
    app.stop().await;
}

/// Inserts fixture deliveries, each row `(id, event_id, webhook_id, event_type, job_id,
/// status, attempts, round_attempts, created_at, updated_at, dead_at)` as SQL.
async fn insert_deliveries(app: &TestApp, rows: &[String]) {
    app.db
        .execute_sql(&format!(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, attempts, round_attempts, \
             created_at, updated_at, dead_at) VALUES {}",
            rows.join(", ")
        ))
        .await;
}

/// The ids of every page of `path` (a listing with `?` in it) at `limit` items a page.
async fn pages_of(app: &TestApp, path: &str, limit: u32) -> Vec<String> {
    page_items(app, path, limit)
        .await
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The items of every page of `path` (a listing with `?` in it), following its cursor.
async fn page_items(app: &TestApp, path: &str, limit: u32) -> Vec<Value> {
    let sep = if path.ends_with('?') { "" } else { "&" };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let r = app.get(&url).await;
        assert_eq!(r.status(), 200, "{url}");
        let page: Value = r.json().await.unwrap();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Each filter, alone and combined, pages through exactly its rows in listing order when
/// many deliveries share a creation time and the cursor falls among them (the cursor is
/// a row value over creation time and id); a filter that matches nothing gives an empty
/// page; the DLQ pages oldest first the same way.
async fn each_filter_pages_through_deliveries_that_share_a_creation_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const M: usize = 210;
    let statuses = ["pending", "retrying", "delivered", "dead"];
    let events = ["job.failed", "job.completed", "job.timed_out"];
    // Delivery i: created at base + i / 7 ms (seven share each time), ids not in
    // creation order within a time.
    struct Fx {
        id: String,
        hook: String,
        job: String,
        event: &'static str,
        status: &'static str,
        at: i64,
    }
    let fx: Vec<Fx> = (0..M)
        .map(|i| Fx {
            id: format!("dlv_tie{:06}", (i * 37) % 1000),
            hook: format!("wh_{}", i % 3),
            job: format!("wf_j{}", i % 5),
            event: events[i % 3 / 2 + i % 2],
            status: statuses[i % 4],
            at: base() + (i / 7) as i64,
        })
        .collect();
    let values: Vec<String> = fx
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let dead_at = if d.status == "dead" {
                d.at.to_string()
            } else {
                "NULL".into()
            };
            format!(
                "('{}', 'evt_tie{i}', '{}', '{}', '{}', '{}', 0, 0, {}, {}, {dead_at})",
                d.id, d.hook, d.event, d.job, d.status, d.at, d.at
            )
        })
        .collect();
    insert_deliveries(&app, &values).await;
    let expect = |keep: &dyn Fn(&Fx) -> bool, newest_first: bool| -> Vec<String> {
        let mut v: Vec<(i64, String)> = fx
            .iter()
            .filter(|d| keep(d))
            .map(|d| (d.at, d.id.clone()))
            .collect();
        v.sort();
        if newest_first {
            v.reverse();
        }
        v.into_iter().map(|(_, id)| id).collect()
    };
    let window = (base() + 5, base() + 20);
    type Keep = Box<dyn Fn(&Fx) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        ("".into(), Box::new(|_| true)),
        ("webhook_id=wh_1".into(), Box::new(|d| d.hook == "wh_1")),
        ("job_id=wf_j3".into(), Box::new(|d| d.job == "wf_j3")),
        (
            "event_type=job.completed".into(),
            Box::new(|d| d.event == "job.completed"),
        ),
        ("status=retrying".into(), Box::new(|d| d.status == "retrying")),
        (
            format!("since={}&until={}", rfc3339(window.0), rfc3339(window.1)),
            Box::new(move |d| d.at >= window.0 && d.at < window.1),
        ),
        (
            format!("webhook_id=wh_2&status=dead&until={}", rfc3339(window.1)),
            Box::new(move |d| d.hook == "wh_2" && d.status == "dead" && d.at < window.1),
        ),
        ("job_id=wf_nothing".into(), Box::new(|_| false)),
    ];
    for (query, keep) in &cases {
        for limit in [1, 5, 50] {
            let got = pages_of(&app, &format!("/v1/deliveries?{query}"), limit).await;
            assert_eq!(got, expect(keep.as_ref(), true), "{query}, {limit} a page");
        }
    }
    assert!(expect(cases[4].1.as_ref(), true).len() > 10);
    let dlq = pages_of(&app, "/v1/dlq?", 4).await;
    assert_eq!(dlq, expect(&|d| d.status == "dead", false));
    app.stop().await;
}

/// The export read in pages as small as a few rows, whose ends fall inside a delivery's
/// attempts and among deliveries that share a creation time: every attempt once, in
/// order (creation time, delivery id, attempt), and a delivery not attempted yet as one
/// row of attempt 0; a filter narrows it the same way.
async fn the_export_resumes_inside_a_delivery_and_among_equal_creation_times(backend: Backend) {
    use cronflow_jobs::store::{DeliveryFilter, ExportCursor};
    let app = TestApp::spawn(backend).await;
    // Delivery i: created at base + i / 4 ms, i % 4 attempts, webhook wh_{i % 2}.
    let mut deliveries = Vec::new();
    let mut attempts = Vec::new();
    let mut expected = Vec::new();
    for i in 0..60_i64 {
        let id = format!("dlv_ex{:04}", (i * 13) % 100);
        let at = base() + i / 4;
        deliveries.push(format!(
            "('{id}', 'evt_ex{i}', 'wh_{}', 'job.failed', NULL, 'pending', {}, 0, {at}, {at}, NULL)",
            i % 2,
            i % 4
        ));
        for a in 1..=i % 4 {
            attempts.push(format!("('{id}', {a}, {at}, 1, 500, 'http', NULL, NULL)"));
        }
        for a in if i % 4 == 0 { 0..=0 } else { 1..=i % 4 } {
            expected.push((at, id.clone(), a, format!("wh_{}", i % 2)));
        }
    }
    insert_deliveries(&app, &deliveries).await;
    app.db
        .execute_sql(&format!(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error_kind, \
             error, response_excerpt) VALUES {}",
            attempts.join(", ")
        ))
        .await;
    expected.sort();
    for (filter, hook) in [
        (DeliveryFilter::default(), None),
        (
            DeliveryFilter {
                webhook_id: Some("wh_1".into()),
                ..Default::default()
            },
            Some("wh_1"),
        ),
    ] {
        let want: Vec<(i64, String, i64)> = expected
            .iter()
            .filter(|e| hook.is_none_or(|h| e.3 == h))
            .map(|e| (e.0, e.1.clone(), e.2))
            .collect();
        for limit in [1, 2, 5, 1000] {
            let mut got = Vec::new();
            let mut cursor: Option<ExportCursor> = None;
            loop {
                let rows = app
                    .store
                    .export_attempts(&filter, cursor.as_ref(), limit)
                    .await
                    .unwrap();
                got.extend(
                    rows.iter()
                        .map(|r| (r.delivery_created_at, r.delivery_id.clone(), r.attempt)),
                );
                if (rows.len() as i64) < limit {
                    break;
                }
                cursor = got.last().cloned();
            }
            assert_eq!(got, want, "{hook:?}, {limit} a page");
        }
    }
    app.stop().await;
}

on_both_backends!(
    the_export_resumes_inside_a_delivery_and_among_equal_creation_times,
    deliveries_filter_and_paginate_newest_first,
    the_csv_export_reads_back_to_the_same_rows,
    each_filter_pages_through_deliveries_that_share_a_creation_time
);

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Measures memory while exporting 1,000,000 attempts (ignored by default: it takes a
/// minute). Run with `cargo test --workspace -- --ignored --nocapture a_million`.
async fn a_million_row_export_keeps_memory_flat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rows = 1_000_000;
    let sql = match app.db.backend {
        Backend::Sqlite => format!(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, attempts, round_attempts, created_at, updated_at, dead_at) \
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             SELECT printf('dlv_m%08d', i), printf('evt_m%08d', i), 'wh_m', 'job.failed', 'wf_m', 'dead', 1, 1, i, i, i FROM n",
            rows - 1
        ),
        Backend::Postgres => format!(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, job_id, status, attempts, round_attempts, created_at, updated_at, dead_at) \
             SELECT 'dlv_m' || lpad(i::text, 8, '0'), 'evt_m' || i, 'wh_m', 'job.failed', 'wf_m', 'dead', 1, 1, i, i, i \
             FROM generate_series(0, {}) AS i",
            rows - 1
        ),
    };
    app.db.execute_sql(&sql).await;
    app.db.execute_sql(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error_kind, error, response_excerpt) \
         SELECT id, 1, created_at, 12, 503, 'http', 'HTTP 503 Service Unavailable', 'upstream busy, please retry later' FROM deliveries",
    )
    .await;
    let before = rss_kib("VmRSS:");
    let started = std::time::Instant::now();
    let r = app.get("/v1/deliveries/export.csv").await;
    let mut stream = r.bytes_stream();
    let (mut bytes, mut lines, mut peak) = (0usize, 0usize, before);
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        peak = peak.max(rss_kib("VmRSS:"));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "export ({:?}): {} rows, {:.1} MB in {secs:.1} s ({:.0} rows/s); RSS before {} MiB, peak during {} MiB (+{} MiB)",
        app.db.backend,
        lines - 1,
        bytes as f64 / 1e6,
        (lines - 1) as f64 / secs,
        before / 1024,
        peak / 1024,
        (peak - before) / 1024
    );
    assert_eq!(lines - 1, rows, "every row exported");
    app.stop().await;
}

on_both_backends!(
    #[ignore = "a minute long; run with --ignored to measure export memory"]
    a_million_row_export_keeps_memory_flat
);
