//! A job's schedule: a cron expression evaluated in an IANA time zone.
//!
//! # Syntax
//! Five fields (`minute hour day-of-month month day-of-week`), six with seconds first,
//! or one of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly`. Lists, ranges, steps, month and weekday names, `L`, `W` and `#` work as in
//! Vixie cron; when both day-of-month and day-of-week are restricted, either may match.
//!
//! # Time zones and daylight saving time
//! Fire times are computed in the job's zone (default UTC), each from the previous
//! scheduled instant (never from "now"), so schedules do not drift. The DST rule is
//! croner's (the Open Cron Pattern Specification's):
//! - A *fixed-time* schedule (exactly one second, minute and hour, such as `30 2 * * *`)
//!   whose time falls into a spring-forward gap fires at the first valid instant after
//!   the gap (02:30 → 03:00 local); when its time occurs twice in a fall-back fold it
//!   fires once, at the first occurrence.
//! - Every other schedule (wildcards, steps, ranges, lists such as `30 1,2 * * *`) skips
//!   slots that fall into a gap and fires slots in a fold on both passes, in real-time
//!   order; no instant is ever produced twice or out of order.
//!
//! `GET /v1/jobs/{id}` lists the next fire times, so a schedule's behaviour around a DST
//! change can be checked before trusting it.

use crate::ValidationError;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    tz: Tz,
    cron: Cron,
}

/// Names and bounds of the fields of a six-field expression; five-field expressions
/// use the last five.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

impl Schedule {
    /// Parses `expr` (the `schedule` field) in the zone named `timezone` (the `timezone`
    /// field). Refuses expressions that can never fire, such as `0 0 30 2 *`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, ValidationError> {
        let tz: Tz = timezone.parse().map_err(|_| {
            ValidationError::new(
                "timezone",
                format!("unknown time zone `{timezone}`: use an IANA name such as `UTC` or `Europe/Berlin`"),
            )
        })?;
        let expr = expr.trim();
        let err = |msg: String| ValidationError::new("schedule", msg);
        if expr.is_empty() {
            return Err(err("the cron expression is empty".into()));
        }
        let for_croner = if expr.starts_with('@') {
            let lower = expr.to_ascii_lowercase();
            if !MACROS.contains(&lower.as_str()) {
                return Err(err(format!(
                    "unknown macro `{expr}`: use one of {}",
                    MACROS.join(", ")
                )));
            }
            if lower == "@midnight" {
                "@daily".to_owned()
            } else {
                lower
            }
        } else {
            check_fields(expr).map_err(err)?;
            expr.to_owned()
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&for_croner)
            .map_err(|e| err(format!("invalid cron expression `{expr}`: {e}")))?;
        let schedule = Self {
            expr: expr.to_owned(),
            tz,
            cron,
        };
        // With no year field, an expression that matches any date matches one in every
        // 400-year Gregorian cycle: whether it ever fires does not depend on "now".
        if schedule.next_after(DateTime::<Utc>::UNIX_EPOCH).is_none() {
            return Err(err(format!(
                "the cron expression `{expr}` never fires (no matching date exists)"
            )));
        }
        Ok(schedule)
    }

    /// The expression as the user wrote it.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The IANA name of the schedule's time zone.
    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// The first fire time strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Up to `n` fire times after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(self.next_after(after), |t| self.next_after(*t))
            .take(n)
            .collect()
    }
}

