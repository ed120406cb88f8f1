//! The dead-man's switch: when a slot is late (its run has not started a while after
//! it) and when a run has overrun, as pure rules. The watchdog (`Store::watch`) reads the
//! ledger and applies them; the database makes each alert once.

use super::{Schedule, job::MAX_TIMEOUT_SECONDS};
use crate::ValidationError;
use chrono::{DateTime, Duration, Utc};

/// `late_after_seconds` unless the job says otherwise.
pub const DEFAULT_LATE_AFTER_SECONDS: u32 = 60;
/// How far back a pass looks for late slots the scheduler never fired: slots older than
/// this (the watchdog was down too) are left to the ledger's `missed` rows.
pub const LATE_LOOKBACK: Duration = Duration::hours(1);
/// Late slots of one job one pass reports at most (the newest).
pub const MAX_LATE_SLOTS_PER_PASS: usize = 100;
/// Completed runs whose durations set a job's usual duration.
pub const RECENT_RUNS: usize = 20;
/// Completed runs a job needs before its usual duration is trusted.
pub const MIN_HISTORY: usize = 5;
/// A run without an expected duration overruns at twice its job's usual 95th
/// percentile, but never before this.
pub const MIN_OVERRAN: Duration = Duration::seconds(10);

/// What a job asks the watchdog to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// `job.late` when a slot's run has not started this long after it (0: never).
    pub late_after_seconds: u32,
    /// `job.overran` past this; when unset, past twice the 95th percentile of the last
    /// [`RECENT_RUNS`] completed runs (at least [`MIN_OVERRAN`]).
    pub expected_duration_seconds: Option<u32>,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            late_after_seconds: DEFAULT_LATE_AFTER_SECONDS,
            expected_duration_seconds: None,
        }
    }
}

impl WatchSettings {
    /// Checks both settings (each at most a week; 0 turns `job.late` off, and leaves the
    /// expected duration unset, which must be below the job's `timeout_seconds`, or the
    /// timeout would always stop the run first).
    pub fn parse(
        late_after_seconds: u32,
        expected_duration_seconds: u32,
        timeout_seconds: u32,
    ) -> Result<Self, ValidationError> {
        if late_after_seconds > MAX_TIMEOUT_SECONDS {
            return Err(ValidationError::new(
                "late_after_seconds",
                format!("at most {MAX_TIMEOUT_SECONDS} (0 turns job.late off)"),
            ));
        }
        if expected_duration_seconds > MAX_TIMEOUT_SECONDS {
            return Err(ValidationError::new(
                "expected_duration_seconds",
                format!("at most {MAX_TIMEOUT_SECONDS} (0: judged from the job's recent runs)"),
            ));
        }
        if expected_duration_seconds >= timeout_seconds && expected_duration_seconds > 0 {
            return Err(ValidationError::new(
                "expected_duration_seconds",
                format!("must be below timeout_seconds ({timeout_seconds}): the timeout stops the run first"),
            ));
        }
        Ok(WatchSettings {
            late_after_seconds,
            expected_duration_seconds: Some(expected_duration_seconds).filter(|s| *s > 0),
        })
    }
}

/// The slots of `schedule`, from `first` (the job's next fire time, not yet fired), that
/// are late at `now`: due `late_after_seconds` or more ago, within [`LATE_LOOKBACK`]
/// before that, the newest [`MAX_LATE_SLOTS_PER_PASS`] of them. None when off (0).
pub fn late_slots(
    schedule: &Schedule,
    first: DateTime<Utc>,
    late_after_seconds: u32,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    if late_after_seconds == 0 {
        return Vec::new();
    }
    let latest = now - Duration::seconds(i64::from(late_after_seconds));
    let earliest = latest - LATE_LOOKBACK;
    let mut slot = if first >= earliest {
        Some(first)
    } else {
        schedule.next_after(earliest - Duration::milliseconds(1))
    };
    let mut slots = std::collections::VecDeque::new();
    while let Some(s) = slot.filter(|s| *s <= latest) {
        if slots.len() == MAX_LATE_SLOTS_PER_PASS {
            slots.pop_front();
        }
        slots.push_back(s);
        slot = schedule.next_after(s);
    }
    slots.into()
}

/// Whether a slot's run, waiting to start since it was fired, is late at `now`.
pub fn waiting_run_is_late(slot: DateTime<Utc>, late_after_seconds: u32, now: DateTime<Utc>) -> bool {
    late_after_seconds > 0 && now - slot >= Duration::seconds(i64::from(late_after_seconds))
}

/// What a run's overrun threshold comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverranBasis {
    /// The job's `expected_duration_seconds`.
    Expected,
    /// Twice the 95th percentile of its recent completed runs.
    RecentRuns,
}

impl OverranBasis {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expected => "expected_duration",
            Self::RecentRuns => "recent_runs",
        }
    }
}

