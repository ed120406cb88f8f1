//! Webhook subscriptions: what `POST`/`PATCH /v1/webhooks` accept and what the
//! subscription routes return.

use super::jobs::Environment;
use chrono::{DateTime, Utc};
use cronflow_jobs::{
    ValidationError,
    domain::{
        self,
        credentials::{redact_map, redact_url, restore_map, restore_url},
        target::UrlPolicy,
    },
};
use poem_openapi::{Enum, Object, types::Example};
use std::collections::BTreeMap;

/// An event a subscription can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum WebhookEvent {
    /// A run finished successfully.
    #[oai(rename = "job.completed")]
    Completed,
    /// A run failed.
    #[oai(rename = "job.failed")]
    Failed,
    /// A run exceeded its timeout.
    #[oai(rename = "job.timed_out")]
    TimedOut,
    /// A job's final runs failed `alert_after_failures` times in a row (once a streak).
    #[oai(rename = "job.failing")]
    Failing,
    /// The first completed run after a streak that sent `job.failing`.
    #[oai(rename = "job.recovered")]
    Recovered,
    /// A slot (or manual trigger) not run because the previous run was still going.
    #[oai(rename = "job.skipped")]
    Skipped,
    /// A stretch of downtime whose slots the catch-up policy did not run.
    #[oai(rename = "job.missed")]
    Missed,
    /// A slot's run had not started `late_after_seconds` after it (the watchdog).
    #[oai(rename = "job.late")]
    Late,
    /// A run went on past its expected duration (the watchdog).
    #[oai(rename = "job.overran")]
    Overran,
}

impl WebhookEvent {
    pub(crate) fn wire(self) -> String {
        match self {
            Self::Completed => "job.completed",
            Self::Failed => "job.failed",
            Self::TimedOut => "job.timed_out",
            Self::Failing => "job.failing",
            Self::Recovered => "job.recovered",
            Self::Skipped => "job.skipped",
            Self::Missed => "job.missed",
            Self::Late => "job.late",
            Self::Overran => "job.overran",
        }
        .to_owned()
    }

