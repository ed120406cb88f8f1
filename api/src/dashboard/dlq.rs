//! The dead letter queue: dead deliveries grouped by subscription and failure signature,
//! the list with the reason of each, replay and acknowledge one by one, and bulk replay
//! or acknowledge of everything a filter (or a group) matches, after a preview that says
//! "N deliveries to M subscriptions".
//!
//! A bulk replay of a filter is the API's `POST /v1/dlq/replay` (one call, at most
//! 10,000, acknowledged deliveries included as there). A group (a failure signature) and
//! a bulk acknowledge have no single API call: they act delivery by delivery, each
//! change audited as its own API call (`POST /v1/dlq/{id}/replay`, `DELETE
//! /v1/dlq/{id}`), at most 1,000 per click.

use super::{
    Ctx, Failure,
    activity::parse_time,
    cause::cause,
    forms::{FormFields, parse_body},
    layout::{self, capped, count_of, post_button, thousands, when},
    see_other,
};
use crate::{ApiError, dto::dlq::ReplayIn};
use cronflow_jobs::{
    domain::{DeliveryId, PageRequest, credentials::endpoint_only},
    store::{DeadFilter, DeadGroup, ReplayFilter},
};
use maud::{Markup, html};
use poem::{
    Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

/// Most deliveries one bulk replay of a filter takes (the API's limit).
const REPLAY_CAP: u64 = 10_000;
/// Most deliveries a group replay or a bulk acknowledge takes per click.
const ONE_BY_ONE_CAP: u64 = 1_000;

/// The DLQ filters of a request (query string or posted form).
struct DlqQuery {
    fields: FormFields,
    replay: ReplayFilter,
    /// (error kind, status code) of a group.
    signature: Option<(String, Option<i32>)>,
}

impl DlqQuery {
    /// Parses the filters as the API's bulk-replay body, so a bad one gets the API's
    /// message.
    fn of(fields: FormFields) -> Result<Self, Failure> {
        let mut errors = Vec::new();
        let since = parse_time("since", fields.get("since"), &mut errors);
        let until = parse_time("until", fields.get("until"), &mut errors);
        if let Some((_, e)) = errors.first() {
            return Err(Failure::new(StatusCode::BAD_REQUEST, e.clone()));
        }
        let mut body = json!({});
        for (k, v) in [
            ("webhook_id", fields.text("webhook_id")),
            ("event_type", fields.text("event_type")),
        ] {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        for (k, v) in [("since", since), ("until", until)] {
            if let Some(t) = v {
                body[k] = json!(super::iso(t));
            }
        }
        let replay = parse_body::<ReplayIn>(&Method::POST, "/v1/dlq/replay", body)
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.general(&[]).join("; ")))?
            .into_filter()
            .map_err(ApiError::from)?;
        let signature = fields.0.iter().any(|(k, _)| k == "kind").then(|| {
            let kind = match fields.get("kind") {
                "none" => String::new(),
                k => k.to_owned(),
            };
            (kind, fields.get("code").parse().ok())
        });
        Ok(Self {
            fields,
            replay,
            signature,
        })
    }

    fn dead_filter(&self, include_acknowledged: bool) -> DeadFilter {
        DeadFilter {
            replay: self.replay.clone(),
            signature: self.signature.clone(),
            include_acknowledged,
        }
    }

    /// The filters as query pairs (without cursor and action).
    fn pairs(&self) -> Vec<(&'static str, String)> {
        ["webhook_id", "event_type", "since", "until", "kind", "code"]
            .into_iter()
            .filter(|k| self.fields.0.iter().any(|(f, v)| f == k && !v.is_empty()))
            .map(|k| (k, self.fields.get(k).to_owned()))
            .collect()
    }

    fn query(&self) -> String {
        serde_urlencoded::to_string(self.pairs()).unwrap_or_default()
    }

    fn hidden_fields(&self) -> Markup {
        html! { @for (k, v) in self.pairs() { input type="hidden" name=(k) value=(v); } }
    }
}

