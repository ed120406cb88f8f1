//! Storage: the only module that speaks SQL.
//!
//! [`Store`] wraps a SQLite or a Postgres pool. Queries that read the same on both
//! databases are written once (with `$1`-style parameters, which both accept) and run
//! through [`with_pool!`]; dialect-specific ones live in the backend's own branch.
//! Times are stored as milliseconds since the epoch (`BIGINT`) so both backends share
//! one representation; JSON values are stored as text.
//!
//! # Layout
//! - `mod.rs`: connecting, migrating, health.
//! - `jobs.rs`: the job catalogue.
//! - `keys.rs`: API keys.

mod jobs;
mod keys;

pub use jobs::JobError;

use crate::StoreError;
use sqlx::{
    ConnectOptions, PgPool, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{str::FromStr, time::Duration};

/// Name of CronFlow's migration history table. apalis records its own migrations in
/// sqlx's default `_sqlx_migrations`; sharing that table makes each side see the other's
/// entries as unknown and refuse to start (apalis#439), so ours has its own.
const MIGRATIONS_TABLE: &str = "cronflow_migrations";

/// How long to wait for a pooled connection before reporting the database unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a locked database before failing a statement.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on any single Postgres statement, so a stalled query cannot hang a loop.
const PG_STATEMENT_TIMEOUT_MS: &str = "30000";

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one process).
    Sqlite,
    /// A Postgres server (any number of processes).
    Postgres,
}

/// A connection pool to CronFlow's database.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite, WAL mode.
    Sqlite(SqlitePool),
    /// Postgres.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever the backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`). A SQLite file is created
    /// if missing and opened in WAL mode; the pragmas are set on every connection.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .pragma("temp_store", "MEMORY")
                .disable_statement_logging();
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?
                .options([("statement_timeout", PG_STATEMENT_TIMEOUT_MS)])
                .disable_statement_logging();
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies apalis's queue migrations, then CronFlow's (idempotent; safe to run on
    /// every start and from several processes on Postgres, which serialises them with an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                apalis_sqlite::SqliteStorage::<()>::migrations().run(pool).await?;
                Self::own_migrator(sqlx::migrate!("../migrations/sqlite"))
                    .run(pool)
                    .await?;
            }
            Store::Postgres(pool) => {
                apalis_postgres::PostgresStorage::<()>::migrations()
                    .run(pool)
                    .await?;
                Self::own_migrator(sqlx::migrate!("../migrations/postgres"))
                    .run(pool)
                    .await?;
            }
        }
        Ok(())
    }

    fn own_migrator(mut m: Migrator) -> Migrator {
        m.dangerous_set_table_name(MIGRATIONS_TABLE);
        m
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes every connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
