//! A job definition: what runs, when, and under which policies.

use super::{Schedule, Target, watch::WatchSettings};
use crate::ValidationError;
use crate::domain::ids::JobId;
use chrono::{DateTime, Utc};

/// Longest job name.
const MAX_NAME: usize = 200;
/// Most tags per job, and longest tag.
const MAX_TAGS: usize = 32;
const MAX_TAG_LEN: usize = 64;
/// Longest timeout: one week.
pub const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;
/// Most retries of one run.
const MAX_RETRIES: u32 = 100;

/// The default timeout of a run, in seconds (five minutes).
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;

/// Declares an enum stored and serialised as fixed lowercase text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? } default $default:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The stored and serialised form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
            /// Parses the stored form.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl Default for $name {
            fn default() -> Self { $name::$default }
        }
    };
}

pub(crate) use text_enum;

text_enum!(
    /// Which deployment a job belongs to; copied into every event.
    Environment {
        /// Live systems.
        Production = "production",
        /// Pre-production.
        Staging = "staging",
    } default Production
);

text_enum!(
    /// What happens when a run is due while the previous one is still going.
    OverlapPolicy {
        /// Do not start it; record a `skipped` run (the default).
        Skip = "skip",
        /// Start it anyway, concurrently.
        Allow = "allow",
        /// Start it when the previous one ends.
        Queue = "queue",
    } default Skip
);

text_enum!(
    /// What happens to slots missed while no scheduler was running.
    CatchUpPolicy {
        /// One run for the whole missed window (the default).
        Latest = "latest",
        /// One run per missed slot, within a bounded window.
        All = "all",
        /// No catch-up run; the missed stretch is recorded as `missed`.
        None = "none",
    } default Latest
);

/// A validated job name: 1 to 200 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobName(String);