    fn from_domain(e: domain::EventType) -> Option<Self> {
        match e {
            domain::EventType::JobCompleted => Some(Self::Completed),
            domain::EventType::JobFailed => Some(Self::Failed),
            domain::EventType::JobTimedOut => Some(Self::TimedOut),
            domain::EventType::JobFailing => Some(Self::Failing),
            domain::EventType::JobRecovered => Some(Self::Recovered),
            domain::EventType::JobSkipped => Some(Self::Skipped),
            domain::EventType::JobMissed => Some(Self::Missed),
            domain::EventType::JobLate => Some(Self::Late),
            domain::EventType::JobOverran => Some(Self::Overran),
            domain::EventType::WebhookTest => None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A new webhook subscription.
#[derive(Debug, Object)]
#[oai(rename = "WebhookIn", deny_unknown_fields, example)]
pub(crate) struct WebhookIn {
    /// Where to POST events: `https://…` (plain http only if the operator allows it).
    #[oai(validator(min_length = 1))]
    url: String,
    /// Which events (at least one).
    #[oai(validator(min_items = 1))]
    events: Vec<WebhookEvent>,
    /// Only events of jobs in this environment.
    environment: Option<Environment>,
    /// Only events of these jobs (`wf_…`).
    #[oai(validator(pattern = "^wf_[0-9a-z]{1,64}$"))]
    job_ids: Option<Vec<String>>,
    /// Your own signing secret (16-256 printable ASCII characters, no spaces); by default
    /// one is generated (`whsec_` + base64 of 32 random bytes). Returned once, in this
    /// response.
    #[oai(validator(min_length = 16, max_length = 256, pattern = "^[!-~]+$"))]
    secret: Option<String>,
    /// Extra headers sent with every delivery, at most 32 (they cannot replace CronFlow's).
    #[oai(default, validator(max_properties = 32))]
    headers: BTreeMap<String, String>,
    /// Free text, at most 1000 characters.
    #[oai(default, validator(max_length = 1000))]
    description: String,
    /// Default true.
    #[oai(default = "default_true")]
    enabled: bool,
}

impl Example for WebhookIn {
    fn example() -> Self {
        WebhookIn {
            url: "https://example.com/hooks".into(),
            events: vec![WebhookEvent::Failed, WebhookEvent::TimedOut],
            environment: None,
            job_ids: None,
            secret: None,
            headers: BTreeMap::new(),
            description: "on-call alerts".into(),
            enabled: true,
        }
    }
}

impl WebhookIn {
    /// Parses the body into a subscription definition and its secret.
    pub(crate) fn into_spec(
        self,
        policy: UrlPolicy,
    ) -> Result<(domain::WebhookSpec, domain::WebhookSecret), ValidationError> {
        let secret = match self.secret.as_deref() {
            Some(s) => domain::WebhookSecret::parse(s)?,
            None => domain::WebhookSecret::generate(),
        };
        let events: Vec<String> = self.events.iter().map(|e| e.wire()).collect();
        Ok((
            domain::WebhookSpec {
                url: domain::webhook::parse_webhook_url(&self.url, policy)?,
                filter: domain::EventFilter::parse(&events, self.environment.map(Into::into), self.job_ids)?,
                headers: domain::webhook::parse_headers(self.headers)?,
                description: domain::webhook::parse_description(&self.description)?,
                enabled: self.enabled,
            },
            secret,
        ))
    }
}

/// A change to a subscription: fields present replace its own. `"enabled": true`
/// re-enables one that was disabled (and clears the reason).
#[derive(Debug, Object)]
#[oai(rename = "WebhookPatch", deny_unknown_fields)]
pub(crate) struct WebhookPatchIn {
    #[oai(validator(min_length = 1))]
    url: Option<String>,
    #[oai(validator(min_items = 1))]
    events: Option<Vec<WebhookEvent>>,
    environment: Option<Environment>,
    #[oai(validator(pattern = "^wf_[0-9a-z]{1,64}$"))]
    job_ids: Option<Vec<String>>,
    #[oai(validator(max_properties = 32))]
    headers: Option<BTreeMap<String, String>>,
    #[oai(validator(max_length = 1000))]
    description: Option<String>,
    /// `true` enables a disabled subscription: its held deliveries (the events that came
    /// while it was disabled) are released, oldest first.
    enabled: Option<bool>,
    /// `true` deletes the subscription's held deliveries instead of releasing them
    /// (recorded in the audit log with their count).
    discard_held: Option<bool>,
}

impl WebhookPatchIn {
    /// Whether the patch discards the held deliveries.
    pub(crate) fn discard_held(&self) -> bool {
        self.discard_held.unwrap_or(false)
    }

    /// The subscription's definition with the patch applied, validated as a whole.
    pub(crate) fn apply(
        self,
        current: &domain::Webhook,
        policy: UrlPolicy,
    ) -> Result<domain::WebhookSpec, ValidationError> {
        let events: Vec<String> = match self.events {
            Some(e) => e.iter().map(|e| e.wire()).collect(),
            None => current
                .filter
                .events
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
        };
        let job_ids = match self.job_ids {
            Some(ids) => Some(ids),
            None => current
                .filter
                .job_ids
                .as_ref()
                .map(|ids| ids.iter().map(|i| i.to_string()).collect()),
        };
        let environment = self.environment.map(Into::into).or(current.filter.environment);
        Ok(domain::WebhookSpec {
            url: match self.url {
                Some(url) => {
                    domain::webhook::parse_webhook_url(&restore_url(&url, &current.url, "url")?, policy)?
                }
                None => current.url.clone(),
            },
            filter: domain::EventFilter::parse(&events, environment, job_ids)?,
            headers: match self.headers {
                Some(h) => domain::webhook::parse_headers(restore_map(h, &current.headers, "headers")?)?,
                None => current.headers.clone(),
            },
            description: domain::webhook::parse_description(
                self.description.as_deref().unwrap_or(&current.description),
            )?,
            enabled: self.enabled.unwrap_or(current.enabled),
        })
    }
}

/// A webhook subscription (its secret is shown only on create and rotate).
#[derive(Debug, Object)]
#[oai(rename = "Webhook")]
pub(crate) struct WebhookOut {
    /// `wh_…`.
    id: String,
    /// Query values and a password read back as `[redacted]` (`POST /v1/reveal` shows
    /// them); kept when sent back so.
    url: String,
    events: Vec<WebhookEvent>,
    #[oai(skip_serializing_if_is_none)]
    environment: Option<Environment>,
    #[oai(skip_serializing_if_is_none)]
    job_ids: Option<Vec<String>>,
    /// Custom headers; values read back as `[redacted]`, kept when sent back so.
    headers: BTreeMap<String, String>,
    description: String,
    enabled: bool,
    /// Why CronFlow disabled it, if it did.
    #[oai(skip_serializing_if_is_none)]
    disabled_reason: Option<String>,
    /// After a rotation: until when the previous secret still signs.
    #[oai(skip_serializing_if_is_none)]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&domain::Webhook> for WebhookOut {
    fn from(w: &domain::Webhook) -> Self {
        WebhookOut {
            id: w.id.to_string(),
            url: redact_url(&w.url),
            events: w
                .filter
                .events
                .iter()
                .filter_map(|e| WebhookEvent::from_domain(*e))
                .collect(),
            environment: w.filter.environment.map(Into::into),
            job_ids: w
                .filter
                .job_ids
                .as_ref()
                .map(|ids| ids.iter().map(|i| i.to_string()).collect()),
            headers: redact_map(&w.headers),
            description: w.description.clone(),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            previous_secret_expires_at: w.previous_secret.as_ref().map(|(_, until)| *until),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A subscription with its secret: only in the answers to create and rotate-secret.
#[derive(Debug, Object)]
#[oai(rename = "WebhookWithSecret")]
pub(crate) struct WebhookWithSecretOut {
    #[oai(flatten)]
    pub(crate) webhook: WebhookOut,
    /// The signing secret. Keep it: it is not shown again.
    pub(crate) secret: String,
}

/// One page of subscriptions, in creation order.
#[derive(Debug, Object)]
#[oai(rename = "WebhookList")]
pub(crate) struct WebhookList {
    pub(crate) items: Vec<WebhookOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}

/// A test event was queued for delivery.
#[derive(Debug, Object)]
#[oai(rename = "TestSent")]
pub(crate) struct TestSentOut {
    /// Follow it with `GET /v1/deliveries/{id}`.
    pub(crate) delivery_id: String,
}
