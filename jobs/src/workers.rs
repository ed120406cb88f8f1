//! The apalis workers of one process: the run worker and the delivery worker, on one
//! monitor, over whichever backend the store uses.
//!
//! Wake-ups: on Postgres, LISTEN/NOTIFY (apalis's `Pubsub`) picks up new tasks within
//! milliseconds, and this process's own pushes wake its workers directly too; on SQLite
//! (one process), the store signals this process's workers after every transaction that
//! pushed tasks. The run worker is also woken by this process's
//! scheduler at the instant of each slot it fired ahead of time (on both backends).
//! Other delayed tasks (retries) and crash recovery ride on the heartbeat. Every
//! wake-up stream goes through [`wake_worker`], which works around two faults of
//! apalis's poll strategy that otherwise leave a worker asleep until its heartbeat.

use crate::{
    Clock, Store,
    delivery::{self, DeliveryConfig, DeliveryContext},
    metrics::Metrics,
    queue::{DELIVERY_QUEUE, DeliveryTask, RUN_QUEUE, RunTask},
    runner::{RunnerConfig, RunnerContext, handle_task},
};
use apalis::prelude::*;
use futures::StreamExt;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The workers failed to start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[error("workers: {0}")]
pub struct WorkerError(String);

/// Wakes a worker whenever this process pushed tasks to its queue, or its scheduler
/// reached a slot it fired ahead of time. On SQLite (no LISTEN/NOTIFY, one process) this
/// is the only wake-up; on Postgres it runs beside the notifications.
fn wakeups(wake: Arc<tokio::sync::Notify>) -> impl futures::Stream<Item = ()> + Unpin + Send + 'static {
    Box::pin(futures::stream::unfold(wake, |w| async move {
        w.notified().await;
        Some(((), w))
    }))
}

/// When each wake-up of [`echoed`] is repeated.
const ECHOES: [Duration; 2] = [Duration::from_millis(25), Duration::from_millis(250)];

/// Repeats each wake-up of `inner` [`ECHOES`] later (a newer wake-up starts the echoes
/// over). apalis's stream strategy only re-polls the worker when a wake-up arrives and
/// drops the item: one that arrives while a fetch is already running is lost, and if
/// that fetch's snapshot predates the new tasks it finds nothing, so they would wait for
/// the next wake-up or heartbeat (measured on Postgres: a whole slot's runs started a
/// second late). An echo arrives after that fetch and costs at most an empty fetch.
fn echoed<S>(inner: S) -> impl futures::Stream<Item = ()> + Unpin + Send + 'static
where
    S: futures::Stream<Item = ()> + Unpin + Send + 'static,
{
    let start = (inner, Vec::<tokio::time::Instant>::new());
    Box::pin(futures::stream::unfold(
        start,
        |(mut inner, mut echoes)| async move {
            let woken = match echoes.first().copied() {
                None => inner.next().await.is_some(),
                Some(at) => tokio::select! {
                    item = inner.next() => item.is_some(),
                    () = tokio::time::sleep_until(at) => {
                        echoes.remove(0);
                        return Some(((), (inner, echoes)));
                    }
                },
            };
            if !woken {
                return None;
            }
            let now = tokio::time::Instant::now();
            echoes = ECHOES.iter().map(|d| now + *d).collect();
            Some(((), (inner, echoes)))
        },
    ))
}

/// The poll strategy stream of a worker: `inner`'s wake-ups, [`echoed`], delivered by
/// [`WakeOnly`].
fn wake_worker<S>(inner: S) -> WakeOnly<impl futures::Stream<Item = ()> + Unpin + Send + 'static>
where
    S: futures::Stream<Item = ()> + Unpin + Send + 'static,
{
    WakeOnly(echoed(inner))
}

/// Turns each item of a wake-up stream into a wake of the polling task, and is itself
/// always pending. apalis's `PollWith` polls its strategy stream once at the start of
/// each poll and drops the item. If that poll then ends with an empty fetch, a stream
/// that had just yielded an item has not been polled again, so no waker is registered
/// for its next item: later wake-ups are buffered but wake nobody, and the worker sleeps
/// until its heartbeat (measured on Postgres at 1,000 events/s: deliveries held up to
/// 1.9 s). This adapter drains every ready item and stays registered, then wakes the
/// task so that it polls (and fetches) again.
struct WakeOnly<S>(S);

