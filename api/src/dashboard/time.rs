//! Times as the dashboard shows them: in UTC and in a job's zone, relative to now, and
//! with daylight-saving changes marked (a clock change between two fire times, a local
//! time that happens twice, the first instant after a gap).

use chrono::{DateTime, Duration, LocalResult, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// `2026-03-15 08:42:11 UTC`.
pub(crate) fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `2026-03-15 09:42:11 CET (Europe/Berlin)`.
pub(crate) fn in_zone(t: DateTime<Utc>, tz: Tz) -> String {
    format!(
        "{} ({})",
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
        tz.name()
    )
}

/// `in 4 min`, `3 h ago`, `now`.
pub(crate) fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = t - now;
    let span = span(d.abs());
    if d.num_seconds().abs() < 1 {
        "now".to_owned()
    } else if d > Duration::zero() {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A span in its largest sensible unit: `42 s`, `5 min`, `3 h 10 min`, `2 d 4 h`.
pub(crate) fn span(d: Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        s => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// A duration in milliseconds: `350 ms`, `1.25 s`, `2 min 3 s`.
pub(crate) fn millis(ms: i64) -> String {
    match ms {
        ms if ms.abs() < 1000 => format!("{ms} ms"),
        ms if ms.abs() < 60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        ms => {
            let s = ms / 1000;
            format!("{} min {} s", s / 60, s % 60)
        }
    }
}

/// The UTC offset in force at `t` in `tz`.
fn offset(t: DateTime<Utc>, tz: Tz) -> chrono::FixedOffset {
    t.with_timezone(&tz).offset().fix()
}

fn format_offset(o: chrono::FixedOffset) -> String {
    let s = o.local_minus_utc();
    let sign = if s < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", s.abs() / 3600, (s.abs() % 3600) / 60)
}

/// What a reader should know about the fire time `t` in `tz` around daylight saving:
/// the clocks change since `previous` (the fire time before it), the local time happens
/// twice (which pass this is), or `t` is the first instant after a skipped hour.
pub(crate) fn dst_note(previous: Option<DateTime<Utc>>, t: DateTime<Utc>, tz: Tz) -> Option<String> {
    let now_offset = offset(t, tz);
    let before_gap = offset(t - Duration::seconds(1), tz);
    if before_gap.local_minus_utc() < now_offset.local_minus_utc() {
        return Some(format!(
            "right after a DST gap: the clocks jump from {} to {}, so local times in between do not exist",
            format_offset(before_gap),
            format_offset(now_offset)
        ));
    }
    let local = t.with_timezone(&tz).naive_local();
    if let LocalResult::Ambiguous(first, _) = tz.from_local_datetime(&local) {
        let pass = if first.with_timezone(&Utc) == t {
            "first"
        } else {
            "second"
        };
        return Some(format!(
            "DST fold: this local time happens twice; this is the {pass} time (UTC offset {})",
            format_offset(now_offset)
        ));
    }
    match previous.map(|p| offset(p, tz)) {
        Some(prev) if prev != now_offset => Some(format!(
            "the clocks change before this time: UTC offset {} → {}",
            format_offset(prev),
            format_offset(now_offset)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_fire_time_moved_out_of_a_spring_gap_is_marked() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 03:00 EDT is 07:00Z.
        let note = dst_note(Some(at("2026-03-07T07:30:00Z")), at("2026-03-08T07:00:00Z"), ny).unwrap();
        assert!(
            note.contains("DST gap") && note.contains("-05:00") && note.contains("-04:00"),
            "{note}"
        );
    }

    #[test]
    fn both_passes_of_a_fall_fold_are_marked_and_told_apart() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-11-01: 01:30 EDT (05:30Z), then 01:30 EST (06:30Z).
        let first = dst_note(None, at("2026-11-01T05:30:00Z"), ny).unwrap();
        let second = dst_note(Some(at("2026-11-01T05:30:00Z")), at("2026-11-01T06:30:00Z"), ny).unwrap();
        assert!(first.contains("first"), "{first}");
        assert!(second.contains("second"), "{second}");
    }

    #[test]
    fn a_change_between_two_fire_times_is_marked_and_ordinary_days_are_not() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let note = dst_note(
            Some(at("2026-03-28T08:00:00Z")),
            at("2026-03-29T07:00:00Z"),
            berlin,
        )
        .unwrap();
        assert!(note.contains("+01:00 → +02:00"), "{note}");
        assert_eq!(
            dst_note(
                Some(at("2026-03-30T07:00:00Z")),
                at("2026-03-31T07:00:00Z"),
                berlin
            ),
            None
        );
        assert_eq!(dst_note(None, at("2026-03-31T07:00:00Z"), Tz::UTC), None);
    }

    #[test]
    fn spans_and_durations_read_naturally() {
        assert_eq!(span(Duration::seconds(42)), "42 s");
        assert_eq!(span(Duration::seconds(3 * 3600 + 600)), "3 h 10 min");
        assert_eq!(span(Duration::hours(24)), "1 d");
        assert_eq!(millis(350), "350 ms");
        assert_eq!(millis(1250), "1.25 s");
        assert_eq!(millis(123_000), "2 min 3 s");
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(relative(now + Duration::minutes(4), now), "in 4 min");
        assert_eq!(relative(now - Duration::hours(3), now), "3 h ago");
    }
}
