//! Webhook Activity: deliveries with the API's filters (kept in the URL), a capped count,
//! cursor pagination, the CSV export of exactly the filtered set, a live "N new" notice,
//! the success rate per subscription over 24 hours; and a delivery's page with its
//! retry history, the cause of a failure in words and the payload as sent.

use super::{
    Ctx, Failure,
    cause::cause,
    charts,
    forms::FormFields,
    layout::{self, COUNT_CAP, capped, delivery_badge, maybe_when, post_button, when},
    time,
};
use crate::ApiError;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use cronflow_jobs::{
    domain::{DeliveryId, EventType, PageRequest},
    store::{DeliveryFilter, DeliveryStatus},
};
use maud::{Markup, html};
use poem::{Body, IntoResponse, Request, Response, http::StatusCode, web::Json};
use std::collections::HashMap;

/// Hours in the success-rate charts.
const HOURS: usize = 24;

/// The filters of the Activity tab, as given in the URL.
struct Filters {
    fields: FormFields,
    filter: DeliveryFilter,
    errors: Vec<(&'static str, String)>,
}

pub(super) fn parse_time(
    field: &'static str,
    raw: &str,
    errors: &mut Vec<(&'static str, String)>,
) -> Option<DateTime<Utc>> {
    if raw.is_empty() {
        return None;
    }
    let parsed = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
                .map(|n| n.and_utc())
        });
    if parsed.is_none() {
        errors.push((
            field,
            format!("{field}: `{raw}` is not a time; use YYYY-MM-DDTHH:MM (UTC) or RFC 3339"),
        ));
    }
    parsed
}

impl Filters {
    fn of(req: &Request) -> Self {
        let fields = FormFields::query(req);
        let mut errors = Vec::new();
        let text = |k: &str| Some(fields.get(k).to_owned()).filter(|v| !v.is_empty());
        let event_type = text("event_type");
        if let Some(e) = event_type.as_deref().filter(|e| EventType::parse(e).is_none()) {
            errors.push(("event_type", format!("event_type: `{e}` is not an event type")));
        }
        let status = text("status");
        let parsed_status = status.as_deref().and_then(DeliveryStatus::parse);
        if let (Some(s), None) = (&status, parsed_status) {
            errors.push((
                "status",
                format!("status: `{s}` is not one of pending, retrying, delivered, dead"),
            ));
        }
        let since = parse_time("since", fields.get("since"), &mut errors);
        let until = parse_time("until", fields.get("until"), &mut errors);
        let filter = DeliveryFilter {
            webhook_id: text("webhook_id"),
            job_id: text("job_id"),
            event_type,
            status: parsed_status,
            since,
            until,
        };
        Filters {
            fields,
            filter,
            errors,
        }
    }

    /// The filters as a query string (without the cursor), to build links.
    fn query(&self) -> String {
        let kept: Vec<(&str, &str)> = ["webhook_id", "job_id", "event_type", "status", "since", "until"]
            .iter()
            .map(|k| (*k, self.fields.get(k)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        serde_urlencoded::to_string(kept).unwrap_or_default()
    }

    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }
}

/// Attempts and successes per subscription, hour by hour over the last 24 hours (oldest
/// first).
pub(super) async fn success_by_hook(
    cx: &Ctx,
    now: DateTime<Utc>,
) -> Result<HashMap<String, Vec<Option<(u64, u64)>>>, Failure> {
    let rows = cx
        .state
        .store
        .hourly_attempts(now - Duration::hours(HOURS as i64))
        .await?;
    let mut out: HashMap<String, Vec<Option<(u64, u64)>>> = HashMap::new();
    for r in rows {
        let start = now - Duration::hours(HOURS as i64);
        let h = usize::try_from((r.hour - start).num_hours())
            .unwrap_or(0)
            .min(HOURS - 1);
        let hours = out.entry(r.webhook_id).or_insert_with(|| vec![None; HOURS]);
        let (ok, all) = hours[h].unwrap_or((0, 0));
        hours[h] = Some((ok + r.succeeded, all + r.attempts));
    }
    Ok(out)
}

/// The success-rate chart of one subscription.
pub(super) fn rate_chart(hours: Option<&Vec<Option<(u64, u64)>>>, name: &str) -> Markup {
    let empty = vec![None; HOURS];
    let hours = hours.unwrap_or(&empty);
    let (ok, all) = hours
        .iter()
        .flatten()
        .fold((0, 0), |(a, b), (o, n)| (a + o, b + n));
    let percent = (ok * 100).checked_div(all);
    let summary = match percent {
        None => format!("No delivery attempts to {name} in the last 24 hours"),
        Some(p) => format!(
            "{p}% of {} attempts to {name} succeeded in the last 24 hours",
            layout::thousands(all)
        ),
    };
    let bars: Vec<charts::Bar> = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let ago = HOURS - i;
            match h {
                Some((ok, all)) if *all > 0 => {
                    let rate = *ok as f64 / *all as f64;
                    charts::Bar {
                        label: format!("{ago} h ago: {ok} of {all} attempts succeeded"),
                        value: Some(rate),
                        class: if rate >= 0.99 {
                            "ok"
                        } else if rate >= 0.5 {
                            "warn"
                        } else {
                            "bad"
                        },
                    }
                }
                _ => charts::Bar {
                    label: format!("{ago} h ago: no attempts"),
                    value: None,
                    class: "ok",
                },
            }
        })
        .collect();
    html! {
        figure.rate {
            (charts::rate_bars(&summary, &bars))
            figcaption.small.muted {
                @match percent { None => "no attempts", Some(p) => { (p) "% of " (layout::thousands(all)) } }
            }
        }
    }
}

