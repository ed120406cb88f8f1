//! Settings: built-in defaults, then a TOML file, then `CRONFLOW_*` environment
//! variables (each layer overrides the one before), validated once at start-up.
//!
//! The file is the one given with `--config PATH` (or `CRONFLOW_CONFIG`), else
//! `./cronflow.toml` if it exists. Its keys are the variable names without the prefix,
//! in lower case:
//!
//! | variable | TOML key | default |
//! |---|---|---|
//! | `CRONFLOW_DATABASE_URL` | `database_url` | `sqlite://cronflow.db` |
//! | `CRONFLOW_LISTEN` | `listen` | `127.0.0.1:8080` |
//! | `CRONFLOW_ADMIN_TOKEN` | `admin_token` | unset (at least 16 characters when set) |
//! | `CRONFLOW_RETRY_SCHEDULE` | `retry_schedule` | `30s,2m,10m,1h,6h` |
//! | `CRONFLOW_WEBHOOK_TIMEOUT` | `webhook_timeout` | `10s` |
//! | `CRONFLOW_ALLOW_PRIVATE_TARGETS` | `allow_private_targets` | `false` |
//! | `CRONFLOW_LOG_FORMAT` | `log_format` | `text` (or `json`) |
//! | `CRONFLOW_SHUTDOWN_TIMEOUT` | `shutdown_timeout` | `30s` |
//! | `CRONFLOW_WORKER_CONCURRENCY` | `worker_concurrency` | `32` (runs at once per process) |
//! | `CRONFLOW_DELIVERY_CONCURRENCY` | `delivery_concurrency` | `512` (webhook attempts at once per process) |
//! | `CRONFLOW_DELIVERY_PER_ENDPOINT` | `delivery_per_endpoint` | `128` (attempts at once to one subscription, per process) |
//! | `CRONFLOW_JOB_RETRY_BACKOFF` | `job_retry_backoff` | `10s` (first job retry; doubles each time, at most 1h) |
//! | `CRONFLOW_METRICS_TOKEN` | `metrics_token` | unset: `/metrics` answers loopback clients only |
//! | `CRONFLOW_WEBHOOK_DISABLE_AFTER` | `webhook_disable_after` | `5d` (a subscription failing this long is disabled) |
//! | `CRONFLOW_RETENTION_RUNS` | `retention_runs` | `30d` (finished runs) |
//! | `CRONFLOW_RETENTION_DELIVERIES` | `retention_deliveries` | `30d` (delivered or acknowledged deliveries, with attempts) |
//! | `CRONFLOW_RETENTION_DEAD_DELIVERIES` | `retention_dead_deliveries` | `90d` (unacknowledged dead deliveries) |
//! | `CRONFLOW_RETENTION_AUDIT` | `retention_audit` | `365d` (audit entries) |
//!
//! Durations are written `500ms`, `30s`, `2m`, `1h`, `1d`. An invalid value stops the
//! program with one line naming the setting, and exit status 2.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, time::Duration};

/// Environment variable naming the config file, as an alternative to `--config`.
pub const CONFIG_ENV: &str = "CRONFLOW_CONFIG";
/// The file read when no other is named, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "cronflow.toml";

/// Every setting: (TOML key, default). The variable is `CRONFLOW_` + the key upper-cased.
const SETTINGS: [(&str, Option<&str>); 18] = [
    ("database_url", Some("sqlite://cronflow.db")),
    ("listen", Some("127.0.0.1:8080")),
    ("admin_token", None),
    ("retry_schedule", Some("30s,2m,10m,1h,6h")),
    ("webhook_timeout", Some("10s")),
    ("allow_private_targets", Some("false")),
    ("log_format", Some("text")),
    ("shutdown_timeout", Some("30s")),
    ("worker_concurrency", Some("32")),
    ("delivery_concurrency", Some("512")),
    ("delivery_per_endpoint", Some("128")),
    ("job_retry_backoff", Some("10s")),
    ("metrics_token", None),
    ("webhook_disable_after", Some("5d")),
    ("retention_runs", Some("30d")),
    ("retention_deliveries", Some("30d")),
    ("retention_dead_deliveries", Some("90d")),
    ("retention_audit", Some("365d")),
];

