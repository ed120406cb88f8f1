//! The apalis workers of one process: the run worker and the delivery worker, on one
//! monitor, over whichever backend the store uses. Wiring only: each handler sits with its
//! capability (`crate::runner::handle_task`, `crate::delivery::handle_delivery`), the
//! wake-ups in `crate::wake`, the graceful stop in `crate::drain`.

use crate::{
    Clock, Store,
    delivery::{DeliveryConfig, DeliveryContext, handle_delivery},
    drain::Drain,
    metrics::Metrics,
    queue::{DELIVERY_QUEUE, DeliveryTask, RUN_QUEUE, RunTask},
    runner::{RunnerConfig, RunnerContext, handle_task},
    signals::Signals,
    store::ApalisPool,
    wake::{pg_wakeups, wake_worker, wakeups},
};
use apalis::prelude::*;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The workers failed to start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[error("workers: {0}")]
pub struct WorkerError(String);

/// How long apalis is given to stop its workers after the [`Drain`]: the parked tasks
/// end at once, and apalis hands back what it fetched but did not hand out.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs the run worker and the delivery worker until `shutdown` is cancelled, or until
/// either fails (the caller then starts both again, see `stop_both` below); then
/// waits up to the runner's shutdown timeout for work in flight (a run still going then
/// is recovered by the next worker, a delivery attempted again), see [`Drain`].
pub async fn run_workers_until_stopped(
    store: Store,
    signals: &Signals,
    clock: Arc<dyn Clock>,
    runner: RunnerConfig,
    deliveries: DeliveryConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let name = runner.worker_name.clone();
    let delivery_worker = format!("{name}-deliveries");
    let (run_conc, dlv_conc) = (runner.concurrency, deliveries.concurrency);
    // Fetch as many tasks as can run at once: the runs of one slot then start together,
    // and apalis's own bookkeeping (lock, acknowledge), done per fetch, takes fewer round
    // trips (larger fetches raised the delivery benchmark's throughput on SQLite).
    let (run_batch, delivery_batch) = (run_conc, dlv_conc);
    // `lock_tasks(false)` below: a fetched task is already `Queued` with this worker as
    // `lock_by`, which is all that orphan recovery and the acknowledgement look at; the
    // default second UPDATE to `Running` only cost a statement per batch (on SQLite
    // without statistics it scanned every pending task).
    // `persist_results(false)` for deliveries: apalis's acknowledgement is a transaction
    // of its own per batch; CronFlow acknowledges each delivery task in the transaction
    // that records its attempt (`Store::record_attempts`), which must happen anyway.
    let (heartbeat, missed, stop_after) = (
        runner.heartbeat,
        runner.missed_heartbeats,
        runner.shutdown_timeout,
    );
    let run_ctx = RunnerContext::new(store.clone(), clock.clone(), runner, metrics.clone())
        .map_err(|e| WorkerError(format!("cannot build the HTTP client: {e}")))?;
    let dlv_ctx = DeliveryContext::new(store.clone(), clock, deliveries, metrics)
        .map_err(|e| WorkerError(format!("cannot build the HTTP client: {e}")))?;
    let drain = Drain::new(store.clone());
    // apalis ends a worker for good when its backend fails (a heartbeat or a fetch while
    // Postgres restarts) and runs the other one on: this process would take runs but no
    // deliveries, or the reverse, until it stops. So the failure of either stops both
    // (drained as at a stop), and the caller starts them again under a fresh name.
    let stop_both = shutdown.child_token();
    let signal = drain.clone().run(stop_both.clone(), stop_after);
    tracing::info!(worker = %name, runs = run_conc, deliveries = dlv_conc, "workers starting");
    let monitor = Monitor::new()
        .shutdown_timeout(STOP_GRACE)
        .should_restart(move |worker, error| {
            tracing::warn!(worker = worker.name(), %error, "a worker failed; stopping this process's workers to start them again");
            stop_both.cancel();
            false
        });
    let dlv_ctx = Arc::new(dlv_ctx);
    let monitor = match store.apalis_pool() {
        ApalisPool::Sqlite(pool) => {
            let cfg = |queue: &str, batch: usize| {
                apalis_sqlite::Config::default()
                    .queue(queue)
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(missed)
                    .batch_size(batch)
                    .lock_tasks(false)
            };
            let runs =
                apalis_sqlite::SqliteStorage::<RunTask>::new(pool).with_config(cfg(RUN_QUEUE, run_batch));
            let dlvs = apalis_sqlite::SqliteStorage::<DeliveryTask>::new(pool)
                .with_config(cfg(DELIVERY_QUEUE, delivery_batch).persist_results(false));
            let (w1, w2) = (signals.runs(), signals.deliveries());
            let (n1, n2) = (format!("{name}-runs"), delivery_worker.clone());
            let (c1, c2) = (run_ctx, dlv_ctx);
            let (d1, d2) = (drain.clone(), drain.clone());
            monitor
                .register(move |_| {
                    WorkerBuilder::new(n1.as_str())
                        .backend(runs.clone().poll_with_stream(wake_worker(wakeups(w1.clone()))))
                        .data(c1.clone())
                        .data(d1.clone())
                        .concurrency(run_conc)
                        .build(handle_task)
                })
                .register(move |_| {
                    WorkerBuilder::new(n2.as_str())
                        .backend(dlvs.clone().poll_with_stream(wake_worker(wakeups(w2.clone()))))
                        .data(c2.clone())
                        .data(d2.clone())
                        .concurrency(dlv_conc)
                        .build(handle_delivery)
                })
        }
        ApalisPool::Postgres(pool) => {
            let cfg = |queue: &str, batch: usize| {
                apalis_postgres::Config::default()
                    .queue(queue)
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(missed)
                    .batch_size(batch)
                    .lock_tasks(false)
            };
            let runs =
                apalis_postgres::PostgresStorage::<RunTask>::new(pool).with_config(cfg(RUN_QUEUE, run_batch));
            let (listen_pool, w1, w2) = (pool.clone(), signals.runs(), signals.deliveries());
            let dlvs = apalis_postgres::PostgresStorage::<DeliveryTask>::new(pool)
                .with_config(cfg(DELIVERY_QUEUE, delivery_batch).persist_results(false));
            let (n1, n2) = (format!("{name}-runs"), delivery_worker.clone());
            let (c1, c2) = (run_ctx, dlv_ctx);
            let (d1, d2) = (drain.clone(), drain.clone());
            monitor
                .register({
                    let listen_pool = listen_pool.clone();
                    move |_| {
                        let woken = pg_wakeups(listen_pool.clone(), RUN_QUEUE, w1.clone());
                        WorkerBuilder::new(n1.as_str())
                            .backend(runs.clone().poll_with_stream(wake_worker(woken)))
                            .data(c1.clone())
                            .data(d1.clone())
                            .concurrency(run_conc)
                            .build(handle_task)
                    }
                })
                .register(move |_| {
                    let woken = pg_wakeups(listen_pool.clone(), DELIVERY_QUEUE, w2.clone());
                    WorkerBuilder::new(n2.as_str())
                        .backend(dlvs.clone().poll_with_stream(wake_worker(woken)))
                        .data(c2.clone())
                        .data(d2.clone())
                        .concurrency(dlv_conc)
                        .build(handle_delivery)
                })
        }
    };
    let stopped = monitor.run_with_signal(signal).await;
    drain.hand_back(&delivery_worker).await;
    stopped.map_err(|e| WorkerError(e.to_string()))
}
