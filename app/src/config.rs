//! Settings: built-in defaults (`defaults.toml` beside this file), then a TOML file, then
//! `CRONFLOW_*` environment variables, each layer overriding the one before. figment
//! layers them and remembers where each value came from, serde types them
//! (`humantime-serde` for durations, `secrecy` for values that must not be printed), and
//! [`Settings::load`] validates the result once, at start-up.
//!
//! Every setting (variable, TOML key, default, meaning) is documented once, in
//! `docs/configuration.md` at the root of the repository; a unit test below holds that
//! page to the settings this module knows.
//!
//! The file is the one named by `--config PATH` (or `CRONFLOW_CONFIG`), which must exist,
//! else `./cronflow.toml` if it exists. Its keys are the variable names without the
//! prefix, in lower case; a key it does not know is an error. An empty variable counts
//! as unset. An unusable setting is one [`ConfigError`], printed as one line naming the
//! variable and TOML key, and the program exits with status 2.

use cronflow_jobs::domain::SecretKey;
use figment::{
    Figment, Metadata, Profile, Provider,
    error::Kind,
    value::{Dict, Map, Value},
};
use humantime_serde::re::humantime;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Environment variable naming the config file, as an alternative to `--config`.
pub const CONFIG_ENV: &str = "CRONFLOW_CONFIG";
/// The file read when no other is named, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "cronflow.toml";
/// The first layer: every setting that has a default.
const DEFAULTS: &str = include_str!("defaults.toml");

/// Every setting's TOML key; its variable is `CRONFLOW_` + the key upper-cased. The
/// environment layer reads exactly these variables (others, such as the tests' and the
/// bench's own `CRONFLOW_*_POSTGRES_URL`, are not settings). A unit test holds this list
/// to the fields of [`Settings`].
const KEYS: [&str; 19] = [
    "database_url",
    "listen",
    "admin_token",
    "retry_schedule",
    "webhook_timeout",
    "allow_private_targets",
    "log_format",
    "shutdown_timeout",
    "worker_concurrency",
    "delivery_concurrency",
    "delivery_per_endpoint",
    "job_retry_backoff",
    "metrics_token",
    "secret_key",
    "webhook_disable_after",
    "retention_runs",
    "retention_deliveries",
    "retention_dead_deliveries",
    "retention_audit",
];

/// Settings whose values an error message never repeats (a database URL may hold a
/// password).
const SECRET_KEYS: [&str; 4] = ["database_url", "admin_token", "metrics_token", "secret_key"];

/// Why Postgres needs `CRONFLOW_SECRET_KEY`, and how to make one.
pub const POSTGRES_NEEDS_A_KEY: &str = "required with Postgres (it seals the webhook signing secrets in the database): \
     generate one with `openssl rand -base64 32`, keep it apart from the database's backups, and give \
     every CronFlow process sharing the database the same one";