/// Shortest accepted `CRONFLOW_ADMIN_TOKEN`: a guessable admin token is worse than none.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A value that must not appear in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// CronFlow's validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// Address of the API and dashboard; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// If set, an admin API key with this value exists.
    pub admin_token: Option<Secret>,
    /// Delays before each webhook retry.
    pub retry_schedule: Vec<Duration>,
    /// Per-attempt webhook timeout.
    pub webhook_timeout: Duration,
    /// Allow loopback/private targets and plain `http://` (local use and tests).
    pub allow_private_targets: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// How long a graceful stop waits for in-flight work before giving up.
    pub shutdown_timeout: Duration,
    /// Runs executed at once by one process.
    pub worker_concurrency: usize,
    /// Webhook attempts in flight at once in one process.
    pub delivery_concurrency: usize,
    /// Webhook attempts in flight at once to one subscription, in one process (at most
    /// `delivery_concurrency`; a hung endpoint never holds more slots than this).
    pub delivery_per_endpoint: usize,
    /// Delay before a failed run's first retry (doubling per retry, at most an hour).
    pub job_retry_backoff: Duration,
    /// If set, `/metrics` needs this bearer token; if not, it answers loopback only.
    pub metrics_token: Option<Secret>,
    /// A webhook subscription whose every attempt failed for this long is disabled.
    pub webhook_disable_after: Duration,
    /// How long runs, deliveries, dead deliveries and audit entries are kept.
    pub retention: Retention,
}

/// Retention ages.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Finished runs.
    pub runs: Duration,
    /// Delivered or acknowledged deliveries.
    pub deliveries: Duration,
    /// Unacknowledged dead deliveries.
    pub dead_deliveries: Duration,
    /// Audit entries.
    pub audit: Duration,
}

/// A setting that cannot be used. Its `Display` is the one line the program prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    /// The variable name (and TOML key), e.g. `CRONFLOW_LISTEN (listen)`.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

fn env_name(key: &str) -> String {
    format!("CRONFLOW_{}", key.to_ascii_uppercase())
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: format!("{} ({key})", env_name(key)),
        message: message.into(),
    }
}

