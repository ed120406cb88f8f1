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
//! - `runs.rs`: runs, the scheduler's ledger, and the event outbox.
//! - `webhooks.rs`: subscriptions and the fan-out of events to them.
//! - `audit.rs`: the append-only audit log.
//! - `retention.rs`: pruning old records in small batches.
//! - `deliveries.rs`: deliveries, attempts, retries and the dead letter queue.
//! - `stats.rs`: the dashboard's reads: capped counts, the DLQ by failure signature,
//!   bulk-action previews, hourly delivery success.

pub(crate) mod audit;
mod deliveries;
mod dialect;
mod jobs;
mod keys;
mod retention;
mod runs;
mod stats;
pub(crate) mod webhooks;

pub use audit::{AuditEntry, NewAuditEntry};
pub use deliveries::{
    Attempt, AttemptOutcome, AttemptRecord, Delivery, DeliveryFilter, DeliveryPolicy, DeliveryStatus,
    DeliveryWork, ExportCursor, ExportRow, MAX_RETRY_AFTER, ReplayFilter, Unattempted,
};
pub use jobs::JobError;
pub use retention::{PruneReport, RetentionPolicy};
pub use runs::{FIRE_BATCH, FireReport, MAX_CATCH_UP_RUNS, MISFIRE_GRACE, RunError, RunResult, StartOutcome};
pub use stats::{DeadDelivery, DeadFilter, DeadGroup, DeliveryExtras, HourlyAttempts};
pub use webhooks::NewEvent;

use crate::StoreError;
use sqlx::{
    ConnectOptions, PgPool, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{str::FromStr, sync::Arc, time::Duration};
use tokio::sync::Notify;

/// Name of CronFlow's migration history table. apalis records its own migrations in
/// sqlx's default `_sqlx_migrations`; sharing that table makes each side see the other's
/// entries as unknown and refuse to start (apalis#439), so ours has its own.
const MIGRATIONS_TABLE: &str = "cronflow_migrations";

/// How long to wait for a pooled connection before reporting the database unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a locked database before failing a statement (only
/// another process can hold the lock: in this one, writers queue for the one writing
/// connection).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write waits for the one writing SQLite connection: the writes queued
/// ahead of it are short batches, but a burst (a fan-out of thousands) can queue many.
const SQLITE_WRITE_WAIT: Duration = Duration::from_secs(30);
/// Reading SQLite connections (API listings, exports, the workers' reads).
const SQLITE_READERS: u32 = 8;
/// Upper bound on any single Postgres statement, so a stalled query cannot hang a loop.
const PG_STATEMENT_TIMEOUT_MS: &str = "30000";
/// The planner's cost of a random page read, for CronFlow's Postgres sessions (the
/// server's default, 4, models spinning disks). CronFlow's batched statements look up a
/// few hundred rows by key (`WHERE id IN (…)`, `UPDATE … FROM (VALUES …)`); at 4 the
/// planner prefers hashing a whole table of tens of thousands of rows to a few hundred
/// index lookups. Measured on 40,000 deliveries, a batch of 250: the delivery update
/// 11.3 → 2.4 ms, the delivery read 10.1 → 0.6 ms. 1.1 is the usual value for SSDs
/// and for data that fits in memory, as a queue's working set does.
const PG_RANDOM_PAGE_COST: &str = "1.1";

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one process).
    Sqlite,
    /// A Postgres server (any number of processes).
    Postgres,
}

/// CronFlow's database: a connection pool, and the wake-up signal for this process's
/// run worker (pushed tasks wake it at once instead of at its next poll).
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    wake: Arc<Notify>,
    wake_deliveries: Arc<Notify>,
    schedule_changed: Arc<Notify>,
}

/// The pools of whichever backend is in use.
#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePools),
    Postgres(PgPool),
}

