//! Building and running the application: find the key that seals webhook secrets,
//! connect, migrate, seal the secrets still in clear, make sure an admin key exists,
//! bind, serve until the shutdown token is cancelled.

use crate::config::{POSTGRES_NEEDS_A_KEY, Settings};
use anyhow::Context;
use cronflow_api::ApiState;
use cronflow_jobs::{
    Clock, Store, StoreError, SystemClock,
    delivery::DeliveryConfig,
    domain::{NewApiKey, Scope, SecretKey, api_key::hash_token, target::UrlPolicy},
    metrics::Metrics,
    runner::{RunnerConfig, default_worker_name},
    signals::Signals,
    store::ChangedBy,
    store::RetentionPolicy,
    workers::run_workers_until_stopped,
};
use poem::{
    Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use secrecy::{ExposeSecret, SecretString};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio_util::sync::CancellationToken;

/// A built application, bound to its port but not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    address: SocketAddr,
    state: ApiState,
    first_admin_token: Option<String>,
    settings: Settings,
    /// The wake-ups the store reports to and this process's workers and scheduler wait on.
    signals: Signals,
}

/// Connects to the database, applies every migration (CronFlow's and apalis's), checks
/// that the secret key opens the webhook signing secrets stored and seals those still in
/// clear. `secret_key` is the `CRONFLOW_SECRET_KEY` setting (`secret_key_for` says what
/// serves without it).
pub async fn connect_and_migrate(
    database_url: &str,
    secret_key: Option<&SecretString>,
) -> anyhow::Result<Store> {
    let found = secret_key_for(database_url, secret_key)?;
    let store = Store::connect(database_url, found.key)
        .await
        .with_context(|| format!("cannot open the database at {}", redact_url(database_url)))?;
    store.migrate().await.context("cannot migrate the database")?;
    match store.check_key_and_seal_secrets().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            subscriptions = n,
            "sealed the webhook signing secrets stored in clear"
        ),
        Err(StoreError::SealedSecret { webhook_id, .. }) => {
            store.close().await;
            if let Some(created) = &found.created {
                // A key made just now for a database sealed with another: keeping it
                // would only stand in the way of the right one.
                let _ = std::fs::remove_file(created);
            }
            anyhow::bail!(
                "{} is not the key that sealed the webhook signing secrets in this database (that of \
                 {webhook_id} does not open): start with the key they were sealed with; if it is lost, \
                 see \"Losing the key\" in docs/configuration.md",
                found.source
            );
        }
        Err(e) => return Err(e).context("cannot seal the webhook signing secrets"),
    }
    Ok(store)
}

/// A secret key, and where it came from (for messages).
struct FoundKey {
    key: SecretKey,
    /// `CRONFLOW_SECRET_KEY`, or the key file.
    source: String,
    /// The key file, if this start created it.
    created: Option<PathBuf>,
}

/// The key that seals the webhook signing secrets of the database at `database_url`:
/// `setting` (`CRONFLOW_SECRET_KEY`) if given; else, on SQLite, the key file beside the
/// database file (`<file>.key`), which the first start creates with a new random key;
/// else (Postgres) none, an error saying how to make one.
fn secret_key_for(database_url: &str, setting: Option<&SecretString>) -> anyhow::Result<FoundKey> {
    if let Some(text) = setting {
        let key = SecretKey::parse(text.expose_secret())
            .map_err(|e| anyhow::anyhow!("invalid setting CRONFLOW_SECRET_KEY (secret_key): {e}"))?;
        return Ok(FoundKey {
            key,
            source: "CRONFLOW_SECRET_KEY".into(),
            created: None,
        });
    }
    if !database_url.starts_with("sqlite:") {
        anyhow::bail!("invalid setting CRONFLOW_SECRET_KEY (secret_key): {POSTGRES_NEEDS_A_KEY}");
    }
    let Some(db_file) = Store::sqlite_file(database_url) else {
        // An in-memory database: its secrets go with it, and so may its key.
        let key = SecretKey::parse(&SecretKey::generate_text()).context("a generated key parses")?;
        return Ok(FoundKey {
            key,
            source: "the in-memory database's key".into(),
            created: None,
        });
    };
    let path = key_file_path(&db_file);
    let (key, created) = read_or_create_key_file(&path)?;
    Ok(FoundKey {
        key,
        source: format!(
            "the key file {}{}",
            path.display(),
            if created { " (created just now)" } else { "" }
        ),
        created: created.then_some(path),
    })
}

