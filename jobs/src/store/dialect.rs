//! What differs between the backends inside a transaction: pushing queue tasks, and the
//! few statements whose SQL is not the same on both. [`super::with_tx`] binds one of these
//! modules for its body.

/// SQLite: one process, so no row locking is needed (the transaction is `IMMEDIATE`).
pub(crate) mod sqlite {
    use crate::{StoreError, queue::Kind};
    use chrono::{DateTime, Utc};

    /// Pushes run tasks.
    pub(crate) async fn push(
        tx: &mut sqlx::SqliteConnection,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        crate::queue::sqlite::push_kind(tx, Kind::Run, ids).await
    }

    /// Pushes delivery attempt tasks.
    pub(crate) async fn push_deliveries(
        tx: &mut sqlx::SqliteConnection,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        crate::queue::sqlite::push_kind(tx, Kind::Delivery, ids).await
    }

    /// Jobs due at `$1` (or by `$3` for overlap `allow`), at most `$2`.
    pub(crate) const DUE_JOBS_SQL: &str = concat!(
        "SELECT ",
        super::super::jobs::job_columns!(),
        " FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= $3 AND NOT paused ",
        "AND (next_fire_at <= $1 OR overlap_policy = 'allow') ORDER BY next_fire_at LIMIT $2"
    );
}

/// Postgres: schedulers in several processes each lock the due jobs they take and skip
/// those another holds.
pub(crate) mod postgres {
    use crate::{StoreError, queue::Kind};
    use chrono::{DateTime, Utc};

    /// Pushes run tasks.
    pub(crate) async fn push(
        tx: &mut sqlx::PgConnection,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        crate::queue::postgres::push_kind(tx, Kind::Run, ids).await
    }

    /// Pushes delivery attempt tasks.
    pub(crate) async fn push_deliveries(
        tx: &mut sqlx::PgConnection,
        ids: &[(String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        crate::queue::postgres::push_kind(tx, Kind::Delivery, ids).await
    }

    /// Jobs due at `$1` (or by `$3` for overlap `allow`), at most `$2`, locked for this
    /// transaction.
    pub(crate) const DUE_JOBS_SQL: &str = concat!(
        "SELECT ",
        super::super::jobs::job_columns!(),
        " FROM scheduled_jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= $3 AND NOT paused ",
        "AND (next_fire_at <= $1 OR overlap_policy = 'allow') ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
}
