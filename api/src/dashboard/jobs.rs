//! Jobs: the list, create and edit forms, a job's page (definition, next fire times, slot
//! strip, charts, run history), a run's page, and the actions (run now, pause, resume,
//! delete, cancel a run).

use super::{
    Ctx, Failure, charts, cron_words,
    forms::{FormErrors, FormFields, pairs, parse_body},
    layout::{self, InputAttrs, maybe_when, post_button, row, run_badge, select, text_input, when},
    see_other, time,
};
use crate::{
    ApiError,
    dto::jobs::{JobIn, JobPatchIn},
    error::{job_error, run_error},
};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use cronflow_jobs::domain::{
    Cursor, Job, JobId, PageRequest, Run, RunId, RunOrigin, RunState, Target,
    credentials::{REDACTED, redact_map, redact_url},
    job::{CatchUpPolicy, Environment, OverlapPolicy},
    watch::HealthState,
};
use maud::{Markup, html};
use poem::{
    Request, Response,
    http::{Method, StatusCode},
};
use serde_json::{Map, Value, json};

/// Runs per page of a job's history.
const RUNS_PER_PAGE: u32 = 50;
/// Runs read for the slot strip and the charts.
const RECENT_RUNS: u32 = 200;
/// Expected slots shown in the strip.
const STRIP_SLOTS: usize = 30;
/// A run that started at least this late is shown as late.
const LATE_MS: i64 = 1000;
/// Upcoming fire times shown.
const UPCOMING: usize = 5;

fn job_id(req: &Request) -> Result<JobId, Failure> {
    let id = req.raw_path_param("id").unwrap_or_default();
    JobId::parse(id).ok_or_else(|| Failure::not_found("job", id))
}

async fn load_job(cx: &Ctx, id: &JobId) -> Result<Job, Failure> {
    cx.state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| Failure::not_found("job", id.as_str()))
}

fn zone(job: &Job) -> Tz {
    job.spec.schedule.timezone().parse().unwrap_or(Tz::UTC)
}