/// SQLite allows one writer at a time, so every write (CronFlow's and apalis's) goes
/// through `write`, one connection: writers queue for it in this process. With several
/// writing connections they met inside SQLite instead, whose busy handler sleeps in
/// steps of up to 100 ms before retrying (latency spikes), and whose deferred
/// transactions (apalis's fetch) fail with "database is locked" instead of waiting.
/// Reads use `read`, several connections that see committed data beside the writer
/// (WAL) and cannot write (`query_only`, so a write sent there by mistake fails loudly).
#[derive(Debug, Clone)]
struct SqlitePools {
    write: SqlitePool,
    read: SqlitePool,
}

/// Runs `$body` with `$pool` bound to the SQLite pool `$side` (`read` or `write`), or to
/// the one Postgres pool, and `$q` to the backend's [`dialect`] module.
macro_rules! with_pool_for {
    ($store:expr, $side:ident, $pool:ident, $q:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite(pools) => {
                #[allow(unused_imports)]
                use $crate::store::dialect::sqlite as $q;
                let $pool = &pools.$side;
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                #[allow(unused_imports)]
                use $crate::store::dialect::postgres as $q;
                $body
            }
        }
    };
}
pub(crate) use with_pool_for;

/// Runs `$body` with `$pool` bound to a pool for reads, whichever the backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::with_pool_for!($store, read, $pool, _q => $body)
    };
}
pub(crate) use with_pool;

/// Runs `$body` with `$pool` bound to a pool for writes (a single statement; several go
/// in [`with_tx`]), whichever the backend; optionally `$q` bound to its [`dialect`].
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::with_pool_for!($store, write, $pool, _q => $body)
    };
    ($store:expr, $pool:ident, $q:ident => $body:expr) => {
        $crate::store::with_pool_for!($store, write, $pool, $q => $body)
    };
}
pub(crate) use with_writer;