/// `/activity`: the Webhook Activity tab.
pub(super) async fn list(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let now = cx.state.clock.now();
    let f = Filters::of(&req);
    let cursor = f.fields.get("cursor");
    let page = PageRequest::parse(None, Some(cursor).filter(|c| !c.is_empty())).map_err(ApiError::from)?;
    let all = PageRequest::parse(Some(500), None).map_err(ApiError::from)?;
    let hooks = cx.state.store.list_webhooks(&all).await?.items;
    let jobs = cx.state.store.list_jobs(&all).await?.items;
    let (deliveries, total) = if f.errors.is_empty() {
        (
            cx.state.store.list_deliveries(&f.filter, &page).await?,
            cx.state.store.count_deliveries(&f.filter, COUNT_CAP).await?,
        )
    } else {
        (
            cronflow_jobs::domain::Page {
                items: Vec::new(),
                next_cursor: None,
            },
            0,
        )
    };
    let rates = success_by_hook(&cx, now).await?;
    let query = f.query();
    let newest = deliveries.items.first().filter(|_| cursor.is_empty());
    let hook_options: Vec<(String, String)> =
        hooks.iter().map(|h| (h.id.to_string(), h.url.clone())).collect();
    let job_options: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.id.to_string(), j.spec.name.as_str().to_owned()))
        .collect();
    let job_name = |id: &str| {
        jobs.iter()
            .find(|j| j.id.as_str() == id)
            .map(|j| j.spec.name.as_str().to_owned())
    };
    let hook_url = |id: &str| hooks.iter().find(|h| h.id.as_str() == id).map(|h| h.url.clone());
    let body = html! {
        div.heading {
            h1 { "Webhook Activity" }
            div.actions {
                a.button href={ "/activity/export.csv" @if !query.is_empty() { "?" (query) } } download { "Export CSV" }
            }
        }
        form.filters method="get" action="/activity" aria-label="Filter deliveries" {
            (layout::filter_select("webhook_id", "Subscription", &hook_options, f.fields.get("webhook_id"), None))
            (layout::filter_select("job_id", "Job", &job_options, f.fields.get("job_id"), None))
            (layout::filter_select("event_type", "Event", &layout::event_options(true),
                f.fields.get("event_type"), f.error("event_type")))
            (layout::filter_select("status", "Status", &layout::plain_options(&DeliveryStatus::ALL.map(DeliveryStatus::as_str)),
                f.fields.get("status"), f.error("status")))
            (layout::filter_time("since", "Since (UTC)", f.fields.get("since"), "2026-12-01T00:00", f.error("since")))
            (layout::filter_time("until", "Until (UTC)", f.fields.get("until"), "2026-12-02T00:00", f.error("until")))
            div.filter.buttons {
                button.primary type="submit" { "Filter" }
                a.button href="/activity" { "Clear" }
            }
        }
        div.live {
            p.count #delivery-count {
                strong { (capped(total, COUNT_CAP)) }
                @if total == 1 { " delivery matches" } @else { " deliveries match" }
            }
            @if let Some(top) = newest {
                div #live data-newer={ "/activity/newer?" (query) @if !query.is_empty() { "&" } "after=" (top.created_at.timestamp_millis()) } {
                    button #show-new.primary type="button" hidden { "" }
                    button #live-toggle.small type="button" hidden aria-pressed="false" { "Pause live refresh" }
                }
            }
            a.small href={ "/activity" @if !query.is_empty() { "?" (query) } } { "Refresh" }
        }
        @if deliveries.items.is_empty() {
            div.empty {
                p { @if f.errors.is_empty() { "No deliveries match." } @else { "Fix the filters above." } }
                @if hooks.is_empty() {
                    p { "Deliveries appear here once a " a href="/settings/integrations/webhooks" { "webhook subscription" } " receives events." }
                }
            }
        } @else {
            div.table-wrap {
                table.list.activity {
                    (layout::head_row(&["Status", "Event", "Subscription", "Response", "Attempts", "Next retry", "Created"], false))
                    tbody {
                        @for d in &deliveries.items {
                            tr {
                                td { a href={ "/deliveries/" (d.id.as_str()) } { (delivery_badge(d.status)) } }
                                td {
                                    code { (d.event_type) }
                                    @if let Some(j) = &d.job_id { br; small { a href={ "/jobs/" (j.as_str()) } { (job_name(j.as_str()).unwrap_or_else(|| j.to_string())) } } }
                                }
                                td.url { small { (hook_url(d.webhook_id.as_str()).unwrap_or_else(|| d.webhook_id.to_string())) } }
                                td {
                                    @match (d.last_status_code, &d.last_error) {
                                        (Some(c), _) => code.status-code { (c) },
                                        (None, Some(e)) => small.error-text { (e) },
                                        _ => span.muted { "—" },
                                    }
                                }
                                td { (d.attempts) }
                                td { (maybe_when(d.next_attempt_at, None, now)) }
                                td { (when(d.created_at, None, now)) }
                            }
                        }
                    }
                }
            }
            (layout::pager(deliveries.next_cursor.map(|c| format!("/activity?{}{}cursor={}", query, if query.is_empty() { "" } else { "&" }, c.encode()))))
        }
        section {
            h2 { "Success rate, last 24 hours" }
            @if hooks.is_empty() {
                p.muted { "No subscriptions yet." }
            } @else {
                div.rates {
                    @for h in &hooks {
                        div.rate-row {
                            p.small { code { (h.url) } }
                            (rate_chart(rates.get(h.id.as_str()), &h.url))
                        }
                    }
                }
            }
        }
    };
    let status = if f.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    cx.render_status(status, "Webhook Activity", body).await
}

