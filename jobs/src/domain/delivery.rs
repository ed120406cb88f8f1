//! Deliveries: the way of one event to one subscription, its attempts, and the policy
//! that decides after each failed attempt whether to retry (and when) or give up.

use super::{DeliveryId, EventId, JobId, WebhookId};
use chrono::{DateTime, Duration, Utc};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Pending,
    /// An attempt failed; the next one is scheduled (`next_attempt_at`).
    Retrying,
    /// A 2xx answer was received.
    Delivered,
    /// Every retry failed: in the dead letter queue.
    Dead,
    /// Its subscription is disabled: kept, with no attempt queued, until the
    /// subscription is enabled again (then `pending`) or its held deliveries discarded.
    Held,
}

impl DeliveryStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Held => "held",
        }
    }
    /// Every status, in the order of a delivery's life.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Retrying,
        Self::Held,
        Self::Delivered,
        Self::Dead,
    ];

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A delivery as stored.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `dlv_…`; also the idempotency key and `webhook-id`.
    pub id: DeliveryId,
    /// The event delivered.
    pub event_id: EventId,
    /// The subscription it goes to.
    pub webhook_id: WebhookId,
    /// `job.failed`, ...
    pub event_type: String,
    /// The job the event is about (none for `webhook.test`).
    pub job_id: Option<JobId>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made, all rounds.
    pub attempts: u32,
    /// When the next attempt is due, while `retrying`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status code of the last attempt, if an answer came.
    pub last_status_code: Option<i32>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// A dead delivery someone acknowledged (it leaves the DLQ list).
    pub acknowledged: bool,
    /// When the event fanned out to this subscription.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One attempt as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1, 2, ... across all rounds.
    pub attempt: u32,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's status, if one came.
    pub status_code: Option<i32>,
    /// `timeout`, `connect`, `dns`, `tls`, `ssrf_blocked`, `redirect`, `http` (non-2xx),
    /// `interrupted` (its worker stopped before recording it; outcome unknown).
    pub error_kind: Option<String>,
    /// Human-readable error.
    pub error: Option<String>,
    /// The first 4 KiB of the answer's body.
    pub response_excerpt: Option<String>,
}

/// The result of one attempt, as the worker saw it.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's status, if one came.
    pub status_code: Option<i32>,
    /// Why it failed (`None` for a 2xx).
    pub error_kind: Option<&'static str>,
    /// Human-readable error.
    pub error: Option<String>,
    /// The first 4 KiB of the answer.
    pub response_excerpt: Option<String>,
    /// The receiver's `Retry-After` on a 429 or 503, if any.
    pub retry_after: Option<std::time::Duration>,
}

impl AttemptOutcome {
    /// Whether the receiver accepted the delivery (a 2xx).
    pub fn delivered(&self) -> bool {
        self.error_kind.is_none()
    }

    /// Whether the receiver said the endpoint is gone for good (`410 Gone`).
    pub fn gone(&self) -> bool {
        self.status_code == Some(410)
    }
}

/// Upper bound on a receiver's `Retry-After`.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// What the delivery policy needs besides the attempt itself.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy<'a> {
    /// Delays before each retry.
    pub schedule: &'a [std::time::Duration],
    /// A subscription whose every attempt failed for this long is disabled.
    pub disable_after: std::time::Duration,
}

/// What follows an attempt: the delivery's new status and, while `retrying`, when the
/// next attempt is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptDecision {
    /// The delivery's status after the attempt.
    pub status: DeliveryStatus,
    /// When the next attempt is due (only while `retrying`).
    pub next: Option<DateTime<Utc>>,
}

