//! The scheduler loop: fires due jobs, then sleeps until the next one is due.
//!
//! Each pass is [`Store::fire_due`]: one transaction that creates the due runs (the
//! unique (job, slot, attempt) key makes each slot fire once, whatever the number of
//! schedulers), pushes their queue tasks and moves each job's `next_fire_at`, which is
//! computed from the previous slot, never from "now", so schedules do not drift.
//! Between passes the loop sleeps until the earliest `next_fire_at`, a change made in
//! this process, or [`IDLE_POLL`] (so jobs changed by other processes are seen), and
//! stops when `shutdown` is cancelled.

use crate::{Clock, Store};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Longest sleep between passes when nothing is due sooner.
pub const IDLE_POLL: Duration = Duration::from_millis(250);
/// Pause after a failed pass (database unreachable) before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs scheduler passes until `shutdown` is cancelled.
pub async fn run_scheduler_until_stopped(store: Store, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    let changed = store.schedule_changed();
    tracing::info!("scheduler started");
    loop {
        let wait = match store.fire_due(clock.now()).await {
            Ok(report) if report.jobs as i64 >= crate::store::FIRE_BATCH => Duration::ZERO,
            Ok(report) => {
                if report.fired + report.skipped + report.missed > 0 {
                    tracing::debug!(?report, "scheduler pass");
                }
                match store.next_due_at().await {
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
