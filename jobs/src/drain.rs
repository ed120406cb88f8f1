//! How a task handler lives: admitted (counted) or parked by the [`Drain`] of a graceful
//! stop, and its work run on a task of its own ([`on_own_task`]). Both the run handler
//! (`crate::runner`) and the delivery handler (`crate::delivery`) go through it; the
//! workers' wiring (`crate::workers`) runs the drain. What does not live here: the
//! handlers themselves and the wake-ups (`crate::wake`).

use crate::{Store, queue::DELIVERY_QUEUE};
use apalis::prelude::WorkerContext;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Runs `work` as a task of its own and waits for it; dropping the returned future aborts
/// the task, as dropping `work` itself would have stopped it.
///
/// apalis polls every handler future of a worker inside one task (a `FuturesUnordered`
/// in its worker loop), so whatever a handler does itself (signing, building requests,
/// reading results, supervising a child) would run on one core at a time, however many
/// tasks are in flight. Spawned, each task's work is spread over all of the runtime's
/// threads. The task keeps the handler's
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

/// How often a parked handler released by the drain looks whether apalis has marked its
/// worker as stopping (it does so at once; the wait is at most a step or two).
const PARK_STEP: Duration = Duration::from_millis(1);

/// How long handing back what a stopped worker holds may take before it is left to
/// crash recovery.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

impl Drain {
    pub(crate) fn new(store: Store) -> Self {
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
    /// slot for another fetch. apalis marks its workers as stopping right after the stop
    /// signal ([`Drain::run`]) resolves, in the same poll that releases parked handlers;
    /// a handler polled on another thread in between waits for the mark in steps of
    /// [`PARK_STEP`] (apalis offers no future to await it) rather than spinning.
    async fn park(&self, queue: &str, worker: &WorkerContext, task_id: &str) {
        self.hand_back_task(queue, worker, task_id).await;
        self.0.released.cancelled().await;
        while !worker.is_shutting_down() {
            tokio::time::sleep(PARK_STEP).await;
        }
    }

    /// Puts task `task_id` of `queue`, which this worker holds but will not finish (it
    /// is parked, or its handler failed without storing an outcome), back on the queue,
    /// due now, for any worker to take; rather than leaving it held until this worker
    /// stops and its lease lapses.
    pub(crate) async fn hand_back_task(&self, queue: &str, worker: &WorkerContext, task_id: &str) {
        if let Err(e) = self
            .0
            .store
            .release_held_tasks(queue, worker.name(), Some(task_id))
            .await
        {
            tracing::warn!(error = %e, task_id, "could not hand back a task; it is recovered when this worker's lease lapses");
        }
    }

    /// Waits for `stop`, then drains: parks the tasks handed out from then on and waits
    /// up to `within` for the started ones to finish. Resolving is apalis's stop signal.
    pub(crate) async fn run(self, stop: CancellationToken, within: Duration) -> Result<(), std::io::Error> {
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
    pub(crate) async fn hand_back(&self, worker: &str) {
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
