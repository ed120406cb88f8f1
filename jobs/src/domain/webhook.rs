//! Webhook subscriptions: where events go, which ones, and the secret that signs them.

use super::{
    Environment, EventType, JobId,
    ids::WebhookId,
    target::{UrlPolicy, check_headers, parse_url},
};
use crate::ValidationError;
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use rand::RngCore;
use std::collections::BTreeMap;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_GRACE_HOURS: i64 = 24;
/// Prefix of generated secrets (Standard Webhooks form: `whsec_` + base64 of the key).
pub const SECRET_PREFIX: &str = "whsec_";
const MAX_HEADERS: usize = 32;
const MAX_DESCRIPTION: usize = 1000;

/// Headers CronFlow sets itself; custom headers may not replace them.
const RESERVED_HEADERS: [&str; 10] = [
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-cronflow-",
];

/// A signing secret. Generated ones are `whsec_` + base64 of 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
    }

    /// A user-supplied secret: 16 to 256 printable ASCII characters without spaces.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = (16..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(ValidationError::new(
                "secret",
                "16 to 256 printable ASCII characters without spaces (or leave it out to get a generated one)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret as the user sees it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key for `X-CronFlow-Signature`: the whole secret's UTF-8 bytes.
    pub fn hmac_key(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The HMAC key for the Standard Webhooks signature: the base64-decoded part after
    /// `whsec_`, or, for a secret not in that form, its UTF-8 bytes.
    pub fn standard_key(&self) -> Vec<u8> {
        self.0
            .strip_prefix(SECRET_PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| self.0.as_bytes().to_vec())
    }
}

/// Which events reach a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Event types (a non-empty subset of the three job events).
    pub events: Vec<EventType>,
    /// Only jobs of this environment, if set.
    pub environment: Option<Environment>,
    /// Only these jobs, if set.
    pub job_ids: Option<Vec<JobId>>,
}

impl EventFilter {
    /// Validates the `events` list (names as sent: `job.failed`, ...).
    pub fn parse(
        events: &[String],
        environment: Option<Environment>,
        job_ids: Option<Vec<String>>,
    ) -> Result<Self, ValidationError> {
        if events.is_empty() {
            return Err(ValidationError::new("events", "subscribe to at least one event"));
        }
        let mut parsed = Vec::new();
        for e in events {
            match EventType::parse(e) {
                Some(t) if t != EventType::WebhookTest => {
                    if !parsed.contains(&t) {
                        parsed.push(t);
                    }
                }
                _ => {
                    return Err(ValidationError::new(
                        "events",
                        format!("`{e}` is not one of job.completed, job.failed, job.timed_out"),
                    ));
                }
            }
        }
        let job_ids = job_ids
            .map(|ids| {
                ids.iter()
                    .map(|s| {
                        JobId::parse(s)
                            .ok_or_else(|| ValidationError::new("job_ids", format!("`{s}` is not a job id")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            events: parsed,
            environment,
            job_ids,
        })
    }

    /// Whether an event of `kind` from `job_id` in `environment` matches.
    pub fn matches(&self, kind: EventType, job_id: &str, environment: &str) -> bool {
        self.events.contains(&kind)
            && self.environment.is_none_or(|e| e.as_str() == environment)
            && self
                .job_ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i.as_str() == job_id))
    }
}

/// Validates custom headers: valid names and values, not one CronFlow sets.
pub fn parse_headers(headers: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ValidationError> {
    if headers.len() > MAX_HEADERS {
        return Err(ValidationError::new(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    check_headers(&headers, &RESERVED_HEADERS)?;
    Ok(headers)
}

/// Validates a subscription URL: https unless the operator allows plain http, and not a
/// literal loopback, private or metadata address unless allowed. (Names are checked
/// again at every attempt, against the address actually connected to.)
pub fn parse_webhook_url(url: &str, policy: UrlPolicy) -> Result<String, ValidationError> {
    parse_url(url, policy).map_err(|m| ValidationError::new("url", m))
}

/// Validates a description.
pub fn parse_description(s: &str) -> Result<String, ValidationError> {
    if s.chars().count() > MAX_DESCRIPTION {
        return Err(ValidationError::new(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(s.to_owned())
}

/// Everything a user defines about a subscription; valid by construction.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    /// Where deliveries go (https unless allowed otherwise).
    pub url: String,
    /// Which events.
    pub filter: EventFilter,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Free text.
    pub description: String,
    /// Whether it receives deliveries.
    pub enabled: bool,
}

/// A stored subscription.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `wh_…`.
    pub id: WebhookId,
    /// Where deliveries go.
    pub url: String,
    /// Which events.
    pub filter: EventFilter,
    /// The current secret.
    pub secret: WebhookSecret,
    /// The previous secret and when it stops signing (after a rotation).
    pub previous_secret: Option<(WebhookSecret, DateTime<Utc>)>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Free text.
    pub description: String,
    /// Disabled subscriptions get no new deliveries.
    pub enabled: bool,
    /// Why it was disabled automatically, if it was.
    pub disabled_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// The secrets that sign a request sent at `now`: the current one, and the previous
    /// one during its grace period.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&WebhookSecret> {
        let mut v = vec![&self.secret];
        if let Some((old, until)) = &self.previous_secret
            && *until > now
        {
            v.push(old);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_decode_to_32_key_bytes() {
        let s = WebhookSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.standard_key().len(), 32);
        let plain = WebhookSecret::parse("my-own-secret-value").unwrap();
        assert_eq!(plain.standard_key(), b"my-own-secret-value");
    }

    #[test]
    fn our_headers_cannot_be_replaced() {
        for name in ["Content-Type", "X-CronFlow-Signature", "webhook-id", "User-Agent"] {
            let h = BTreeMap::from([(name.to_owned(), "x".to_owned())]);
            assert!(parse_headers(h).is_err(), "{name}");
        }
        assert!(parse_headers(BTreeMap::from([("X-Team".to_owned(), "ops".to_owned())])).is_ok());
    }
}