impl Settings {
    /// Loads settings from the defaults, `file` (if given, it must exist; if not given,
    /// `./cronflow.toml` is read when present) and the variables that `env` returns.
    /// `env` is a parameter so tests need not touch the process environment.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut values: BTreeMap<&str, String> = SETTINGS
            .iter()
            .filter_map(|(k, d)| d.map(|d| (*k, d.to_owned())))
            .collect();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env(CONFIG_ENV).map(Into::into))
            .or_else(|| {
                Path::new(DEFAULT_CONFIG_FILE)
                    .exists()
                    .then(|| DEFAULT_CONFIG_FILE.into())
            });
        if let Some(path) = file {
            let file_setting = || ConfigError {
                setting: format!("--config ({})", path.display()),
                message: String::new(),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                message: format!("cannot read the file: {e}"),
                ..file_setting()
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
                message: format!("not valid TOML: {}", e.message()),
                ..file_setting()
            })?;
            for (key, value) in table {
                let Some((known, _)) = SETTINGS.iter().find(|(k, _)| *k == key) else {
                    return Err(ConfigError {
                        message: format!(
                            "unknown key `{key}`; known keys: {}",
                            SETTINGS.map(|(k, _)| k).join(", ")
                        ),
                        ..file_setting()
                    });
                };
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Integer(i) => i.to_string(),
                    other => {
                        return Err(invalid(
                            known,
                            format!("`{other}` is not a string, number or boolean"),
                        ));
                    }
                };
                values.insert(known, text);
            }
        }
        for (key, _) in SETTINGS {
            if let Some(v) = env(&env_name(key)) {
                values.insert(key, v);
            }
        }
        Self::from_values(&values)
    }

    fn from_values(v: &BTreeMap<&str, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| v.get(k).map(String::as_str).unwrap_or_default();
        let database_url = get("database_url").trim().to_owned();
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            return Err(invalid(
                "database_url",
                format!(
                    "`{database_url}` is not a database URL: use sqlite://PATH or postgres://USER@HOST/DB"
                ),
            ));
        }
        let listen = get("listen").trim().parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", get("listen")),
            )
        })?;
        let admin_token = match v.get("admin_token").map(|s| s.trim()) {
            None | Some("") => None,
            Some(t) if t.chars().count() < MIN_ADMIN_TOKEN_LEN => {
                return Err(invalid(
                    "admin_token",
                    format!("too short: use at least {MIN_ADMIN_TOKEN_LEN} random characters"),
                ));
            }
            Some(t) => Some(Secret(t.to_owned())),
        };
        let retry_schedule = get("retry_schedule")
            .split(',')
            .map(|d| parse_duration(d.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("retry_schedule", format!("{e} (expected e.g. 30s,2m,10m,1h,6h)")))?;
        if retry_schedule.iter().any(Duration::is_zero) || retry_schedule.len() > 20 {
            return Err(invalid("retry_schedule", "1 to 20 delays, each above zero"));
        }
        let webhook_timeout =
            parse_duration(get("webhook_timeout")).map_err(|e| invalid("webhook_timeout", e))?;
        if webhook_timeout.is_zero() || webhook_timeout > Duration::from_secs(300) {
            return Err(invalid("webhook_timeout", "must be above zero and at most 5m"));
        }
        let allow_private_targets = match get("allow_private_targets").trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" | "" => false,
            other => {
                return Err(invalid(
                    "allow_private_targets",
                    format!("`{other}` is not true or false"),
                ));
            }
        };
        let log_format = match get("log_format").trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log_format", format!("`{other}` is not text or json"))),
        };
        let shutdown_timeout =
            parse_duration(get("shutdown_timeout")).map_err(|e| invalid("shutdown_timeout", e))?;
        let count = |key: &str, max: usize| {
            get(key)
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| invalid(key, format!("`{}` is not a number from 1 to {max}", get(key))))
        };
        let worker_concurrency = count("worker_concurrency", 1024)?;
        let delivery_concurrency = count("delivery_concurrency", 4096)?;
        let delivery_per_endpoint = count("delivery_per_endpoint", delivery_concurrency)?;
        let job_retry_backoff =
            parse_duration(get("job_retry_backoff")).map_err(|e| invalid("job_retry_backoff", e))?;
        let metrics_token = v
            .get("metrics_token")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| Secret(s.to_owned()));
        let webhook_disable_after =
            parse_duration(get("webhook_disable_after")).map_err(|e| invalid("webhook_disable_after", e))?;
        let age = |key: &str| parse_duration(get(key)).map_err(|e| invalid(key, e));
        let retention = Retention {
            runs: age("retention_runs")?,
            deliveries: age("retention_deliveries")?,
            dead_deliveries: age("retention_dead_deliveries")?,
            audit: age("retention_audit")?,
        };
        Ok(Settings {
            retention,
            webhook_disable_after,
            metrics_token,
            worker_concurrency,
            delivery_concurrency,
            delivery_per_endpoint,
            job_retry_backoff,
            database_url,
            listen,
            admin_token,
            retry_schedule,
            webhook_timeout,
            allow_private_targets,
            log_format,
            shutdown_timeout,
        })
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s or 2m"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` has no unit: use ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load(None, &|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_work_with_nothing_set() {
        let s = load(&[]).unwrap();
        assert_eq!(s.database_url, "sqlite://cronflow.db");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.retry_schedule.len(), 5);
        assert_eq!(s.retry_schedule[4], Duration::from_secs(6 * 3600));
        assert_eq!(s.webhook_timeout, Duration::from_secs(10));
        assert!(!s.allow_private_targets);
    }

    #[test]
    fn an_invalid_variable_is_named_in_the_error() {
        let e = load(&[("CRONFLOW_LISTEN", "nowhere")]).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid setting CRONFLOW_LISTEN"),
            "{e}"
        );
        let e = load(&[("CRONFLOW_RETRY_SCHEDULE", "30s,soon")]).unwrap_err();
        assert!(e.to_string().contains("CRONFLOW_RETRY_SCHEDULE"), "{e}");
        let e = load(&[("CRONFLOW_ADMIN_TOKEN", "short")]).unwrap_err();
        assert!(e.to_string().contains("CRONFLOW_ADMIN_TOKEN"), "{e}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("m").is_err());
    }
}