/// The query of a group's view: the filters, its subscription and its signature.
fn group_query(q: &DlqQuery, g: &DeadGroup) -> String {
    let mut pairs: Vec<(&str, String)> = q
        .pairs()
        .into_iter()
        .filter(|(k, _)| !["webhook_id", "kind", "code"].contains(k))
        .collect();
    pairs.push(("webhook_id", g.webhook_id.clone()));
    let kind = if g.error_kind.is_empty() {
        "none"
    } else {
        g.error_kind.as_str()
    };
    pairs.push(("kind", kind.to_owned()));
    if let Some(c) = g.status_code {
        pairs.push(("code", c.to_string()));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `/dlq`.
pub(super) async fn list(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let now = cx.state.clock.now();
    let q = DlqQuery::of(FormFields::query(&req))?;
    let cursor = q.fields.get("cursor");
    let page = PageRequest::parse(None, Some(cursor).filter(|c| !c.is_empty())).map_err(ApiError::from)?;
    let groups = cx
        .state
        .store
        .dead_groups(&DeadFilter {
            signature: None,
            ..q.dead_filter(false)
        })
        .await?;
    let dead = cx.state.store.list_dead(&q.dead_filter(false), &page).await?;
    let all = PageRequest::parse(Some(500), None).map_err(ApiError::from)?;
    let hooks = cx.state.store.list_webhooks(&all).await?.items;
    // Subscriptions are named by their endpoint; a query there may hold a token, which
    // only the subscription itself shows.
    let hook_options: Vec<(String, String)> = hooks
        .iter()
        .map(|h| (h.id.to_string(), endpoint_only(&h.url)))
        .collect();
    let hook_url = |id: &str| {
        hooks
            .iter()
            .find(|h| h.id.as_str() == id)
            .map_or_else(|| id.to_owned(), |h| endpoint_only(&h.url))
    };
    let base: Vec<(&str, String)> = q
        .pairs()
        .into_iter()
        .filter(|(k, _)| *k != "kind" && *k != "code")
        .collect();
    let base = serde_urlencoded::to_string(&base).unwrap_or_default();
    let query = q.query();
    let amp = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{s}&")
        }
    };
    let done = q.fields.get("done");
    let body = html! {
        div.heading {
            h1 { "Dead Letter Queue" }
            @if cx.can_change() && !dead.items.is_empty() {
                div.actions {
                    a.button.primary href={ "/dlq/bulk?" (amp(&query)) "action=replay" } { "Replay all matching…" }
                    a.button href={ "/dlq/bulk?" (amp(&query)) "action=acknowledge" } { "Acknowledge all matching…" }
                }
            }
        }
        @if !done.is_empty() {
            p.notice role="status" { (done) }
        }
        p.muted { "Deliveries whose every retry failed. Replaying one sends it again with the same id (the same idempotency key); acknowledging takes it off this list." }
        form.filters method="get" action="/dlq" aria-label="Filter dead deliveries" {
            (layout::filter_select("webhook_id", "Subscription", &hook_options, q.fields.get("webhook_id"), None))
            (layout::filter_select("event_type", "Event", &layout::event_options(false),
                q.fields.get("event_type"), None))
            (layout::filter_time("since", "Since (UTC)", q.fields.get("since"), "2026-12-01T00:00", None))
            (layout::filter_time("until", "Until (UTC)", q.fields.get("until"), "2026-12-02T00:00", None))
            @if let Some((kind, code)) = &q.signature {
                input type="hidden" name="kind" value=(if kind.is_empty() { "none" } else { kind });
                input type="hidden" name="code" value=(code.map(|c| c.to_string()).unwrap_or_default());
            }
            div.filter.buttons { button.primary type="submit" { "Filter" } a.button href="/dlq" { "Clear" } }
        }
        @if groups.is_empty() && dead.items.is_empty() {
            div.empty {
                p { "The dead letter queue is empty." }
                p.muted { "A delivery lands here when every retry of the schedule failed." }
            }
        } @else {
            section {
                h2 { "By subscription and cause" }
                div.table-wrap {
                    table.list {
                        (layout::head_row(&["Subscription", "Cause", "Deliveries", "Oldest", "Newest"], true))
                        tbody {
                            @for g in &groups {
                                @let c = cause(Some(g.error_kind.as_str()).filter(|k| !k.is_empty()), g.status_code, None);
                                @let sig = group_query(&q, g);
                                tr {
                                    td.url { small { (hook_url(&g.webhook_id)) } }
                                    td { strong { (c.title) } br; small.muted { (c.explanation) } }
                                    td { (thousands(g.count)) }
                                    td { (when(g.first, None, now)) }
                                    td { (when(g.last, None, now)) }
                                    td.actions {
                                        a.button.small href={ "/dlq?" (sig) } { "Show" }
                                        @if cx.can_change() {
                                            a.button.small href={ "/dlq/bulk?" (sig) "&action=replay" } { "Replay group…" }
                                            a.button.small href={ "/dlq/bulk?" (sig) "&action=acknowledge" } { "Acknowledge group…" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 {
                    "Dead deliveries"
                    @if let Some((kind, code)) = &q.signature {
                        " — " (cause(Some(kind.as_str()).filter(|k| !k.is_empty()), *code, None).title)
                        " " a.small href={ "/dlq" @if !base.is_empty() { "?" (base) } } { "(all causes)" }
                    }
                }
                @if dead.items.is_empty() {
                    p.muted { "None match." }
                } @else {
                    div.table-wrap {
                        table.list {
                            (layout::head_row(&["Delivery", "Event", "Subscription", "Reason of the last attempt", "Attempts", "Created"], cx.can_change()))
                            tbody {
                                @for x in &dead.items {
                                    @let d = &x.delivery;
                                    @let c = cause(x.error_kind.as_deref(), d.last_status_code, d.last_error.as_deref());
                                    tr {
                                        td { a href={ "/deliveries/" (d.id.as_str()) } { code { (d.id.as_str()) } } }
                                        td { code { (d.event_type) } }
                                        td.url { small { (hook_url(d.webhook_id.as_str())) } }
                                        td { strong { (c.title) } @if let Some(e) = &d.last_error { br; small { (e) } } }
                                        td { (d.attempts) }
                                        td { (when(d.created_at, None, now)) }
                                        @if cx.can_change() {
                                            td.actions {
                                                (post_button(&cx, &format!("/dlq/{}/replay", d.id.as_str()), "Replay", "small primary"))
                                                (post_button(&cx, &format!("/dlq/{}/acknowledge", d.id.as_str()), "Acknowledge", "small"))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    (layout::pager(dead.next_cursor.map(|c| format!("/dlq?{}cursor={}", amp(&query), c.encode()))))
                }
            }
        }
    };
    cx.render("Dead Letter Queue", body).await
}

/// What a bulk action will do: how many deliveries, to how many subscriptions.
struct Plan {
    replay: bool,
    /// One API call for the whole filter (a bulk replay without a group).
    whole_filter: bool,
    cap: u64,
    filter: DeadFilter,
}

impl Plan {
    fn of(q: &DlqQuery, action: &str) -> Result<Self, Failure> {
        let replay = match action {
            "replay" => true,
            "acknowledge" => false,
            _ => {
                return Err(Failure::new(
                    StatusCode::BAD_REQUEST,
                    "action: `replay` or `acknowledge`",
                ));
            }
        };
        let whole_filter = replay && q.signature.is_none();
        Ok(Plan {
            replay,
            whole_filter,
            cap: if whole_filter { REPLAY_CAP } else { ONE_BY_ONE_CAP },
            // The API's bulk replay takes acknowledged deliveries too.
            filter: q.dead_filter(whole_filter),
        })
    }
}

/// `/dlq/bulk?action=replay|acknowledge&…`: the preview.
pub(super) async fn preview(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let q = DlqQuery::of(FormFields::query(&req))?;
    let action = q.fields.get("action").to_owned();
    let plan = Plan::of(&q, &action)?;
    let (n, hooks) = cx.state.store.count_dead(&plan.filter, plan.cap + 1).await?;
    let verb = if plan.replay { "Replay" } else { "Acknowledge" };
    let body = html! {
        h1 { (verb) " dead deliveries?" }
        @if n == 0 {
            p { "No dead delivery matches: nothing to do." }
            p { a.button href={ "/dlq?" (q.query()) } { "Back to the queue" } }
        } @else {
            p.preview {
                strong #preview-count {
                    @if n > plan.cap { (capped(n, plan.cap)) " deliveries" } @else { (count_of(n, "delivery", "deliveries")) }
                    " to " (count_of(hooks, "subscription", "subscriptions"))
                }
                @if plan.replay { " will be sent again, each with its own id (the same idempotency key), on a fresh retry schedule." }
                @else { " will leave the queue (they stay on record as dead)." }
            }
            @if n > plan.cap {
                p.notice { "Only the oldest " (thousands(plan.cap)) " are taken by one click; run it again for the rest." }
            }
            @if plan.whole_filter { p.small.muted { "As the API's bulk replay does, deliveries acknowledged earlier are replayed too." } }
            @if let Some((kind, code)) = &q.signature {
                p { "Cause: " strong { (cause(Some(kind.as_str()).filter(|k| !k.is_empty()), *code, None).title) } }
            }
            form method="post" action="/dlq/bulk" {
                (layout::csrf_field(&cx))
                (q.hidden_fields())
                input type="hidden" name="action" value=(action);
                button.primary type="submit" { (verb) " " (count_of(n.min(plan.cap), "delivery", "deliveries")) }
                " "
                a.button href={ "/dlq?" (q.query()) } { "Cancel" }
            }
        }
    };
    cx.render(&format!("{verb} dead deliveries"), body).await
}

/// POST `/dlq/bulk`: carries out what the preview showed.
pub(super) async fn bulk(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let q = DlqQuery::of(FormFields::of(&req))?;
    let plan = Plan::of(&q, q.fields.get("action"))?;
    let now = cx.state.clock.now();
    let done = if plan.whole_filter {
        let by = cx.changed_by(Method::POST, "/v1/dlq/replay", 200);
        cx.state.store.replay_dead(None, &q.replay, &by, now).await?
    } else {
        let mut ids: Vec<DeliveryId> = Vec::new();
        let mut page = PageRequest::parse(Some(500), None).map_err(ApiError::from)?;
        while (ids.len() as u64) < plan.cap {
            let p = cx.state.store.list_dead(&plan.filter, &page).await?;
            ids.extend(p.items.into_iter().map(|d| d.delivery.id));
            match p.next_cursor {
                Some(c) => page.after = Some(c),
                None => break,
            }
        }
        ids.truncate(plan.cap as usize);
        let mut n = 0;
        for id in &ids {
            if act_on(&cx, id, plan.replay).await? {
                n += 1;
            }
        }
        n
    };
    let verb = if plan.replay { "Replayed" } else { "Acknowledged" };
    let message = format!("{verb} {}.", count_of(done, "dead delivery", "dead deliveries"));
    let back = serde_urlencoded::to_string([("done", message)]).unwrap_or_default();
    Ok(see_other(&format!("/dlq?{back}")))
}

/// Replays or acknowledges one dead delivery as the API does, auditing it; `false` if
/// it is no longer dead.
async fn act_on(cx: &Ctx, id: &DeliveryId, replay: bool) -> Result<bool, Failure> {
    let now = cx.state.clock.now();
    let api_path = format!("/v1/dlq/{}", id.as_str());
    if replay {
        let by = cx.changed_by(Method::POST, &format!("{api_path}/replay"), 202);
        let n = cx
            .state
            .store
            .replay_dead(Some(id), &ReplayFilter::default(), &by, now)
            .await?;
        Ok(n > 0)
    } else {
        let by = cx.changed_by(Method::DELETE, &api_path, 204);
        Ok(cx.state.store.acknowledge_dead(id, &by, now).await?)
    }
}

/// POST `/dlq/{id}/replay|acknowledge`.
pub(super) async fn act(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let raw = req.raw_path_param("id").unwrap_or_default();
    let id = DeliveryId::parse(raw).ok_or_else(|| Failure::not_found("delivery", raw))?;
    let replay = match req.raw_path_param("action").unwrap_or_default() {
        "replay" => true,
        "acknowledge" => false,
        _ => return Err(Failure::new(StatusCode::NOT_FOUND, "There is no such action.")),
    };
    if !act_on(&cx, &id, replay).await? {
        return Err(Failure::not_found("dead delivery", raw));
    }
    Ok(see_other(&format!("/deliveries/{raw}")))
}
