//! Fresh databases: each measurement gets its own, removed afterwards. SQLite: a file in
//! a new temporary directory. Postgres: a database created on the server named by
//! `CRONFLOW_BENCH_POSTGRES_URL` (default: the local server the tests use), dropped at
//! the end, also on failure or ctrl-c.

use anyhow::Context;
use chrono::Utc;
use sqlx::{Postgres, migrate::MigrateDatabase};
use std::path::PathBuf;

/// Names the Postgres server the bench creates its databases on.
const POSTGRES_URL_ENV: &str = "CRONFLOW_BENCH_POSTGRES_URL";
/// The server used when [`POSTGRES_URL_ENV`] is not set (the one the tests use).
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One backend the bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendName {
    Sqlite,
    Postgres,
}

impl BackendName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendName::Sqlite => "sqlite",
            BackendName::Postgres => "postgres",
        }
    }
}

/// A database created for one measurement, removed by [`FreshDatabase::remove`].
struct FreshDatabase {
    url: String,
    /// The temporary directory of a SQLite file; `None` for Postgres.
    dir: Option<PathBuf>,
}

/// A name no other bench run uses: process id and the current time.
fn unique_name() -> String {
    format!(
        "cronflow_bench_{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// `server` (a Postgres URL) with its database name replaced by `name`, its query
/// parameters kept.
fn with_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(server).with_context(|| format!("{POSTGRES_URL_ENV} is not a URL"))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

impl FreshDatabase {
    async fn create(backend: BackendName) -> anyhow::Result<Self> {
        let name = unique_name();
        match backend {
            BackendName::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the directory {}", dir.display()))?;
                let url = format!("sqlite://{}", dir.join("bench.db").display());
                Ok(FreshDatabase { url, dir: Some(dir) })
            }
            BackendName::Postgres => {
                let server =
                    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let url = with_database(&server, &name)?;
                Postgres::create_database(&url).await.with_context(|| {
                    format!("cannot create a database on the server of {POSTGRES_URL_ENV} ({server})")
                })?;
                Ok(FreshDatabase { url, dir: None })
            }
        }
    }

    /// Deletes the database; failures are reported, not returned (the figures are
    /// already printed).
    async fn remove(self) {
        match self.dir {
            Some(dir) => {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("bench: cannot remove {}: {e}", dir.display());
                }
            }
            None => {
                if let Err(e) = Postgres::force_drop_database(&self.url).await {
                    eprintln!("bench: cannot drop the database {}: {e}", self.url);
                }
            }
        }
    }
}

/// A new random key for the webhook signing secrets of a fresh database (which is
/// thrown away after the bench, key and all).
pub(crate) fn fresh_secret_key() -> secrecy::SecretString {
    cronflow_jobs::domain::SecretKey::generate_text().into()
}

/// Runs `bench` on a fresh database of `backend`, and removes the database afterwards,
/// whether the bench succeeded, failed or was interrupted with ctrl-c.
pub(crate) async fn on_fresh_database<T, F, Fut>(backend: BackendName, bench: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let db = FreshDatabase::create(backend).await?;
    let result = tokio::select! {
        r = bench(db.url.clone()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    db.remove().await;
    result
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        let with = |server: &str| with_database(server, "b").unwrap();
        assert_eq!(with("postgres://u:pw@h:5432/test"), "postgres://u:pw@h:5432/b");
        assert_eq!(
            with("postgres://h/test?sslmode=disable"),
            "postgres://h/b?sslmode=disable"
        );
        assert_eq!(with("postgres://h"), "postgres://h/b");
    }
}
