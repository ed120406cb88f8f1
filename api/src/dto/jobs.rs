//! Jobs: what `POST`/`PATCH /v1/jobs` accept (with their targets) and what the job
//! routes return.

use chrono::{DateTime, Utc};
use cronflow_jobs::{
    ValidationError,
    domain::{
        self, CommandTarget, HttpTarget, Job, JobSpec, Schedule,
        credentials::{REDACTED, redact_map, redact_url},
        job::{JobName, Tags, check_alert_after_failures, check_max_retries, check_timeout},
        target::UrlPolicy,
        watch::{DEFAULT_LATE_AFTER_SECONDS, HealthState, WatchSettings},
    },
    store::JobHealth,
};
use poem_openapi::{Enum, Object, Union, types::Example};
use std::collections::BTreeMap;

/// How many upcoming fire times a job shows.
const UPCOMING: usize = 5;
mirror_enum!(
    /// `production` or `staging`; copied into every event of the job.
    Environment => domain::Environment { Production, Staging }
);
mirror_enum!(
    /// When a run is due while the previous one still runs: `skip` it (recorded as
    /// `skipped`), `allow` it to run concurrently, or `queue` it until the previous ends.
    OverlapPolicy => domain::OverlapPolicy { Skip, Allow, Queue }
);
mirror_enum!(
    /// Slots missed while CronFlow was down: `latest` runs once for the whole window,
    /// `all` runs each missed slot (within a bounded window), `none` runs none; skipped
    /// stretches are recorded as `missed`.
    CatchUpPolicy => domain::CatchUpPolicy { Latest, All, None }
);
/// HTTP method of an `http` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "UPPERCASE")]
pub(crate) enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl From<HttpMethod> for domain::HttpMethod {
    fn from(m: HttpMethod) -> Self {
        match m {
            HttpMethod::Get => Self::Get,
            HttpMethod::Post => Self::Post,
            HttpMethod::Put => Self::Put,
            HttpMethod::Patch => Self::Patch,
            HttpMethod::Delete => Self::Delete,
            HttpMethod::Head => Self::Head,
        }
    }
}

impl From<domain::HttpMethod> for HttpMethod {
    fn from(m: domain::HttpMethod) -> Self {
        match m {
            domain::HttpMethod::Get => Self::Get,
            domain::HttpMethod::Post => Self::Post,
            domain::HttpMethod::Put => Self::Put,
            domain::HttpMethod::Patch => Self::Patch,
            domain::HttpMethod::Delete => Self::Delete,
            domain::HttpMethod::Head => Self::Head,
        }
    }
}

/// Run a program. No shell is involved unless you ask for one (`["sh", "-c", "..."]`).
/// It runs in its own process group, which is killed as a whole on timeout or cancel.
#[derive(Debug, Clone, Object)]
#[oai(rename = "CommandTarget")]
pub(crate) struct CommandTargetDto {
    /// Program and arguments, e.g. `["./report.sh", "--daily"]` (1 to 1024 items).
    #[oai(validator(min_items = 1, max_items = 1024))]
    command: Vec<String>,
    /// Extra environment variables. Values read back as `[redacted]`, kept when sent
    /// back so.
    #[oai(default)]
    env: BTreeMap<String, String>,
    /// Directory to run in; defaults to CronFlow's working directory.
    #[oai(skip_serializing_if_is_none, validator(min_length = 1))]
    working_dir: Option<String>,
}

fn default_method() -> HttpMethod {
    HttpMethod::Get
}

/// Send an HTTP request; a 2xx answer is success. `https` is required unless the
/// operator set `CRONFLOW_ALLOW_PRIVATE_TARGETS`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "HttpTarget")]
pub(crate) struct HttpTargetDto {
    /// Method (default `GET`).
    #[oai(default = "default_method")]
    method: HttpMethod,
    /// Absolute URL (`https://…`; plain `http` only if the operator allows it). Query
    /// values and a password read back as `[redacted]`, kept when sent back so.
    #[oai(validator(min_length = 1))]
    url: String,
    /// Extra request headers. Values read back as `[redacted]`, kept when sent back so.
    #[oai(default)]
    headers: BTreeMap<String, String>,
    /// Request body (at most 256 KiB). Reads back as `[redacted]`, kept when sent back so.
    #[oai(skip_serializing_if_is_none)]
    body: Option<String>,
}

/// What a job runs, told apart by `type`.
#[derive(Debug, Clone, Union)]
#[oai(
    discriminator_name = "type",
    rename_all = "snake_case",
    one_of,
    rename = "Target"
)]
pub(crate) enum TargetDto {
    /// A program.
    Command(CommandTargetDto),
    /// An HTTP request.
    Http(HttpTargetDto),
}

