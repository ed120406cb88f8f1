//! What every handler can reach.

use cronflow_jobs::{Clock, Store, domain::target::UrlPolicy, metrics::Metrics};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Shared state of the HTTP application; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// "Now", injectable for tests.
    pub clock: Arc<dyn Clock>,
    /// Which outbound URLs jobs and webhooks may target.
    pub url_policy: UrlPolicy,
    /// SHA-256 hex of `CRONFLOW_ADMIN_TOKEN`, if set: that token is an admin key.
    pub admin_token_hash: Option<String>,
    /// Cancelled when the process stops, so long-lived responses (audit follow mode)
    /// end and graceful shutdown is not held up by them.
    pub shutdown: CancellationToken,
    /// The process's metrics registry, rendered by `/metrics`.
    pub metrics: Metrics,
    /// SHA-256 hex of `CRONFLOW_METRICS_TOKEN`: if set, `/metrics` needs it as a bearer
    /// token; if not, `/metrics` answers loopback clients only.
    pub metrics_token_hash: Option<String>,
    /// Delays before each webhook retry (`CRONFLOW_RETRY_SCHEDULE`): the dashboard
    /// shows a delivery's retries left.
    pub retry_schedule: Vec<std::time::Duration>,
}
