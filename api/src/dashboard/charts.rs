//! Server-rendered SVG charts: no script, they scale with the page, and each bar has a
//! tooltip (`<title>`) and the whole chart a text summary for screen readers. Colours
//! come from the stylesheet's classes, so both themes apply.

use super::time;
use maud::{Markup, html};

const W: f64 = 600.0;
const H: f64 = 120.0;
/// Room for the axis labels on the left and below.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 4.0;
/// Bars are never wider than for this many, so a few bars do not fill the chart.
const MIN_SLOTS: usize = 30;

/// One bar: its tooltip, its value (none: a gap), and its class (`ok`, `bad`, ...).
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) value: Option<f64>,
    pub(crate) class: &'static str,
}

/// Bars of durations in milliseconds, oldest on the left, with the largest value as
/// the scale.
pub(crate) fn millis_bars(summary: &str, bars: &[Bar]) -> Markup {
    let max = bars
        .iter()
        .filter_map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    html! {
        (bars_svg(summary, bars, MIN_SLOTS, max, &time::millis(max as i64), "0"))
        div.chart-foot aria-hidden="true" { span { "older" } span { "newest" } }
    }
}

/// Bars of rates from 0 to 1, one per hour of the last 24.
pub(crate) fn rate_bars(summary: &str, bars: &[Bar]) -> Markup {
    html! {
        (bars_svg(summary, bars, bars.len(), 1.0, "100%", "0%"))
        div.chart-foot aria-hidden="true" { span { "24 h ago" } span { "now" } }
    }
}

/// `slots`: the chart's width in bars (at least the number of bars).
fn bars_svg(
    summary: &str,
    bars: &[Bar],
    slots: usize,
    max: f64,
    top_label: &str,
    bottom_label: &str,
) -> Markup {
    let n = bars.len().max(slots).max(1) as f64;
    // Fewer bars than slots sit on the right: the newest is always at the right edge.
    let offset = n - bars.len() as f64;
    let slot = (W - LEFT) / n;
    let plot = H - BOTTOM;
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(summary) preserveAspectRatio="none" {
            line.axis x1=(LEFT) y1="0" x2=(LEFT) y2=(plot) {}
            line.axis x1=(LEFT) y1=(plot) x2=(W) y2=(plot) {}
            text.axis-label x=(LEFT - 6.0) y="10" text-anchor="end" { (top_label) }
            text.axis-label x=(LEFT - 6.0) y=(plot) text-anchor="end" { (bottom_label) }
            @for (i, b) in bars.iter().enumerate() {
                @let x = LEFT + (offset + i as f64) * slot + slot * 0.15;
                @let w = (slot * 0.7).max(1.0);
                @match b.value {
                    Some(v) => {
                        @let h = ((v / max) * (plot - 2.0)).max(2.0);
                        rect class={ "bar " (b.class) } x=(fmt(x)) y=(fmt(plot - h)) width=(fmt(w)) height=(fmt(h)) {
                            title { (b.label) }
                        }
                    }
                    None => {
                        rect.bar.empty x=(fmt(x)) y=(fmt(plot - 2.0)) width=(fmt(w)) height="2" {
                            title { (b.label) }
                        }
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_gaps_stay_visible() {
        let bars = [
            Bar {
                label: "a".into(),
                value: Some(100.0),
                class: "ok",
            },
            Bar {
                label: "b".into(),
                value: None,
                class: "ok",
            },
            Bar {
                label: "c".into(),
                value: Some(50.0),
                class: "bad",
            },
        ];
        let svg = millis_bars("durations", &bars).into_string();
        assert!(svg.contains(r#"aria-label="durations""#));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("bar empty"));
        assert!(svg.contains("100 ms"));
    }
}