/// `/activity/newer?…&after=ms`: how many deliveries matching the filters arrived after
/// the newest one shown (for the live "N new" notice), as `{"count": n}`.
pub(super) async fn newer(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let mut f = Filters::of(&req);
    let after = f
        .fields
        .get("after")
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis);
    let Some(after) = after.filter(|_| f.errors.is_empty()) else {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "after: milliseconds since the epoch",
        ));
    };
    let from = after + Duration::milliseconds(1);
    f.filter.since = Some(f.filter.since.map_or(from, |s| s.max(from)));
    let n = cx.state.store.count_deliveries(&f.filter, 999).await?;
    Ok(Json(serde_json::json!({ "count": n, "capped": n > 999 })).into_response())
}

/// `/activity/export.csv`: the API's streamed export of exactly the filtered set.
pub(super) async fn export(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let f = Filters::of(&req);
    if let Some((_, e)) = f.errors.first() {
        return Err(Failure::new(StatusCode::BAD_REQUEST, e.clone()));
    }
    let body = Body::from_bytes_stream(crate::deliveries::export_stream(cx.state.store.clone(), f.filter));
    Ok(Response::builder()
        .content_type("text/csv")
        .header("Content-Disposition", crate::deliveries::EXPORT_DISPOSITION)
        .body(body))
}

