//! Gathering the database work of concurrent tasks (delivery attempts, runs) into batches.
//!
//! Each attempt or run is its own apalis task, but a database commit per task would cap
//! CronFlow at the database's commit rate. So a task hands its reads and writes to a [`Batcher`]: a
//! background loop takes every request waiting at that moment (up to a maximum), serves
//! them with one call (one query, or one transaction), and answers each caller. Nothing
//! waits on a timer: under light load a batch holds one request and costs what a direct
//! call would; under heavy load requests pile up while the previous batch runs, and the
//! next batch takes them all (group commit). A caller returns only once its batch has
//! committed, so a task is acknowledged only after its outcome is stored.
//!
//! Batches served at the same time (on Postgres, two lanes; and the other statements of
//! the process) may lock the same rows in different orders; Postgres then aborts one
//! with a deadlock error. A batch that fails that way (or on a serialization conflict)
//! is served again, up to [`CONFLICT_RETRIES`] times, before its callers see the error.

use crate::StoreError;
use std::{future::Future, sync::Arc};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Why a batched call failed: the error of the batch it was part of.
#[derive(Debug, thiserror::Error)]
#[error("a batched database call failed: {0}")]
pub struct BatchError(#[source] pub Arc<StoreError>);

type Waiter<R> = oneshot::Sender<Result<R, Arc<StoreError>>>;

/// How many times a batch that hit a deadlock or serialization conflict is served again.
pub const CONFLICT_RETRIES: usize = 3;
/// Requests served by one call at most.
pub const MAX_BATCH: usize = 256;

/// Serves requests of type `T` in batches; see the module documentation.
pub(crate) struct Batcher<T, R> {
    sender: mpsc::UnboundedSender<(T, Waiter<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            sender: self.sender.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts `lanes` loops (batches in flight at once) that call `serve` with up to
    /// [`MAX_BATCH`] requests; `serve` answers with one result per request, in order (and may be
    /// called again with the same batch after a conflict). The loops end when the last
    /// clone of the batcher is dropped.
    pub(crate) fn spawn<F, Fut>(lanes: usize, serve: F) -> Self
    where
        T: Sync,
        F: Fn(Arc<Vec<T>>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::unbounded_channel::<(T, Waiter<R>)>();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..lanes.max(1) {
            let (receiver, serve) = (receiver.clone(), serve.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut rx = receiver.lock().await;
                        match rx.recv().await {
                            Some(first) => batch.push(first),
                            None => return,
                        }
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(more) => batch.push(more),
                                Err(_) => break,
                            }
                        }
                    }
                    let (requests, waiters): (Vec<T>, Vec<Waiter<R>>) = batch.into_iter().unzip();
                    let n = requests.len();
                    let requests = Arc::new(requests);
                    let mut tries = 0;
                    let started = std::time::Instant::now();
                    let result = loop {
                        match serve(requests.clone()).await {
                            Err(e) if e.is_conflict() && tries < CONFLICT_RETRIES => {
                                tries += 1;
                                tracing::debug!(error = ?e, tries, "a batch met a conflicting transaction; serving it again");
                            }
                            r => break r,
                        }
                    };
                    tracing::debug!(
                        requests = std::any::type_name::<T>(),
                        n,
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        ok = result.is_ok(),
                        "batch served"
                    );
                    match result {
                        Ok(results) if results.len() == n => {
                            for (w, r) in waiters.into_iter().zip(results) {
                                let _ = w.send(Ok(r));
                            }
                        }
                        Ok(results) => {
                            let e = Arc::new(StoreError::Corrupt(format!(
                                "a batch of {n} requests got {} answers",
                                results.len()
                            )));
                            for w in waiters {
                                let _ = w.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            let e = Arc::new(e);
                            for w in waiters {
                                let _ = w.send(Err(e.clone()));
                            }
                        }
                    }
                }
            });
        }
        Batcher { sender }
    }

    /// Adds `request` to the next batch and waits for its result.
    pub(crate) async fn call(&self, request: T) -> Result<R, BatchError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || BatchError(Arc::new(StoreError::Corrupt("the batch loop stopped".into())));
        self.sender.send((request, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(BatchError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_calls_are_served_together_and_answered_in_order() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let open = gate.clone();
        let b: Batcher<u32, u32> = Batcher::spawn(1, move |reqs: Arc<Vec<u32>>| {
            let (seen, gate) = (seen.clone(), gate.clone());
            async move {
                // The first batch waits until every other call is queued behind it.
                gate.acquire().await.map(|p| p.forget()).ok();
                seen.lock().unwrap().push(reqs.len());
                Ok(reqs.iter().map(|r| r * 2).collect())
            }
        });
        let calls: Vec<_> = (0..10)
            .map(|i| {
                tokio::spawn({
                    let b = b.clone();
                    async move { b.call(i).await.unwrap() }
                })
            })
            .collect();
        // Let every call reach the channel while the first batch is held at the gate.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        open.add_permits(10);
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(
            sizes.len() <= 2,
            "one batch for the first call, one for the rest: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_calls() {
        let b: Batcher<u32, u32> =
            Batcher::spawn(1, |_reqs: Arc<Vec<u32>>| async { Err(StoreError::Timeout) });
        let e = b.call(1).await.unwrap_err();
        assert!(matches!(*e.0, StoreError::Timeout));
    }

    #[tokio::test]
    async fn a_batch_that_met_a_deadlock_is_served_again() {
        let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = tries.clone();
        let b: Batcher<u32, u32> = Batcher::spawn(1, move |reqs: Arc<Vec<u32>>| {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(StoreError::Conflict)
                } else {
                    Ok(reqs.iter().map(|r| r + 1).collect())
                }
            }
        });
        assert_eq!(b.call(41).await.unwrap(), 42);
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
