//! Domain types: parsed once at the edge, trusted everywhere after.
//!
//! Each type has a private representation and a fallible `parse` (or `TryFrom`), so a
//! value of the type is valid by construction. The policies live here too, as pure
//! functions the store and workers call: which slots fire and how runs are retried
//! (`firing`), and when a delivery is retried or dead (`delivery`); and how signing
//! secrets are sealed for storage (`secret_box`), and how the audit trail's entries are
//! chained (`audit_chain`); and when a slot is late or a run has overrun (`watch`).

pub mod api_key;
pub mod audit_chain;
pub mod credentials;
pub mod delivery;
pub mod event;
pub mod firing;
pub mod ids;
pub mod job;
pub mod page;
pub mod run;
pub mod schedule;
pub mod secret_box;
pub mod target;
pub mod watch;
pub mod webhook;

pub use api_key::{ApiKey, NewApiKey, Scope};
pub use delivery::{
    Attempt, AttemptDecision, AttemptOutcome, Delivery, DeliveryPolicy, DeliveryStatus, MAX_RETRY_AFTER,
};
pub use event::EventType;
pub use ids::{ApiKeyId, DeliveryId, EventId, JobId, RunId, WebhookId};
pub use job::{CatchUpPolicy, Environment, Job, JobPatch, JobSpec, OverlapPolicy};
pub use page::{Cursor, Page, PageRequest};
pub use run::{Run, RunOrigin, RunState};
pub use schedule::Schedule;
pub use secret_box::SecretKey;
pub use target::{CommandTarget, HttpMethod, HttpTarget, Target};
pub use webhook::{EventFilter, Webhook, WebhookSecret, WebhookSpec};
