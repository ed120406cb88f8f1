//! Storage: the only module that speaks SQL.
//!
//! [`Store`] wraps a SQLite or a Postgres database. Statements are written once, with
//! `$1`-style parameters (which both accept), and run through the small seam in `db`;
//! the few texts that differ between the databases sit beside it (`db::Dialect`) or, for
//! apalis's tables, in `queue`. Times are stored as milliseconds since the epoch
//! (`BIGINT`) so both backends share one representation; JSON values are stored as text.
//! The store decides nothing: what to write (which slots run, when a delivery is retried
//! or dead, when a run is retried) is decided by the domain's policies (`crate::domain`)
//! and handed in. Webhook signing secrets are stored sealed with the key the store is
//! given (`webhooks.rs`).
//!
//! # Layout
//! - `mod.rs`: connecting, migrating, health, the pools.
//! - `db.rs`: the seam between statements and the two databases (no statements).
//! - `queue/`: everything that touches apalis's tables, and how it departs from apalis.
//! - `jobs.rs`: the job catalogue.
//! - `keys.rs`: API keys.
//! - `runs.rs`: runs, the scheduler's ledger, and the event outbox.
//! - `webhooks.rs`: subscriptions and the fan-out of events to them.
//! - `audit.rs`: the append-only audit log.
//! - `retention.rs`: pruning old records in small batches.
//! - `deliveries/`: recording attempts (`attempts.rs`), reading, exporting and replaying
//!   deliveries and the dead letter queue (`dlq.rs`), and the gauges (`gauges.rs`).
//! - `stats.rs`: the dashboard's reads: capped counts, the DLQ by failure signature,
//!   bulk-action previews, hourly delivery success.
//! - `bench_data.rs`: a synthetic delivery history for the benchmark (never used by the
//!   product).

pub(crate) mod audit;
mod bench_data;
mod db;
mod deliveries;
mod jobs;
mod keys;
mod queue;
mod retention;
mod runs;
mod stats;
mod watch;
pub(crate) mod webhooks;

/// The deliveries' domain types, also reachable from here (where they lived before).
pub use crate::domain::{Attempt, AttemptOutcome, Delivery, DeliveryPolicy, DeliveryStatus, MAX_RETRY_AFTER};
pub use audit::{AuditEntry, ChangedBy, NewAuditEntry};
pub use bench_data::SYNTHETIC_SUBSCRIPTIONS;
pub use deliveries::{
    AttemptRecord, DeliveryFilter, DeliveryLoad, DeliveryWork, ExportCursor, ExportRow, Gauges, ReplayFilter,
    TaskStart, Unattempted,
};
pub use jobs::JobError;
pub use queue::RELIED_ON as APALIS_COLUMNS_RELIED_ON;
pub use retention::{PruneReport, RetentionPolicy};
pub use runs::{FIRE_BATCH, FireReport, RunError, RunResult, StartOutcome};
pub use stats::{DeadDelivery, DeadFilter, DeadGroup, DeliveryExtras, HourlyAttempts};
pub use watch::{JobHealth, WatchReport};
pub use webhooks::NewEvent;