impl<S: futures::Stream<Item = ()> + Unpin> futures::Stream for WakeOnly<S> {
    type Item = ();

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        let mut woken = false;
        loop {
            match self.0.poll_next_unpin(cx) {
                std::task::Poll::Ready(Some(())) => woken = true,
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                std::task::Poll::Pending => break,
            }
        }
        if woken {
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    }
}

/// Wake-ups from Postgres: apalis's LISTEN on new tasks of `queue`. Its trigger notifies
/// once per inserted task; a burst (a fan-out of thousands) is coalesced into one
/// wake-up, since one fetch takes a whole batch.
fn pg_notifications(
    pool: sqlx::PgPool,
    queue: &'static str,
) -> impl futures::Stream<Item = ()> + Unpin + Send {
    apalis_postgres::Pubsub::new(pool, queue.to_owned())
        .ready_chunks(4096)
        .map(|_| ())
}

/// A Postgres worker's wake-ups: notifications of new tasks in `queue`, and this
/// process's own pushes and slots (`wake`).
fn pg_wakeups(
    pool: sqlx::PgPool,
    queue: &'static str,
    wake: Arc<tokio::sync::Notify>,
) -> impl futures::Stream<Item = ()> + Unpin + Send + 'static {
    futures::stream::select(pg_notifications(pool, queue), wakeups(wake))
}

/// Runs `work` as a task of its own and waits for it; dropping the returned future aborts
/// the task, as dropping `work` itself would have stopped it.
///
/// apalis polls every handler future of a worker inside one task (a `FuturesUnordered`
/// in its worker loop), so whatever a handler does itself (signing, building requests,
/// reading results, supervising a child) would run on one core at a time, however many
/// tasks are in flight. Spawned, each task's work is spread over all of the runtime's
/// threads (measured: see the README's benchmark notes). The task keeps the handler's
/// tracing span; a panic in `work` is resumed here, as if it had happened in the handler.
pub(crate) async fn on_own_task<F>(work: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    match tokio_util::task::AbortOnDropHandle::new(tokio::spawn(work.in_current_span())).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only an abort cancels the task, and only dropping this future aborts it.
        Err(e) => unreachable!("a handler task was cancelled while awaited: {e}"),
    }
}

/// How a stop ends this process's workers without leaving work in flight unable to
/// record what it did.
///
/// apalis stops polling a worker's backend as soon as the worker is stopping, even while
/// it waits for the tasks in flight; a fetch, heartbeat or acknowledgement it had begun
/// keeps its database connection until that wait ends. On SQLite that is the one writing
/// connection, which the tasks in flight need to record their outcome: they waited out
/// the whole shutdown timeout, were dropped, and their work (a delivery already sent, a
/// run already finished) was done again by the next worker. So a stop first *drains*,
/// with apalis still running as usual: the tasks already started finish (up to the
/// shutdown timeout), and a task handed out meanwhile is *parked*: handed back to the
/// queue at once (so another process can take it) while its handler keeps its slot, so
/// that apalis fetches no more than the slots that free up. Only then is apalis told to
/// stop, and the parked handlers end without work (a run task's failure, which apalis
/// would record, changes nothing: its acknowledgement only updates tasks the worker
/// still holds). What the delivery worker still holds after that (a fetch apalis
/// dropped while stopping, attempts cut off by the timeout) is handed back too
/// ([`Drain::hand_back`]); run tasks are left to crash recovery.
#[derive(Clone)]
pub(crate) struct Drain(Arc<DrainState>);

struct DrainState {
    /// Where parked tasks are handed back.
    store: Store,
    /// Cancelled when the stop begins: tasks handed out from then on are parked.
    draining: CancellationToken,
    /// Cancelled when the drain is over, just before apalis is told to stop.
    released: CancellationToken,
    /// Tasks started and not yet finished.
    active: std::sync::atomic::AtomicUsize,
    /// Notified when `active` falls to 0.
    idle: tokio::sync::Notify,
}

/// A started task, counted in [`DrainState::active`] until dropped.
pub(crate) struct Started(Arc<DrainState>);

impl Drop for Started {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How long handing back what a stopped worker holds may take before it is left to
/// crash recovery.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

impl Drain {
    fn new(store: Store) -> Self {
        Drain(Arc::new(DrainState {
            store,
            draining: CancellationToken::new(),
            released: CancellationToken::new(),
            active: std::sync::atomic::AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }))
    }

