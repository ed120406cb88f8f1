//! The page shell (navigation with the DLQ badge, the signed-in key, sign-out) and the
//! small pieces every page uses: times, status badges, capped counts, buttons that post,
//! form fields with their error next to them.

use super::{Ctx, forms::FormErrors, time};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cronflow_jobs::{domain::RunState, store::DeliveryStatus};
use maud::{DOCTYPE, Markup, html};
use poem::http::StatusCode;

/// The DLQ badge counts up to this many ("999+" beyond).
pub(crate) const BADGE_CAP: u64 = 999;
/// List counts stop at this many ("10,000+").
pub(crate) const COUNT_CAP: u64 = 10_000;

/// The navigation: (path, label, the paths that belong to it).
const NAV: [(&str, &str, &[&str]); 5] = [
    ("/jobs", "Jobs", &["/", "/jobs", "/runs"]),
    ("/activity", "Webhook Activity", &["/activity", "/deliveries"]),
    ("/dlq", "Dead Letter Queue", &["/dlq"]),
    (
        "/settings/integrations/webhooks",
        "Settings → Webhooks",
        &["/settings"],
    ),
    ("/schemas/events", "Payload Schema", &["/schemas"]),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // Both schemes from the first paint, so a dark system shows no white flash.
            meta name="color-scheme" content="light dark";
            title { (title) " · CronFlow" }
            link rel="stylesheet" href="/assets/style.css";
            link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
            script src="/assets/dashboard.js" defer {}
        }
    }
}

/// A page of the signed-in dashboard.
pub(crate) fn shell(cx: &Ctx, title: &str, dlq: u64, body: Markup) -> Markup {
    let section = |paths: &[&str]| {
        paths
            .iter()
            .any(|p| cx.path == *p || (*p != "/" && cx.path.starts_with(&format!("{p}/"))))
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/jobs" { img.logo src="/assets/icon.svg" alt="" width="22" height="22"; "CronFlow" }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label, paths) in NAV {
                                li {
                                    a href=(href) aria-current=[section(paths).then_some("page")] {
                                        (label)
                                        @if href == "/dlq" && dlq > 0 {
                                            " "
                                            span.badge.dead #dlq-badge title="Dead deliveries waiting for inspection" {
                                                (capped(dlq, BADGE_CAP))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span.key title="The API key this session signed in with" {
                            code { (cx.viewer.key_id) } " "
                            span.badge.scope { (cx.viewer.scope.as_str()) }
                        }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf_token" value=(cx.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    @if !cx.can_change() {
                        p.notice role="note" { "Signed in with a read key: you can look at everything; changes need an admin key." }
                    }
                    (body)
                }
            }
        }
    }
}

/// A page outside the signed-in dashboard (sign-in, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main #main { (body) }
            }
        }
    }
}

/// An error page: the status and what happened.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    bare(
        title,
        html! {
            h1 { (status.as_u16()) " " (title) }
            p.error role="alert" { (message) }
            p { a href="/jobs" { "Back to the dashboard" } }
        },
    )
}

/// `n`, or `cap+` when the count stopped there; with thousands separators.
pub(crate) fn capped(n: u64, cap: u64) -> String {
    if n > cap {
        format!("{}+", thousands(cap))
    } else {
        thousands(n)
    }
}

/// `1 delivery`, `2 deliveries` (with thousands separators).
pub(crate) fn count_of(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time in UTC, with the zone's local time below it when `tz` is not UTC; the title
/// holds both (and the browser's own, added by the script).
pub(crate) fn when(t: DateTime<Utc>, tz: Option<Tz>, now: DateTime<Utc>) -> Markup {
    let local = tz.filter(|z| *z != Tz::UTC);
    let title = match local {
        Some(z) => format!(
            "{} · {} · {}",
            time::utc(t),
            time::in_zone(t, z),
            time::relative(t, now)
        ),
        None => format!("{} · {}", time::utc(t), time::relative(t, now)),
    };
    html! {
        time datetime=(super::iso(t)) title=(title) { (time::utc(t)) }
        @if let Some(z) = local {
            br;
            small.zone { (time::in_zone(t, z)) }
        }
    }
}

/// An optional time, or a dash.
pub(crate) fn maybe_when(t: Option<DateTime<Utc>>, tz: Option<Tz>, now: DateTime<Utc>) -> Markup {
    match t {
        Some(t) => when(t, tz, now),
        None => html! { span.muted { "—" } },
    }
}

/// The badge of a run state.
pub(crate) fn run_badge(state: RunState) -> Markup {
    let class = match state {
        RunState::Completed => "ok",
        RunState::Failed | RunState::TimedOut => "bad",
        RunState::Skipped | RunState::Missed => "warn",
        RunState::Running | RunState::Scheduled | RunState::Queued => "info",
        RunState::Cancelled => "muted",
    };
    html! { span class={ "badge " (class) } { (state.as_str().replace('_', " ")) } }
}

/// The badge of a delivery status.
pub(crate) fn delivery_badge(status: DeliveryStatus) -> Markup {
    let class = match status {
        DeliveryStatus::Delivered => "ok",
        DeliveryStatus::Dead => "dead",
        DeliveryStatus::Retrying => "warn",
        DeliveryStatus::Pending => "info",
        DeliveryStatus::Held => "muted",
    };
    html! { span class={ "badge " (class) } { (status.as_str()) } }
}

/// A button that posts to `action` (with the CSRF token), or nothing for a read key.
pub(crate) fn post_button(cx: &Ctx, action: &str, label: &str, class: &str) -> Markup {
    html! {
        @if cx.can_change() {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf_token" value=(cx.csrf);
                button class=(class) type="submit" { (label) }
            }
        }
    }
}