use crate::StoreError;
use crate::domain::SecretKey;
use db::{Exec, Row, Statement, Tx};
use sqlx::{
    ConnectOptions, PgPool, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::sync::Arc;
use std::{str::FromStr, time::Duration};

/// Whether a new SQLite connection can write, tried with `BEGIN IMMEDIATE` (and a
/// rollback) without waiting: refused if SQLite opened the file read-only (the file was
/// read-only when it was opened, even if it is writable again by now). When another
/// process holds the write lock, the try cannot tell, and the file is checked instead:
/// it must open for writing.
async fn check_writable(
    conn: &mut sqlx::SqliteConnection,
    file: &std::path::Path,
) -> Result<(), sqlx::Error> {
    let refused = || {
        Err(sqlx::Error::Protocol(format!(
            "the database file {} cannot be written",
            file.display()
        )))
    };
    let (wait,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("PRAGMA busy_timeout = 0").execute(&mut *conn).await?;
    let outcome = match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        Ok(_) => {
            sqlx::query("ROLLBACK").execute(&mut *conn).await?;
            Ok(())
        }
        Err(sqlx::Error::Database(e))
            if e.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| c & 0xff == SQLITE_READONLY) =>
        {
            refused()
        }
        Err(_) => {
            let writable = file.as_os_str().is_empty()
                || file.as_os_str() == ":memory:"
                || !file.exists()
                || std::fs::OpenOptions::new().append(true).open(file).is_ok();
            if writable { Ok(()) } else { refused() }
        }
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {wait}")))
        .execute(&mut *conn)
        .await?;
    outcome
}

/// SQLite's primary result code for a write to a read-only database.
const SQLITE_READONLY: i32 = 8;

/// Name of CronFlow's migration history table. apalis records its own migrations in
/// sqlx's default `_sqlx_migrations`; sharing that table makes each side see the other's
/// entries as unknown and refuse to start (apalis#439), so ours has its own.
const MIGRATIONS_TABLE: &str = "cronflow_migrations";

/// The checksums (SHA-384 of the text) that databases recorded for migrations whose
/// comments were edited after they shipped (figures and references to files outside the
/// repository removed; the statements are unchanged). sqlx compares a migration's
/// checksum with the recorded one and refuses to start on a difference, so these
/// migrations carry their released checksum (`Migration::checksum`), and databases
/// migrated before and after the edit record the same one.
const SQLITE_RELEASED_CHECKSUMS: [(i64, &str); 3] = [
    (
        20261128000001,
        "8b3c51da4a17648d0746b03151f075754df5330a6d27dd36a590db117011af67c9b64667d8ca1afa69b53d74e8a7e76a",
    ),
    (
        20261128000002,
        "80e35b4eacc148c0c4a12ca1b6320f09926eb8743cfa9cf34d69aaaad101e3a1e7914e3d914ce67095a94ac63cd129ee",
    ),
    (
        20261128000003,
        "9c9faf0ca7af7ad57b8743a39adeb15ee6d1b5b9a57d0112b3876bdd508cbea950f88195e6df2bfbcc160e02514a8757",
    ),
];
/// [`SQLITE_RELEASED_CHECKSUMS`] for Postgres.
const POSTGRES_RELEASED_CHECKSUMS: [(i64, &str); 3] = [
    (
        20261128000002,
        "1b7e1aae91acd163fc27b4b7f764f14a66841c9fdd7391e6689f1c50882e5681c1fb2e9467c35b91857d00b1ec65f017",
    ),
    (
        20261128000003,
        "2ce7f2aff26692ff025a29e46162f6246a0d28733bc4ca18aa5a49ce06c3b5a5d500a6331ee1eefaae41aca560fb93b0",
    ),
    (
        20261128000005,
        "4e5eedf54619b019981711a61b13d64701be39f1e1bf442f52514fc1c2e3bcff95c1d5fcc91d263b3ac3aa1fcfe86684",
    ),
];

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
/// index lookups, which is several times slower. 1.1 is the usual value for SSDs and
/// for data that fits in memory, as a queue's working set does.
const PG_RANDOM_PAGE_COST: &str = "1.1";

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one process).
    Sqlite,
    /// A Postgres server (any number of processes).
    Postgres,
}

/// CronFlow's database: its connection pools, the key that seals the webhook signing
/// secrets it stores, and whoever listens for its [`Change`]s.
#[derive(Debug, Clone)]
pub struct Store {
    pools: Pools,
    secret_key: Arc<SecretKey>,
    listener: Option<Arc<dyn ChangeListener>>,
}

/// What a commit changed that this process may want to act on at once rather than at
/// its next poll. The store only reports these; turning them into wake-ups of the
/// workers and the scheduler is `crate::signals`'s business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Run tasks due now were pushed.
    RunsPushed,
    /// Delivery tasks due now were pushed.
    DeliveriesPushed,
    /// A job was created, rescheduled, paused, resumed or deleted.
    ScheduleChanged,
}