impl JobName {
    /// Validates a job name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ValidationError::new("name", "must not be empty"));
        }
        if s.chars().count() > MAX_NAME {
            return Err(ValidationError::new(
                "name",
                format!("at most {MAX_NAME} characters"),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validated tags: at most 32, each 1 to 64 characters without whitespace, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Vec<String>);

impl Tags {
    /// Validates tags, keeping their order.
    pub fn parse(tags: Vec<String>) -> Result<Self, ValidationError> {
        if tags.len() > MAX_TAGS {
            return Err(ValidationError::new("tags", format!("at most {MAX_TAGS} tags")));
        }
        for (i, t) in tags.iter().enumerate() {
            if t.is_empty()
                || t.chars().count() > MAX_TAG_LEN
                || t.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ValidationError::new(
                    "tags",
                    format!("`{t}` is not a valid tag (1-{MAX_TAG_LEN} characters, no spaces)"),
                ));
            }
            if tags[..i].contains(t) {
                return Err(ValidationError::new("tags", format!("`{t}` appears twice")));
            }
        }
        Ok(Self(tags))
    }
    /// The tags.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Checks a timeout in seconds (1 s to one week).
pub fn check_timeout(seconds: u32) -> Result<u32, ValidationError> {
    if seconds == 0 || seconds > MAX_TIMEOUT_SECONDS {
        return Err(ValidationError::new(
            "timeout_seconds",
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    Ok(seconds)
}

/// The longest failure streak `alert_after_failures` may wait for.
pub const MAX_ALERT_AFTER_FAILURES: u32 = 1000;

/// Checks a failure-streak threshold (0, off, to [`MAX_ALERT_AFTER_FAILURES`]).
pub fn check_alert_after_failures(n: u32) -> Result<u32, ValidationError> {
    if n > MAX_ALERT_AFTER_FAILURES {
        return Err(ValidationError::new(
            "alert_after_failures",
            format!("at most {MAX_ALERT_AFTER_FAILURES} (0 turns the alert off)"),
        ));
    }
    Ok(n)
}

/// Whether a failure streak of `streak` final runs calls for `job.failing`: the job
/// asks for it (`alert_after`, 0 is off), the streak has reached it, and no alert was
/// sent for this streak yet (`alerted`). `job.recovered` follows the next completed run
/// of an alerted streak.
pub fn failing_alert_due(streak: u32, alert_after: u32, alerted: bool) -> bool {
    alert_after > 0 && streak >= alert_after && !alerted
}

/// Checks a retry count (0 to 100).
pub fn check_max_retries(n: u32) -> Result<u32, ValidationError> {
    if n > MAX_RETRIES {
        return Err(ValidationError::new(
            "max_retries",
            format!("at most {MAX_RETRIES}"),
        ));
    }
    Ok(n)
}

/// Everything a user defines about a job; valid by construction.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Display name (need not be unique).
    pub name: JobName,
    /// When it fires.
    pub schedule: Schedule,
    /// What it runs.
    pub target: Target,
    /// Seconds before a run is stopped and marked `timed_out`.
    pub timeout_seconds: u32,
    /// Retries of a failed run, with exponential backoff.
    pub max_retries: u32,
    /// Copied into every event of the job.
    pub environment: Environment,
    /// Behaviour when a run is due while the previous one still runs.
    pub overlap_policy: OverlapPolicy,
    /// Behaviour for slots missed during downtime.
    pub catch_up: CatchUpPolicy,
    /// Free-form labels for filtering.
    pub tags: Tags,
    /// Send `job.failing` once this many final runs in a row failed or timed out, and
    /// `job.recovered` at the next completed run (0: never).
    pub alert_after_failures: u32,
    /// When the watchdog sends `job.late` and `job.overran`.
    pub watch: WatchSettings,
}

/// A change to a job: each `Some` replaces that part; the result is validated as a whole.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    /// New name.
    pub name: Option<JobName>,
    /// New cron expression (parsed together with the resulting time zone).
    pub schedule: Option<String>,
    /// New time zone (parsed together with the resulting expression).
    pub timezone: Option<String>,
    /// New target.
    pub target: Option<Target>,
    /// New timeout.
    pub timeout_seconds: Option<u32>,
    /// New retry count.
    pub max_retries: Option<u32>,
    /// New environment.
    pub environment: Option<Environment>,
    /// New overlap policy.
    pub overlap_policy: Option<OverlapPolicy>,
    /// New catch-up policy.
    pub catch_up: Option<CatchUpPolicy>,
    /// New tags (replacing all).
    pub tags: Option<Tags>,
    /// New failure-streak threshold.
    pub alert_after_failures: Option<u32>,
    /// New `late_after_seconds` (0 turns `job.late` off).
    pub late_after_seconds: Option<u32>,
    /// New `expected_duration_seconds` (0 unsets it).
    pub expected_duration_seconds: Option<u32>,
}

impl JobPatch {
    /// Whether the patch changes when the job fires.
    pub fn changes_schedule(&self) -> bool {
        self.schedule.is_some() || self.timezone.is_some()
    }
}

impl JobSpec {
    /// The spec with `patch` applied; values of a new target shown redacted keep the
    /// stored ones.
    pub fn patched(&self, patch: JobPatch) -> Result<JobSpec, ValidationError> {
        let schedule = if patch.changes_schedule() {
            Schedule::parse(
                patch.schedule.as_deref().unwrap_or(self.schedule.expr()),
                patch.timezone.as_deref().unwrap_or(self.schedule.timezone()),
            )?
        } else {
            self.schedule.clone()
        };
        let timeout_seconds = patch.timeout_seconds.unwrap_or(self.timeout_seconds);
        Ok(JobSpec {
            name: patch.name.unwrap_or_else(|| self.name.clone()),
            schedule,
            target: match patch.target {
                Some(t) => t.keeping_stored_credentials(&self.target)?,
                None => self.target.clone(),
            },
            timeout_seconds,
            max_retries: patch.max_retries.unwrap_or(self.max_retries),
            environment: patch.environment.unwrap_or(self.environment),
            overlap_policy: patch.overlap_policy.unwrap_or(self.overlap_policy),
            catch_up: patch.catch_up.unwrap_or(self.catch_up),
            tags: patch.tags.unwrap_or_else(|| self.tags.clone()),
            alert_after_failures: patch.alert_after_failures.unwrap_or(self.alert_after_failures),
            watch: WatchSettings::parse(
                patch.late_after_seconds.unwrap_or(self.watch.late_after_seconds),
                patch
                    .expected_duration_seconds
                    .unwrap_or(self.watch.expected_duration_seconds.unwrap_or(0)),
                timeout_seconds,
            )?,
        })
    }
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id (`wf_…`).
    pub id: JobId,
    /// Its definition.
    pub spec: JobSpec,
    /// Paused jobs do not fire; `next_run_at` is `None` while paused.
    pub paused: bool,
    /// The next scheduled fire time, kept in the database (the scheduler's source of truth).
    pub next_run_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Final runs in a row that failed or timed out, up to the last one.
    pub failure_streak: u32,
    /// Whether `job.failing` was sent for the current streak.
    pub failure_alerted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_streak_alerts_once_at_its_threshold_and_never_when_off() {
        assert!(!failing_alert_due(1, 2, false));
        assert!(failing_alert_due(2, 2, false));
        assert!(!failing_alert_due(3, 2, true), "once per streak");
        assert!(
            failing_alert_due(5, 2, false),
            "a streak that passed it unalerted still alerts"
        );
        assert!(!failing_alert_due(1000, 0, false), "0 is off");
    }
}
