//! The run worker: takes run tasks off the apalis queue and executes them.
//!
//! For each task: wait for the run's slot if the task was queued just ahead of it
//! ([`RunTask::start_at`]), move the run to `running` (a run already `running` means its previous
//! worker died: recover it), execute the target under its timeout while watching for a
//! cancel request, then store the final state, its event, any retry and the release of a
//! queued run in one transaction (`Store::finish_runs`). The database work of runs
//! starting or finishing at about the same time is batched (`crate::batch`): one
//! statement starts them all, one transaction finishes them all.
//!
//! # Crash recovery
//! A worker killed mid-run stops heartbeating; after `heartbeat × missed_heartbeats`
//! (by default 2 s × 3, so within about 8 s) another worker (or this one, restarted)
//! gets the task back from apalis, finds the run `running`, kills what is left of its
//! process group (when the recorded boot id shows it is on this host and boot) and
//! records it `failed` with its event, retrying it if the job allows.
//!
//! # Layout
//! - `command`: running a command in its own process group, with timeout and output capture.
//! - `output`: the bounded head-and-tail output buffer.
//! - this file: the task handler and target execution (the apalis wiring is in
//!   `crate::workers`, the graceful stop every handler goes through in `crate::drain`).

pub mod command;
pub mod output;

use crate::{
    Clock, Store, StoreError,
    batch::{BatchError, Batcher},
    domain::{HttpMethod, Job, Run, RunId, RunState, Target},
    drain::{Drain, on_own_task},
    metrics::Metrics,
    outbound,
    queue::RunTask,
    store::{RunResult, StartOutcome},
};
use apalis::prelude::{BoxDynError, Data, TaskId, WorkerContext};
use command::{CommandSpec, OutcomeKind, RunLimits};
use output::BoundedOutput;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// How often a running run checks whether a user asked to cancel it.
const CANCEL_POLL: Duration = Duration::from_millis(250);
/// The longest a handler holds a task queued ahead of its slot ([`RunTask::start_at`]).
/// The lead is a small fraction of this; a longer wait means this host's clock is behind
/// the database's, and the run then starts early rather than holding a worker slot
/// indefinitely.
const MAX_HOLD: Duration = Duration::from_secs(1);

/// How the worker behaves.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Unique per process (apalis refuses a name that is still heartbeating).
    pub worker_name: String,
    /// Runs executed at once by this process.
    pub concurrency: usize,
    /// First job-retry delay; each further retry doubles it (at most an hour).
    pub retry_base: chrono::Duration,
    /// Allow HTTP targets on loopback and private addresses.
    pub allow_private_targets: bool,
    /// How often the worker heartbeats and polls for delayed tasks (retries).
    pub heartbeat: Duration,
    /// Heartbeats a dead worker may miss before its runs are recovered.
    pub missed_heartbeats: usize,
    /// How long a graceful stop waits for running runs.
    pub shutdown_timeout: Duration,
}

