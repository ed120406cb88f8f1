//! The dead-man's switch loop every `cronflow serve` and `cronflow worker` process runs:
//! a watchdog pass (`Store::watch`) every [`INTERVAL`], on its own task, apart from the
//! scheduler loop and the run queue, so `job.late` is sent even while they are down or
//! stuck. The database makes each alert once however many processes watch.

use crate::{Clock, Store};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Time between passes: how much later than `late_after_seconds` a `job.late` may come.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Watches every [`INTERVAL`] until `shutdown` is cancelled.
pub async fn run_watchdog_until_stopped(store: Store, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        match store.watch(clock.now()).await {
            Ok(report) if report.late + report.overran > 0 => {
                tracing::warn!(
                    late = report.late,
                    overran = report.overran,
                    "watchdog alerts sent"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "watchdog pass failed; trying again later"),
        }
    }
}
