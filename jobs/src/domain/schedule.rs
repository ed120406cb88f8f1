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
}
