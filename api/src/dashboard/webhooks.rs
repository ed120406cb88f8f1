//! Settings → Integrations → Webhooks: subscriptions with their state, last delivery and
//! success rate; create (the secret shown once, then only its fingerprint), rotate the
//! secret (the old one's remaining overlap shown), send a test event, enable, disable,
//! delete.

use super::{
    Ctx, Failure, activity,
    forms::{FormErrors, FormFields, pairs, parse_body},
    layout::{self, InputAttrs, delivery_badge, post_button, row, select, text_input},
    see_other, time,
};
use crate::dto::webhooks::{WebhookIn, WebhookPatchIn};
use cronflow_jobs::{
    domain::{
        PageRequest, Webhook, WebhookId, WebhookSecret, credentials::redact_url,
        webhook::ROTATION_GRACE_HOURS,
    },
    store::DeliveryFilter,
};
use maud::{Markup, html};
use poem::{
    Request, Response,
    http::{Method, StatusCode},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PAGE: &str = "/settings/integrations/webhooks";
/// The job events a subscription can receive.
const EVENTS: [(&str, &str); 9] = [
    ("job.completed", "a run finished successfully"),
    ("job.failed", "a run failed"),
    ("job.timed_out", "a run exceeded its timeout"),
    (
        "job.skipped",
        "a slot was skipped: the previous run was still going",
    ),
    (
        "job.missed",
        "slots of a downtime were not run (one event per stretch)",
    ),
    (
        "job.late",
        "a slot's run had not started in time (the scheduler or workers are down or stuck)",
    ),
    ("job.overran", "a run is going on past its expected duration"),
    ("job.failing", "a job failed its threshold of times in a row"),
    ("job.recovered", "a failing job completed again"),
];
const FIELDS: [&str; 7] = [
    "url",
    "events",
    "environment",
    "job_ids",
    "secret",
    "headers",
    "description",
];

/// The first 8 bytes of the secret's SHA-256, in hex groups: enough to tell which secret
/// a receiver holds (`printf %s "$SECRET" | sha256sum | cut -c1-16`), useless to sign.
pub(super) fn fingerprint(secret: &WebhookSecret) -> String {
    let hex = hex::encode(&Sha256::digest(secret.expose().as_bytes())[..8]);
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn hook_id(req: &Request) -> Result<WebhookId, Failure> {
    let id = req.raw_path_param("id").unwrap_or_default();
    WebhookId::parse(id).ok_or_else(|| Failure::not_found("webhook", id))
}

/// A secret to show once, after create or rotate.
struct Revealed<'a> {
    hook: &'a Webhook,
    rotated: bool,
}

fn revealed(r: &Revealed<'_>, now: chrono::DateTime<chrono::Utc>) -> Markup {
    html! {
        section.card.secret role="status" {
            h2 { @if r.rotated { "New signing secret" } @else { "Subscription created: its signing secret" } }
            p { "Copy it now: CronFlow shows it this once. Afterwards only its fingerprint is shown." }
            div.copy-row {
                input #new-secret type="text" readonly value=(r.hook.secret.expose()) aria-label="Signing secret";
                button.copy type="button" data-copy="new-secret" { "Copy" }
            }
            p.small { "Fingerprint: " code { (fingerprint(&r.hook.secret)) } }
            @if let Some((_, until)) = &r.hook.previous_secret {
                p.small {
                    "The previous secret keeps signing beside it for " strong { (time::span(*until - now)) }
                    " (until " (time::utc(*until)) "), so receivers can switch without losing a delivery."
                }
            }
        }
    }
}

async fn render_page(
    cx: &Ctx,
    f: &FormFields,
    errors: &FormErrors,
    shown: Option<Revealed<'_>>,
) -> Result<Response, Failure> {
    let now = cx.state.clock.now();
    let page = PageRequest::parse(Some(500), None).map_err(crate::ApiError::from)?;
    let hooks = cx.state.store.list_webhooks(&page).await?.items;
    let jobs = cx.state.store.list_jobs(&page).await?.items;
    let rates = activity::success_by_hook(cx, now).await?;
    let last = PageRequest::parse(Some(1), None).map_err(crate::ApiError::from)?;
    let mut last_delivery = Vec::with_capacity(hooks.len());
    for h in &hooks {
        let filter = DeliveryFilter {
            webhook_id: Some(h.id.to_string()),
            ..DeliveryFilter::default()
        };
        last_delivery.push(
            cx.state
                .store
                .list_deliveries(&filter, &last)
                .await?
                .items
                .into_iter()
                .next(),
        );
    }
    let chosen = f.all("events");
    let chosen_jobs = f.all("job_ids");
    let body = html! {
        p.crumbs { "Settings → Integrations → " strong { "Webhooks" } }
        h1 { "Webhooks" }
        p {
            "CronFlow POSTs a signed JSON event to each subscription for the events it chooses: a run's end, a skipped or missed slot, a late or overrunning run, a failure streak. While a subscription is disabled its events are held, and enabling it delivers them. "
            a href="/schemas/events" { "View Payload Schema" } " · "
            a href="/schemas/events#verify" { "How to verify the signature" } " · "
            a href="/activity" { "Webhook Activity" }
        }
        @if let Some(r) = &shown { (revealed(r, now)) }
        @if hooks.is_empty() {
            div.empty { p { "No subscriptions yet." } }
        } @else {
            div.table-wrap {
                table.list.hooks {
                    (layout::head_row(&["Endpoint", "Events", "State", "Secret", "Last delivery", "Success, 24 h"], cx.can_change()))
                    tbody {
                        @for (h, last) in hooks.iter().zip(&last_delivery) {
                            @let id = h.id.as_str();
                            tr id=(id) {
                                td.url {
                                    code { (redact_url(&h.url)) }
                                    @if !h.description.is_empty() { br; small { (h.description) } }
                                    br; small.muted { (id) }
                                    @if let Some(env) = h.filter.environment { br; small { "only " (env.as_str()) } }
                                    @if let Some(ids) = &h.filter.job_ids { br; small { "only " (ids.len()) " job(s)" } }
                                }
                                td { @for e in &h.filter.events { span.badge.tag { (e.as_str()) } " " } }
                                td {
                                    @if h.enabled { span.badge.ok { "enabled" } }
                                    @else {
                                        span.badge.bad { "disabled" }
                                        @if let Some(why) = &h.disabled_reason { br; small { (why) } }
                                        @else { br; small.muted { "by a user" } }
                                        br; a href={ "/activity?webhook_id=" (id) "&status=held" } { small { "held deliveries" } }
                                    }
                                }
                                td {
                                    code.fingerprint title="First 16 hex digits of the secret's SHA-256" { (fingerprint(&h.secret)) }
                                    @if let Some((_, until)) = h.previous_secret.as_ref().filter(|(_, u)| *u > now) {
                                        br; small { "old secret signs for " (time::span(*until - now)) " more" }
                                    }
                                }
                                td {
                                    @match last {
                                        Some(d) => {
                                            a href={ "/deliveries/" (d.id.as_str()) } { (delivery_badge(d.status)) }
                                            @if let Some(c) = d.last_status_code { " " code { (c) } }
                                            br; small.muted { (time::relative(d.created_at, now)) }
                                        }
                                        None => span.muted { "none yet" }
                                    }
                                }
                                td.chart-cell { (activity::rate_chart(rates.get(id), &redact_url(&h.url))) }
                                @if cx.can_change() {
                                    td.actions {
                                        (post_button(cx, &format!("{PAGE}/{id}/test"), "Send test", "small"))
                                        a.button.small href={ (PAGE) "/" (id) "/rotate" } { "Rotate secret…" }
                                        @if h.enabled {
                                            (post_button(cx, &format!("{PAGE}/{id}/disable"), "Disable", "small"))
                                        } @else {
                                            (post_button(cx, &format!("{PAGE}/{id}/enable"), "Enable (deliver held)", "small"))
                                            (post_button(cx, &format!("{PAGE}/{id}/enable-discard-held"), "Enable, discard held", "small danger"))
                                        }
                                        a.button.small.danger href={ (PAGE) "/" (id) "/delete" } { "Delete…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if cx.can_change() {
            section.card #new {
                h2 { "Add a subscription" }
                (layout::form_errors(errors, &FIELDS))
                form method="post" action=(PAGE) novalidate {
                    (layout::csrf_field(cx))
                    (row("url", "Endpoint URL", Some("HTTPS; CronFlow POSTs each event here"), errors,
                        text_input("url", f.get("url"), errors, true, InputAttrs { kind: "url", required: true, placeholder: Some("https://example.com/hooks/cronflow"), ..InputAttrs::text() })))
                    fieldset.row.invalid[errors.of("events").is_some()] aria-describedby=[layout::described_by("events", false, errors)] {
                        legend { "Events" }
                        @for (name, what) in EVENTS {
                            label.check {
                                input type="checkbox" name="events" value=(name) checked[chosen.iter().any(|c| c == name) || (f.0.is_empty() && matches!(name, "job.failed" | "job.timed_out"))];
                                " " code { (name) } " — " (what)
                            }
                        }
                        @if let Some(e) = errors.of("events") { p.field-error id="err-events" role="alert" { (e) } }
                    }
                    div.grid {
                        (row("environment", "Only jobs of environment", None, errors,
                            select("environment", &[("", "any"), ("production", "production"), ("staging", "staging")], f.get("environment"), errors)))
                        (row("secret", "Custom secret (optional)", Some("16–256 printable characters; leave empty to get a generated whsec_… secret"), errors,
                            text_input("secret", f.get("secret"), errors, true, InputAttrs { kind: "password", ..InputAttrs::text() })))
                    }
                    @if !jobs.is_empty() {
                        fieldset.row.invalid[errors.of("job_ids").is_some()] {
                            legend { "Only these jobs (none ticked: every job)" }
                            div.checklist {
                                @for j in &jobs {
                                    label.check {
                                        input type="checkbox" name="job_ids" value=(j.id.as_str()) checked[chosen_jobs.iter().any(|c| c == j.id.as_str())];
                                        " " (j.spec.name.as_str())
                                    }
                                }
                            }
                            @if let Some(e) = errors.of("job_ids") { p.field-error id="err-job_ids" role="alert" { (e) } }
                        }
                    }
                    (row("headers", "Custom headers", Some("Name: value, one per line; sent with every delivery"), errors, html! {
                        textarea #headers name="headers" rows="2" spellcheck="false"
                            aria-invalid=[errors.of("headers").map(|_| "true")]
                            aria-describedby=[layout::described_by("headers", true, errors)] { (f.get("headers")) }
                    }))
                    (row("description", "Description", None, errors, text_input("description", f.get("description"), errors, false, InputAttrs::text())))
                    div.form-actions { button.primary type="submit" { "Add subscription" } }
                }
            }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    cx.render_status(status, "Webhooks", body).await
}

/// `/settings/integrations/webhooks`.
pub(super) async fn list(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    render_page(&cx, &FormFields::default(), &FormErrors::default(), None).await
}

/// The API request body the subscription form stands for.
fn webhook_body(f: &FormFields) -> Value {
    let mut body = json!({
        "url": f.get("url"),
        "events": f.all("events"),
        "headers": pairs(f.get("headers"), ':'),
        "description": f.get("description"),
    });
    if let Some(env) = f.text("environment") {
        body["environment"] = env;
    }
    if let Some(secret) = f.text("secret") {
        body["secret"] = secret;
    }
    let jobs = f.all("job_ids");
    if !jobs.is_empty() {
        body["job_ids"] = json!(jobs);
    }
    body
}

/// POST `/settings/integrations/webhooks`: as `POST /v1/webhooks`.
pub(super) async fn create(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let f = FormFields::of(&req);
    let parsed = parse_body::<WebhookIn>(&Method::POST, "/v1/webhooks", webhook_body(&f))
        .and_then(|dto| dto.into_spec(cx.state.url_policy).map_err(FormErrors::from));
    let (spec, secret) = match parsed {
        Ok(p) => p,
        Err(errors) => return render_page(&cx, &f, &errors, None).await,
    };
    let hook = cx
        .state
        .store
        .create_webhook(
            spec,
            secret,
            &cx.changed_by(Method::POST, "/v1/webhooks", 201),
            cx.state.clock.now(),
        )
        .await?;
    let mut resp = render_page(
        &cx,
        &FormFields::default(),
        &FormErrors::default(),
        Some(Revealed {
            hook: &hook,
            rotated: false,
        }),
    )
    .await?;
    resp.set_status(StatusCode::CREATED);
    Ok(resp)
}

/// `/settings/integrations/webhooks/{id}/rotate|delete`: the confirmation.
pub(super) async fn confirm(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let id = hook_id(&req)?;
    let hook = cx
        .state
        .store
        .get_webhook(&id)
        .await?
        .ok_or_else(|| Failure::not_found("webhook", id.as_str()))?;
    let action = req.raw_path_param("action").unwrap_or_default().to_owned();
    let (title, text, button, class) = match action.as_str() {
        "rotate" => (
            "Rotate the signing secret?",
            format!(
                "A new secret is generated and shown once. The current one keeps signing beside it for \
                 {ROTATION_GRACE_HOURS} hours: deliveries carry both signatures meanwhile, so receivers can switch."
            ),
            "Rotate secret",
            "primary",
        ),
        "delete" => (
            "Delete this subscription?",
            "It receives no more events; its pending deliveries end dead.".to_owned(),
            "Delete subscription",
            "danger",
        ),
        _ => {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "There is no page at this address.",
            ));
        }
    };
    let body = html! {
        h1 { (title) }
        p { code { (redact_url(&hook.url)) } }
        p { (text) }
        @if cx.can_change() {
            form method="post" action={ (PAGE) "/" (id.as_str()) "/" (action) } {
                (layout::csrf_field(&cx))
                button class=(class) type="submit" { (button) }
                " "
                a.button href=(PAGE) { "Cancel" }
            }
        }
    };
    cx.render(title, body).await
}

/// POST `/settings/integrations/webhooks/{id}/{action}`: rotate, test, enable, disable
/// or delete, each as its `/v1/webhooks` call.
pub(super) async fn act(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let id = hook_id(&req)?;
    let now = cx.state.clock.now();
    let api_path = format!("/v1/webhooks/{}", id.as_str());
    let missing = || Failure::not_found("webhook", id.as_str());
    match req.raw_path_param("action").unwrap_or_default() {
        "rotate" => {
            let hook = cx
                .state
                .store
                .rotate_webhook_secret(
                    &id,
                    WebhookSecret::generate(),
                    &cx.changed_by(Method::POST, &format!("{api_path}/rotate-secret"), 200),
                    now,
                )
                .await?
                .ok_or_else(missing)?;
            render_page(
                &cx,
                &FormFields::default(),
                &FormErrors::default(),
                Some(Revealed {
                    hook: &hook,
                    rotated: true,
                }),
            )
            .await
        }
        "test" => {
            let delivery = cx
                .state
                .store
                .send_test_event(
                    &id,
                    &cx.changed_by(Method::POST, &format!("{api_path}/test"), 202),
                    now,
                )
                .await?
                .ok_or_else(missing)?;
            Ok(see_other(&format!("/deliveries/{}", delivery.as_str())))
        }
        action @ ("enable" | "enable-discard-held" | "disable") => {
            let current = cx.state.store.get_webhook(&id).await?.ok_or_else(missing)?;
            let body = match action {
                "enable-discard-held" => json!({ "enabled": true, "discard_held": true }),
                _ => json!({ "enabled": action == "enable" }),
            };
            let patch = parse_body::<WebhookPatchIn>(&Method::PATCH, &api_path, body)
                .map_err(|_| Failure::internal("the enable patch does not parse"))?;
            let discard_held = patch.discard_held();
            let spec = patch
                .apply(&current, cx.state.url_policy)
                .map_err(crate::ApiError::from)?;
            let by = cx.changed_by(Method::PATCH, &api_path, 200);
            cx.state
                .store
                .update_webhook(&id, spec, discard_held, &by, now)
                .await?
                .ok_or_else(missing)?;
            Ok(see_other(&format!("{PAGE}#{}", id.as_str())))
        }
        "delete" => {
            let by = cx.changed_by(Method::DELETE, &api_path, 204);
            if !cx.state.store.delete_webhook(&id, &by, now).await? {
                return Err(missing());
            }
            Ok(see_other(PAGE))
        }
        _ => Err(Failure::new(StatusCode::NOT_FOUND, "There is no such action.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_names_the_secret_without_revealing_it() {
        let s = WebhookSecret::parse("my-own-secret-value").unwrap();
        let fp = fingerprint(&s);
        assert_eq!(fp.len(), 19);
        assert_eq!(
            fp.replace(' ', ""),
            hex::encode(&Sha256::digest(b"my-own-secret-value")[..8])
        );
        assert!(!fp.contains("secret"));
    }
}
