//! The real run and delivery workers (`cronflow::startup::run_worker`), started in the
//! background on a bench database with the process's settings.

use anyhow::Context;
use cronflow::{Settings, startup::run_worker};
use cronflow_jobs::{Clock, Store, SystemClock, signals::Signals};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The worker's settings: the process's, on the bench database, with `concurrency`.
pub(crate) fn worker_settings(settings: &Settings, url: &str, concurrency: usize) -> Settings {
    let mut s = settings.clone();
    s.database_url = url.into();
    s.worker_concurrency = concurrency;
    s
}

/// A worker running in the background until its token is cancelled.
pub(crate) struct BackgroundWorker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BackgroundWorker {
    /// Starts the workers on `store`, woken by `signals` (those `store` reports to).
    pub(crate) fn start(store: &Store, signals: &Signals, settings: Settings) -> Self {
        let stop = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (store, signals, token) = (store.clone(), signals.clone(), stop.clone());
        let task = tokio::spawn(async move {
            run_worker(
                store,
                &signals,
                clock,
                &settings,
                cronflow_jobs::metrics::Metrics::new(),
                token,
            )
            .await
        });
        BackgroundWorker { stop, task }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("the run worker panicked")?
    }
}