    /// Lets the task `task_id` of `queue` (a queue name) start, counted until the guard
    /// drops; or, once the drain has begun, parks it and returns `None` when apalis is
    /// stopping the worker. Counting first and checking second means a drain that finds
    /// no task active never misses one that is about to start.
    pub(crate) async fn admit_or_park(
        &self,
        queue: &str,
        worker: &WorkerContext,
        task_id: &str,
    ) -> Option<Started> {
        self.0.active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let started = Started(self.0.clone());
        if !self.0.draining.is_cancelled() {
            return Some(started);
        }
        drop(started);
        self.park(queue, worker, task_id).await;
        None
    }

    /// Parks a task that was not admitted: hands it back to `queue` at once, then holds
    /// its handler's slot until apalis is stopping the worker, so that ending it frees no
    /// slot for another fetch. apalis marks its workers as stopping in the poll in which
    /// the stop signal ([`Drain::run`]) resolves, the same poll that releases parked
    /// handlers; the loop only guards that order.
    async fn park(&self, queue: &str, worker: &WorkerContext, task_id: &str) {
        if let Err(e) = self
            .0
            .store
            .release_held_tasks(queue, worker.name(), Some(task_id))
            .await
        {
            tracing::warn!(error = %e, task_id, "could not hand back a task taken while stopping; it is recovered when this worker's lease lapses");
        }
        self.0.released.cancelled().await;
        while !worker.is_shutting_down() {
            tokio::task::yield_now().await;
        }
    }

