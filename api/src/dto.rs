//! Request and response bodies, and their conversion to and from domain types.
//!
//! Input DTOs (`XxxIn`, `XxxPatch`) are parsed into domain values here, with each
//! validation error naming the field as the client wrote it (`target.url`). Output DTOs
//! (`XxxOut`) are built from domain values. Optional output fields are omitted when
//! empty rather than sent as `null`, which generated clients handle badly.

use chrono::{DateTime, Utc};
use cronflow_jobs::{
    ValidationError,
    domain::{
        self, ApiKey, CommandTarget, HttpTarget, Job, JobSpec, Run, Schedule, Scope,
        job::{JobName, Tags, check_max_retries, check_timeout},
        target::UrlPolicy,
    },
};
use poem_openapi::{Enum, Object, Union};
use std::collections::BTreeMap;

/// How many upcoming fire times a job shows.
const UPCOMING: usize = 5;

/// Declares an API enum mirroring a domain enum, with conversions both ways.
macro_rules! mirror_enum {
    ($(#[$doc:meta])* $name:ident => $domain:path { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
        #[oai(rename_all = "snake_case")]
        pub(crate) enum $name { $($variant),+ }
        impl From<$name> for $domain {
            fn from(v: $name) -> Self { match v { $($name::$variant => <$domain>::$variant),+ } }
        }
        impl From<$domain> for $name {
            fn from(v: $domain) -> Self { match v { $(<$domain>::$variant => $name::$variant),+ } }
        }
    };
}

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
mirror_enum!(
    /// Where a run is: `scheduled` → `running` → `completed` | `failed` | `timed_out`;
    /// `queued` waits for the previous run (overlap `queue`); `cancelled` by a user;
    /// `skipped` (overlap `skip`) and `missed` (downtime) record slots that did not run.
    RunState => domain::RunState { Scheduled, Queued, Running, Completed, Failed, TimedOut, Skipped, Cancelled, Missed }
);
mirror_enum!(
    /// Why a run exists: its `schedule`, a `catch_up` after downtime, a `manual`
    /// trigger, or a `retry` of a failed attempt.
    RunOrigin => domain::RunOrigin { Schedule, CatchUp, Manual, Retry }
);
mirror_enum!(
    /// What an API key may do: `admin` everything, `read` GET everything but the audit
    /// stream, `audit` read the audit stream only.
    KeyScope => Scope { Admin, Read, Audit }
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
    /// Program and arguments, e.g. `["./report.sh", "--daily"]`.
    command: Vec<String>,
    /// Extra environment variables.
    #[oai(default)]
    env: BTreeMap<String, String>,
    /// Directory to run in; defaults to CronFlow's working directory.
    #[oai(skip_serializing_if_is_none)]
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
    /// Absolute URL.
    url: String,
    /// Extra request headers.
    #[oai(default)]
    headers: BTreeMap<String, String>,
    /// Request body (at most 256 KiB).
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

impl From<&domain::Target> for TargetDto {
    fn from(t: &domain::Target) -> Self {
        match t {
            domain::Target::Command(c) => TargetDto::Command(CommandTargetDto {
                command: c.command().to_vec(),
                env: c.env().clone(),
                working_dir: c.working_dir().map(str::to_owned),
            }),
            domain::Target::Http(h) => TargetDto::Http(HttpTargetDto {
                method: h.method().into(),
                url: h.url().to_owned(),
                headers: h.headers().clone(),
                body: h.body().map(str::to_owned),
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
#[oai(rename = "JobIn", deny_unknown_fields)]
pub(crate) struct JobIn {
    /// Display name, 1 to 200 characters.
    name: String,
    /// Cron expression: 5 fields, 6 with seconds first, or `@hourly`-style macros.
    schedule: String,
    /// IANA time zone the schedule is read in (default `UTC`).
    #[oai(default = "default_timezone")]
    timezone: String,
    /// What to run.
    target: TargetDto,
    /// Seconds before a run is stopped and marked `timed_out` (1 to 604800, default 300).
    #[oai(default = "default_timeout", validator(minimum(value = "0")))]
    timeout_seconds: u32,
    /// Retries of a failed run, with exponential backoff (0 to 100, default 0).
    #[oai(default, validator(minimum(value = "0")))]
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
    /// Labels, at most 32, each 1 to 64 characters without spaces.
    #[oai(default)]
    tags: Vec<String>,
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
        })
    }
}

/// A change to a job: fields present replace the job's; absent ones stay.
#[derive(Debug, Object)]
#[oai(rename = "JobPatch", deny_unknown_fields)]
pub(crate) struct JobPatchIn {
    /// New name.
    name: Option<String>,
    /// New cron expression.
    schedule: Option<String>,
    /// New time zone.
    timezone: Option<String>,
    /// New target (replaces the whole target).
    target: Option<TargetDto>,
    /// New timeout in seconds.
    #[oai(validator(minimum(value = "0")))]
    timeout_seconds: Option<u32>,
    /// New retry count.
    #[oai(validator(minimum(value = "0")))]
    max_retries: Option<u32>,
    /// New environment.
    environment: Option<Environment>,
    /// New overlap policy.
    overlap_policy: Option<OverlapPolicy>,
    /// New catch-up policy.
    catch_up: Option<CatchUpPolicy>,
    /// New tags (replacing all).
    tags: Option<Vec<String>>,
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
            paused: job.paused,
            next_run_at: job.next_run_at,
            next_run_times,
            created_at: job.created_at,
            updated_at: job.updated_at,
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

/// A new API key.
#[derive(Debug, Object)]
#[oai(rename = "KeyIn", deny_unknown_fields)]
pub(crate) struct KeyIn {
    /// A label, e.g. who or what uses the key.
    pub(crate) name: String,
    pub(crate) scope: KeyScope,
}

/// An API key (its secret is never shown again after creation).
#[derive(Debug, Object)]
#[oai(rename = "Key")]
pub(crate) struct KeyOut {
    /// `key_…`.
    id: String,
    name: String,
    scope: KeyScope,
    created_at: DateTime<Utc>,
}

impl From<&ApiKey> for KeyOut {
    fn from(k: &ApiKey) -> Self {
        KeyOut {
            id: k.id.to_string(),
            name: k.name.clone(),
            scope: k.scope.into(),
            created_at: k.created_at,
        }
    }
}

/// A key just created: the only response that contains its token.
#[derive(Debug, Object)]
#[oai(rename = "NewKey")]
pub(crate) struct NewKeyOut {
    #[oai(flatten)]
    pub(crate) key: KeyOut,
    /// The bearer token. Store it now: CronFlow keeps only its hash.
    pub(crate) token: String,
}

/// One page of API keys, in creation order.
#[derive(Debug, Object)]
#[oai(rename = "KeyList")]
pub(crate) struct KeyList {
    pub(crate) items: Vec<KeyOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}

/// One run of a job (or a ledger row for slots that did not run).
#[derive(Debug, Object)]
#[oai(rename = "Run")]
pub(crate) struct RunOut {
    /// `run_…`.
    id: String,
    job_id: String,
    state: RunState,
    origin: RunOrigin,
    /// 1 for the first attempt, 2 for the first retry, ...
    attempt: u32,
    /// The slot it belongs to; absent for a manual trigger.
    #[oai(skip_serializing_if_is_none)]
    scheduled_for: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    started_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    finished_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    duration_ms: Option<i64>,
    /// Start minus scheduled time.
    #[oai(skip_serializing_if_is_none)]
    lateness_ms: Option<i64>,
    /// Exit code (128 + n for signal n) or HTTP status.
    #[oai(skip_serializing_if_is_none)]
    exit_code: Option<i32>,
    /// stdout and stderr together, at most 64 KiB: head and tail kept, the cut marked.
    /// Only in `GET /v1/runs/{id}`.
    #[oai(skip_serializing_if_is_none)]
    output: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    error: Option<String>,
    /// The stderr tail of a failed command.
    #[oai(skip_serializing_if_is_none)]
    stack_trace: Option<String>,
    /// `missed` rows: how many slots the stretch held, from `scheduled_for` to `missed_last`.
    #[oai(skip_serializing_if_is_none)]
    missed_count: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    missed_last: Option<DateTime<Utc>>,
}

impl RunOut {
    /// The API view of a run; `with_output` includes the captured output.
    pub(crate) fn new(run: Run, with_output: bool) -> Self {
        RunOut {
            id: run.id.to_string(),
            job_id: run.job_id.to_string(),
            state: run.state.into(),
            origin: run.origin.into(),
            attempt: run.attempt,
            scheduled_for: run.scheduled_for,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: run.duration_ms,
            lateness_ms: run.lateness_ms,
            exit_code: run.exit_code,
            output: run.output.filter(|_| with_output),
            error: run.error,
            stack_trace: run.stack_trace,
            missed_count: run.missed_count,
            missed_last: run.missed_last,
        }
    }
}

/// One page of runs, newest first.
#[derive(Debug, Object)]
#[oai(rename = "RunList")]
pub(crate) struct RunList {
    pub(crate) items: Vec<RunOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}

/// An event a subscription can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum WebhookEvent {
    /// A run finished successfully.
    #[oai(rename = "job.completed")]
    Completed,
    /// A run failed.
    #[oai(rename = "job.failed")]
    Failed,
    /// A run exceeded its timeout.
    #[oai(rename = "job.timed_out")]
    TimedOut,
}

impl WebhookEvent {
    pub(crate) fn wire(self) -> String {
        match self {
            Self::Completed => "job.completed",
            Self::Failed => "job.failed",
            Self::TimedOut => "job.timed_out",
        }
        .to_owned()
    }

    fn from_domain(e: domain::EventType) -> Option<Self> {
        match e {
            domain::EventType::JobCompleted => Some(Self::Completed),
            domain::EventType::JobFailed => Some(Self::Failed),
            domain::EventType::JobTimedOut => Some(Self::TimedOut),
            domain::EventType::WebhookTest => None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A new webhook subscription.
#[derive(Debug, Object)]
#[oai(rename = "WebhookIn", deny_unknown_fields)]
pub(crate) struct WebhookIn {
    /// Where to POST events: `https://…` (plain http only if the operator allows it).
    url: String,
    /// Which events (at least one).
    events: Vec<WebhookEvent>,
    /// Only events of jobs in this environment.
    environment: Option<Environment>,
    /// Only events of these jobs (`wf_…`).
    job_ids: Option<Vec<String>>,
    /// Your own signing secret (16-256 printable characters); by default one is generated
    /// (`whsec_` + base64 of 32 random bytes). Returned once, in this response.
    secret: Option<String>,
    /// Extra headers sent with every delivery (they cannot replace CronFlow's).
    #[oai(default)]
    headers: BTreeMap<String, String>,
    /// Free text.
    #[oai(default)]
    description: String,
    /// Default true.
    #[oai(default = "default_true")]
    enabled: bool,
}

impl WebhookIn {
    /// Parses the body into a subscription definition and its secret.
    pub(crate) fn into_spec(
        self,
        policy: UrlPolicy,
    ) -> Result<(domain::WebhookSpec, domain::WebhookSecret), ValidationError> {
        let secret = match self.secret.as_deref() {
            Some(s) => domain::WebhookSecret::parse(s)?,
            None => domain::WebhookSecret::generate(),
        };
        let events: Vec<String> = self.events.iter().map(|e| e.wire()).collect();
        Ok((
            domain::WebhookSpec {
                url: domain::webhook::parse_webhook_url(&self.url, policy)?,
                filter: domain::EventFilter::parse(&events, self.environment.map(Into::into), self.job_ids)?,
                headers: domain::webhook::parse_headers(self.headers)?,
                description: domain::webhook::parse_description(&self.description)?,
                enabled: self.enabled,
            },
            secret,
        ))
    }
}

/// A change to a subscription: fields present replace its own. `"enabled": true`
/// re-enables one that was disabled (and clears the reason).
#[derive(Debug, Object)]
#[oai(rename = "WebhookPatch", deny_unknown_fields)]
pub(crate) struct WebhookPatchIn {
    url: Option<String>,
    events: Option<Vec<WebhookEvent>>,
    environment: Option<Environment>,
    job_ids: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

impl WebhookPatchIn {
    /// The subscription's definition with the patch applied, validated as a whole.
    pub(crate) fn apply(
        self,
        current: &domain::Webhook,
        policy: UrlPolicy,
    ) -> Result<domain::WebhookSpec, ValidationError> {
        let events: Vec<String> = match self.events {
            Some(e) => e.iter().map(|e| e.wire()).collect(),
            None => current
                .filter
                .events
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
        };
        let job_ids = match self.job_ids {
            Some(ids) => Some(ids),
            None => current
                .filter
                .job_ids
                .as_ref()
                .map(|ids| ids.iter().map(|i| i.to_string()).collect()),
        };
        let environment = self.environment.map(Into::into).or(current.filter.environment);
        Ok(domain::WebhookSpec {
            url: domain::webhook::parse_webhook_url(self.url.as_deref().unwrap_or(&current.url), policy)?,
            filter: domain::EventFilter::parse(&events, environment, job_ids)?,
            headers: domain::webhook::parse_headers(self.headers.unwrap_or_else(|| current.headers.clone()))?,
            description: domain::webhook::parse_description(
                self.description.as_deref().unwrap_or(&current.description),
            )?,
            enabled: self.enabled.unwrap_or(current.enabled),
        })
    }
}

/// A webhook subscription (its secret is shown only on create and rotate).
#[derive(Debug, Object)]
#[oai(rename = "Webhook")]
pub(crate) struct WebhookOut {
    /// `wh_…`.
    id: String,
    url: String,
    events: Vec<WebhookEvent>,
    #[oai(skip_serializing_if_is_none)]
    environment: Option<Environment>,
    #[oai(skip_serializing_if_is_none)]
    job_ids: Option<Vec<String>>,
    headers: BTreeMap<String, String>,
    description: String,
    enabled: bool,
    /// Why CronFlow disabled it, if it did.
    #[oai(skip_serializing_if_is_none)]
    disabled_reason: Option<String>,
    /// After a rotation: until when the previous secret still signs.
    #[oai(skip_serializing_if_is_none)]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&domain::Webhook> for WebhookOut {
    fn from(w: &domain::Webhook) -> Self {
        WebhookOut {
            id: w.id.to_string(),
            url: w.url.clone(),
            events: w
                .filter
                .events
                .iter()
                .filter_map(|e| WebhookEvent::from_domain(*e))
                .collect(),
            environment: w.filter.environment.map(Into::into),
            job_ids: w
                .filter
                .job_ids
                .as_ref()
                .map(|ids| ids.iter().map(|i| i.to_string()).collect()),
            headers: w.headers.clone(),
            description: w.description.clone(),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            previous_secret_expires_at: w.previous_secret.as_ref().map(|(_, until)| *until),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A subscription with its secret: only in the answers to create and rotate-secret.
#[derive(Debug, Object)]
#[oai(rename = "WebhookWithSecret")]
pub(crate) struct WebhookWithSecretOut {
    #[oai(flatten)]
    pub(crate) webhook: WebhookOut,
    /// The signing secret. Keep it: it is not shown again.
    pub(crate) secret: String,
}

/// One page of subscriptions, in creation order.
#[derive(Debug, Object)]
#[oai(rename = "WebhookList")]
pub(crate) struct WebhookList {
    pub(crate) items: Vec<WebhookOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}

/// Where a delivery stands: `pending`, `retrying` (the next attempt is scheduled),
/// `delivered`, or `dead` (retries exhausted; in the dead letter queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum DeliveryStatus {
    Pending,
    Retrying,
    Delivered,
    Dead,
}

impl From<DeliveryStatus> for cronflow_jobs::store::DeliveryStatus {
    fn from(s: DeliveryStatus) -> Self {
        use cronflow_jobs::store::DeliveryStatus as S;
        match s {
            DeliveryStatus::Pending => S::Pending,
            DeliveryStatus::Retrying => S::Retrying,
            DeliveryStatus::Delivered => S::Delivered,
            DeliveryStatus::Dead => S::Dead,
        }
    }
}

impl From<cronflow_jobs::store::DeliveryStatus> for DeliveryStatus {
    fn from(s: cronflow_jobs::store::DeliveryStatus) -> Self {
        use cronflow_jobs::store::DeliveryStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Retrying => Self::Retrying,
            S::Delivered => Self::Delivered,
            S::Dead => Self::Dead,
        }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Object)]
#[oai(rename = "DeliveryAttempt")]
pub(crate) struct AttemptOut {
    /// 1, 2, ... (replays continue the count).
    attempt: u32,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    /// The receiver's status code, if it answered.
    #[oai(skip_serializing_if_is_none)]
    status_code: Option<i32>,
    /// Why it failed: `http` (non-2xx), `redirect` (3xx, not followed), `timeout`,
    /// `connect`, `dns`, `tls`, `ssrf_blocked`.
    #[oai(skip_serializing_if_is_none)]
    error_kind: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    error: Option<String>,
    /// The first 4 KiB of the answer.
    #[oai(skip_serializing_if_is_none)]
    response_excerpt: Option<String>,
}

/// One event's delivery to one subscription.
#[derive(Debug, Object)]
#[oai(rename = "Delivery")]
pub(crate) struct DeliveryOut {
    /// `dlv_…`: also the `X-CronFlow-Idempotency-Key` and `webhook-id` of every attempt.
    id: String,
    event_id: String,
    webhook_id: String,
    event_type: String,
    #[oai(skip_serializing_if_is_none)]
    job_id: Option<String>,
    status: DeliveryStatus,
    attempts: u32,
    /// When the next attempt is due (while `retrying`).
    #[oai(skip_serializing_if_is_none)]
    next_attempt_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    last_status_code: Option<i32>,
    #[oai(skip_serializing_if_is_none)]
    last_error: Option<String>,
    /// A dead delivery someone acknowledged.
    acknowledged: bool,
    created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    delivered_at: Option<DateTime<Utc>>,
    /// The retry history (only in `GET /v1/deliveries/{id}`).
    #[oai(skip_serializing_if_is_none)]
    attempt_history: Option<Vec<AttemptOut>>,
}

impl DeliveryOut {
    /// The API view; with `attempts`, the retry history is inline.
    pub(crate) fn new(
        d: cronflow_jobs::store::Delivery,
        attempts: Option<Vec<cronflow_jobs::store::Attempt>>,
    ) -> Self {
        DeliveryOut {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            webhook_id: d.webhook_id.to_string(),
            event_type: d.event_type,
            job_id: d.job_id.map(|j| j.to_string()),
            status: d.status.into(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            acknowledged: d.acknowledged,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            attempt_history: attempts.map(|a| {
                a.into_iter()
                    .map(|a| AttemptOut {
                        attempt: a.attempt,
                        started_at: a.started_at,
                        duration_ms: a.duration_ms,
                        status_code: a.status_code,
                        error_kind: a.error_kind,
                        error: a.error,
                        response_excerpt: a.response_excerpt,
                    })
                    .collect()
            }),
        }
    }
}

/// One page of deliveries.
#[derive(Debug, Object)]
#[oai(rename = "DeliveryList")]
pub(crate) struct DeliveryList {
    pub(crate) items: Vec<DeliveryOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) next_cursor: Option<String>,
}

impl DeliveryList {
    /// One page of deliveries (without their attempts).
    pub(crate) fn from_page(page: cronflow_jobs::domain::Page<cronflow_jobs::store::Delivery>) -> Self {
        DeliveryList {
            items: page
                .items
                .into_iter()
                .map(|d| DeliveryOut::new(d, None))
                .collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }
    }
}

/// Which dead deliveries to replay; every field narrows the selection.
#[derive(Debug, Object)]
#[oai(rename = "DlqReplayIn", deny_unknown_fields)]
pub(crate) struct ReplayIn {
    /// Only deliveries to this subscription.
    pub(crate) webhook_id: Option<String>,
    /// Only this event type.
    pub(crate) event_type: Option<WebhookEvent>,
    /// Created at or after.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Created before.
    pub(crate) until: Option<DateTime<Utc>>,
}

impl ReplayIn {
    pub(crate) fn into_filter(self) -> Result<cronflow_jobs::store::ReplayFilter, ValidationError> {
        Ok(cronflow_jobs::store::ReplayFilter {
            webhook_id: self
                .webhook_id
                .map(|w| {
                    domain::WebhookId::parse(&w)
                        .ok_or_else(|| ValidationError::new("webhook_id", "not a webhook id"))
                })
                .transpose()?,
            event_type: self.event_type.map(WebhookEvent::wire),
            since: self.since,
            until: self.until,
        })
    }
}

/// How many deliveries a bulk replay queued again.
#[derive(Debug, Object)]
#[oai(rename = "DlqReplayed")]
pub(crate) struct ReplayedOut {
    pub(crate) replayed: u64,
}

/// A test event was queued for delivery.
#[derive(Debug, Object)]
#[oai(rename = "TestSent")]
pub(crate) struct TestSentOut {
    /// Follow it with `GET /v1/deliveries/{id}`.
    pub(crate) delivery_id: String,
}