impl TargetDto {
    fn into_domain(self, policy: UrlPolicy) -> Result<domain::Target, ValidationError> {
        let target = match self {
            TargetDto::Command(c) => {
                domain::Target::Command(CommandTarget::parse(c.command, c.env, c.working_dir)?)
            }
            TargetDto::Http(h) => domain::Target::Http(HttpTarget::parse(
                h.method.into(),
                &h.url,
                h.headers,
                h.body,
                policy,
            )?),
        };
        Ok(target)
    }
}

/// The API view of a target: credentials (environment values, an HTTP target's header
/// values, body and URL query values) redacted; `POST /v1/reveal` shows them.
impl From<&domain::Target> for TargetDto {
    fn from(t: &domain::Target) -> Self {
        match t {
            domain::Target::Command(c) => TargetDto::Command(CommandTargetDto {
                command: c.command().to_vec(),
                env: redact_map(c.env()),
                working_dir: c.working_dir().map(str::to_owned),
            }),
            domain::Target::Http(h) => TargetDto::Http(HttpTargetDto {
                method: h.method().into(),
                url: redact_url(h.url()),
                headers: redact_map(h.headers()),
                body: h.body().map(|b| {
                    if b.is_empty() {
                        String::new()
                    } else {
                        REDACTED.to_owned()
                    }
                }),
            }),
        }
    }
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

fn default_timeout() -> u32 {
    domain::job::DEFAULT_TIMEOUT_SECONDS
}

/// A new job.
#[derive(Debug, Object)]
#[oai(rename = "JobIn", deny_unknown_fields, example)]
pub(crate) struct JobIn {
    /// Display name, 1 to 200 characters, not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    name: String,
    /// Cron expression: 5 fields, 6 with seconds first, or `@hourly`-style macros.
    #[oai(validator(min_length = 1))]
    schedule: String,
    /// IANA time zone the schedule is read in (default `UTC`).
    #[oai(default = "default_timezone", validator(min_length = 1))]
    timezone: String,
    /// What to run.
    target: TargetDto,
    /// Seconds before a run is stopped and marked `timed_out` (1 to 604800, default 300).
    #[oai(
        default = "default_timeout",
        validator(minimum(value = "1"), maximum(value = "604800"))
    )]
    timeout_seconds: u32,
    /// Retries of a failed run, with exponential backoff (0 to 100, default 0).
    #[oai(default, validator(minimum(value = "0"), maximum(value = "100")))]
    max_retries: u32,
    /// Default `production`.
    #[oai(default)]
    environment: Option<Environment>,
    /// Default `skip`.
    #[oai(default)]
    overlap_policy: Option<OverlapPolicy>,
    /// Default `latest`.
    #[oai(default)]
    catch_up: Option<CatchUpPolicy>,
    /// Labels, at most 32, each 1 to 64 characters without spaces, no duplicates.
    #[oai(
        default,
        validator(max_items = 32, unique_items, min_length = 1, max_length = 64)
    )]
    tags: Vec<String>,
    /// Send `job.failing` once this many final runs in a row failed or timed out (a
    /// run's last retry counts, not each attempt), and `job.recovered` at the next
    /// completed run; 0 to 1000, default 0 (never).
    #[oai(default, validator(minimum(value = "0"), maximum(value = "1000")))]
    alert_after_failures: u32,
    /// Send `job.late` when a slot's run has not started this many seconds after it,
    /// whether the scheduler or the workers are down, stuck or behind (0 to 604800;
    /// default 60; 0: never).
    #[oai(validator(minimum(value = "0"), maximum(value = "604800")))]
    late_after_seconds: Option<u32>,
    /// Send `job.overran` when a run goes on past this many seconds (below
    /// `timeout_seconds`); absent or 0: past twice the 95th percentile of its last 20
    /// completed runs (at least 10 s), once it has 5.
    #[oai(validator(minimum(value = "0"), maximum(value = "604800")))]
    expected_duration_seconds: Option<u32>,
}

impl Example for JobIn {
    fn example() -> Self {
        JobIn {
            name: "nightly-report".into(),
            schedule: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            target: TargetDto::Command(CommandTargetDto {
                command: vec!["echo".into(), "report done".into()],
                env: BTreeMap::new(),
                working_dir: None,
            }),
            timeout_seconds: 300,
            max_retries: 0,
            environment: Some(Environment::Production),
            overlap_policy: None,
            catch_up: None,
            tags: vec!["reports".into()],
            alert_after_failures: 3,
            late_after_seconds: Some(120),
            expected_duration_seconds: Some(600),
        }
    }
}