/// Told of each [`Change`], after its commit.
pub trait ChangeListener: Send + Sync + std::fmt::Debug {
    /// `change` was committed.
    fn changed(&self, change: Change);
}

/// The pools of whichever backend is in use.
///
/// SQLite allows one writer at a time, so every write (CronFlow's and apalis's) goes
/// through `writer`, one connection: writers queue for it in this process. With several
/// writing connections they met inside SQLite instead, whose busy handler sleeps in
/// steps before retrying (latency spikes), and whose deferred transactions (apalis's
/// fetch) fail with "database is locked" instead of waiting. Reads use `reader`, several
/// connections that see committed data beside the writer (WAL) and cannot write
/// (`query_only`, so a write sent there by mistake fails loudly). Postgres has one pool
/// for both.
#[derive(Debug, Clone)]
enum Pools {
    Sqlite { writer: SqlitePool, reader: SqlitePool },
    Postgres(PgPool),
}

/// The pool apalis's workers use, which fetch and acknowledge (write) tasks.
pub(crate) enum ApalisPool<'a> {
    /// SQLite's one writing connection.
    Sqlite(&'a SqlitePool),
    /// The Postgres pool.
    Postgres(&'a PgPool),
}

impl Store {
    /// Where reads run: SQLite's read pool, or the Postgres pool.
    pub(crate) fn reader(&self) -> Exec<'_> {
        match &self.pools {
            Pools::Sqlite { reader, .. } => Exec::SqlitePool(reader),
            Pools::Postgres(pool) => Exec::PgPool(pool),
        }
    }

    /// Where a single write runs (several go in a [`Store::begin`] transaction): SQLite's
    /// one writing connection, or the Postgres pool.
    pub(crate) fn writer(&self) -> Exec<'_> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => Exec::SqlitePool(writer),
            Pools::Postgres(pool) => Exec::PgPool(pool),
        }
    }

    /// Begins a write transaction. SQLite's start `IMMEDIATE` (taking the write lock at
    /// once), so a read-then-write transaction cannot fail on a lock upgrade.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.pools {
            Pools::Sqlite { writer, .. } => Tx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// The rows `select` (a `SELECT … WHERE id IN`, the list left off) finds for `ids`, in
    /// one query.
    pub(crate) async fn select_by_ids<R: Row>(
        &self,
        select: &str,
        ids: &[&str],
    ) -> Result<Vec<R>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut s = Statement::new(select);
        s.list(ids.iter().copied());
        Ok(self.reader().fetch_built(s).await?)
    }

    /// Connects to `url` (`sqlite://PATH` or `postgres://…`). A SQLite file is created
    /// if missing and opened in WAL mode; the pragmas are set on every connection.
    /// `secret_key` seals and opens the webhook signing secrets; it must be the key that
    /// sealed those already stored ([`Store::check_key_and_seal_secrets`] checks).
    pub async fn connect(url: &str, secret_key: SecretKey) -> Result<Self, StoreError> {
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
                // reads are the largest share of the delivery path's time.
                .pragma("mmap_size", "268435456")
                .pragma("cache_size", "-16384")
                .disable_statement_logging();
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(SQLITE_WRITE_WAIT)
                // When the disk refuses a write (read-only, full), the rollback of the
                // failed transaction can fail too and the one writing connection would
                // stay inside it, refusing every later `BEGIN`: such a connection is
                // closed instead, and the pool opens a fresh one.
                .before_acquire(|conn, _| {
                    Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
                })
                // SQLite opens a file it cannot write read-only, silently, and such a
                // connection stays read-only after the disk is writable again: a new
                // writing connection is refused unless it can write, and the next
                // acquire opens another (see `check_writable`).
                .after_connect({
                    let file = opts.get_filename().to_owned();
                    move |conn, _| {
                        let file = file.clone();
                        Box::pin(async move { check_writable(conn, &file).await })
                    }
                })
                .connect_with(opts.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(SQLITE_READERS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts.pragma("query_only", "ON"))
                .await?;
            Ok(Store::new(
                Pools::Sqlite {
                    writer: write,
                    reader: read,
                },
                secret_key,
            ))
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
            Ok(Store::new(Pools::Postgres(pool), secret_key))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    fn new(pools: Pools, secret_key: SecretKey) -> Self {
        Store {
            pools,
            secret_key: Arc::new(secret_key),
            listener: None,
        }
    }

    /// The key that seals the stored webhook signing secrets.
    pub(crate) fn secret_key(&self) -> &SecretKey {
        &self.secret_key
    }

    /// The file of a `sqlite://` URL; `None` for another database or an in-memory one.
    pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
        if !url.starts_with("sqlite:") {
            return None;
        }
        let opts = SqliteConnectOptions::from_str(url).ok()?;
        let file = opts.get_filename();
        // sqlx names in-memory databases `file:sqlx-in-memory-N`.
        (!file.as_os_str().is_empty() && !file.to_string_lossy().starts_with("file:"))
            .then(|| file.to_path_buf())
    }

    /// This store, telling `listener` of each [`Change`] it commits (from every clone).
    pub fn listened_by(mut self, listener: Arc<dyn ChangeListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Tells the listener, if any, that `change` was committed.
    pub(crate) fn changed(&self, change: Change) {
        if let Some(l) = &self.listener {
            l.changed(change);
        }
    }

    /// How many write transactions of one kind the runner runs at once: one on SQLite
    /// (one writer; a second would only wait for the first), two on Postgres (one
    /// commits while the next is built). Deliveries use one on both
    /// (`delivery::DELIVERY_LANES` says why).
    pub(crate) fn write_lanes(&self) -> usize {
        match self.pools {
            Pools::Sqlite { .. } => 1,
            Pools::Postgres(_) => 2,
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// The pool apalis's workers use on this database.
    pub(crate) fn apalis_pool(&self) -> ApalisPool<'_> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => ApalisPool::Sqlite(writer),
            Pools::Postgres(pool) => ApalisPool::Postgres(pool),
        }
    }

    /// Applies apalis's queue migrations, then CronFlow's (idempotent; safe to run on
    /// every start and from several processes on Postgres, which serialises them with an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(None).await?;
        let chained = self.chain_audit_entries().await?;
        if chained > 0 {
            tracing::info!(
                entries = chained,
                "chained the audit entries written before the hash chain"
            );
        }
        Ok(())
    }

    /// Like [`Store::migrate`], but applies CronFlow's migrations only up to version
    /// `last` (all of them when `None`): a database as an older CronFlow left it, for
    /// checking that an upgrade keeps what it holds.
    pub async fn migrate_up_to(&self, last: Option<i64>) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                apalis_sqlite::SqliteStorage::<()>::migrations()
                    .run(writer)
                    .await?;
                Self::own_migrator(
                    sqlx::migrate!("../migrations/sqlite"),
                    &SQLITE_RELEASED_CHECKSUMS,
                    last,
                )
                .run(writer)
                .await?;
            }
            Pools::Postgres(pool) => {
                apalis_postgres::PostgresStorage::<()>::migrations()
                    .run(pool)
                    .await?;
                Self::own_migrator(
                    sqlx::migrate!("../migrations/postgres"),
                    &POSTGRES_RELEASED_CHECKSUMS,
                    last,
                )
                .run(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// CronFlow's migrator: its own history table, the checksums the databases recorded
    /// for migrations whose comments changed since (`released`), and only the
    /// migrations up to `last`, if given.
    fn own_migrator(mut m: Migrator, released: &[(i64, &str)], last: Option<i64>) -> Migrator {
        m.dangerous_set_table_name(MIGRATIONS_TABLE);
        let kept: Vec<_> = m
            .migrations
            .iter()
            .filter(|x| last.is_none_or(|last| x.version <= last))
            .cloned()
            .map(|mut x| {
                if let Some((_, sum)) = released.iter().find(|(v, _)| *v == x.version) {
                    x.checksum = hex::decode(sum).unwrap_or_default().into();
                }
                x
            })
            .collect();
        m.migrations = kept.into();
        m
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reader().execute("SELECT 1", &[]).await?;
        Ok(())
    }

    /// Closes every connection of every pool, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}
