//! Figures derived from the deliveries' and the queue's state, for `/metrics`.

use crate::StoreError;
use crate::store::Store;

/// State-derived figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Deliveries in `retrying`.
    pub retries_waiting: i64,
    /// Deliveries `held` for a disabled subscription.
    pub held: i64,
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
        // The deliveries' figures are kept by triggers (migration
        // `20261207000003_delivery_gauges`), over several rows on Postgres. Subscriptions
        // are few (one row each, never pruned), so they are counted.
        let (retrying, held, dead, disabled): (i64, i64, i64, i64) = self
            .reader()
            .fetch_one(
                "SELECT CAST(COALESCE(SUM(retrying), 0) AS BIGINT), CAST(COALESCE(SUM(held), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(dead), 0) AS BIGINT), \
                 (SELECT COUNT(*) FROM webhooks WHERE NOT enabled) FROM delivery_gauges",
                &[],
            )
            .await?;
        Ok(Gauges {
            retries_waiting: retrying,
            held,
            dlq_size: dead,
            disabled_webhooks: disabled,
            queue_depth: self.queue_depth().await?,
        })
    }
}
