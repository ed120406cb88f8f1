//! Building and running the application: connect, migrate, make sure an admin key
//! exists, bind, serve until the shutdown token is cancelled.

use crate::config::Settings;
use anyhow::Context;
use cronflow_api::ApiState;
use cronflow_jobs::{
    Clock, Store, SystemClock,
    delivery::DeliveryConfig,
    domain::{NewApiKey, Scope, api_key::hash_token, target::UrlPolicy},
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
use secrecy::ExposeSecret;
use std::{net::SocketAddr, sync::Arc};
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

/// Connects to the database and applies every migration (CronFlow's and apalis's).
pub async fn connect_and_migrate(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("cannot open the database at {}", redact_url(database_url)))?;
    store.migrate().await.context("cannot migrate the database")?;
    Ok(store)
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
        let store = connect_and_migrate(settings.database_url.expose_secret()).await?;
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

    /// Serves the API and runs the scheduler and the run worker until `shutdown` is
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
