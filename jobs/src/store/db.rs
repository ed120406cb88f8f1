//! The seam between the store's SQL and the two databases: statements are written once,
//! with `$1`-style parameters (which both SQLite and Postgres accept), and run on
//! whichever database is in use.
//!
//! - [`Exec`]: where a statement runs (a pool or an open transaction, of either
//!   backend), with `execute`, `fetch_all`, `fetch_optional` and `fetch_one`.
//! - [`Arg`]: one parameter value, bound to the backend's own argument buffer.
//! - [`Statement`]: a statement built from parts (multi-row `VALUES`, `IN` lists), for
//!   the batched writes; its text depends only on the batch's shape, so each shape is
//!   prepared once per connection.
//! - [`Tx`]: a transaction (SQLite's `BEGIN IMMEDIATE`), committed explicitly; dropped
//!   without a commit (an early `?`) it rolls back.
//! - [`Dialect`]: the few texts that really differ between the databases.
//!
//! What does not live here: the statements themselves (each module of the store owns its
//! own), and apalis's tables (the `queue` module).

use crate::domain::PageRequest;
use sqlx::{
    Arguments, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool,
    postgres::{PgArguments, PgRow},
    sqlite::{SqliteArguments, SqliteRow},
};
use std::borrow::Cow;

/// One parameter of a statement. Typed even when empty (`OptI64(None)` is a `BIGINT`
/// NULL), so Postgres infers the same types as for a set value.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    /// An integer.
    I64(i64),
    /// An integer or NULL.
    OptI64(Option<i64>),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(Cow<'a, str>),
    /// Text or NULL.
    OptText(Option<Cow<'a, str>>),
    /// Bytes (a queue task's payload).
    Bytes(Vec<u8>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptI64(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Cow::Borrowed(v))
    }
}
impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Cow::Owned(v))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v.map(Cow::Borrowed))
    }
}
impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v.map(Cow::Owned))
    }
}

impl From<Vec<u8>> for Arg<'_> {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}

