//! Figures derived from the deliveries' and the queue's state, for `/metrics`.

use crate::StoreError;
use crate::store::Store;

/// State-derived figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Deliveries in `retrying`.
    pub retries_waiting: i64,
    /// Dead, unacknowledged deliveries.
    pub dlq_size: i64,
    /// Disabled subscriptions.
    pub disabled_webhooks: i64,
    /// Tasks waiting per queue (due or delayed; not those a worker has taken).
    pub queue_depth: Vec<(String, i64)>,
}

impl Store {
    /// Reads the gauges' values.
    pub async fn gauges(&self) -> Result<Gauges, StoreError> {
        // `next_attempt_at` and `dead_at` name the partial indexes these counts read (see
        // the migration `20261128000005_deliveries_hot_updates`).
        let (retrying, dead, disabled): (i64, i64, i64) = self
            .reader()
            .fetch_one(
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE next_attempt_at IS NOT NULL AND status = 'retrying'), \
                 (SELECT COUNT(*) FROM deliveries WHERE dead_at IS NOT NULL AND NOT acknowledged), \
                 (SELECT COUNT(*) FROM webhooks WHERE NOT enabled)",
                &[],
            )
            .await?;
        Ok(Gauges {
            retries_waiting: retrying,
            dlq_size: dead,
            disabled_webhooks: disabled,
            queue_depth: self.queue_depth().await?,
        })
    }
}