/// `/deliveries/{id}`.
pub(super) async fn delivery(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let raw = req.raw_path_param("id").unwrap_or_default();
    let id = DeliveryId::parse(raw).ok_or_else(|| Failure::not_found("delivery", raw))?;
    let (d, attempts) = cx
        .state
        .store
        .get_delivery(&id)
        .await?
        .ok_or_else(|| Failure::not_found("delivery", raw))?;
    let extras = cx.state.store.delivery_extras(&id).await?;
    let hook = cx.state.store.get_webhook(&d.webhook_id).await?;
    let job = match &d.job_id {
        Some(j) => cx.state.store.get_job(j).await?,
        None => None,
    };
    let now = cx.state.clock.now();
    let last = attempts.last();
    let failing = matches!(d.status, DeliveryStatus::Retrying | DeliveryStatus::Dead);
    let why = cause(
        last.and_then(|a| a.error_kind.as_deref()),
        last.and_then(|a| a.status_code),
        d.last_error.as_deref(),
    );
    let schedule = &cx.state.retry_schedule;
    let round = extras.as_ref().map_or(0, |e| e.round_attempts);
    let retries_left = (schedule.len() as u32 + 1).saturating_sub(round);
    let same_cause = format!(
        "/activity?webhook_id={}&status={}",
        d.webhook_id,
        d.status.as_str()
    );
    let body = html! {
        div.heading {
            h1 { "Delivery " code { (d.id.as_str()) } }
            (delivery_badge(d.status))
            @if d.status == DeliveryStatus::Dead && !d.acknowledged {
                (post_button(&cx, &format!("/dlq/{}/replay", d.id.as_str()), "Replay", "primary"))
                (post_button(&cx, &format!("/dlq/{}/acknowledge", d.id.as_str()), "Acknowledge", ""))
            }
        }
        @if failing {
            section.card.why {
                h2 { "Why it failed: " (why.title) }
                p { (why.explanation) }
                @if let Some(e) = &d.last_error { p.small { "Last error: " code { (e) } } }
                @match d.status {
                    DeliveryStatus::Retrying => p {
                        "Next retry " strong { (maybe_when(d.next_attempt_at, None, now)) }
                        "; " (retries_left) " of " (schedule.len()) " retries left."
                    },
                    _ => p {
                        "Every retry failed: it is in the " a href="/dlq" { "dead letter queue" }
                        @if d.acknowledged { " (acknowledged)" }
                        ". A replay keeps its id, so the receiver sees the same idempotency key."
                    },
                }
                p.small { a href=(same_cause) { "Other " (d.status.as_str()) " deliveries to this subscription" } }
            }
        }
        div.cards {
            section.card {
                h2 { "Delivery" }
                dl {
                    dt { "Event" } dd { code { (d.event_type) } " " small.muted { (d.event_id) } }
                    dt { "Job" } dd {
                        @match (&d.job_id, &job) {
                            (Some(j), Some(job)) => a href={ "/jobs/" (j) } { (job.spec.name.as_str()) },
                            (Some(j), None) => code { (j) " (deleted)" },
                            (None, _) => span.muted { "— (test event)" },
                        }
                    }
                    dt { "Subscription" } dd {
                        @match &hook {
                            Some(h) => { a href={ "/settings/integrations/webhooks#" (h.id.as_str()) } { code { (h.url) } } }
                            None => code { (d.webhook_id) " (deleted)" },
                        }
                    }
                    dt { "Created" } dd { (when(d.created_at, None, now)) }
                    dt { "Delivered" } dd { (maybe_when(d.delivered_at, None, now)) }
                    dt { "Attempts" } dd { (d.attempts) }
                    dt { "Idempotency key" } dd { code { (d.id.as_str()) } }
                }
            }
        }
        section {
            h2 { "Retry history" }
            @if attempts.is_empty() {
                p.muted { "No attempt yet." }
            } @else {
                ol.timeline {
                    @for a in &attempts {
                        @let ok = a.error_kind.is_none();
                        li class=(if ok { "ok" } else { "bad" }) {
                            div.attempt-head {
                                strong { "Attempt " (a.attempt) }
                                " · " (when(a.started_at, None, now))
                                " · " (time::millis(a.duration_ms))
                                " · "
                                @match a.status_code {
                                    Some(c) => code.status-code { (c) },
                                    None => span.badge.bad { (cause(a.error_kind.as_deref(), None, None).title) },
                                }
                            }
                            @if let Some(e) = &a.error { p.small { (e) } }
                            @if let Some(x) = a.response_excerpt.as_deref().filter(|x| !x.is_empty()) {
                                details { summary { "Response (first 4 KiB)" } pre.output { (x) } }
                            }
                        }
                    }
                    @if let (DeliveryStatus::Retrying, Some(t)) = (d.status, d.next_attempt_at) {
                        li.next { strong { "Next attempt" } " · " (when(t, None, now)) }
                    }
                }
            }
        }
        section {
            h2 { "Payload as sent" }
            @match extras.and_then(|e| e.payload) {
                Some(p) => {
                    p.small.muted {
                        "Headers: " code { "X-CronFlow-Event: " (d.event_type) } ", "
                        code { "X-CronFlow-Idempotency-Key: " (d.id.as_str()) } ", "
                        code { "webhook-id: " (d.id.as_str()) } ", and the signatures."
                    }
                    pre.output.payload tabindex="0" { (p) }
                }
                None => p.muted { "The event was pruned by the retention policy." },
            }
        }
    };
    cx.render(&format!("Delivery {}", d.id.as_str()), body).await
}