/// Runs `$body` inside a transaction `$tx`, with `$q` naming the backend's [`dialect`]
/// module (its queue push and its own SQL), and commits if `$body` does
/// not return early. SQLite transactions start `IMMEDIATE` (taking the write lock at
/// once), so a read-then-write transaction cannot fail on a lock upgrade.
macro_rules! with_tx {
    ($store:expr, $tx:ident, $q:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite(pools) => {
                #[allow(unused_imports)]
                use $crate::store::dialect::sqlite as $q;
                let mut $tx = pools.write.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::Db::Postgres(pool) => {
                #[allow(unused_imports)]
                use $crate::store::dialect::postgres as $q;
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}
pub(crate) use with_tx;

/// Appends `($1, $2, …)` binding each of `ids`: the list of an `IN`.
pub(crate) fn push_list<'a, DB: sqlx::Database>(
    b: &mut sqlx::QueryBuilder<DB>,
    ids: impl IntoIterator<Item = &'a str>,
) where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    b.push("(");
    let mut list = b.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
}

impl Store {
    /// The rows `select` (a `SELECT … WHERE id IN`, the list left off) finds for `ids`, in
    /// one query.
    pub(crate) async fn select_by_ids<R>(
        &self,
        select: &'static str,
        ids: &[&str],
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = with_pool!(self, pool => {
            let mut b = sqlx::QueryBuilder::new(select);
            push_list(&mut b, ids.iter().copied());
            b.build_query_as().fetch_all(pool).await
        })?;
        Ok(rows)
    }

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
                // Pages are read through a memory map rather than copied in by a read
                // call each, and each connection caches 16 MiB (SQLite's default is 2):
                // measured, reads were the largest share of the delivery path's time.
                .pragma("mmap_size", "268435456")
                .pragma("cache_size", "-16384")
                .disable_statement_logging();
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(SQLITE_WRITE_WAIT)
                .connect_with(opts.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(SQLITE_READERS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts.pragma("query_only", "ON"))
                .await?;
            Ok(Store::new(Db::Sqlite(SqlitePools { write, read })))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?
                .options([
                    ("statement_timeout", PG_STATEMENT_TIMEOUT_MS),
                    ("random_page_cost", PG_RANDOM_PAGE_COST),
                ])
                .disable_statement_logging();
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await?;
            Ok(Store::new(Db::Postgres(pool)))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    fn new(db: Db) -> Self {
        Store {
            db,
            wake: Arc::new(Notify::new()),
            wake_deliveries: Arc::new(Notify::new()),
            schedule_changed: Arc::new(Notify::new()),
        }
    }

    /// How many write transactions of one kind the runner runs at once: one on SQLite
    /// (one writer; a second would only wait for the first), two on Postgres (one
    /// commits while the next is built). Deliveries use one on both
    /// (`delivery::DELIVERY_LANES`, measured).
    pub(crate) fn write_lanes(&self) -> usize {
        match self.db {
            Db::Sqlite(_) => 1,
            Db::Postgres(_) => 2,
        }
    }

    /// Puts back on `queue` (a queue name), due now, the tasks that the worker named
    /// `worker` holds but will not start (only `task`, if given), rather than leaving
    /// them until its lease lapses. Returns how many.
    pub(crate) async fn release_held_tasks(
        &self,
        queue: &str,
        worker: &str,
        task: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done = with_writer!(self, pool, q => sqlx::query(sqlx::AssertSqlSafe(q::release_held_sql()))
            .bind(worker)
            .bind(queue)
            .bind(task)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(done)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite writing pool, if that is the backend (for the queue workers, whose
    /// fetches and acknowledgements write).
    pub(crate) fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Sqlite(p) => Some(&p.write),
            Db::Postgres(_) => None,
        }
    }

    /// The Postgres pool, if that is the backend (for the queue worker).
    pub(crate) fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres(p) => Some(p),
            Db::Sqlite(_) => None,
        }
    }

    /// Signalled when this process creates, reschedules or resumes a job, so its
    /// scheduler recomputes how long to sleep. (Changes made by other processes are seen
    /// within the scheduler's idle poll.)
    pub fn schedule_changed(&self) -> Arc<Notify> {
        self.schedule_changed.clone()
    }

    /// Signalled after a transaction that pushed run tasks commits, so this process's
    /// worker fetches them at once (SQLite has no LISTEN/NOTIFY).
    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Like [`Store::wake_signal`], for delivery tasks.
    pub(crate) fn wake_deliveries_signal(&self) -> Arc<Notify> {
        self.wake_deliveries.clone()
    }

    /// Applies apalis's queue migrations, then CronFlow's (idempotent; safe to run on
    /// every start and from several processes on Postgres, which serialises them with an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(None).await
    }

    /// Like [`Store::migrate`], but applies CronFlow's migrations only up to version
    /// `last` (all of them when `None`): a database as an older CronFlow left it, for
    /// checking that an upgrade keeps what it holds.
    pub async fn migrate_up_to(&self, last: Option<i64>) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(pools) => {
                apalis_sqlite::SqliteStorage::<()>::migrations()
                    .run(&pools.write)
                    .await?;
                Self::own_migrator(sqlx::migrate!("../migrations/sqlite"), last)
                    .run(&pools.write)
                    .await?;
            }
            Db::Postgres(pool) => {
                apalis_postgres::PostgresStorage::<()>::migrations()
                    .run(pool)
                    .await?;
                Self::own_migrator(sqlx::migrate!("../migrations/postgres"), last)
                    .run(pool)
                    .await?;
            }
        }
        Ok(())
    }

    fn own_migrator(mut m: Migrator, last: Option<i64>) -> Migrator {
        m.dangerous_set_table_name(MIGRATIONS_TABLE);
        if let Some(last) = last {
            let kept: Vec<_> = m
                .migrations
                .iter()
                .filter(|x| x.version <= last)
                .cloned()
                .collect();
            m.migrations = kept.into();
        }
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