impl JobIn {
    /// Parses the body into a job definition.
    pub(crate) fn into_spec(self, policy: UrlPolicy) -> Result<JobSpec, ValidationError> {
        Ok(JobSpec {
            name: JobName::parse(&self.name)?,
            schedule: Schedule::parse(&self.schedule, &self.timezone)?,
            target: self.target.into_domain(policy).map_err(|e| e.within("target"))?,
            timeout_seconds: check_timeout(self.timeout_seconds)?,
            max_retries: check_max_retries(self.max_retries)?,
            environment: self.environment.map(Into::into).unwrap_or_default(),
            overlap_policy: self.overlap_policy.map(Into::into).unwrap_or_default(),
            catch_up: self.catch_up.map(Into::into).unwrap_or_default(),
            tags: Tags::parse(self.tags)?,
            alert_after_failures: check_alert_after_failures(self.alert_after_failures)?,
            watch: WatchSettings::parse(
                self.late_after_seconds.unwrap_or(DEFAULT_LATE_AFTER_SECONDS),
                self.expected_duration_seconds.unwrap_or(0),
                self.timeout_seconds,
            )?,
        })
    }
}

/// A change to a job: fields present replace the job's; absent ones stay.
#[derive(Debug, Object)]
#[oai(rename = "JobPatch", deny_unknown_fields)]
pub(crate) struct JobPatchIn {
    /// New name.
    #[oai(validator(min_length = 1, max_length = 200))]
    name: Option<String>,
    /// New cron expression.
    #[oai(validator(min_length = 1))]
    schedule: Option<String>,
    /// New time zone.
    #[oai(validator(min_length = 1))]
    timezone: Option<String>,
    /// New target (replaces the whole target).
    target: Option<TargetDto>,
    /// New timeout in seconds (1 to 604800).
    #[oai(validator(minimum(value = "1"), maximum(value = "604800")))]
    timeout_seconds: Option<u32>,
    /// New retry count (0 to 100).
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    max_retries: Option<u32>,
    /// New environment.
    environment: Option<Environment>,
    /// New overlap policy.
    overlap_policy: Option<OverlapPolicy>,
    /// New catch-up policy.
    catch_up: Option<CatchUpPolicy>,
    /// New tags (replacing all).
    #[oai(validator(max_items = 32, unique_items, min_length = 1, max_length = 64))]
    tags: Option<Vec<String>>,
    /// New failure-streak threshold (0 to 1000; 0 turns the alert off).
    #[oai(validator(minimum(value = "0"), maximum(value = "1000")))]
    alert_after_failures: Option<u32>,
    /// New `job.late` delay (0 to 604800; 0 turns it off).
    #[oai(validator(minimum(value = "0"), maximum(value = "604800")))]
    late_after_seconds: Option<u32>,
    /// New expected duration (0 to 604800; 0 unsets it: judged from recent runs).
    #[oai(validator(minimum(value = "0"), maximum(value = "604800")))]
    expected_duration_seconds: Option<u32>,
}

impl JobPatchIn {
    /// Parses the body into a domain patch.
    pub(crate) fn into_patch(self, policy: UrlPolicy) -> Result<domain::JobPatch, ValidationError> {
        Ok(domain::JobPatch {
            name: self.name.as_deref().map(JobName::parse).transpose()?,
            schedule: self.schedule,
            timezone: self.timezone,
            target: self
                .target
                .map(|t| t.into_domain(policy).map_err(|e| e.within("target")))
                .transpose()?,
            timeout_seconds: self.timeout_seconds.map(check_timeout).transpose()?,
            max_retries: self.max_retries.map(check_max_retries).transpose()?,
            environment: self.environment.map(Into::into),
            overlap_policy: self.overlap_policy.map(Into::into),
            catch_up: self.catch_up.map(Into::into),
            tags: self.tags.map(Tags::parse).transpose()?,
            late_after_seconds: self.late_after_seconds,
            expected_duration_seconds: self.expected_duration_seconds,
            alert_after_failures: self
                .alert_after_failures
                .map(check_alert_after_failures)
                .transpose()?,
        })
    }
}