impl RunnerConfig {
    /// Defaults for a worker called `worker_name`.
    pub fn new(worker_name: String) -> Self {
        RunnerConfig {
            worker_name,
            concurrency: 32,
            retry_base: chrono::Duration::seconds(10),
            allow_private_targets: false,
            heartbeat: Duration::from_secs(2),
            missed_heartbeats: 3,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// What every run task handler can reach.
#[derive(Clone)]
pub(crate) struct RunnerContext {
    store: Store,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    config: Arc<RunnerConfig>,
    http: reqwest::Client,
    boot_id: Arc<str>,
    starter: Batcher<RunId, StartOutcome>,
    finisher: Batcher<(RunId, RunResult), ()>,
    groups: Batcher<(RunId, u32, Option<u64>), ()>,
}

impl RunnerContext {
    pub(crate) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: RunnerConfig,
        metrics: Metrics,
    ) -> reqwest::Result<Self> {
        let http = outbound::client(config.allow_private_targets, Duration::from_secs(10))?;
        let boot_id: Arc<str> = boot_id().into();
        let lanes = store.write_lanes();
        let starter = {
            let (store, clock, worker) = (
                store.clone(),
                clock.clone(),
                Arc::<str>::from(config.worker_name.as_str()),
            );
            Batcher::spawn(lanes, move |ids: Arc<Vec<RunId>>| {
                let (store, now, worker) = (store.clone(), clock.now(), worker.clone());
                async move { store.start_runs(&ids, &worker, now).await }
            })
        };
        let finisher = {
            let (store, clock, retry_base) = (store.clone(), clock.clone(), config.retry_base);
            Batcher::spawn(lanes, move |batch: Arc<Vec<(RunId, RunResult)>>| {
                let (store, now) = (store.clone(), clock.now());
                async move {
                    store.finish_runs(&batch, now, retry_base).await?;
                    Ok(vec![(); batch.len()])
                }
            })
        };
        let groups = {
            let (store, boot_id) = (store.clone(), boot_id.clone());
            Batcher::spawn(1, move |batch: Arc<Vec<(RunId, u32, Option<u64>)>>| {
                let (store, boot_id) = (store.clone(), boot_id.clone());
                async move {
                    store.record_process_groups(&batch, &boot_id).await?;
                    Ok(vec![(); batch.len()])
                }
            })
        };
        Ok(RunnerContext {
            store,
            metrics,
            clock,
            config: Arc::new(config),
            http,
            boot_id,
            starter,
            finisher,
            groups,
        })
    }
}

/// This host's boot id: a process group id means something only within one boot.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A name unique to this process: host, pid and a random part.
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let id = crate::domain::RunId::generate();
    let random = &id.as_str()[id.as_str().len() - 6..];
    format!("cronflow-{host}-{}-{random}", std::process::id())
}

/// Why a run task failed (apalis redelivers it).
#[derive(Debug, thiserror::Error)]
enum RunTaskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Handles one run task.
pub(crate) async fn handle_task(
    task: RunTask,
    ctx: Data<RunnerContext>,
    drain: Data<Drain>,
    worker: WorkerContext,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let task_id = task_id.to_string();
    let Some(_started) = drain
        .admit_or_park(crate::queue::RUN_QUEUE, &worker, &task_id)
        .await
    else {
        return Err("the worker is stopping; the run task was handed back".into());
    };
    let Some(run_id) = RunId::parse(&task.run_id) else {
        tracing::error!(run_id = %task.run_id, "a run task names no valid run; dropped");
        return Ok(());
    };
    if let Some(slot) = task.start_at {
        // Queued to become due just before its slot: wait for it (only done with the
        // wall clock, which is what the queue's due times are compared with).
        if let Ok(wait) = (slot - ctx.clock.now()).to_std() {
            tokio::time::sleep(wait.min(MAX_HOLD)).await;
        }
    }
    ctx.execute(&run_id).await.map_err(|e| {
        tracing::error!(run_id = %run_id, error = ?e, "run task failed; apalis will redeliver it");
        Box::new(e) as BoxDynError
    })
}

impl RunnerContext {
    /// Starts the run from apalis's worker task, so that the runs of one slot join one
    /// start batch (spawned first, they reached it over several batches, and the last
    /// started later); then runs and finishes it on a task of its own
    /// ([`on_own_task`]), so that runs use every core.
    async fn execute(&self, run_id: &RunId) -> Result<(), RunTaskError> {
        match self.starter.call(run_id.clone()).await? {
            StartOutcome::Nothing => Ok(()),
            StartOutcome::Orphaned(run) => self.recover(&run).await,
            StartOutcome::Start(started) => {
                let ctx = self.clone();
                on_own_task(async move { ctx.run_started(*started).await }).await
            }
        }
    }

    /// Runs a started run's target and records how it ended.
    async fn run_started(&self, (run, job): (Run, Job)) -> Result<(), RunTaskError> {
        tracing::debug!(run_id = %run.id, job_id = %job.id, "run started");
        let result = self.run_target(&run, &job).await;
        let (state, duration_ms) = (result.state, result.duration_ms);
        self.finisher.call((run.id.clone(), result)).await?;
        self.metrics.run_finished(
            state.as_str(),
            duration_ms as f64 / 1000.0,
            run.lateness_ms.map(|l| l as f64 / 1000.0),
        );
        Ok(())
    }

    /// The run was `running` when its task came back: its worker died. Kill what is left
    /// of its process group (only while the group is still the job's: same host boot,
    /// same leader start time; see [`command::kill_recorded_group`]) and fail it.
    async fn recover(&self, run: &Run) -> Result<(), RunTaskError> {
        if let Some((pgid, boot_id, leader_start)) = self.store.process_group_of(&run.id).await? {
            let group = command::RecordedGroup {
                pgid,
                boot_id,
                leader_start,
            };
            match command::kill_recorded_group(&group, &self.boot_id) {
                Ok(outcome) => {
                    tracing::info!(run_id = %run.id, pgid, ?outcome, "recovered run's process group")
                }
                Err(e) => {
                    tracing::warn!(run_id = %run.id, pgid, error = ?e, "cannot kill the recovered run's process group")
                }
            }
        }
        tracing::warn!(run_id = %run.id, "recovering a run whose worker stopped");
        let result = RunResult {
            state: RunState::Failed,
            exit_code: None,
            output: None,
            error: Some("the worker running this run stopped unexpectedly (killed or crashed)".into()),
            stack_trace: None,
            duration_ms: run
                .started_at
                .map_or(0, |s| (self.clock.now() - s).num_milliseconds().max(0)),
        };
        self.finisher.call((run.id.clone(), result)).await?;
        Ok(())
    }