/// `/` and `/jobs`.
pub(super) async fn list(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let q = FormFields::query(&req);
    let page =
        PageRequest::parse(None, Some(q.get("cursor")).filter(|c| !c.is_empty())).map_err(ApiError::from)?;
    let page = cx.state.store.list_jobs(&page).await?;
    let now = cx.state.clock.now();
    let first_run = PageRequest::parse(Some(1), None).map_err(ApiError::from)?;
    let mut last_runs = Vec::with_capacity(page.items.len());
    for job in &page.items {
        let runs = cx.state.store.list_runs(&job.id, &first_run).await?;
        last_runs.push(runs.items.into_iter().next());
    }
    let body = html! {
        div.heading {
            h1 { "Jobs" }
            @if cx.can_change() { div.actions { a.button.primary href="/jobs/new" { "New job" } } }
        }
        @if page.items.is_empty() {
            div.empty {
                p { "No jobs yet." }
                @if cx.can_change() {
                    p { a href="/jobs/new" { "Create the first job" } " — a schedule and a command or an HTTP request to run." }
                }
            }
        } @else {
            div.table-wrap {
                table.list {
                    (layout::head_row(&["Name", "Schedule", "Next run", "Last result", "Environment", "State"], cx.can_change()))
                    tbody {
                        @for (job, last) in page.items.iter().zip(&last_runs) {
                            tr {
                                td { a href={ "/jobs/" (job.id.as_str()) } { (job.spec.name.as_str()) } }
                                td {
                                    code { (job.spec.schedule.expr()) }
                                    br; small { (cron_words::describe(job.spec.schedule.expr())) }
                                    br; small.muted { (job.spec.schedule.timezone()) }
                                }
                                td { (maybe_when(job.next_run_at, Some(zone(job)), now)) }
                                td {
                                    @match last {
                                        Some(r) => {
                                            a href={ "/runs/" (r.id.as_str()) } { (run_badge(r.state)) }
                                            br; small.muted { (time::relative(r.finished_at.unwrap_or(r.created_at), now)) }
                                        }
                                        None => span.muted { "never ran" }
                                    }
                                }
                                td { span.badge.env { (job.spec.environment.as_str()) } }
                                td { @if job.paused { span.badge.warn { "paused" } } @else { span.badge.ok { "active" } } }
                                @if cx.can_change() {
                                    td.actions {
                                        (post_button(&cx, &format!("/jobs/{}/trigger", job.id.as_str()), "Run now", "small"))
                                        (pause_button(&cx, job, "/jobs", "small"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (layout::pager(page.next_cursor.map(|c| format!("/jobs?cursor={}", c.encode()))))
        }
    };
    cx.render("Jobs", body).await
}

/// Pause or resume, returning to `back`.
fn pause_button(cx: &Ctx, job: &Job, back: &str, class: &str) -> Markup {
    let (action, label) = if job.paused {
        ("resume", "Resume")
    } else {
        ("pause", "Pause")
    };
    html! {
        @if cx.can_change() {
            form.inline method="post" action={ "/jobs/" (job.id.as_str()) "/" (action) } {
                (layout::csrf_field(cx))
                input type="hidden" name="back" value=(back);
                button class=(class) type="submit" { (label) }
            }
        }
    }
}

/// The form's values for an existing job (the edit form's starting point).
fn fields_of(job: &Job) -> FormFields {
    let s = &job.spec;
    let mut f = vec![
        ("name", s.name.as_str().to_owned()),
        ("schedule", s.schedule.expr().to_owned()),
        ("timezone", s.schedule.timezone().to_owned()),
        ("timeout_seconds", s.timeout_seconds.to_string()),
        ("max_retries", s.max_retries.to_string()),
        ("alert_after_failures", s.alert_after_failures.to_string()),
        ("late_after_seconds", s.watch.late_after_seconds.to_string()),
        (
            "expected_duration_seconds",
            s.watch
                .expected_duration_seconds
                .map(|d| d.to_string())
                .unwrap_or_default(),
        ),
        ("environment", s.environment.as_str().to_owned()),
        ("overlap_policy", s.overlap_policy.as_str().to_owned()),
        ("catch_up", s.catch_up.as_str().to_owned()),
        ("tags", s.tags.as_slice().join(" ")),
    ];
    match &s.target {
        Target::Command(c) => {
            f.push(("target.type", "command".into()));
            match c.command() {
                [sh, dash_c, line] if sh == "sh" && dash_c == "-c" => {
                    f.push(("command_mode", "shell".into()));
                    f.push(("target.command", line.clone()));
                }
                argv => {
                    f.push(("command_mode", "argv".into()));
                    f.push(("target.command", argv.join("\n")));
                }
            }
            let env: Vec<String> = redact_map(c.env())
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            f.push(("target.env", env.join("\n")));
            f.push((
                "target.working_dir",
                c.working_dir().unwrap_or_default().to_owned(),
            ));
        }
        Target::Http(h) => {
            f.push(("target.type", "http".into()));
            let method = serde_json::to_value(h.method()).ok();
            f.push((
                "target.method",
                method
                    .and_then(|m| m.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ));
            f.push(("target.url", redact_url(h.url())));
            let headers: Vec<String> = redact_map(h.headers())
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            f.push(("target.headers", headers.join("\n")));
            let body = h.body().filter(|b| !b.is_empty()).map_or("", |_| REDACTED);
            f.push(("target.body", body.to_owned()));
        }
    }
    FormFields(f.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The API request body a job form stands for. `patch`: every field is sent (an edit
/// replaces them all); otherwise empty optional fields are left out, so the API's
/// defaults apply.
fn job_body(f: &FormFields, patch: bool) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), Value::from(f.get("name")));
    body.insert("schedule".into(), Value::from(f.get("schedule")));
    let optional = [
        ("timezone", f.text("timezone")),
        ("timeout_seconds", f.number("timeout_seconds")),
        ("max_retries", f.number("max_retries")),
        ("alert_after_failures", f.number("alert_after_failures")),
        ("late_after_seconds", f.number("late_after_seconds")),
        (
            "expected_duration_seconds",
            // Emptied on edit: unset (0), so the job is judged from its recent runs again.
            f.number("expected_duration_seconds")
                .or_else(|| patch.then(|| Value::from(0))),
        ),
        ("environment", f.text("environment")),
        ("overlap_policy", f.text("overlap_policy")),
        ("catch_up", f.text("catch_up")),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    let tags: Vec<&str> = f
        .get("tags")
        .split([' ', ','])
        .filter(|t| !t.is_empty())
        .collect();
    if patch || !tags.is_empty() {
        body.insert("tags".into(), json!(tags));
    }
    let target = if f.get("target.type") == "http" {
        let mut t = json!({
            "type": "http",
            "url": f.get("target.url"),
            "headers": pairs(f.get("target.headers"), ':'),
        });
        if let Some(m) = f.text("target.method") {
            t["method"] = m;
        }
        if let Some(b) = f.text("target.body") {
            t["body"] = b;
        }
        t
    } else {
        let line = f.get("target.command");
        let command: Vec<String> = if f.get("command_mode") == "argv" {
            line.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        } else if line.is_empty() {
            Vec::new()
        } else {
            vec!["sh".into(), "-c".into(), line.to_owned()]
        };
        let mut t = json!({ "type": "command", "command": command, "env": pairs(f.get("target.env"), '=') });
        if let Some(d) = f.text("target.working_dir") {
            t["working_dir"] = d;
        }
        t
    };
    body.insert("target".into(), target);
    Value::Object(body)
}

/// The fields of the job form, as the API names them.
const JOB_FIELDS: [&str; 18] = [
    "name",
    "schedule",
    "timezone",
    "target.type",
    "target.command",
    "target.env",
    "target.working_dir",
    "target.method",
    "target.url",
    "target.headers",
    "target.body",
    "timeout_seconds",
    "max_retries",
    "alert_after_failures",
    "late_after_seconds",
    "expected_duration_seconds",
    "environment",
    "tags",
];

fn options<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<(&'static str, &'static str)> {
    all.iter().map(|v| (as_str(*v), as_str(*v))).collect()
}

fn job_form(cx: &Ctx, action: &str, submit: &str, f: &FormFields, errors: &FormErrors) -> Markup {
    let is_http = f.get("target.type") == "http";
    let shell = f.get("command_mode") != "argv";
    let t = InputAttrs::text;
    html! {
        (layout::form_errors(errors, &JOB_FIELDS))
        form.job-form method="post" action=(action) novalidate {
            (layout::csrf_field(cx))
            fieldset {
                legend { "What and when" }
                (row("name", "Name", None, errors, text_input("name", f.get("name"), errors, false, InputAttrs { required: true, ..t() })))
                (row("schedule", "Schedule (cron)", Some("5 fields (minute hour day month weekday), 6 with seconds first, or @hourly, @daily…"), errors,
                    text_input("schedule", f.get("schedule"), errors, true, InputAttrs { required: true, placeholder: Some("0 2 * * *"), ..t() })))
                (row("timezone", "Time zone", Some("IANA name, e.g. Europe/Berlin; the schedule is read in it (default UTC)"), errors,
                    text_input("timezone", f.get("timezone"), errors, true, InputAttrs { placeholder: Some("UTC"), ..t() })))
            }
            fieldset.target {
                legend { "Target" }
                div.choice role="radiogroup" aria-label="Target type" {
                    label { input #type-command type="radio" name="target.type" value="command" checked[!is_http]; " Command" }
                    label { input #type-http type="radio" name="target.type" value="http" checked[is_http]; " HTTP request" }
                }
                div.cmd-only {
                    div.choice role="radiogroup" aria-label="How the command is given" {
                        label { input type="radio" name="command_mode" value="shell" checked[shell]; " Shell line (run with sh -c)" }
                        label { input type="radio" name="command_mode" value="argv" checked[!shell]; " Program and arguments, one per line" }
                    }
                    (row("target.command", "Command", None, errors, html! {
                        textarea #target.command name="target.command" rows="3" spellcheck="false"
                            aria-invalid=[errors.of("target.command").map(|_| "true")]
                            aria-describedby=[layout::described_by("target.command", false, errors)] { (f.get("target.command")) }
                    }))
                    (row("target.env", "Environment", Some("NAME=value, one per line"), errors, html! {
                        textarea #target.env name="target.env" rows="2" spellcheck="false"
                            aria-describedby=[layout::described_by("target.env", true, errors)] { (f.get("target.env")) }
                    }))
                    (row("target.working_dir", "Working directory", None, errors,
                        text_input("target.working_dir", f.get("target.working_dir"), errors, false, t())))
                }
                div.http-only {
                    (row("target.method", "Method", None, errors, select("target.method",
                        &[("GET", "GET"), ("POST", "POST"), ("PUT", "PUT"), ("PATCH", "PATCH"), ("DELETE", "DELETE"), ("HEAD", "HEAD")],
                        f.get("target.method"), errors)))
                    (row("target.url", "URL", None, errors,
                        text_input("target.url", f.get("target.url"), errors, false, InputAttrs { kind: "url", placeholder: Some("https://…"), ..t() })))
                    (row("target.headers", "Headers", Some("Name: value, one per line"), errors, html! {
                        textarea #target.headers name="target.headers" rows="2" spellcheck="false"
                            aria-describedby=[layout::described_by("target.headers", true, errors)] { (f.get("target.headers")) }
                    }))
                    (row("target.body", "Body", None, errors, html! {
                        textarea #target.body name="target.body" rows="3" spellcheck="false" { (f.get("target.body")) }
                    }))
                }
            }
            fieldset {
                legend { "Policies" }
                div.grid {
                    (row("timeout_seconds", "Timeout (seconds)", None, errors,
                        text_input("timeout_seconds", f.get("timeout_seconds"), errors, false, InputAttrs { inputmode: Some("numeric"), placeholder: Some("300"), ..t() })))
                    (row("max_retries", "Retries of a failed run", None, errors,
                        text_input("max_retries", f.get("max_retries"), errors, false, InputAttrs { inputmode: Some("numeric"), placeholder: Some("0"), ..t() })))
                    (row("alert_after_failures", "Alert after failures in a row", Some("job.failing once, job.recovered after; 0: never"), errors,
                        text_input("alert_after_failures", f.get("alert_after_failures"), errors, false, InputAttrs { inputmode: Some("numeric"), placeholder: Some("0"), ..t() })))
                    (row("late_after_seconds", "Late after (seconds)", Some("job.late when a slot's run has not started this long after it; 0: never"), errors,
                        text_input("late_after_seconds", f.get("late_after_seconds"), errors, false, InputAttrs { inputmode: Some("numeric"), placeholder: Some("60"), ..t() })))
                    (row("expected_duration_seconds", "Expected duration (seconds)", Some("job.overran past it; empty: twice the usual p95 of recent runs"), errors,
                        text_input("expected_duration_seconds", f.get("expected_duration_seconds"), errors, false, InputAttrs { inputmode: Some("numeric"), placeholder: Some("from recent runs"), ..t() })))
                    (row("environment", "Environment", None, errors, select("environment", &options(Environment::ALL, Environment::as_str), f.get("environment"), errors)))
                    (row("overlap_policy", "If the previous run is still going", None, errors,
                        select("overlap_policy", &options(OverlapPolicy::ALL, OverlapPolicy::as_str), f.get("overlap_policy"), errors)))
                    (row("catch_up", "Slots missed while down", None, errors,
                        select("catch_up", &options(CatchUpPolicy::ALL, CatchUpPolicy::as_str), f.get("catch_up"), errors)))
                    (row("tags", "Tags", Some("separated by spaces"), errors, text_input("tags", f.get("tags"), errors, true, t())))
                }
            }
            div.form-actions {
                button.primary type="submit" { (submit) }
                a.button href="/jobs" { "Cancel" }
            }
        }
    }
}

/// `/jobs/new`.
pub(super) async fn new_form(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let f = FormFields(vec![
        ("timezone".into(), "UTC".into()),
        ("timeout_seconds".into(), "300".into()),
    ]);
    let body =
        html! { h1 { "New job" } (job_form(&cx, "/jobs/new", "Create job", &f, &FormErrors::default())) };
    cx.render("New job", body).await
}

/// POST `/jobs/new`: as `POST /v1/jobs`.
pub(super) async fn create(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let f = FormFields::of(&req);
    let parsed = parse_body::<JobIn>(&Method::POST, "/v1/jobs", job_body(&f, false))
        .and_then(|dto| dto.into_spec(cx.state.url_policy).map_err(FormErrors::from));
    let spec = match parsed {
        Ok(spec) => spec,
        Err(errors) => {
            let body = html! { h1 { "New job" } (job_form(&cx, "/jobs/new", "Create job", &f, &errors)) };
            return cx
                .render_status(StatusCode::UNPROCESSABLE_ENTITY, "New job", body)
                .await;
        }
    };
    let by = cx.changed_by(Method::POST, "/v1/jobs", 201);
    let job = cx.state.store.create_job(spec, &by, cx.state.clock.now()).await?;
    Ok(see_other(&format!("/jobs/{}", job.id.as_str())))
}

/// `/jobs/{id}/edit`.
pub(super) async fn edit_form(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let job = load_job(&cx, &job_id(&req)?).await?;
    let action = format!("/jobs/{}/edit", job.id.as_str());
    let body = html! {
        h1 { "Edit " (job.spec.name.as_str()) }
        (job_form(&cx, &action, "Save changes", &fields_of(&job), &FormErrors::default()))
    };
    cx.render("Edit job", body).await
}

/// POST `/jobs/{id}/edit`: as `PATCH /v1/jobs/{id}` with every field.
pub(super) async fn update(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let id = job_id(&req)?;
    let f = FormFields::of(&req);
    let api_path = format!("/v1/jobs/{}", id.as_str());
    let patch = parse_body::<JobPatchIn>(&Method::PATCH, &api_path, job_body(&f, true))
        .and_then(|dto| dto.into_patch(cx.state.url_policy).map_err(FormErrors::from));
    let result = match patch {
        Ok(patch) => cx
            .state
            .store
            .update_job(
                &id,
                patch,
                &cx.changed_by(Method::PATCH, &api_path, 200),
                cx.state.clock.now(),
            )
            .await
            .map_err(|e| match e {
                cronflow_jobs::store::JobError::Invalid(v) => Ok(FormErrors::from(v)),
                other => Err(Failure::from(job_error(other, id.as_str()))),
            }),
        Err(errors) => Err(Ok(errors)),
    };
    match result {
        Ok(job) => Ok(see_other(&format!("/jobs/{}", job.id.as_str()))),
        Err(Ok(errors)) => {
            let action = format!("/jobs/{}/edit", id.as_str());
            let body = html! { h1 { "Edit job" } (job_form(&cx, &action, "Save changes", &f, &errors)) };
            cx.render_status(StatusCode::UNPROCESSABLE_ENTITY, "Edit job", body)
                .await
        }
        Err(Err(failure)) => Err(failure),
    }
}

/// POST `/jobs/{id}/trigger`: as `POST /v1/jobs/{id}/trigger`; shows the new run.
pub(super) async fn trigger(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let id = job_id(&req)?;
    let by = cx.changed_by(Method::POST, &format!("/v1/jobs/{}/trigger", id.as_str()), 202);
    let run = cx
        .state
        .store
        .trigger_run(&id, &by, cx.state.clock.now())
        .await
        .map_err(|e| run_error(e, "job", id.as_str()))?;
    Ok(see_other(&format!("/runs/{}", run.id.as_str())))
}

async fn set_paused(req: Request, paused: bool) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let id = job_id(&req)?;
    let verb = if paused { "pause" } else { "resume" };
    let by = cx.changed_by(Method::POST, &format!("/v1/jobs/{}/{verb}", id.as_str()), 200);
    cx.state
        .store
        .set_job_paused(&id, paused, &by, cx.state.clock.now())
        .await
        .map_err(|e| job_error(e, id.as_str()))?;
    let back = FormFields::of(&req).get("back").to_owned();
    let back = if back.starts_with('/') && !back.starts_with("//") {
        back
    } else {
        format!("/jobs/{}", id.as_str())
    };
    Ok(see_other(&back))
}

/// POST `/jobs/{id}/pause`: as `POST /v1/jobs/{id}/pause`.
pub(super) async fn pause(req: Request) -> Result<Response, Failure> {
    set_paused(req, true).await
}

/// POST `/jobs/{id}/resume`: as `POST /v1/jobs/{id}/resume`.
pub(super) async fn resume(req: Request) -> Result<Response, Failure> {
    set_paused(req, false).await
}

/// `/jobs/{id}/delete`: the confirmation.
pub(super) async fn delete_form(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let job = load_job(&cx, &job_id(&req)?).await?;
    let body = html! {
        h1 { "Delete " (job.spec.name.as_str()) "?" }
        p { "The job stops firing and disappears from the list. Its past runs are pruned with the retention policy." }
        @if cx.can_change() {
            form method="post" action={ "/jobs/" (job.id.as_str()) "/delete" } {
                (layout::csrf_field(&cx))
                button.danger type="submit" { "Delete the job" }
                " "
                a.button href={ "/jobs/" (job.id.as_str()) } { "Keep it" }
            }
        }
    };
    cx.render("Delete job", body).await
}

/// POST `/jobs/{id}/delete`: as `DELETE /v1/jobs/{id}`.
pub(super) async fn delete(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let id = job_id(&req)?;
    let by = cx.changed_by(Method::DELETE, &format!("/v1/jobs/{}", id.as_str()), 204);
    if !cx.state.store.delete_job(&id, &by, cx.state.clock.now()).await? {
        return Err(Failure::not_found("job", id.as_str()));
    }
    Ok(see_other("/jobs"))
}

/// One expected slot of the strip and what became of it.
struct Slot {
    at: DateTime<Utc>,
    class: &'static str,
    what: String,
    run: Option<RunId>,
}

/// The schedule's last `STRIP_SLOTS` slots before `now` (since the job exists), each
/// matched with the ledger: on time, late (by how much), failed, skipped, missed,
/// running, or not on record (paused, or before a schedule change).
fn slot_strip(job: &Job, runs: &[Run], now: DateTime<Utc>) -> Vec<Slot> {
    let schedule = &job.spec.schedule;
    let mut expected = Vec::new();
    for days in [0.05_f64, 1.0, 7.0, 31.0, 366.0] {
        let from =
            (now - Duration::minutes((days * 1440.0) as i64)).max(job.created_at - Duration::milliseconds(1));
        expected = std::iter::successors(schedule.next_after(from), |t| schedule.next_after(*t))
            .take_while(|t| *t <= now)
            .take(10_000)
            .collect::<Vec<_>>();
        if expected.len() >= STRIP_SLOTS || from >= job.created_at - Duration::milliseconds(1) {
            break;
        }
    }
    let skip = expected.len().saturating_sub(STRIP_SLOTS);
    expected
        .into_iter()
        .skip(skip)
        .map(|at| {
            let run = runs
                .iter()
                .filter(|r| r.scheduled_for == Some(at))
                .max_by_key(|r| r.attempt)
                .or_else(|| {
                    runs.iter().find(|r| {
                        r.state == RunState::Missed
                            && r.scheduled_for.is_some_and(|s| s <= at)
                            && r.missed_last.is_some_and(|l| at <= l)
                    })
                });
            let (class, what) = match run {
                None => (
                    "none",
                    "not on record (paused, or before the schedule changed)".to_owned(),
                ),
                Some(r) => {
                    let late = r.lateness_ms.filter(|l| *l >= LATE_MS);
                    match (r.state, late) {
                        (RunState::Completed, None) => ("ok", "ran on time".to_owned()),
                        (RunState::Completed, Some(l)) => {
                            ("late", format!("ran late by {}", time::millis(l)))
                        }
                        (RunState::Failed, _) => ("bad", "failed".to_owned()),
                        (RunState::TimedOut, _) => ("bad", "timed out".to_owned()),
                        (RunState::Skipped, _) => {
                            ("warn", "skipped: the previous run was still going".to_owned())
                        }
                        (RunState::Missed, _) => ("missed", "missed: CronFlow was down".to_owned()),
                        (RunState::Cancelled, _) => ("muted", "cancelled".to_owned()),
                        (s, _) => ("info", s.as_str().to_owned()),
                    }
                }
            };
            Slot {
                at,
                class,
                what,
                run: run.map(|r| r.id.clone()),
            }
        })
        .collect()
}

fn strip(slots: &[Slot], tz: Tz) -> Markup {
    html! {
        @if slots.is_empty() {
            p.muted { "No slot has come due since the job was created." }
        } @else {
            ol.slots aria-label="Expected slots, oldest first" {
                @for s in slots {
                    @let label = format!("{} ({}): {}", time::utc(s.at), time::in_zone(s.at, tz), s.what);
                    li class={ "slot " (s.class) } {
                        @match &s.run {
                            Some(id) => a href={ "/runs/" (id.as_str()) } title=(label) { span.visually-hidden { (label) } }
                            None => span title=(label) { span.visually-hidden { (label) } }
                        }
                    }
                }
            }
            ul.legend aria-hidden="true" {
                @for (class, label) in [("ok", "on time"), ("late", "late"), ("bad", "failed"), ("warn", "skipped"), ("missed", "missed"), ("info", "running"), ("none", "not on record")] {
                    li { span class={ "slot " (class) } {} " " (label) }
                }
            }
        }
    }
}

fn target_summary(t: &Target) -> Markup {
    match t {
        Target::Command(c) => html! {
            @match c.command() {
                [sh, dash_c, line] if sh == "sh" && dash_c == "-c" => { "Shell: " code { (line) } }
                argv => { "Command: " code { (argv.join(" ")) } }
            }
            @if let Some(d) = c.working_dir() { " in " code { (d) } }
        },
        Target::Http(h) => html! {
            "HTTP " (serde_json::to_value(h.method()).ok().and_then(|m| m.as_str().map(str::to_owned)).unwrap_or_default())
            " " code { (redact_url(h.url())) }
        },
    }
}

/// `/jobs/{id}`.
pub(super) async fn show(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let job = load_job(&cx, &job_id(&req)?).await?;
    let tz = zone(&job);
    let now = cx.state.clock.now();
    let q = FormFields::query(&req);
    let cursor = q.get("cursor");
    let first_page = cursor.is_empty();
    let limit = if first_page { RECENT_RUNS } else { RUNS_PER_PAGE };
    let page =
        PageRequest::parse(Some(limit), Some(cursor).filter(|c| !c.is_empty())).map_err(ApiError::from)?;
    let runs = cx.state.store.list_runs(&job.id, &page).await?;
    let shown = &runs.items[..runs.items.len().min(RUNS_PER_PAGE as usize)];
    let next = if runs.items.len() > shown.len() {
        shown.last().map(|r| Cursor::after(r.created_at, r.id.as_str()))
    } else {
        runs.next_cursor.clone()
    };
    let upcoming: Vec<DateTime<Utc>> = job
        .next_run_at
        .map(|first| {
            let mut v = vec![first];
            v.extend(job.spec.schedule.upcoming(first, UPCOMING - 1));
            v
        })
        .unwrap_or_default();
    let chart_runs: Vec<&Run> = runs
        .items
        .iter()
        .filter(|r| r.duration_ms.is_some() || r.lateness_ms.is_some())
        .take(50)
        .collect();
    let health = cx.state.store.job_health(&job, now).await?;
    let id = job.id.as_str();
    let body = html! {
        div.heading {
            h1 { (job.spec.name.as_str()) }
            div.badges {
                span.badge.env { (job.spec.environment.as_str()) }
                @if job.paused { span.badge.warn { "paused" } } @else { span.badge.ok { "active" } }
                @match health.state {
                    HealthState::OnTime => span.badge.ok title="No late slot, no overrun, no failure streak" { "on time" },
                    HealthState::Late => span.badge.bad title="A slot's run has not started late_after_seconds after it" { "late" },
                    HealthState::Overran => span.badge.warn title="A run is going past its expected duration" { "overran" },
                    HealthState::Failing => span.badge.bad title="Its final runs failed alert_after_failures times in a row" { "failing" },
                }
            }
            @if cx.can_change() {
                div.actions {
                    (post_button(&cx, &format!("/jobs/{id}/trigger"), "Run now", "primary"))
                    a.button href={ "/jobs/" (id) "/edit" } { "Edit" }
                    (pause_button(&cx, &job, &format!("/jobs/{id}"), ""))
                    a.button.danger href={ "/jobs/" (id) "/delete" } { "Delete…" }
                }
            }
        }
        div.cards {
            section.card {
                h2 { "Definition" }
                dl {
                    dt { "Schedule" } dd { code { (job.spec.schedule.expr()) } " — " (cron_words::describe(job.spec.schedule.expr())) }
                    dt { "Time zone" } dd { (tz.name()) }
                    dt { "Target" } dd { (target_summary(&job.spec.target)) }
                    dt { "Timeout" } dd { (job.spec.timeout_seconds) " s" }
                    dt { "Retries" } dd { (job.spec.max_retries) }
                    @if job.spec.alert_after_failures > 0 {
                        dt { "Alerts" } dd { "after " (job.spec.alert_after_failures) " failures in a row" }
                    }
                    @if job.failure_streak > 0 {
                        dt { "Failing" } dd { span.badge.bad { (job.failure_streak) " in a row" } }
                    }
                    dt { "Late after" } dd {
                        @if job.spec.watch.late_after_seconds == 0 { "never (job.late off)" }
                        @else { (job.spec.watch.late_after_seconds) " s" }
                    }
                    dt { "Overran after" } dd {
                        @match job.spec.watch.expected_duration_seconds {
                            Some(s) => { (s) " s" }
                            None => "twice the usual p95 of recent runs",
                        }
                    }
                    dt { "Last on-time run" } dd {
                        @match &health.last_on_time_run {
                            Some((run, at)) => a href={ "/runs/" (run.as_str()) } { (time::relative(*at, now)) },
                            None => span.muted { "none yet" },
                        }
                    }
                    dt { "Overlap" } dd { (job.spec.overlap_policy.as_str()) }
                    dt { "Catch-up" } dd { (job.spec.catch_up.as_str()) }
                    @if !job.spec.tags.as_slice().is_empty() {
                        dt { "Tags" } dd { @for t in job.spec.tags.as_slice() { span.badge.tag { (t) } " " } }
                    }
                    dt { "Id" } dd { code { (id) } }
                }
            }
            section.card {
                h2 { "Next " (UPCOMING) " fire times" }
                @if upcoming.is_empty() {
                    p.muted { "None while the job is paused." }
                } @else {
                    ol.upcoming {
                        @for (i, t) in upcoming.iter().enumerate() {
                            li {
                                (when(*t, Some(tz), now))
                                @if let Some(note) = time::dst_note(i.checked_sub(1).map(|p| upcoming[p]), *t, tz) {
                                    br; span.badge.warn.dst { "DST" } " " small { (note) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if first_page {
            section.card {
                h2 { "Slots" }
                p.muted.small { "The schedule's last " (STRIP_SLOTS) " expected slots against what happened, oldest first." }
                (strip(&slot_strip(&job, &runs.items, now), tz))
            }
            @if !chart_runs.is_empty() {
                div.cards {
                    section.card {
                        h2 { "Run durations" }
                        (charts::millis_bars(
                            &format!("Durations of the last {} runs", chart_runs.len()),
                            &chart_runs.iter().rev().map(|r| charts::Bar {
                                label: format!("{} — {}: {}", time::utc(r.created_at), r.state.as_str(),
                                    r.duration_ms.map(time::millis).unwrap_or_else(|| "no duration".into())),
                                value: r.duration_ms.map(|d| d as f64),
                                class: if r.state == RunState::Completed { "ok" } else { "bad" },
                            }).collect::<Vec<_>>()))
                    }
                    section.card {
                        h2 { "Lateness" }
                        @if chart_runs.iter().all(|r| r.lateness_ms.is_none()) {
                            p.muted { "No scheduled run yet: runs started with “Run now” have no lateness." }
                        } @else {
                        (charts::millis_bars(
                            &format!("How late the last {} scheduled runs started", chart_runs.len()),
                            &chart_runs.iter().rev().map(|r| charts::Bar {
                                label: format!("{} — {}", time::utc(r.created_at),
                                    r.lateness_ms.map(time::millis).unwrap_or_else(|| "manual run".into())),
                                value: r.lateness_ms.map(|l| l.max(0) as f64),
                                class: if r.lateness_ms.unwrap_or(0) >= LATE_MS { "late" } else { "ok" },
                            }).collect::<Vec<_>>()))
                        }
                    }
                }
            }
        }
        section {
            h2 { "Run history" }
            (runs_table(shown, tz, now))
            (layout::pager(next.map(|c| format!("/jobs/{id}?cursor={}", c.encode()))))
        }
    };
    cx.render(job.spec.name.as_str(), body).await
}

fn runs_table(runs: &[Run], tz: Tz, now: DateTime<Utc>) -> Markup {
    html! {
        @if runs.is_empty() {
            p.empty { "No runs yet. Slots that come due appear here, including those skipped or missed." }
        } @else {
            div.table-wrap {
                table.list {
                    (layout::head_row(&["State", "Slot", "Started", "Duration", "Lateness", "Attempt", "Why"], false))
                    tbody {
                        @for r in runs {
                            tr {
                                td { a href={ "/runs/" (r.id.as_str()) } { (run_badge(r.state)) } }
                                td { (maybe_when(r.scheduled_for, Some(tz), now)) }
                                td { (maybe_when(r.started_at, Some(tz), now)) }
                                td { (r.duration_ms.map(time::millis).unwrap_or_default()) }
                                td { (r.lateness_ms.map(time::millis).unwrap_or_default()) }
                                td { (r.attempt) }
                                td.reason {
                                    @match r.state {
                                        RunState::Missed => {
                                            (r.missed_count.unwrap_or(1)) " slot(s) missed while CronFlow was down"
                                            @if let Some(l) = r.missed_last { ", the last at " (time::utc(l)) }
                                        }
                                        RunState::Skipped => "the previous run was still going (overlap: skip)",
                                        _ => {
                                            (origin_words(r.origin))
                                            @if let Some(e) = &r.error { ": " (e) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn origin_words(o: RunOrigin) -> &'static str {
    match o {
        RunOrigin::Schedule => "scheduled",
        RunOrigin::CatchUp => "catch-up after downtime",
        RunOrigin::Manual => "run now",
        RunOrigin::Retry => "retry",
    }
}

/// `/runs/{id}`.
pub(super) async fn run(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let raw = req.raw_path_param("id").unwrap_or_default();
    let id = RunId::parse(raw).ok_or_else(|| Failure::not_found("run", raw))?;
    let run = cx
        .state
        .store
        .get_run(&id)
        .await?
        .ok_or_else(|| Failure::not_found("run", raw))?;
    let job = cx.state.store.get_job(&run.job_id).await?;
    let tz = job.as_ref().map_or(Tz::UTC, zone);
    let now = cx.state.clock.now();
    let body = html! {
        div.heading {
            h1 { "Run " code { (run.id.as_str()) } }
            (run_badge(run.state))
            @if !run.state.is_final() {
                (post_button(&cx, &format!("/runs/{}/cancel", run.id.as_str()), "Cancel run", "danger"))
                a.button href={ "/runs/" (run.id.as_str()) } { "Refresh" }
            }
        }
        section.card {
            dl {
                dt { "Job" }
                dd {
                    @match &job {
                        Some(j) => a href={ "/jobs/" (j.id.as_str()) } { (j.spec.name.as_str()) },
                        None => code { (run.job_id.as_str()) " (deleted)" },
                    }
                }
                dt { "Why" } dd { (origin_words(run.origin)) ", attempt " (run.attempt) }
                dt { "Slot" } dd { (maybe_when(run.scheduled_for, Some(tz), now)) }
                dt { "Started" } dd { (maybe_when(run.started_at, Some(tz), now)) }
                dt { "Finished" } dd { (maybe_when(run.finished_at, Some(tz), now)) }
                dt { "Duration" } dd { (run.duration_ms.map(time::millis).unwrap_or_else(|| "—".into())) }
                dt { "Lateness" } dd { (run.lateness_ms.map(time::millis).unwrap_or_else(|| "— (not scheduled)".into())) }
                dt { "Exit code" } dd { (run.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) }
                @if let (RunState::Missed, Some(n)) = (run.state, run.missed_count) {
                    dt { "Missed slots" } dd { (layout::thousands(u64::try_from(n).unwrap_or(0))) }
                }
            }
        }
        @if let Some(e) = &run.error {
            section { h2 { "Message" } p.error { (e) } }
        }
        @if let Some(s) = &run.stack_trace {
            section { h2 { "Stack trace" } pre.output { (s) } }
        }
        section {
            h2 { "Output" }
            @match &run.output {
                Some(o) if !o.is_empty() => pre.output tabindex="0" { (o) },
                _ => p.muted { @if run.state.is_final() { "No output." } @else { "No output yet." } },
            }
        }
    };
    cx.render(&format!("Run {}", run.id.as_str()), body).await
}

/// POST `/runs/{id}/cancel`: as `POST /v1/runs/{id}/cancel`.
pub(super) async fn cancel_run(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let raw = req.raw_path_param("id").unwrap_or_default();
    let id = RunId::parse(raw).ok_or_else(|| Failure::not_found("run", raw))?;
    let by = cx.changed_by(Method::POST, &format!("/v1/runs/{raw}/cancel"), 202);
    cx.state
        .store
        .cancel_run(&id, &by, cx.state.clock.now())
        .await
        .map_err(|e| run_error(e, "run", raw))?;
    Ok(see_other(&format!("/runs/{raw}")))
}