    /// Waits for `stop`, then drains: parks the tasks handed out from then on and waits
    /// up to `within` for the started ones to finish. Resolving is apalis's stop signal.
    async fn run(self, stop: CancellationToken, within: Duration) -> Result<(), std::io::Error> {
        stop.cancelled().await;
        self.0.draining.cancel();
        let idle = async {
            loop {
                let notified = self.0.idle.notified();
                if self.0.active.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(within, idle).await.is_err() {
            tracing::warn!(
                in_flight = self.0.active.load(std::sync::atomic::Ordering::SeqCst),
                "tasks still running at the shutdown timeout; the next worker takes them over"
            );
        }
        self.0.released.cancel();
        Ok(())
    }

    /// Puts back on the queue what the stopped delivery worker `worker` still holds: the
    /// tasks of a fetch apalis dropped while stopping, and those of attempts cut off by
    /// the shutdown timeout (sent again, as after a crash). If that fails they are
    /// recovered like any task of a worker that stopped: after its lease lapses.
    async fn hand_back(&self, worker: &str) {
        let release = self.0.store.release_held_tasks(DELIVERY_QUEUE, worker, None);
        match tokio::time::timeout(HAND_BACK_WAIT, release).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(tasks = n, "handed back the delivery tasks held at the stop"),
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "could not hand back the delivery tasks held at the stop; they are recovered when this worker's lease lapses"
            ),
            Err(_) => tracing::warn!(
                "handing back the delivery tasks held at the stop timed out; they are recovered when this worker's lease lapses"
            ),
        }
    }
}

/// One delivery task: one attempt. The task is acknowledged by the attempt's own
/// transaction (see `delivery`), not by apalis.
async fn handle_delivery(
    task: DeliveryTask,
    ctx: Data<DeliveryContext>,
    drain: Data<Drain>,
    worker: WorkerContext,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let task_id = task_id.to_string();
    let Some(_started) = drain.admit_or_park(DELIVERY_QUEUE, &worker, &task_id).await else {
        return Ok(());
    };
    let ctx: DeliveryContext = (*ctx).clone();
    on_own_task(async move { delivery::attempt_task(&ctx, &task.delivery_id, task_id).await })
        .await
        .map_err(|e| Box::new(e) as BoxDynError)
}

/// How long apalis is given to stop its workers after the [`Drain`]: the parked tasks
/// end at once, and apalis hands back what it fetched but did not hand out.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs the run worker and the delivery worker until `shutdown` is cancelled; then
/// waits up to the runner's shutdown timeout for work in flight (a run still going then
/// is recovered by the next worker, a delivery attempted again), see [`Drain`].
pub async fn run_workers_until_stopped(
    store: Store,
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
    // trips (measured: 128 → 512 delivery tasks a fetch took one endpoint from 2,600 to
    // 3,000 deliveries/s on SQLite).
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
    let signal = drain.clone().run(shutdown, stop_after);
    tracing::info!(worker = %name, runs = run_conc, deliveries = dlv_conc, "workers starting");
    let monitor = Monitor::new().shutdown_timeout(STOP_GRACE);
    let monitor = if let Some(pool) = store.sqlite_pool() {
        let cfg = |queue: &str, batch: usize| {
            apalis_sqlite::Config::default()
                .queue(queue)
                .heartbeat_interval(heartbeat)
                .missed_heartbeats(missed)
                .batch_size(batch)
                .lock_tasks(false)
        };
        let runs = apalis_sqlite::SqliteStorage::<RunTask>::new(pool).with_config(cfg(RUN_QUEUE, run_batch));
        let dlvs = apalis_sqlite::SqliteStorage::<DeliveryTask>::new(pool)
            .with_config(cfg(DELIVERY_QUEUE, delivery_batch).persist_results(false));
        let (w1, w2) = (store.wake_signal(), store.wake_deliveries_signal());
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
    } else if let Some(pool) = store.postgres_pool() {
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
        let (listen_pool, w1, w2) = (pool.clone(), store.wake_signal(), store.wake_deliveries_signal());
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
    } else {
        return Err(WorkerError("unknown backend".into()));
    };
    let stopped = monitor.run_with_signal(signal).await;
    drain.hand_back(&delivery_worker).await;
    stopped.map_err(|e| WorkerError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Whether `stream` yields within `wait` (of paused, auto-advancing test time).
    async fn yields_within(stream: &mut (impl futures::Stream<Item = ()> + Unpin), wait: Duration) -> bool {
        tokio::time::timeout(wait, stream.next()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_is_echoed_twice_and_a_newer_one_starts_the_echoes_over() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
        let mut woken = echoed(rx);
        assert!(woken.next().now_or_never().is_none(), "nothing before a wake-up");

        tx.unbounded_send(()).unwrap();
        assert!(
            yields_within(&mut woken, Duration::from_millis(1)).await,
            "the wake-up itself"
        );
        assert!(!yields_within(&mut woken, Duration::from_millis(20)).await);
        assert!(
            yields_within(&mut woken, Duration::from_millis(10)).await,
            "first echo at 25 ms"
        );
        assert!(!yields_within(&mut woken, Duration::from_millis(200)).await);
        // A new wake-up before the second echo replaces the pending echoes.
        tx.unbounded_send(()).unwrap();
        assert!(
            yields_within(&mut woken, Duration::from_millis(1)).await,
            "the new wake-up"
        );
        assert!(
            yields_within(&mut woken, Duration::from_millis(30)).await,
            "its first echo"
        );
        assert!(
            yields_within(&mut woken, Duration::from_millis(230)).await,
            "its second echo"
        );
        assert!(
            !yields_within(&mut woken, Duration::from_secs(10)).await,
            "then silence"
        );

        drop(tx);
        assert_eq!(woken.next().await, None, "ends with its source");
    }

    /// Counts wakes of the task that polls.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn wake_only_turns_items_into_wakes_and_stays_registered() {
        use futures::Stream;
        let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
        let mut stream = WakeOnly(rx);
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let count = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut poll = |s: &mut WakeOnly<_>| std::pin::Pin::new(s).poll_next(&mut cx);

        assert!(poll(&mut stream).is_pending());
        assert_eq!(count(), 0, "nothing to wake for yet");
        // Two wake-ups before the next poll: drained together, one wake.
        tx.unbounded_send(()).unwrap();
        tx.unbounded_send(()).unwrap();
        let after_send = count();
        assert!(poll(&mut stream).is_pending(), "it never yields an item");
        assert_eq!(count(), after_send + 1, "the items became one wake of the poller");
        // Still registered after yielding nothing: a later wake-up wakes the task
        // without anyone polling first (the bug this adapter exists for).
        let before = count();
        tx.unbounded_send(()).unwrap();
        assert!(count() > before, "a later wake-up reaches the task by itself");
        assert!(poll(&mut stream).is_pending());

        drop(tx);
        assert!(poll(&mut stream).is_ready(), "ends with its source");
    }
}
