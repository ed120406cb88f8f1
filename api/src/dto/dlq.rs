//! The dead letter queue: what `POST /v1/dlq/replay` accepts and answers.

use super::webhooks::WebhookEvent;
use chrono::{DateTime, Utc};
use cronflow_jobs::{ValidationError, domain};
use poem_openapi::Object;

/// Which dead deliveries to replay; every field narrows the selection.
#[derive(Debug, Object)]
#[oai(rename = "DlqReplayIn", deny_unknown_fields)]
pub(crate) struct ReplayIn {
    /// Only deliveries to this subscription (`wh_…`).
    #[oai(validator(pattern = "^wh_[0-9a-z]{1,64}$"))]
    pub(crate) webhook_id: Option<String>,
    /// Only this event type.
    pub(crate) event_type: Option<WebhookEvent>,
    /// Created at or after.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Created before.
    pub(crate) until: Option<DateTime<Utc>>,
}

impl ReplayIn {
    pub(crate) fn into_filter(self) -> Result<cronflow_jobs::store::ReplayFilter, ValidationError> {
        Ok(cronflow_jobs::store::ReplayFilter {
            webhook_id: self
                .webhook_id
                .map(|w| {
                    domain::WebhookId::parse(&w)
                        .ok_or_else(|| ValidationError::new("webhook_id", "not a webhook id"))
                })
                .transpose()?,
            event_type: self.event_type.map(WebhookEvent::wire),
            since: self.since,
            until: self.until,
        })
    }
}

/// How many deliveries a bulk replay queued again.
#[derive(Debug, Object)]
#[oai(rename = "DlqReplayed")]
pub(crate) struct ReplayedOut {
    pub(crate) replayed: u64,
}