/// Checks the field count and every numeric value against its field's bounds, so the
/// error can name the field (croner's own messages do not).
fn check_fields(expr: &str) -> Result<(), String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let fields: &[(&str, u32, u32)] = match parts.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS,
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 \
                 (second first), found {n} in `{expr}`"
            ));
        }
    };
    for (value, (name, min, max)) in parts.iter().zip(fields) {
        for item in value.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(0) => return Err(format!("{name} field `{value}`: a step must be at least 1")),
                    Ok(_) => {}
                    Err(_) => return Err(format!("{name} field `{value}`: step `{step}` is not a number")),
                }
            }
            for bound in range.split('-') {
                // `5#2` (second Friday) and `15W` carry a number before a marker.
                let number = bound.split('#').next().unwrap_or(bound);
                if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
                    let n: u32 = number.parse().unwrap_or(u32::MAX);
                    if n < *min || n > *max {
                        return Err(format!("{name} field `{value}`: {number} is outside {min}-{max}"));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_six_field_and_macro_forms_parse() {
        for expr in [
            "*/5 * * * *",
            "0 */5 * * * *",
            "@hourly",
            "@midnight",
            "0 9-17/2 * * MON-FRI",
        ] {
            assert!(Schedule::parse(expr, "UTC").is_ok(), "{expr}");
        }
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert_eq!(e.field, "schedule");
        assert!(e.message.contains("minute field `61`"), "{}", e.message);
        let e = Schedule::parse("* * *", "UTC").unwrap_err();
        assert!(e.message.contains("found 3"), "{}", e.message);
        let e = Schedule::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert!(e.message.contains("never fires"), "{}", e.message);
        let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e.field, "timezone");
    }

    #[test]
    fn next_times_follow_the_zone_and_its_dst_rule() {
        let s = Schedule::parse("30 2 * * *", "America/New_York").unwrap();
        // Spring forward 2026-03-08: 02:30 does not exist, fires at 03:00 EDT.
        assert_eq!(
            s.upcoming(utc("2026-03-07T00:00:00Z"), 3),
            vec![
                utc("2026-03-07T07:30:00Z"),
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-09T06:30:00Z")
            ]
        );
        let s = Schedule::parse("30 1 * * *", "America/New_York").unwrap();
        // Fall back 2026-11-01: 01:30 happens twice, fires once, at the first.
        assert_eq!(
            s.upcoming(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(), 2),
            vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
    }

    use chrono::{Duration, LocalResult, NaiveTime, Offset, Timelike};
    use proptest::prelude::*;

    /// Zones with a DST rule: both hemispheres, and a 30-minute shift (Lord Howe).
    const DST_ZONES: [&str; 5] = [
        "America/New_York",
        "Europe/Berlin",
        "Europe/London",
        "Australia/Sydney",
        "Australia/Lord_Howe",
    ];

    /// The instants in 2026 at which `tz`'s UTC offset changes (found hour by hour, so
    /// each is within an hour after the change).
    fn offset_changes(tz: Tz) -> Vec<DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        (1..24 * 365)
            .map(|h| start + Duration::hours(h))
            .filter(|t| offset(*t) != offset(*t - Duration::hours(1)))
            .collect()
    }

    /// A zone and two days around one of its 2026 offset changes: (zone, window start,
    /// window end).
    fn around_a_dst_change() -> impl Strategy<Value = (Tz, DateTime<Utc>, DateTime<Utc>)> {
        (0..DST_ZONES.len(), 0..2_usize, 0_i64..36 * 60).prop_map(|(z, which, before)| {
            let tz: Tz = DST_ZONES[z].parse().unwrap();
            let change = offset_changes(tz)[which];
            let start = change - Duration::minutes(before);
            (tz, start, start + Duration::hours(48))
        })
    }

    /// Every whole minute in (from, to] whose local wall time in `tz` has its hour in
    /// `hours` and its minute in `minutes`: what a schedule should fire, by brute force.
    fn matching_minutes(
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        minutes: &[u32],
        hours: &[u32],
    ) -> Vec<DateTime<Utc>> {
        let first = from + Duration::seconds(60 - from.timestamp().rem_euclid(60));
        std::iter::successors(Some(first), |t| Some(*t + Duration::minutes(1)))
            .take_while(|t| *t <= to)
            .filter(|t| {
                let local = t.with_timezone(&tz);
                minutes.contains(&local.minute()) && hours.contains(&local.hour())
            })
            .collect()
    }

    fn list(values: &[u32]) -> String {
        values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(expr in "\\PC{0,40}", zone in "\\PC{0,20}") {
            let _ = Schedule::parse(&expr, &zone);
        }

        /// Text shaped like cron fields, valid or not: parsing never panics, and whatever
        /// parses fires, in strictly increasing order.
        #[test]
        fn cron_shaped_text_either_fails_or_fires_in_order(
            fields in proptest::collection::vec(
                "[0-9]{1,2}|\\*|[0-9*]{1,2}[-/,#][0-9]{1,2}|[0-9]{0,2}[LW?]|MON-FRI|JAN|@[a-z]{4,8}",
                1..8,
            ),
            after in 0_i64..4_000_000_000,
        ) {
            let expr = fields.join(" ");
            if let Ok(s) = Schedule::parse(&expr, "UTC") {
                let after = DateTime::from_timestamp(after, 0).unwrap();
                let times = s.upcoming(after, 5);
                prop_assert!(!times.is_empty(), "{} parsed but never fires after {}", expr, after);
                prop_assert!(times[0] > after);
                prop_assert!(times.windows(2).all(|w| w[0] < w[1]), "{}: {:?}", expr, times);
            }
        }

        /// In UTC, the next fire time is exactly the first matching minute after `after`.
        #[test]
        fn the_next_fire_time_is_the_first_matching_minute(
            minutes in proptest::collection::btree_set(0_u32..60, 1..4),
            hours in proptest::collection::btree_set(0_u32..24, 1..4),
            after in 0_i64..4_000_000_000,
        ) {
            let minutes: Vec<u32> = minutes.into_iter().collect();
            let hours: Vec<u32> = hours.into_iter().collect();
            let expr = format!("{} {} * * *", list(&minutes), list(&hours));
            let s = Schedule::parse(&expr, "UTC").unwrap();
            let after = DateTime::from_timestamp(after, 0).unwrap();
            let a_day_later = after + Duration::days(1);
            let expected = matching_minutes(chrono_tz::UTC, after, a_day_later, &minutes, &hours);
            prop_assert_eq!(s.next_after(after), expected.first().copied(), "{}", expr);
        }

        /// A fixed-time schedule fires once per local day: at its time, or, on the day that
        /// time falls into a spring-forward gap, at the first instant after the gap; on the
        /// day it occurs twice, at the first occurrence.
        #[test]
        fn a_fixed_time_fires_once_a_day_across_dst_changes(
            (tz, from, to) in around_a_dst_change(),
            minute in 0_u32..60,
            // Half the cases at the hours DST changes happen in.
            hour in prop_oneof![0_u32..24, 1_u32..4],
        ) {
            let s = Schedule::parse(&format!("{minute} {hour} * * *"), tz.name()).unwrap();
            let from = from - Duration::days(1);
            let to = to + Duration::days(1);
            let fires: Vec<DateTime<Utc>> = std::iter::successors(s.next_after(from), |t| s.next_after(*t))
                .take_while(|t| *t <= to)
                .collect();
            prop_assert!(fires.len() >= 3, "{:?}", fires);
            let target = NaiveTime::from_hms_opt(hour, minute, 0).unwrap();
            for (i, t) in fires.iter().enumerate() {
                let local = t.with_timezone(&tz);
                if i > 0 {
                    let previous = fires[i - 1].with_timezone(&tz).date_naive();
                    let next_day = previous.succ_opt().unwrap();
                    prop_assert_eq!(local.date_naive(), next_day, "one a day: {:?}", fires);
                }
                match tz.from_local_datetime(&local.date_naive().and_time(target)) {
                    LocalResult::Single(x) => prop_assert_eq!(*t, x.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => {
                        prop_assert_eq!(*t, a.min(b).with_timezone(&Utc), "the first occurrence")
                    }
                    LocalResult::None => {
                        let before = (*t - Duration::seconds(1)).with_timezone(&tz);
                        prop_assert!(local.time() > target && before.time() < target,
                            "{} in a gap: fired at {}, the second before was {}", target, local, before);
                    }
                }
            }
        }

        /// Any other schedule fires exactly the instants whose local time matches: slots in
        /// a gap are skipped, slots in a fold fire on both passes, in order, none twice.
        #[test]
        fn other_schedules_fire_every_matching_instant_across_dst_changes(
            (tz, from, to) in around_a_dst_change(),
            minutes in proptest::collection::btree_set(0_u32..60, 1..4),
            hours in proptest::collection::btree_set(0_u32..24, 1..5),
            every_hour in any::<bool>(),
        ) {
            let mut minutes: Vec<u32> = minutes.into_iter().collect();
            let mut hours: Vec<u32> = if every_hour {
                (0..24).collect()
            } else {
                hours.into_iter().collect()
            };
            if minutes.len() == 1 && hours.len() == 1 {
                // Make it not fixed-time: a second hour (or minute, at 23).
                if hours[0] < 23 {
                    hours.push(hours[0] + 1);
                } else {
                    minutes.push((minutes[0] + 1) % 60);
                    minutes.sort_unstable();
                }
            }
            let hour_field = if every_hour { "*".to_owned() } else { list(&hours) };
            let expr = format!("{} {hour_field} * * *", list(&minutes));
            let s = Schedule::parse(&expr, tz.name()).unwrap();
            let fires: Vec<DateTime<Utc>> = std::iter::successors(s.next_after(from), |t| s.next_after(*t))
                .take_while(|t| *t <= to)
                .collect();
            let expected = matching_minutes(tz, from, to, &minutes, &hours);
            prop_assert_eq!(fires, expected, "{} in {}", expr, tz.name());
        }
    }
}
