//! A cron expression in words, for the common shapes (`every 5 minutes`, `at 02:30 on
//! Monday–Friday`). Anything more intricate is described field by field; the job page's
//! next fire times are the exact answer either way.

const DAYS: [&str; 8] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The expression (as parsed by the schedule: 5 fields, 6 with seconds, or a macro) in
/// words.
pub(crate) fn describe(expr: &str) -> String {
    match expr.trim().to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => return "every year on 1 January at 00:00".into(),
        "@monthly" => return "on day 1 of every month at 00:00".into(),
        "@weekly" => return "every Sunday at 00:00".into(),
        "@daily" | "@midnight" => return "every day at 00:00".into(),
        "@hourly" => return "every hour, on the hour".into(),
        _ => {}
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let (sec, rest) = match fields.len() {
        6 => (Some(fields[0]), &fields[1..]),
        5 => (None, &fields[..]),
        _ => return expr.to_owned(),
    };
    let [min, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
    let time = time_part(sec, min, hour);
    let days = day_part(dom, month, dow);
    if days.is_empty() {
        time
    } else {
        format!("{time}, {days}")
    }
}

fn number(s: &str) -> Option<u32> {
    s.parse().ok()
}

fn step(s: &str) -> Option<u32> {
    s.strip_prefix("*/").and_then(number)
}

fn time_part(sec: Option<&str>, min: &str, hour: &str) -> String {
    let sec_zero = sec.is_none_or(|s| s == "0");
    match (sec, min, hour) {
        (Some("*"), "*", "*") => return "every second".into(),
        (Some(s), "*", "*") if step(s).is_some() => return format!("every {} seconds", step(s).unwrap_or(1)),
        _ => {}
    }
    let at_seconds = match sec {
        Some(s) if !sec_zero => format!(" and {s} s"),
        _ => String::new(),
    };
    match (min, hour) {
        ("*", "*") if sec_zero => "every minute".into(),
        (m, "*") if step(m).is_some() => format!("every {} minutes", step(m).unwrap_or(1)),
        (m, "*") if number(m).is_some() => match number(m) {
            Some(0) if sec_zero => "every hour, on the hour".into(),
            _ => format!("every hour at minute {m}{at_seconds}"),
        },
        (m, h) if number(m).is_some() && h.split(',').all(|h| number(h).is_some()) => {
            let times: Vec<String> = h
                .split(',')
                .map(|h| format!("{:02}:{:02}", number(h).unwrap_or(0), number(m).unwrap_or(0)))
                .collect();
            format!("at {}{at_seconds}", times.join(", "))
        }
        (m, h) if number(m).is_some() && step(h).is_some() => {
            format!("every {} hours at minute {m}", step(h).unwrap_or(1))
        }
        (m, h) if number(m).is_some() && h.contains('-') => {
            format!("at minute {m} of hours {}", h.replace('-', "–"))
        }
        (m, h) => format!(
            "minute {m}, hour {h}{}",
            sec.map(|s| format!(", second {s}")).unwrap_or_default()
        ),
    }
}

fn name_of(s: &str, names: &[&str], first: u32) -> String {
    match number(s) {
        Some(n) if n >= first && ((n - first) as usize) < names.len() => {
            names[(n - first) as usize].to_owned()
        }
        _ => s.to_owned(),
    }
}

fn list(s: &str, names: &[&str], first: u32) -> String {
    s.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => format!("{}–{}", name_of(a, names, first), name_of(b, names, first)),
            None => name_of(part, names, first),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn day_part(dom: &str, month: &str, dow: &str) -> String {
    let mut parts = Vec::new();
    match (dom, dow) {
        ("*" | "?", "*" | "?") => {}
        ("*" | "?", d) => parts.push(format!("on {}", list(&d.to_ascii_uppercase(), &DAYS, 0))),
        (d, "*" | "?") => parts.push(format!("on day {d} of the month")),
        (d, w) => parts.push(format!("on day {d} of the month or on {}", list(w, &DAYS, 0))),
    }
    if month != "*" {
        parts.push(format!("in {}", list(month, &MONTHS, 1)));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_schedules_read_as_sentences() {
        assert_eq!(describe("*/5 * * * *"), "every 5 minutes");
        assert_eq!(describe("0 2 * * *"), "at 02:00");
        assert_eq!(describe("30 2 * * 1-5"), "at 02:30, on Monday–Friday");
        assert_eq!(describe("0 * * * *"), "every hour, on the hour");
        assert_eq!(describe("0 9,17 * * *"), "at 09:00, 17:00");
        assert_eq!(describe("*/10 * * * * *"), "every 10 seconds");
        assert_eq!(
            describe("0 0 1 1 *"),
            "at 00:00, on day 1 of the month in January"
        );
        assert_eq!(describe("@hourly"), "every hour, on the hour");
        assert_eq!(describe("* * * * *"), "every minute");
    }
}