/// The backend's argument buffer for `args`.
fn bind_all<A: Arguments>(args: &[Arg<'_>]) -> Result<A, sqlx::Error>
where
    for<'t> i64: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
    for<'t> Option<i64>: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
    for<'t> bool: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
    for<'t> &'t str: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
    for<'t> &'t [u8]: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
{
    let mut out = A::default();
    out.reserve(args.len(), 0);
    for arg in args {
        match arg {
            Arg::I64(v) => out.add(*v),
            Arg::OptI64(v) => out.add(*v),
            Arg::Bool(v) => out.add(*v),
            Arg::Text(v) => out.add(v.as_ref()),
            Arg::OptText(v) => out.add(v.as_deref()),
            Arg::Bytes(v) => out.add(v.as_slice()),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}

/// A row type the store reads: decodable from both backends' rows.
pub(crate) trait Row:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Row for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// The text of a statement: a literal, or one built by [`Statement`].
pub(crate) type Sql = Cow<'static, str>;

/// Where a statement runs.
pub(crate) enum Exec<'e> {
    /// A SQLite pool (the reader or the writer).
    SqlitePool(&'e SqlitePool),
    /// A connection inside a SQLite transaction.
    SqliteConn(&'e mut SqliteConnection),
    /// The Postgres pool.
    PgPool(&'e PgPool),
    /// A connection inside a Postgres transaction.
    PgConn(&'e mut PgConnection),
}

impl Exec<'_> {
    /// Runs a statement; returns how many rows it changed.
    pub(crate) async fn execute(self, sql: impl Into<Sql>, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.into());
        let done = match self {
            Exec::SqlitePool(p) => query::<Sqlite, SqliteArguments>(sql, args)?
                .execute(p)
                .await?
                .rows_affected(),
            Exec::SqliteConn(c) => query::<Sqlite, SqliteArguments>(sql, args)?
                .execute(c)
                .await?
                .rows_affected(),
            Exec::PgPool(p) => query::<Postgres, PgArguments>(sql, args)?
                .execute(p)
                .await?
                .rows_affected(),
            Exec::PgConn(c) => query::<Postgres, PgArguments>(sql, args)?
                .execute(c)
                .await?
                .rows_affected(),
        };
        Ok(done)
    }

    /// Every row a query returns.
    pub(crate) async fn fetch_all<R: Row>(
        self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<Vec<R>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.into());
        match self {
            Exec::SqlitePool(p) => {
                query_as::<Sqlite, SqliteArguments, R>(sql, args)?
                    .fetch_all(p)
                    .await
            }
            Exec::SqliteConn(c) => {
                query_as::<Sqlite, SqliteArguments, R>(sql, args)?
                    .fetch_all(c)
                    .await
            }
            Exec::PgPool(p) => {
                query_as::<Postgres, PgArguments, R>(sql, args)?
                    .fetch_all(p)
                    .await
            }
            Exec::PgConn(c) => {
                query_as::<Postgres, PgArguments, R>(sql, args)?
                    .fetch_all(c)
                    .await
            }
        }
    }

    /// The row a query of at most one row returns, if any (every query the store runs
    /// through this names one row by key or has a `LIMIT 1`).
    pub(crate) async fn fetch_optional<R: Row>(
        self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<Option<R>, sqlx::Error> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    /// The one row a query returns (an error if none).
    pub(crate) async fn fetch_one<R: Row>(
        self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<R, sqlx::Error> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs a built statement; returns how many rows it changed.
    pub(crate) async fn run(self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        let sql = statement.render(self.is_sqlite());
        self.execute(sql, &statement.args).await
    }

    /// Every row a built statement returns.
    pub(crate) async fn fetch_built<R: Row>(self, statement: Statement<'_>) -> Result<Vec<R>, sqlx::Error> {
        let sql = statement.render(self.is_sqlite());
        self.fetch_all(sql, &statement.args).await
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, Exec::SqlitePool(_) | Exec::SqliteConn(_))
    }
}

/// `sql` with `args` bound, on database `DB`.
fn query<DB, A>(
    sql: sqlx::AssertSqlSafe<Sql>,
    args: &[Arg<'_>],
) -> Result<sqlx::query::Query<'static, DB, A>, sqlx::Error>
where
    DB: sqlx::Database,
    A: Arguments<Database = DB> + sqlx::IntoArguments<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'t [u8]: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    Ok(sqlx::query_with(sql, bind_all::<A>(args)?))
}

/// `sql` with `args` bound, on database `DB`, read into rows of `R`.
fn query_as<DB, A, R>(
    sql: sqlx::AssertSqlSafe<Sql>,
    args: &[Arg<'_>],
) -> Result<sqlx::query::QueryAs<'static, DB, R, A>, sqlx::Error>
where
    DB: sqlx::Database,
    A: Arguments<Database = DB> + sqlx::IntoArguments<DB>,
    R: for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'t [u8]: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    Ok(sqlx::query_as_with(sql, bind_all::<A>(args)?))
}

/// Marks a bound parameter's place in a [`Statement`] until it is rendered.
const PLACEHOLDER: char = '\u{1}';

/// A statement assembled from text and parameters. Replaces sqlx's `QueryBuilder`,
/// whose type is per backend. Placeholders are written when the statement runs, in the
/// form each database binds fastest: Postgres's `$1, $2, …`; SQLite's anonymous `?`,
/// because SQLite looks a numbered parameter's name up by a linear scan on every bind,
/// which is quadratic in a multi-row statement's thousands of parameters.
#[derive(Debug, Clone)]
pub(crate) struct Statement<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
    /// Whether [`Statement::and`] has started a `WHERE` clause.
    in_where: bool,
}

impl<'a> Statement<'a> {
    /// A statement starting with `sql`.
    pub(crate) fn new(sql: &str) -> Self {
        Statement {
            sql: sql.to_owned(),
            args: Vec::new(),
            in_where: false,
        }
    }

    /// The statement's text for SQLite (`?` placeholders) or Postgres (`$n`).
    fn render(&self, sqlite: bool) -> String {
        let mut out = String::with_capacity(self.sql.len() + 4 * self.args.len());
        let mut n = 0;
        for c in self.sql.chars() {
            if c != PLACEHOLDER {
                out.push(c);
            } else if sqlite {
                out.push('?');
            } else {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
        }
        out
    }

    /// Appends text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Starts the next condition of a `WHERE` clause built from the conditions that
    /// apply: ` WHERE ` before the first, ` AND ` before the others. (A clause of only
    /// the filters that are set is one the planner can serve from an index; a
    /// `($1 = '' OR col = $1)` is not.)
    pub(crate) fn and(&mut self) -> &mut Self {
        self.sql.push_str(if self.in_where { " AND " } else { " WHERE " });
        self.in_where = true;
        self
    }

    /// Marks the statement's text as inside a `WHERE` clause already, so that
    /// [`Statement::and`] appends ` AND `.
    pub(crate) fn in_where(&mut self) -> &mut Self {
        self.in_where = true;
        self
    }

    /// Ends a listing with keyset paging over `(created_at, id)` (each column prefixed
    /// by `alias`, e.g. `"d."`): the rows past `page`'s cursor, newest first or oldest
    /// first, one more than the page holds (to tell whether another follows). The cursor
    /// is a row value, which an index in listing order serves as a bound.
    pub(crate) fn keyset_page(&mut self, alias: &str, page: &PageRequest, newest_first: bool) -> &mut Self {
        let (past, order) = if newest_first { ("<", " DESC") } else { (">", "") };
        if let Some(c) = &page.after {
            self.and()
                .push(&format!("({alias}created_at, {alias}id) {past} ("))
                .bind(c.created_at_ms)
                .push(", ")
                .bind(c.id.clone())
                .push(")");
        }
        self.push(&format!(
            " ORDER BY {alias}created_at{order}, {alias}id{order} LIMIT "
        ))
        .bind(i64::from(page.limit) + 1)
    }

    /// Appends a placeholder bound to `arg`.
    pub(crate) fn bind(&mut self, arg: impl Into<Arg<'a>>) -> &mut Self {
        self.args.push(arg.into());
        self.sql.push(PLACEHOLDER);
        self
    }

    /// Appends `($1, $2, …)` binding each of `items`: the list of an `IN`.
    pub(crate) fn list<T: Into<Arg<'a>>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        self.sql.push('(');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(item);
        }
        self.sql.push(')');
        self
    }

    /// Appends `VALUES (…), (…)`: one row per item of `rows`, whose columns `row` adds.
    pub(crate) fn values<T>(
        &mut self,
        rows: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Values<'_, 'a>, T),
    ) -> &mut Self {
        self.sql.push_str("VALUES ");
        for (i, item) in rows.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push('(');
            row(
                &mut Values {
                    statement: self,
                    first: true,
                },
                item,
            );
            self.sql.push(')');
        }
        self
    }
}

/// The columns of one row of [`Statement::values`].
pub(crate) struct Values<'s, 'a> {
    statement: &'s mut Statement<'a>,
    first: bool,
}

impl<'a> Values<'_, 'a> {
    fn separate(&mut self) {
        if !self.first {
            self.statement.sql.push_str(", ");
        }
        self.first = false;
    }

    /// A column bound to `arg`.
    pub(crate) fn bind(&mut self, arg: impl Into<Arg<'a>>) -> &mut Self {
        self.separate();
        self.statement.bind(arg);
        self
    }

    /// A column computed by SQL around a parameter bound to `arg`
    /// (`before $n after`).
    pub(crate) fn bind_in(&mut self, before: &str, arg: impl Into<Arg<'a>>, after: &str) -> &mut Self {
        self.separate();
        self.statement.sql.push_str(before);
        self.statement.bind(arg);
        self.statement.sql.push_str(after);
        self
    }

    /// A column written as SQL text (a literal).
    pub(crate) fn raw(&mut self, sql: &str) -> &mut Self {
        self.separate();
        self.statement.sql.push_str(sql);
        self
    }
}

/// A transaction on either backend. [`Tx::commit`] ends it; dropping it rolls back.
pub(crate) enum Tx {
    /// SQLite, on the one writing connection.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    /// Postgres.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    /// Where the transaction's statements run.
    pub(crate) fn exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Sqlite(t) => Exec::SqliteConn(t),
            Tx::Postgres(t) => Exec::PgConn(t),
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) async fn execute(
        &mut self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<u64, sqlx::Error> {
        self.exec().execute(sql, args).await
    }

    /// Every row a query returns.
    pub(crate) async fn fetch_all<R: Row>(
        &mut self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<Vec<R>, sqlx::Error> {
        self.exec().fetch_all(sql, args).await
    }

    /// The first row a query returns, if any.
    pub(crate) async fn fetch_optional<R: Row>(
        &mut self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<Option<R>, sqlx::Error> {
        self.exec().fetch_optional(sql, args).await
    }

    /// The one row a query returns.
    pub(crate) async fn fetch_one<R: Row>(
        &mut self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<R, sqlx::Error> {
        self.exec().fetch_one(sql, args).await
    }

    /// Runs a built statement.
    pub(crate) async fn run(&mut self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        self.exec().run(statement).await
    }

    /// Every row a built statement returns.
    pub(crate) async fn fetch_built<R: Row>(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Vec<R>, sqlx::Error> {
        self.exec().fetch_built(statement).await
    }

    /// The transaction's database.
    pub(crate) fn backend(&self) -> super::Backend {
        match self {
            Tx::Sqlite(_) => super::Backend::Sqlite,
            Tx::Postgres(_) => super::Backend::Postgres,
        }
    }

    /// What differs on this transaction's database.
    pub(crate) fn dialect(&self) -> &'static Dialect {
        match self {
            Tx::Sqlite(_) => &SQLITE,
            Tx::Postgres(_) => &POSTGRES,
        }
    }

    /// Takes [`Dialect::lock_delivery_gauge`].
    pub(crate) async fn lock_delivery_gauge(&mut self) -> Result<(), sqlx::Error> {
        let lock = self.dialect().lock_delivery_gauge;
        if !lock.is_empty() {
            self.execute(lock, &[]).await?;
        }
        Ok(())
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// The texts of CronFlow's own statements that differ between the databases.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// Appended to a `SELECT` whose rows a transaction claims: Postgres schedulers in
    /// several processes each lock the due jobs they take and skip those another holds;
    /// SQLite has one writer and locks the whole database (`BEGIN IMMEDIATE`).
    pub(crate) skip_locked: &'static str,
    /// `Store::record_process_groups` locks the runs it updates in id order first, the
    /// order `finish_runs` locks them in: a run that exits at once is finished while its
    /// group is recorded, and two orders deadlock (Postgres then waits its
    /// `deadlock_timeout` to break it). SQLite has no row locks to order.
    pub(crate) lock_group_runs: &'static str,
    /// The join on [`Dialect::lock_group_runs`]'s rows.
    pub(crate) join_locked_group_runs: &'static str,
    /// `Store::finish_runs` first locks the `queue` jobs of the runs it finishes (the
    /// list of run ids follows), in id order: a scheduler pass holds a job's row while it
    /// records a slot `queued` behind a running run, and a finish that decided
    /// concurrently that nothing was queued would leave that run queued for ever (and
    /// with it every later slot of the job). Locked, the finish waits for the pass and
    /// then sees the queued run and starts it. SQLite has one writer: nothing to lock.
    pub(crate) lock_queue_jobs_of_runs: &'static str,
    /// Appended to a `SELECT` of rows a transaction reads and must see unchanged until it
    /// commits (Postgres: a share lock, which waits for a writer's commit and keeps the
    /// next writer waiting; SQLite's one writer already excludes the others).
    pub(crate) for_share: &'static str,
    /// Locks this connection's row of the delivery gauges (which the triggers on
    /// `deliveries` update), for a transaction that changes deliveries after locking a
    /// subscription's row: `Store::record_attempts` updates deliveries (so their gauge
    /// row) before subscriptions, and taking the gauge row first keeps one order. SQLite
    /// has one writer: nothing to lock.
    pub(crate) lock_delivery_gauge: &'static str,
}

/// SQLite's texts.
pub(crate) const SQLITE: Dialect = Dialect {
    skip_locked: "",
    lock_group_runs: "",
    join_locked_group_runs: "",
    lock_queue_jobs_of_runs: "",
    for_share: "",
    lock_delivery_gauge: "",
};

/// Postgres's texts.
pub(crate) const POSTGRES: Dialect = Dialect {
    skip_locked: " FOR UPDATE SKIP LOCKED",
    lock_group_runs: ", locked AS MATERIALIZED (SELECT id FROM runs WHERE id IN (SELECT id FROM v) \
         AND state = 'running' ORDER BY id FOR UPDATE)",
    join_locked_group_runs: " JOIN locked ON locked.id = v.id",
    lock_queue_jobs_of_runs: "SELECT id FROM scheduled_jobs WHERE overlap_policy = 'queue' \
         AND id IN (SELECT job_id FROM runs WHERE id IN ",
    for_share: " FOR SHARE",
    lock_delivery_gauge: "SELECT shard FROM delivery_gauges WHERE shard = pg_backend_pid() % 16 FOR UPDATE",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_statement_numbers_its_placeholders_in_order() {
        let mut s = Statement::new("INSERT INTO t (a, b) ");
        s.values([1_i64, 2], |row, v| {
            row.bind(v).raw("'x'");
        });
        s.push(" WHERE id IN ").list(["p", "q"]);
        assert_eq!(
            s.render(false),
            "INSERT INTO t (a, b) VALUES ($1, 'x'), ($2, 'x') WHERE id IN ($3, $4)"
        );
        assert_eq!(
            s.render(true),
            "INSERT INTO t (a, b) VALUES (?, 'x'), (?, 'x') WHERE id IN (?, ?)"
        );
        assert_eq!(s.args.len(), 4);
    }

    #[test]
    fn conditions_start_a_where_clause_then_join_with_and() {
        let mut s = Statement::new("SELECT 1 FROM t");
        s.and().push("a = ").bind(1_i64);
        s.and()
            .push("(b, c) > (")
            .bind("x")
            .push(", ")
            .bind(2_i64)
            .push(")");
        assert_eq!(
            s.render(false),
            "SELECT 1 FROM t WHERE a = $1 AND (b, c) > ($2, $3)"
        );
        let mut s = Statement::new("SELECT 1 FROM t WHERE d");
        s.in_where().and().push("a = ").bind(1_i64);
        assert_eq!(s.render(true), "SELECT 1 FROM t WHERE d AND a = ?");
    }
}