/// The CSRF field of a form.
pub(crate) fn csrf_field(cx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(cx.csrf); }
}

/// The messages of a form that belong to no field of it.
pub(crate) fn form_errors(errors: &FormErrors, fields: &[&str]) -> Markup {
    let general = errors.general(fields);
    html! {
        @if !errors.is_empty() {
            div.error role="alert" {
                p { "The form was not saved. Each problem is shown next to its field." }
                @if !general.is_empty() {
                    ul { @for m in &general { li { (m) } } }
                }
            }
        }
    }
}

/// The id of the error message of `field`.
fn error_id(field: &str) -> String {
    format!("err-{}", field.replace('.', "-"))
}

/// A form row: label, the `input` markup, an optional hint, and the field's error.
pub(crate) fn row(
    field: &str,
    label: &str,
    hint: Option<&str>,
    errors: &FormErrors,
    input: Markup,
) -> Markup {
    html! {
        div.row.invalid[errors.of(field).is_some()] {
            label for=(field) { (label) }
            (input)
            @if let Some(h) = hint { small.hint id={ "hint-" (field.replace('.', "-")) } { (h) } }
            @if let Some(e) = errors.of(field) {
                p.field-error id=(error_id(field)) role="alert" { (e) }
            }
        }
    }
}

/// The `aria-describedby` of an input: its hint and its error.
pub(crate) fn described_by(field: &str, has_hint: bool, errors: &FormErrors) -> Option<String> {
    let mut ids = Vec::new();
    if has_hint {
        ids.push(format!("hint-{}", field.replace('.', "-")));
    }
    if errors.of(field).is_some() {
        ids.push(error_id(field));
    }
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// A text input for `field` with `value`.
pub(crate) fn text_input(
    field: &str,
    value: &str,
    errors: &FormErrors,
    has_hint: bool,
    attrs: InputAttrs,
) -> Markup {
    html! {
        input id=(field) name=(field) type=(attrs.kind) value=(value) placeholder=[attrs.placeholder]
            required[attrs.required] inputmode=[attrs.inputmode] autocomplete="off" spellcheck="false"
            aria-invalid=[errors.of(field).map(|_| "true")]
            aria-describedby=[described_by(field, has_hint, errors)];
    }
}

/// Options of [`text_input`].
#[derive(Default, Clone, Copy)]
pub(crate) struct InputAttrs {
    pub(crate) kind: &'static str,
    pub(crate) placeholder: Option<&'static str>,
    pub(crate) required: bool,
    pub(crate) inputmode: Option<&'static str>,
}

impl InputAttrs {
    pub(crate) fn text() -> Self {
        Self {
            kind: "text",
            ..Self::default()
        }
    }
}

/// A `<select>` for `field` with `(value, label)` options, `selected` chosen.
pub(crate) fn select(field: &str, options: &[(&str, &str)], selected: &str, errors: &FormErrors) -> Markup {
    html! {
        select id=(field) name=(field) aria-invalid=[errors.of(field).map(|_| "true")]
            aria-describedby=[described_by(field, false, errors)] {
            @for (value, label) in options {
                option value=(value) selected[*value == selected] { (label) }
            }
        }
    }
}

/// A table's header row; `actions`: a last, unlabelled column of buttons.
pub(crate) fn head_row(columns: &[&str], actions: bool) -> Markup {
    html! {
        thead { tr {
            @for c in columns { th scope="col" { (c) } }
            @if actions { th scope="col" { span.visually-hidden { "Actions" } } }
        } }
    }
}

/// A filter `<select>` whose first option, "all", sets no filter; with its error.
pub(crate) fn filter_select(
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    error: Option<&str>,
) -> Markup {
    let (id, err) = (format!("f-{name}"), format!("err-{name}"));
    html! {
        div.filter {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| err.as_str())] {
                option value="" { "all" }
                @for (value, text) in options { option value=(value) selected[selected == value] { (text) } }
            }
            @if let Some(e) = error { p.field-error id=(err) role="alert" { (e) } }
        }
    }
}

/// Options whose value is their label.
/// The event types as filter options; `webhook.test` too when `with_test`.
pub(crate) fn event_options(with_test: bool) -> Vec<(String, String)> {
    let names: Vec<&str> = cronflow_jobs::domain::event::EVENT_KINDS
        .iter()
        .map(|k| k.event_type.as_str())
        .filter(|name| with_test || *name != "webhook.test")
        .collect();
    plain_options(&names)
}

pub(crate) fn plain_options(values: &[&str]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| ((*v).to_owned(), (*v).to_owned()))
        .collect()
}

/// A time filter (UTC), with its error.
pub(crate) fn filter_time(
    name: &str,
    label: &str,
    value: &str,
    placeholder: &str,
    error: Option<&str>,
) -> Markup {
    let (id, err) = (format!("f-{name}"), format!("err-{name}"));
    html! {
        div.filter {
            label for=(id) { (label) }
            input id=(id) type="text" name=(name) value=(value) placeholder=(placeholder)
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| err.as_str())];
            @if let Some(e) = error { p.field-error id=(err) role="alert" { (e) } }
        }
    }
}

/// A "Next page" link, if there is one.
pub(crate) fn pager(next: Option<String>) -> Markup {
    html! {
        @if let Some(href) = next {
            nav.pager aria-label="Pagination" { a.button href=(href) rel="next" { "Next page →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_and_capped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(capped(10_001, COUNT_CAP), "10,000+");
        assert_eq!(capped(10_000, COUNT_CAP), "10,000");
    }
}
