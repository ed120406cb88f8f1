//! Delivery benchmark (ignored by default; prints figures, asserts nothing about speed):
//! end-to-end deliveries per second to a local sink and event→receipt latency, with 1
//! and 100 subscriptions, and with one of 10 endpoints hanging, on SQLite and Postgres.
//! Events come from real runs of a `true` job (overlap `allow`), so the run pipeline is
//! part of what is measured. Run with
//! `cargo test --release -p cronflow-tests -- --ignored --nocapture bench_deliveries`.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latencies (ms) from each event's `timestamp` to its arrival at `receiver`.
fn latencies(receiver: &TestReceiver) -> Vec<f64> {
    let mut v: Vec<f64> = receiver
        .requests()
        .iter()
        .filter_map(|s| {
            let body: Value = serde_json::from_slice(&s.body).ok()?;
            let ts: chrono::DateTime<chrono::Utc> = body["timestamp"].as_str()?.parse().ok()?;
            Some((s.at - ts).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

async fn scenario(backend: Backend, subs: usize, hung: bool, events: usize) {
    let app = TestApp::spawn_with(backend, &[("CRONFLOW_WEBHOOK_TIMEOUT", "30s")]).await;
    let sink = TestReceiver::start(&[200]).await;
    let stuck = TestReceiver::start(&[0]).await;
    let healthy = if hung { subs - 1 } else { subs };
    for i in 0..healthy {
        let r = app
            .post(
                "/v1/webhooks",
                &json!({"url": sink.url(&format!("/s{i}")), "events": ["job.completed"]}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    if hung {
        app.post(
            "/v1/webhooks",
            &json!({"url": stuck.url("/hung"), "events": ["job.completed"]}),
        )
        .await;
    }
    let mut body = shell_job("bench", "true");
    body["overlap_policy"] = json!("allow");
    let job = app.create_job(&body).await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    for _ in 0..events {
        app.trigger(&job_id).await;
    }
    let expected = events * healthy;
    eventually(600, "every healthy delivery", || async {
        (sink.requests().len() >= expected).then_some(())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let lat = latencies(&sink);
    println!(
        "{backend:?} subs={subs:>3} hung={hung:<5} events={events:>4}: {expected:>5} deliveries in {secs:>6.2} s = {:>7.0}/s; \
         event→receipt p50 {:>7.1} ms, p99 {:>7.1} ms, max {:>7.1} ms",
        expected as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    stuck.release();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn bench_deliveries() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        scenario(backend, 1, false, 500).await;
        scenario(backend, 100, false, 30).await;
        scenario(backend, 10, false, 100).await;
        scenario(backend, 10, true, 100).await;
    }
}