/// `<db file>.key`: the key file of a SQLite database.
pub fn key_file_path(db_file: &Path) -> PathBuf {
    let mut name = db_file.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The key in the file at `path`, and whether this call created the file: when there
/// is none, a new random key is written to a private temporary file (mode 0600) and
/// linked into place, so that another process starting at the same moment either
/// finds the whole key or makes its own and reads the winner's. The key itself is never
/// printed or logged.
fn read_or_create_key_file(path: &Path) -> anyhow::Result<(SecretKey, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let read = |path: &Path| -> anyhow::Result<Option<SecretKey>> {
        match std::fs::read_to_string(path) {
            Ok(text) => SecretKey::parse(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("the key file {} holds no usable key: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read the key file {}", path.display())),
        }
    };
    if let Some(key) = read(path)? {
        return Ok((key, false));
    }
    let text = SecretKey::generate_text();
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut f| {
            f.write_all(format!("{text}\n").as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            tracing::info!(
                file = %path.display(),
                "created the key that seals webhook signing secrets: back it up, apart from the database"
            );
            let key = SecretKey::parse(&text).context("a generated key parses")?;
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = read(path)?.with_context(|| format!("the key file {} vanished", path.display()))?;
            Ok((key, false))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create the key file {}", path.display())),
    }
}

/// The URL without its password (in the user part or libpq's `password` parameter), for
/// messages; a URL that cannot be parsed is not repeated at all.
fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "(an unparsable URL)".to_owned();
    };
    if url.password().is_some() {
        // Fails only for URLs that cannot have a password, which then have none.
        let _ = url.set_password(None);
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

impl Application {
    /// Builds the application with the system clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds the application with the given clock (tests inject a manual one).
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = connect_and_migrate(
            settings.database_url.expose_secret(),
            settings.secret_key.as_ref(),
        )
        .await?;
        let (store, signals) = Signals::listen_to(store);
        let first_admin_token = if settings.admin_token.is_none() && !store.has_api_keys().await? {
            let key = NewApiKey::generate("initial admin key", Scope::Admin, clock.now());
            store
                .insert_api_key(&key, &ChangedBy::system("first start"))
                .await
                .context("cannot store the first admin key")?;
            Some(key.token)
        } else {
            None
        };
        let acceptor = TcpListener::bind(settings.listen)
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the listener has no socket address")?;
        let state = ApiState {
            store,
            clock,
            url_policy: UrlPolicy {
                allow_private_targets: settings.allow_private_targets,
            },
            admin_token_hash: settings
                .admin_token
                .as_ref()
                .map(|t| hash_token(t.expose_secret())),
            shutdown: CancellationToken::new(),
            metrics: Metrics::new(),
            metrics_token_hash: settings
                .metrics_token
                .as_ref()
                .map(|t| hash_token(t.expose_secret())),
            retry_schedule: settings.retry_schedule.clone(),
        };
        Ok(Self {
            acceptor,
            address,
            state,
            first_admin_token,
            settings,
            signals,
        })
    }

    /// The bound address (the real port when the settings asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The admin token generated because the database had no key yet; `None` on every
    /// later start. It exists nowhere else: print it once.
    pub fn first_admin_token(&self) -> Option<&str> {
        self.first_admin_token.as_deref()
    }

    /// The database, for tests and commands that share the process.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves the API and runs the scheduler, the workers, the watchdog and retention until `shutdown` is
    /// cancelled (or one of them fails, which stops the others), then lets in-flight
    /// requests and runs finish (up to the shutdown timeout) and closes the database.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        let clock = self.state.clock.clone();
        let stop = self.state.shutdown.clone();
        {
            let (outer, stop) = (shutdown, stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = outer.cancelled() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            });
        }
        let scheduler = tokio::spawn(cronflow_jobs::scheduler::run_scheduler_until_stopped(
            store.clone(),
            self.signals.clone(),
            clock.clone(),
            stop.clone(),
        ));
        let worker = {
            let (store, settings, stop) = (store.clone(), self.settings.clone(), stop.clone());
            let (metrics, signals) = (self.state.metrics.clone(), self.signals.clone());
            tokio::spawn(async move { run_worker(store, &signals, clock, &settings, metrics, stop).await })
        };
        let watchdog = tokio::spawn(cronflow_jobs::watchdog::run_watchdog_until_stopped(
            store.clone(),
            self.state.clock.clone(),
            stop.clone(),
        ));
        let retention = tokio::spawn(cronflow_jobs::retention::run_retention_until_stopped(
            store.clone(),
            self.state.clock.clone(),
            retention_policy(&self.settings),
            stop.clone(),
        ));
        let app = cronflow_api::routes(self.state);
        let server = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                app,
                stop.clone().cancelled_owned(),
                Some(self.settings.shutdown_timeout),
            )
            .await
            .context("the HTTP server failed");
        stop.cancel();
        let worker = worker.await.context("the run worker panicked")?;
        scheduler.await.context("the scheduler panicked")?;
        retention.await.context("the retention loop panicked")?;
        watchdog.await.context("the watchdog panicked")?;
        store.close().await;
        tracing::info!("stopped");
        server.and(worker)
    }
}

