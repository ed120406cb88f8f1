//! The scheduler loop: fires due jobs, then sleeps until the next one is due.
//!
//! Each pass is [`Store::fire_due`]: one transaction that creates the due runs (the
//! unique (job, slot, attempt) key makes each slot fire once, whatever the number of
//! schedulers), pushes their queue tasks and moves each job's `next_fire_at`, which is
//! computed from the previous slot, never from "now", so schedules do not drift.
//! Between passes the loop sleeps until the earliest `next_fire_at`, a change made in
//! this process, or [`IDLE_POLL`] (so jobs changed by other processes are seen), and
//! stops when `shutdown` is cancelled.
//!
//! Jobs with overlap `allow` are fired [`LOOKAHEAD`] ahead of their slots
//! ([`Store::fire_due_ahead`]): their runs and queue tasks already exist when the slot
//! comes, and this process's worker is woken at that instant (on Postgres a little before
//! it, the worker holding each task until its slot: see the store's queue room), so a run
//! starts within milliseconds of its slot even when many fall due together. Consequently
//! a change to
//! such a job (pause, new schedule, delete) applies to slots more than [`LOOKAHEAD`]
//! away; runs already created for nearer slots still run (those of a deleted job
//! do not). With an injected clock (tests) nothing is fired ahead.

use crate::{Clock, Store, signals::Signals};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Longest sleep between passes when nothing is due sooner.
pub const IDLE_POLL: Duration = Duration::from_millis(250);
/// How far ahead of their slots jobs with overlap `allow` are fired. Passes then come
/// at `slot - LOOKAHEAD`: a half second keeps them between whole-second slots, so a pass
/// (which holds SQLite's write lock while it commits) never competes with the worker
/// taking the runs of a slot that is due.
pub const LOOKAHEAD: Duration = Duration::from_millis(1500);
/// Pause after a failed pass (database unreachable) before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs scheduler passes until `shutdown` is cancelled. `signals` are this process's
/// (those `store` reports to): a change of schedule cuts a sleep short, and the run
/// worker is woken when the runs fired ahead become due.
pub async fn run_scheduler_until_stopped(
    store: Store,
    signals: Signals,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let changed = signals.schedule();
    let lookahead = if clock.is_wall_clock() {
        chrono::Duration::from_std(LOOKAHEAD).unwrap_or_default()
    } else {
        chrono::Duration::zero()
    };
    tracing::info!("scheduler started");
    loop {
        let now = clock.now();
        let pass = store.fire_due_ahead(now, lookahead).await;
        if let Ok(report) = &pass {
            signals.wake_runs_when_due(&report.due_ahead, now);
        }
        let wait = match pass {
            Ok(report) if report.jobs as i64 >= crate::store::FIRE_BATCH => Duration::ZERO,
            Ok(report) => {
                if report.fired + report.skipped + report.missed > 0 {
                    tracing::debug!(?report, "scheduler pass");
                }
                match store.next_due_at(lookahead).await {
                    Ok(Some(next)) => (next - clock.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(IDLE_POLL),
                    Ok(None) => IDLE_POLL,
                    Err(e) => {
                        tracing::warn!(error = ?e, "scheduler cannot read the next due time");
                        ERROR_BACKOFF
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = ?e, "scheduler pass failed; retrying");
                ERROR_BACKOFF
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}