impl DeliveryPolicy<'_> {
    /// Decides what follows an attempt made at `now`, the delivery having made
    /// `round_attempts` attempts before it since its creation or last replay: a 2xx
    /// delivers it; a `410 Gone` kills it at once; otherwise it is retried after the
    /// schedule's next delay (or the receiver's `Retry-After`, if longer, capped at
    /// [`MAX_RETRY_AFTER`]), and once the schedule is exhausted it is dead.
    pub fn decide(
        &self,
        round_attempts: u32,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> AttemptDecision {
        let retry = self
            .schedule
            .get(round_attempts as usize)
            .filter(|_| !outcome.gone());
        match (outcome.delivered(), retry) {
            (true, _) => AttemptDecision {
                status: DeliveryStatus::Delivered,
                next: None,
            },
            (false, Some(delay)) => {
                let wanted = outcome
                    .retry_after
                    .map_or(*delay, |r| (*delay).max(r.min(MAX_RETRY_AFTER)));
                let delay = Duration::from_std(wanted).unwrap_or(Duration::hours(24));
                AttemptDecision {
                    status: DeliveryStatus::Retrying,
                    next: Some(now + delay),
                }
            }
            (false, None) => AttemptDecision {
                status: DeliveryStatus::Dead,
                next: None,
            },
        }
    }

    /// What follows an attempt found `interrupted`: its worker stopped (killed, or lost
    /// its lease) after taking the task and before recording the attempt, so the request
    /// may have gone out and its outcome is unknown. It counts against the budget like a
    /// failed attempt, `round_attempts` having been made before it: dead if it was the
    /// last the schedule allows; otherwise `retrying`, and the task that found it makes
    /// the next attempt at once (the lapsed lease was the wait).
    pub fn after_interruption(&self, round_attempts: u32) -> DeliveryStatus {
        if (round_attempts as usize) < self.schedule.len() {
            DeliveryStatus::Retrying
        } else {
            DeliveryStatus::Dead
        }
    }

    /// Whether a subscription whose attempts have all failed for `failing_for` is to be
    /// disabled.
    pub fn disables(&self, failing_for: std::time::Duration) -> bool {
        failing_for >= self.disable_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration as Std;

    const SCHEDULE: [Std; 3] = [Std::from_secs(30), Std::from_secs(120), Std::from_secs(600)];

    fn policy() -> DeliveryPolicy<'static> {
        DeliveryPolicy {
            schedule: &SCHEDULE,
            disable_after: Std::from_secs(3600),
        }
    }

    fn outcome(status: Option<i32>, retry_after: Option<Std>) -> AttemptOutcome {
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        AttemptOutcome {
            started_at: DateTime::UNIX_EPOCH,
            duration_ms: 1,
            status_code: status,
            error_kind: (!ok).then_some(if status.is_some() { "http" } else { "connect" }),
            error: None,
            response_excerpt: None,
            retry_after,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_000_000, 0).unwrap()
    }

    #[test]
    fn a_2xx_delivers_whatever_the_round() {
        for round in [0, 2, 3, 10] {
            let d = policy().decide(round, &outcome(Some(204), None), now());
            assert_eq!((d.status, d.next), (DeliveryStatus::Delivered, None));
        }
    }

    #[test]
    fn failures_follow_the_schedule_then_die() {
        let delays: Vec<_> = (0..4)
            .map(|round| policy().decide(round, &outcome(Some(500), None), now()))
            .collect();
        assert_eq!(delays[0].next, Some(now() + Duration::seconds(30)));
        assert_eq!(delays[1].next, Some(now() + Duration::seconds(120)));
        assert_eq!(delays[2].next, Some(now() + Duration::seconds(600)));
        assert_eq!((delays[3].status, delays[3].next), (DeliveryStatus::Dead, None));
    }

    #[test]
    fn an_interrupted_attempt_uses_up_the_budget_like_a_failure() {
        let after: Vec<_> = (0..5).map(|round| policy().after_interruption(round)).collect();
        let failed: Vec<_> = (0..5)
            .map(|round| policy().decide(round, &outcome(Some(500), None), now()).status)
            .collect();
        assert_eq!(after, failed);
        assert_eq!(after[2], DeliveryStatus::Retrying);
        assert_eq!(after[3], DeliveryStatus::Dead, "the fourth attempt was the last");
    }

    #[test]
    fn gone_kills_at_once() {
        let d = policy().decide(0, &outcome(Some(410), None), now());
        assert_eq!(d.status, DeliveryStatus::Dead);
    }

    #[test]
    fn retry_after_lengthens_a_retry_but_never_shortens_it_and_is_capped() {
        let longer = policy().decide(0, &outcome(Some(503), Some(Std::from_secs(90))), now());
        assert_eq!(longer.next, Some(now() + Duration::seconds(90)));
        let shorter = policy().decide(0, &outcome(Some(503), Some(Std::from_secs(5))), now());
        assert_eq!(shorter.next, Some(now() + Duration::seconds(30)));
        let huge = policy().decide(0, &outcome(Some(429), Some(Std::from_secs(10 * 86_400))), now());
        assert_eq!(
            huge.next,
            Some(now() + Duration::from_std(MAX_RETRY_AFTER).unwrap())
        );
    }

    #[test]
    fn a_subscription_is_disabled_once_it_failed_for_the_limit() {
        assert!(!policy().disables(Std::from_secs(3599)));
        assert!(policy().disables(Std::from_secs(3600)));
    }

    proptest! {
        /// A failing delivery is retried exactly as many times as the schedule is long:
        /// never more, and every retry is due in the future.
        #[test]
        fn retries_never_exceed_the_schedule(
            len in 0_usize..8,
            codes in proptest::collection::vec(prop_oneof![Just(None), Just(Some(500)), Just(Some(503)), Just(Some(429))], 20),
        ) {
            let schedule: Vec<Std> = (1..=len as u64).map(Std::from_secs).collect();
            let p = DeliveryPolicy { schedule: &schedule, disable_after: Std::from_secs(1) };
            let mut round = 0;
            for code in codes {
                let d = p.decide(round, &outcome(code, None), now());
                if d.status == DeliveryStatus::Dead {
                    break;
                }
                prop_assert_eq!(d.status, DeliveryStatus::Retrying);
                prop_assert!(d.next.is_some_and(|n| n > now()));
                round += 1;
            }
            prop_assert!(round as usize <= len);
            prop_assert!(round as usize == len, "20 failures exhaust any schedule of under 8");
        }
    }
}