/// The retention policy the settings ask for.
fn retention_policy(settings: &Settings) -> RetentionPolicy {
    let d = |v: std::time::Duration| chrono::Duration::from_std(v).unwrap_or(chrono::Duration::MAX);
    RetentionPolicy {
        runs: d(settings.retention_runs),
        deliveries: d(settings.retention_deliveries),
        dead_deliveries: d(settings.retention_dead_deliveries),
        audit: d(settings.retention_audit),
        ..RetentionPolicy::default()
    }
}

/// Runs this process's run and delivery workers until `stop` is cancelled. apalis
/// workers stop for good on a database error (a restart of Postgres, a long lock on
/// SQLite), so when they end before `stop`, they are started again after a pause that
/// doubles up to 30 s: nothing is lost meanwhile, tasks wait in the database. A fresh
/// worker name each time keeps apalis from refusing the new registration. `signals`
/// are those `store` reports to ([`Signals::listen_to`]).
pub async fn run_worker(
    store: Store,
    signals: &Signals,
    clock: Arc<dyn Clock>,
    settings: &Settings,
    metrics: Metrics,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let mut config = RunnerConfig::new(default_worker_name());
        config.concurrency = settings.worker_concurrency;
        config.allow_private_targets = settings.allow_private_targets;
        config.shutdown_timeout = settings.shutdown_timeout;
        config.retry_base =
            chrono::Duration::from_std(settings.job_retry_backoff).unwrap_or(chrono::Duration::MAX);
        let deliveries = DeliveryConfig {
            retry_schedule: settings.retry_schedule.clone(),
            timeout: settings.webhook_timeout,
            allow_private_targets: settings.allow_private_targets,
            disable_after: settings.webhook_disable_after,
            concurrency: settings.delivery_concurrency,
            per_endpoint: settings.delivery_per_endpoint,
        };
        let started = std::time::Instant::now();
        let result = run_workers_until_stopped(
            store.clone(),
            signals,
            clock.clone(),
            config,
            deliveries,
            metrics.clone(),
            stop.clone(),
        )
        .await;
        if stop.is_cancelled() {
            return result.context("the workers failed");
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            pause = std::time::Duration::from_secs(1);
        }
        tracing::error!(
            ?result,
            ?pause,
            "the workers stopped unexpectedly; restarting them"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return Ok(()),
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_cut_from_database_urls() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=disable&password=pw"),
            "postgres://u@h/db?sslmode=disable&password=***"
        );
        assert_eq!(
            redact_url("postgres://h/db?sslmode=disable"),
            "postgres://h/db?sslmode=disable"
        );
        assert_eq!(redact_url("sqlite://cronflow.db"), "sqlite://cronflow.db");
        assert_eq!(
            redact_url("sqlite:///var/lib/cronflow.db"),
            "sqlite:///var/lib/cronflow.db"
        );
        assert_eq!(redact_url("postgres://u:pw@[::1/db"), "(an unparsable URL)");
    }
}