/// Shortest accepted `CRONFLOW_ADMIN_TOKEN`: a guessable admin token is worse than none.
const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Most webhook retries a schedule may list.
const MAX_RETRIES: usize = 20;
/// Longest webhook attempt timeout: a slower endpoint is a dead one.
const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only when stderr is a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// CronFlow's validated settings (their meanings and defaults: `docs/configuration.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `sqlite://PATH` or `postgres://…`; secret, since it may carry a password.
    pub database_url: SecretString,
    /// Address of the API; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// If set, an admin API key with this value exists.
    pub admin_token: Option<SecretString>,
    /// Delays before each webhook retry.
    #[serde(deserialize_with = "retry_schedule")]
    pub retry_schedule: Vec<Duration>,
    /// Per-attempt webhook timeout.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub webhook_timeout: Duration,
    /// Allow loopback/private targets and plain `http://` (local use and tests).
    pub allow_private_targets: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// How long a graceful stop waits for in-flight work before giving up.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub shutdown_timeout: Duration,
    /// Runs executed at once by one process.
    pub worker_concurrency: usize,
    /// Webhook attempts in flight at once in one process.
    pub delivery_concurrency: usize,
    /// Webhook attempts in flight at once to one subscription, in one process (at most
    /// `delivery_concurrency`; a hung endpoint never holds more slots than this).
    pub delivery_per_endpoint: usize,
    /// Delay before a failed run's first retry (doubling per retry, at most an hour).
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub job_retry_backoff: Duration,
    /// If set, `/metrics` needs this bearer token; if not, it answers loopback only.
    pub metrics_token: Option<SecretString>,
    /// The key that seals webhook signing secrets in the database (32 bytes, base64 or
    /// hex). Required with Postgres; on SQLite, a key file beside the database serves
    /// when it is unset (`startup::secret_key`).
    pub secret_key: Option<SecretString>,
    /// A webhook subscription whose every attempt failed for this long is disabled.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub webhook_disable_after: Duration,
    /// How long finished runs are kept.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub retention_runs: Duration,
    /// How long delivered or acknowledged deliveries are kept.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub retention_deliveries: Duration,
    /// How long unacknowledged dead deliveries are kept.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub retention_dead_deliveries: Duration,
    /// How long audit entries are kept.
    #[serde(deserialize_with = "humantime_serde::deserialize")]
    pub retention_audit: Duration,
}

/// A setting that cannot be used. Its `Display` is the one line the program prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    /// The variable name and TOML key, e.g. `CRONFLOW_LISTEN (listen)`, or `--config
    /// (PATH)` for the file as a whole.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

/// `CRONFLOW_LISTEN (listen)` for `listen`.
fn setting_name(key: &str) -> String {
    format!("{} ({key})", env_name(key))
}

fn env_name(key: &str) -> String {
    format!("CRONFLOW_{}", key.to_ascii_uppercase())
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting_name(key),
        message: message.into(),
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: format!("--config ({})", path.display()),
        message: message.into(),
    }
}

impl Settings {
    /// Loads settings from the defaults, `file` (if given, it must exist; if not given,
    /// `CRONFLOW_CONFIG` or `./cronflow.toml` when present) and the variables that `env`
    /// returns. `env` is a parameter so tests need not touch the process environment.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env(CONFIG_ENV).filter(|f| !f.is_empty()).map(PathBuf::from))
            .or_else(|| {
                Path::new(DEFAULT_CONFIG_FILE)
                    .exists()
                    .then(|| DEFAULT_CONFIG_FILE.into())
            });
        let mut figment = Figment::new().merge(Layer::defaults());
        if let Some(path) = &file {
            figment = figment.merge(Layer::file(path)?);
        }
        figment = figment.merge(Layer::environment(env));
        // Lossy: the environment holds only text, so "32" and "true" must serve as a
        // number and a boolean (the file may write either form).
        let settings: Settings = figment
            .extract_lossy()
            .map_err(|e| describe(&e, &figment, file.as_deref()))?;
        settings.validated()
    }

    /// Checks what types alone cannot, and drops empty secrets.
    fn validated(mut self) -> Result<Self, ConfigError> {
        let url = self.database_url.expose_secret().trim().to_owned();
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            return Err(invalid(
                "database_url",
                format!(
                    "`{scheme}:` is not a database URL scheme: use sqlite://PATH or postgres://USER@HOST/DB"
                ),
            ));
        }
        let sqlite = scheme == "sqlite";
        self.database_url = url.into();
        self.admin_token = non_empty(self.admin_token);
        if let Some(token) = &self.admin_token
            && token.expose_secret().chars().count() < MIN_ADMIN_TOKEN_LEN
        {
            return Err(invalid(
                "admin_token",
                format!("too short: use at least {MIN_ADMIN_TOKEN_LEN} random characters"),
            ));
        }
        self.metrics_token = non_empty(self.metrics_token);
        self.secret_key = non_empty(self.secret_key);
        match &self.secret_key {
            Some(key) => {
                SecretKey::parse(key.expose_secret()).map_err(|e| invalid("secret_key", e.to_string()))?;
            }
            None if !sqlite => return Err(invalid("secret_key", POSTGRES_NEEDS_A_KEY)),
            None => {}
        }
        if self.retry_schedule.is_empty()
            || self.retry_schedule.len() > MAX_RETRIES
            || self.retry_schedule.iter().any(Duration::is_zero)
        {
            return Err(invalid(
                "retry_schedule",
                format!("1 to {MAX_RETRIES} delays, each above zero"),
            ));
        }
        if self.webhook_timeout.is_zero() || self.webhook_timeout > MAX_WEBHOOK_TIMEOUT {
            return Err(invalid("webhook_timeout", "must be above zero and at most 5m"));
        }
        for (key, n, max) in [
            ("worker_concurrency", self.worker_concurrency, 1024),
            ("delivery_concurrency", self.delivery_concurrency, 4096),
            (
                "delivery_per_endpoint",
                self.delivery_per_endpoint,
                self.delivery_concurrency,
            ),
        ] {
            if !(1..=max).contains(&n) {
                return Err(invalid(key, format!("`{n}` is not a number from 1 to {max}")));
            }
        }
        Ok(self)
    }
}