    /// Executes the job's target, stopping it if a cancel is requested.
    async fn run_target(&self, run: &Run, job: &Job) -> RunResult {
        let cancel = CancellationToken::new();
        let timeout = Duration::from_secs(u64::from(job.spec.timeout_seconds));
        let watch_cancel = async {
            loop {
                tokio::time::sleep(CANCEL_POLL).await;
                if self.store.cancel_requested(&run.id).await.unwrap_or(false) {
                    cancel.cancel();
                    return;
                }
            }
        };
        let exec = async {
            match &job.spec.target {
                Target::Command(c) => self.run_command(run, c, timeout, &cancel).await,
                Target::Http(h) => self.run_http(h, timeout, &cancel).await,
            }
        };
        tokio::pin!(exec);
        tokio::select! {
            result = &mut exec => result,
            () = watch_cancel => exec.await,
        }
    }

    async fn run_command(
        &self,
        run: &Run,
        c: &crate::domain::CommandTarget,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> RunResult {
        let spec = CommandSpec {
            argv: c.command().to_vec(),
            env: c.env().clone(),
            working_dir: c.working_dir().map(str::to_owned),
        };
        let limits = RunLimits::new(timeout);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The leader's start time is read at once, while the leader surely lives.
        let exec = command::run_command(&spec, &limits, cancel, move |pgid| {
            let _ = tx.send((pgid, command::process_start_time(pgid)));
        });
        let record = async {
            if let Ok((pgid, started)) = rx.await
                && let Err(e) = self.groups.call((run.id.clone(), pgid, started)).await
            {
                tracing::warn!(run_id = %run.id, error = ?e, "cannot record the process group");
            }
            std::future::pending::<()>().await;
        };
        let outcome = tokio::select! {
            o = exec => o,
            () = record => unreachable!("pending never completes"),
        };
        RunResult {
            state: match outcome.kind {
                OutcomeKind::Completed => RunState::Completed,
                OutcomeKind::Failed => RunState::Failed,
                OutcomeKind::TimedOut => RunState::TimedOut,
                OutcomeKind::Cancelled => RunState::Cancelled,
            },
            exit_code: outcome.exit_code,
            output: Some(outcome.output),
            error: outcome.message,
            stack_trace: outcome.stack_trace,
            duration_ms: i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX),
        }
    }

    async fn run_http(
        &self,
        h: &crate::domain::HttpTarget,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> RunResult {
        let started = std::time::Instant::now();
        let elapsed = || i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let failed = |error: String, state: RunState| RunResult {
            state,
            exit_code: None,
            output: None,
            error: Some(error),
            stack_trace: None,
            duration_ms: elapsed(),
        };
        let url = match reqwest::Url::parse(h.url()) {
            Ok(u) => u,
            Err(e) => return failed(format!("invalid URL: {e}"), RunState::Failed),
        };
        if let Err(e) = outbound::check_literal_host(&url, self.config.allow_private_targets) {
            return failed(e.to_string(), RunState::Failed);
        }
        let method = match h.method() {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
            HttpMethod::Head => reqwest::Method::HEAD,
        };
        let mut req = self.http.request(method, url).timeout(timeout);
        for (k, v) in h.headers() {
            req = req.header(k, v);
        }
        if let Some(body) = h.body() {
            req = req.body(body.to_owned());
        }
        let exchange = async {
            let mut resp = req.send().await?;
            let status = resp.status();
            let mut body = BoundedOutput::new(output::DEFAULT_OUTPUT_LIMIT);
            while let Some(chunk) = resp.chunk().await? {
                body.push(&chunk);
            }
            Ok::<_, reqwest::Error>((status, body.render()))
        };
        let outcome = tokio::select! {
            r = exchange => r,
            () = cancel.cancelled() => return failed("cancelled by a user".into(), RunState::Cancelled),
        };
        match outcome {
            Ok((status, body)) => RunResult {
                state: if status.is_success() {
                    RunState::Completed
                } else {
                    RunState::Failed
                },
                exit_code: Some(i32::from(status.as_u16())),
                output: Some(body),
                error: (!status.is_success()).then(|| format!("HTTP {status}")),
                stack_trace: None,
                duration_ms: elapsed(),
            },
            Err(e) if e.is_timeout() => failed(
                format!("no complete answer within {} s", timeout.as_secs()),
                RunState::TimedOut,
            ),
            Err(e) => failed(outbound::describe_error(&e).0, RunState::Failed),
        }
    }
}
