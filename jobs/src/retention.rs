//! The background loop that applies the retention policy (`Store::prune`) and refreshes
//! SQLite's planner statistics every few minutes, until shutdown.

use crate::{Clock, Store, store::RetentionPolicy};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Time between passes.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Prunes now and then every [`INTERVAL`] until `shutdown` is cancelled.
pub async fn run_retention_until_stopped(
    store: Store,
    clock: Arc<dyn Clock>,
    policy: RetentionPolicy,
    shutdown: CancellationToken,
) {
    loop {
        match store.prune(clock.now(), &policy).await {
            Ok(report) => tracing::debug!(?report, "retention pass"),
            Err(e) => tracing::warn!(error = ?e, "retention pass failed; trying again later"),
        }
        if let Err(e) = store.refresh_statistics().await {
            tracing::warn!(error = ?e, "cannot refresh the query planner's statistics");
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