/// A job as stored.
#[derive(Debug, Object)]
#[oai(rename = "Job")]
pub(crate) struct JobOut {
    /// `wf_…`.
    id: String,
    name: String,
    schedule: String,
    timezone: String,
    target: TargetDto,
    timeout_seconds: u32,
    max_retries: u32,
    environment: Environment,
    overlap_policy: OverlapPolicy,
    catch_up: CatchUpPolicy,
    tags: Vec<String>,
    /// `job.failing` after this many final failures in a row (0: never).
    alert_after_failures: u32,
    /// Final runs in a row, up to the last, that failed or timed out.
    consecutive_failures: u32,
    /// `job.late` when a slot's run has not started this long after it (0: never).
    late_after_seconds: u32,
    /// `job.overran` past this; absent: judged from its recent runs.
    #[oai(skip_serializing_if_is_none)]
    expected_duration_seconds: Option<u32>,
    /// How the job is doing (`GET /v1/jobs/{id}` only).
    #[oai(skip_serializing_if_is_none)]
    health: Option<JobHealthOut>,
    /// Paused jobs do not fire.
    paused: bool,
    /// The next scheduled run; absent while paused.
    #[oai(skip_serializing_if_is_none)]
    next_run_at: Option<DateTime<Utc>>,
    /// The next few fire times, to check a schedule (and its DST behaviour) before
    /// trusting it; empty while paused.
    next_run_times: Vec<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl JobOut {
    /// The API view of `job`; upcoming times are computed from its next fire time.
    pub(crate) fn new(job: &Job) -> Self {
        let s = &job.spec;
        let next_run_times = job
            .next_run_at
            .map(|first| {
                let mut v = vec![first];
                v.extend(s.schedule.upcoming(first, UPCOMING - 1));
                v
            })
            .unwrap_or_default();
        JobOut {
            id: job.id.to_string(),
            name: s.name.as_str().to_owned(),
            schedule: s.schedule.expr().to_owned(),
            timezone: s.schedule.timezone().to_owned(),
            target: (&s.target).into(),
            timeout_seconds: s.timeout_seconds,
            max_retries: s.max_retries,
            environment: s.environment.into(),
            overlap_policy: s.overlap_policy.into(),
            catch_up: s.catch_up.into(),
            tags: s.tags.as_slice().to_vec(),
            alert_after_failures: s.alert_after_failures,
            consecutive_failures: job.failure_streak,
            late_after_seconds: s.watch.late_after_seconds,
            expected_duration_seconds: s.watch.expected_duration_seconds,
            health: None,
            paused: job.paused,
            next_run_at: job.next_run_at,
            next_run_times,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}

impl JobOut {
    /// The view with the job's health.
    pub(crate) fn with_health(mut self, health: &JobHealth) -> Self {
        self.health = Some(JobHealthOut::from(health));
        self
    }
}

/// A job's health: the worst of what holds, each part, and its last on-time run.
#[derive(Debug, Object)]
#[oai(rename = "JobHealth")]
pub(crate) struct JobHealthOut {
    /// `failing`, `overran`, `late` or `on_time`: the worst that holds.
    state: JobHealthState,
    /// A slot's run has not started `late_after_seconds` after it.
    late: bool,
    /// A run is going past its expected duration (`job.overran` was sent for it).
    overran: bool,
    /// Its final runs failed `alert_after_failures` times in a row (`job.failing` was
    /// sent, no completed run since).
    failing: bool,
    /// The newest scheduled run that started within `late_after_seconds` of its slot.
    #[oai(skip_serializing_if_is_none)]
    last_on_time_run_id: Option<String>,
    /// When it started.
    #[oai(skip_serializing_if_is_none)]
    last_on_time_run_at: Option<DateTime<Utc>>,
}

/// The worst of a job's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum JobHealthState {
    Failing,
    Overran,
    Late,
    OnTime,
}

impl From<&JobHealth> for JobHealthOut {
    fn from(h: &JobHealth) -> Self {
        JobHealthOut {
            state: match h.state {
                HealthState::Failing => JobHealthState::Failing,
                HealthState::Overran => JobHealthState::Overran,
                HealthState::Late => JobHealthState::Late,
                HealthState::OnTime => JobHealthState::OnTime,
            },
            late: h.late,
            overran: h.overran,
            failing: h.failing,
            last_on_time_run_id: h.last_on_time_run.as_ref().map(|(id, _)| id.to_string()),
            last_on_time_run_at: h.last_on_time_run.as_ref().map(|(_, at)| *at),
        }
    }
}

/// One page of jobs, in creation order.
#[derive(Debug, Object)]
#[oai(rename = "JobList")]
pub(crate) struct JobList {
    pub(crate) items: Vec<JobOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}