/// A secret with surrounding blanks removed, or `None` when nothing is left.
fn non_empty(secret: Option<SecretString>) -> Option<SecretString> {
    let text = secret?.expose_secret().trim().to_owned();
    (!text.is_empty()).then(|| text.into())
}

/// `30s,2m,10m,1h,6h` (or, in the file, a list of such strings).
fn retry_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        List(Vec<String>),
    }
    let delays = match Written::deserialize(d)? {
        Written::Text(text) => text.split(',').map(|d| d.trim().to_owned()).collect(),
        Written::List(list) => list,
    };
    delays
        .iter()
        .map(|d| {
            humantime::parse_duration(d)
                .map_err(|e| serde::de::Error::custom(format!("`{d}`: {e} (expected e.g. 30s,2m,10m,1h,6h)")))
        })
        .collect()
}

/// One layer of settings for figment: its values and where they come from (which the
/// error messages name).
struct Layer {
    name: String,
    file: Option<PathBuf>,
    values: Dict,
}

impl Layer {
    fn defaults() -> Self {
        Layer {
            name: "the built-in defaults".into(),
            file: None,
            values: toml::from_str(DEFAULTS).expect("defaults.toml is valid TOML"),
        }
    }

    /// The file's values, or the one-line error saying why it cannot be read.
    fn file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_error(path, format!("cannot read the file: {e}")))?;
        let values = toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .map_or(String::new(), |l| format!(" at line {l}"));
            let message = e.message().lines().map(str::trim).collect::<Vec<_>>().join("; ");
            file_error(path, format!("not valid TOML{line}: {message}"))
        })?;
        Ok(Layer {
            name: format!("the file {}", path.display()),
            file: Some(path.to_owned()),
            values,
        })
    }

    /// The `CRONFLOW_*` variables of the settings in [`KEYS`] that `env` returns, as
    /// text (trimmed; an empty variable counts as unset).
    fn environment(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let values = KEYS
            .iter()
            .filter_map(|key| {
                let value = env(&env_name(key))?.trim().to_owned();
                (!value.is_empty()).then(|| ((*key).to_owned(), Value::from(value)))
            })
            .collect();
        Layer {
            name: "the environment".into(),
            file: None,
            values,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match &self.file {
            Some(path) => Metadata::from(self.name.clone(), path.as_path()),
            None => Metadata::named(self.name.clone()),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// The one-line error for what figment could not extract: the setting, what is wrong
/// with its value (repeated unless secret) and which layer set it.
fn describe(e: &figment::Error, figment: &Figment, file: Option<&Path>) -> ConfigError {
    if let Kind::UnknownField(key, known) = &e.kind {
        // Only the file can name a key: the environment layer reads known ones only.
        let message = format!("unknown key `{key}`; known keys: {}", known.join(", "));
        return match file {
            Some(path) => file_error(path, message),
            None => invalid(key, message),
        };
    }
    let Some(key) = e.path.first() else {
        return ConfigError {
            setting: "settings".into(),
            message: e.kind.to_string(),
        };
    };
    let shown = (!SECRET_KEYS.contains(&key.as_str()))
        .then(|| figment.find_value(key).ok())
        .flatten()
        .and_then(|v| written(&v));
    let what = match (&e.kind, shown) {
        (Kind::InvalidType(..) | Kind::InvalidValue(..), _) if SECRET_KEYS.contains(&key.as_str()) => {
            "must be a string".to_owned()
        }
        (Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected), Some(value)) => {
            format!("`{value}` is not {}", in_words(expected))
        }
        (Kind::UnknownVariant(value, known), _) => {
            format!("`{value}` is not {}", known.join(" or "))
        }
        (Kind::Message(message), Some(value)) if !message.starts_with('`') => {
            format!("`{value}`: {message}")
        }
        (kind, _) => kind.to_string(),
    };
    let from = e
        .metadata
        .as_ref()
        .map_or(String::new(), |m| format!(" (set in {})", m.name));
    invalid(key, format!("{what}{from}"))
}

/// A scalar as its writer wrote it.
fn written(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => n
            .to_i128()
            .map(|n| n.to_string())
            .or_else(|| n.to_f64().map(|f| f.to_string())),
        _ => None,
    }
}

/// serde's name of an expected type, as a user would say it.
fn in_words(expected: &str) -> &str {
    match expected {
        "a boolean" => "true or false",
        "usize" => "a whole number",
        "a duration" => "a duration such as 500ms, 30s, 2m, 1h or 5d",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load_with(None, vars)
    }

    fn load_with(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load(file, &|k| vars.get(k).cloned())
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_work_with_nothing_set() {
        let s = load(&[]).unwrap();
        assert_eq!(s.database_url.expose_secret(), "sqlite://cronflow.db");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.admin_token.is_none() && s.metrics_token.is_none());
        assert_eq!(
            s.retry_schedule,
            [30, 120, 600, 3600, 6 * 3600].map(Duration::from_secs)
        );
        assert_eq!(s.webhook_timeout, Duration::from_secs(10));
        assert!(!s.allow_private_targets);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(
            (
                s.worker_concurrency,
                s.delivery_concurrency,
                s.delivery_per_endpoint
            ),
            (32, 512, 128)
        );
        assert_eq!(s.webhook_disable_after, Duration::from_secs(5 * 86_400));
        assert_eq!(s.retention_audit, Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn every_documented_duration_spelling_parses() {
        for (written, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("5d", Duration::from_secs(5 * 86_400)),
            ("365d", Duration::from_secs(365 * 86_400)),
            ("1h 30m", Duration::from_secs(5400)),
        ] {
            let s = load(&[("CRONFLOW_SHUTDOWN_TIMEOUT", written)]).unwrap();
            assert_eq!(s.shutdown_timeout, expected, "{written}");
        }
        let s = load(&[("CRONFLOW_RETRY_SCHEDULE", " 500ms, 2m ,1h")]).unwrap();
        assert_eq!(
            s.retry_schedule,
            [
                Duration::from_millis(500),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        let file = toml_file(
            "listen = \"127.0.0.1:9000\"\nworker_concurrency = 7\nretry_schedule = [\"1s\", \"2s\"]\n\
             allow_private_targets = true\n",
        );
        let s = load_with(Some(file.path()), &[("CRONFLOW_WORKER_CONCURRENCY", "9")]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000", "from the file");
        assert_eq!(s.worker_concurrency, 9, "the environment wins");
        assert_eq!(s.retry_schedule, [1, 2].map(Duration::from_secs));
        assert!(s.allow_private_targets);
        assert_eq!(s.webhook_timeout, Duration::from_secs(10), "a default");
        let s = load_with(None, &[("CRONFLOW_CONFIG", file.path().to_str().unwrap())]).unwrap();
        assert_eq!(s.worker_concurrency, 7, "CRONFLOW_CONFIG names the file");
    }

    #[test]
    fn text_from_the_environment_serves_as_numbers_and_booleans() {
        for (written, expected) in [
            ("true", true),
            ("yes", true),
            ("1", true),
            ("FALSE", false),
            ("0", false),
        ] {
            let s = load(&[("CRONFLOW_ALLOW_PRIVATE_TARGETS", written)]).unwrap();
            assert_eq!(s.allow_private_targets, expected, "{written}");
        }
        let s = load(&[("CRONFLOW_DELIVERY_PER_ENDPOINT", " 4 "), ("CRONFLOW_LISTEN", "")]).unwrap();
        assert_eq!(s.delivery_per_endpoint, 4);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080", "empty is unset");
    }

    #[test]
    fn secrets_are_trimmed_and_never_printed() {
        let token = "0123456789abcdefXYZ";
        let key = "q0Wx9V6m1b5sO0XnRk7m0Yp2Qh8Zb3Jt4Lr6Sd1Fg2E=";
        let s = load(&[
            ("CRONFLOW_ADMIN_TOKEN", &format!(" {token} ")),
            ("CRONFLOW_METRICS_TOKEN", "scrape-me"),
            ("CRONFLOW_DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("CRONFLOW_SECRET_KEY", key),
        ])
        .unwrap();
        assert_eq!(s.admin_token.as_ref().unwrap().expose_secret(), token);
        let debug = format!("{s:?}");
        for secret in [token, "scrape-me", "hunter2", key] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let e = load(&[("CRONFLOW_ADMIN_TOKEN", "short")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_ADMIN_TOKEN (admin_token)");
        assert!(!e.message.contains("`short`"), "{e}");
        let digits = load(&[
            ("CRONFLOW_ADMIN_TOKEN", "12345678901234567890"),
            ("CRONFLOW_METRICS_TOKEN", "42"),
        ])
        .unwrap();
        assert_eq!(
            digits.admin_token.unwrap().expose_secret(),
            "12345678901234567890",
            "a token of digits is text"
        );
        assert_eq!(digits.metrics_token.unwrap().expose_secret(), "42");
    }

    #[test]
    fn a_bad_duration_names_the_setting_and_the_value() {
        let e = load(&[("CRONFLOW_WEBHOOK_TIMEOUT", "10")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_WEBHOOK_TIMEOUT (webhook_timeout)");
        assert!(
            e.message.starts_with("`10` is not a duration such as 500ms"),
            "{e}"
        );
        assert!(e.message.ends_with("(set in the environment)"), "{e}");
        let e = load(&[("CRONFLOW_RETRY_SCHEDULE", "30s,soon")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_RETRY_SCHEDULE (retry_schedule)");
        assert!(e.message.starts_with("`soon`: "), "{e}");
        let e = load(&[("CRONFLOW_RETRY_SCHEDULE", "0s")]).unwrap_err();
        assert_eq!(e.message, "1 to 20 delays, each above zero");
    }

    #[test]
    fn a_bad_number_or_choice_names_the_setting_and_the_value() {
        let e = load(&[("CRONFLOW_WORKER_CONCURRENCY", "many")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_WORKER_CONCURRENCY (worker_concurrency)");
        assert!(e.message.starts_with("`many` is not a whole number"), "{e}");
        let e = load(&[("CRONFLOW_WORKER_CONCURRENCY", "0")]).unwrap_err();
        assert_eq!(e.message, "`0` is not a number from 1 to 1024");
        let e = load(&[("CRONFLOW_DELIVERY_PER_ENDPOINT", "600")]).unwrap_err();
        assert_eq!(e.message, "`600` is not a number from 1 to 512");
        let e = load(&[("CRONFLOW_ALLOW_PRIVATE_TARGETS", "perhaps")]).unwrap_err();
        assert!(e.message.starts_with("`perhaps` is not true or false"), "{e}");
        let e = load(&[("CRONFLOW_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(e.message, "`xml` is not text or json (set in the environment)");
        let e = load(&[("CRONFLOW_LISTEN", "nowhere")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_LISTEN (listen)");
        assert!(e.message.starts_with("`nowhere`: invalid socket address"), "{e}");
    }

    #[test]
    fn a_secret_key_is_32_bytes_and_required_with_postgres() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let s = load(&[("CRONFLOW_SECRET_KEY", &format!(" {hex_key}\n"))]).unwrap();
        assert_eq!(s.secret_key.unwrap().expose_secret(), hex_key);
        assert!(load(&[]).unwrap().secret_key.is_none(), "optional on SQLite");
        let e = load(&[("CRONFLOW_SECRET_KEY", "aGVsbG8gd29ybGQ=")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_SECRET_KEY (secret_key)");
        assert!(e.message.starts_with("11 bytes where a key has 32"), "{e}");
        assert!(!e.message.contains("aGVsbG8"), "{e}");
        let e = load(&[("CRONFLOW_DATABASE_URL", "postgres://h/db")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_SECRET_KEY (secret_key)");
        assert!(e.message.contains("openssl rand -base64 32"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }

    #[test]
    fn a_bad_url_scheme_is_named_without_repeating_the_url() {
        let e = load(&[("CRONFLOW_DATABASE_URL", "mysql://u:hunter2@h/db")]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_DATABASE_URL (database_url)");
        assert!(
            e.message.starts_with("`mysql:` is not a database URL scheme"),
            "{e}"
        );
        assert!(!e.message.contains("hunter2"), "{e}");
        assert!(load(&[("CRONFLOW_DATABASE_URL", "cronflow.db")]).is_err());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named_with_the_known_ones() {
        let file = toml_file("listen = \"127.0.0.1:0\"\nlisten_adress = \"x\"\n");
        let e = load_with(Some(file.path()), &[]).unwrap_err();
        assert_eq!(e.setting, format!("--config ({})", file.path().display()));
        assert!(
            e.message
                .starts_with("unknown key `listen_adress`; known keys: database_url, listen,"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_or_missing_file_is_one_line_naming_it() {
        let file = toml_file("listen = \"127.0.0.1:0\"\nworker_concurrency = \n");
        let e = load_with(Some(file.path()), &[]).unwrap_err();
        assert_eq!(e.setting, format!("--config ({})", file.path().display()));
        assert!(e.message.starts_with("not valid TOML at line 2: "), "{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
        let e = load_with(Some(Path::new("/nonexistent/cronflow.toml")), &[]).unwrap_err();
        assert!(e.message.starts_with("cannot read the file"), "{e}");
        let file = toml_file("webhook_timeout = 10\n");
        let e = load_with(Some(file.path()), &[]).unwrap_err();
        assert_eq!(e.setting, "CRONFLOW_WEBHOOK_TIMEOUT (webhook_timeout)");
        assert!(
            e.message
                .ends_with(&format!("(set in the file {})", file.path().display())),
            "{e}"
        );
    }

    #[test]
    fn the_keys_read_from_the_environment_are_the_fields_of_settings() {
        let file = toml_file("no_such_setting = 1\n");
        let Err(e) = Figment::new()
            .merge(Layer::defaults())
            .merge(Layer::file(file.path()).unwrap())
            .extract_lossy::<Settings>()
        else {
            panic!("an unknown key is an error");
        };
        let Kind::UnknownField(_, fields) = e.kind else {
            panic!("{e}")
        };
        assert_eq!(fields, KEYS);
    }

    #[test]
    fn the_configuration_page_documents_every_setting() {
        let page = include_str!("../../docs/configuration.md");
        for key in KEYS {
            assert!(page.contains(&format!("`{}`", env_name(key))), "{key}");
            assert!(page.contains(&format!("`{key}`")), "{key}");
        }
    }
}
