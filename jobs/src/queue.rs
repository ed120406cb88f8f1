//! The queues' names and task payloads: what the workers deserialize. No SQL lives here:
//! pushing, acknowledging and every other use of apalis's tables is the store's queue
//! room (`store::queue`).
//!
//! Tasks are pushed inside CronFlow's own transactions (the scheduler's, a manual
//! trigger's, a finishing run's), so a run row and its task exist together or not at all.
//! apalis's own retries are not used for job retries: a retry is a new run row with its
//! own task.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The apalis queue of runs (never the Rust type name, which would change on a rename).
pub const RUN_QUEUE: &str = "cronflow-runs";
/// The apalis queue of webhook delivery attempts.
pub const DELIVERY_QUEUE: &str = "cronflow-deliveries";

/// The payload of a run task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTask {
    /// The run to execute.
    pub run_id: String,
    /// For a run queued to become due a little before its slot (on Postgres), the slot:
    /// the worker that takes the task holds it until then, so the run starts at its
    /// slot, not after a fetch that began at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
}

/// The payload of a delivery task: one attempt of one delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryTask {
    /// The delivery to attempt.
    pub delivery_id: String,
}