/// How long a run of a job may go before it has overrun, and why: its expected
/// duration, or else twice the 95th percentile (nearest rank) of `recent_ms` (its last
/// completed runs' durations), at least [`MIN_OVERRAN`]; `None` with neither (fewer
/// than [`MIN_HISTORY`] runs), or when the threshold is not below the timeout (the
/// timeout stops the run first).
pub fn overran_threshold(
    expected_duration_seconds: Option<u32>,
    recent_ms: &[i64],
    timeout_seconds: u32,
) -> Option<(Duration, OverranBasis)> {
    let (threshold, basis) = match expected_duration_seconds {
        Some(s) => (Duration::seconds(i64::from(s)), OverranBasis::Expected),
        None if recent_ms.len() >= MIN_HISTORY => {
            let mut sorted = recent_ms.to_vec();
            sorted.sort_unstable();
            let rank = (sorted.len() * 95).div_ceil(100).max(1) - 1;
            let p95 = Duration::milliseconds(sorted[rank]);
            ((p95 * 2).max(MIN_OVERRAN), OverranBasis::RecentRuns)
        }
        None => return None,
    };
    (threshold < Duration::seconds(i64::from(timeout_seconds))).then_some((threshold, basis))
}

/// A job's health, the worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthState {
    /// Its failure streak reached `alert_after_failures`.
    Failing,
    /// A run is going past its overrun threshold.
    Overran,
    /// A slot's run has not started `late_after_seconds` after it.
    Late,
    /// None of these.
    OnTime,
}

impl HealthState {
    /// The worst state that holds.
    pub fn of(failing: bool, overran: bool, late: bool) -> Self {
        match (failing, overran, late) {
            (true, _, _) => Self::Failing,
            (_, true, _) => Self::Overran,
            (_, _, true) => Self::Late,
            _ => Self::OnTime,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Overran => "overran",
            Self::Late => "late",
            Self::OnTime => "on_time",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_slot_is_late_once_late_after_has_passed_and_never_when_off() {
        let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
        let first = at("2026-06-01T12:01:00Z");
        assert!(late_slots(&every_minute, first, 30, at("2026-06-01T12:01:29Z")).is_empty());
        assert_eq!(
            late_slots(&every_minute, first, 30, at("2026-06-01T12:01:30Z")),
            [first]
        );
        assert_eq!(
            late_slots(&every_minute, first, 30, at("2026-06-01T12:03:45Z")),
            [first, at("2026-06-01T12:02:00Z"), at("2026-06-01T12:03:00Z")]
        );
        assert!(late_slots(&every_minute, first, 0, at("2026-06-01T13:00:00Z")).is_empty());
        assert!(waiting_run_is_late(first, 30, at("2026-06-01T12:01:30Z")));
        assert!(!waiting_run_is_late(first, 30, at("2026-06-01T12:01:29Z")));
        assert!(!waiting_run_is_late(first, 0, at("2026-06-02T00:00:00Z")));
    }

    #[test]
    fn a_long_outage_reports_the_newest_late_slots_within_the_lookback() {
        let every_second = Schedule::parse("* * * * * *", "UTC").unwrap();
        let now = at("2026-06-03T00:00:00Z");
        let slots = late_slots(&every_second, at("2026-06-01T00:00:00Z"), 1, now);
        assert_eq!(slots.len(), MAX_LATE_SLOTS_PER_PASS);
        assert_eq!(slots.last(), Some(&at("2026-06-02T23:59:59Z")));
    }

    #[test]
    fn the_overrun_threshold_is_the_expected_duration_or_twice_the_usual_p95() {
        assert_eq!(
            overran_threshold(Some(30), &[], 300),
            Some((Duration::seconds(30), OverranBasis::Expected))
        );
        assert_eq!(
            overran_threshold(None, &[1000; 4], 300),
            None,
            "too little history"
        );
        let recent = [
            1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
            1000, 1000, 1000, 20_000,
        ];
        assert_eq!(
            overran_threshold(None, &recent, 300),
            Some((Duration::seconds(10), OverranBasis::RecentRuns)),
            "p95 of 20 is the 19th: 1 s, doubled, floored at 10 s"
        );
        let slow = [30_000; 20];
        assert_eq!(
            overran_threshold(None, &slow, 300),
            Some((Duration::seconds(60), OverranBasis::RecentRuns))
        );
        assert_eq!(
            overran_threshold(Some(300), &[], 300),
            None,
            "the timeout comes first"
        );
    }

    #[test]
    fn health_shows_the_worst_state() {
        assert_eq!(HealthState::of(false, false, false), HealthState::OnTime);
        assert_eq!(HealthState::of(false, false, true), HealthState::Late);
        assert_eq!(HealthState::of(false, true, true), HealthState::Overran);
        assert_eq!(HealthState::of(true, true, true), HealthState::Failing);
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            WatchSettings::parse(0, 0, 300).unwrap(),
            WatchSettings {
                late_after_seconds: 0,
                expected_duration_seconds: None
            }
        );
        assert_eq!(
            WatchSettings::parse(MAX_TIMEOUT_SECONDS + 1, 0, 300)
                .unwrap_err()
                .field,
            "late_after_seconds"
        );
        assert_eq!(
            WatchSettings::parse(60, MAX_TIMEOUT_SECONDS + 1, MAX_TIMEOUT_SECONDS)
                .unwrap_err()
                .field,
            "expected_duration_seconds"
        );
        assert_eq!(
            WatchSettings::parse(60, 300, 300).unwrap_err().field,
            "expected_duration_seconds",
            "not at or past the timeout"
        );
        assert!(WatchSettings::parse(60, 299, 300).is_ok());
    }
}
