//! Error types of the engine: one for bad input, one for storage failures.

use std::borrow::Cow;

/// Input that does not make a valid domain value. `field` names the offending input in
/// the terms the API uses (`schedule`, `target.url`, ...), so clients can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The input field, dotted for nested fields (`target.command`).
    pub field: Cow<'static, str>,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, reported under a parent field (`command` becomes `target.command`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = Cow::Owned(format!("{parent}.{}", self.field));
        self
    }
}

/// A failure of the database layer. The source is kept for logs; callers show users
/// nothing of it beyond "internal error".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or a query failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Migrations (CronFlow's or apalis's) could not be applied.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value no longer parses as its domain type (a bug or a manual edit).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database URL is neither `sqlite://` nor `postgres://`.
    #[error("unsupported database URL (expected sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// A database call did not answer within its deadline.
    #[error("database call timed out")]
    Timeout,
    /// A transaction lost a conflict with another (deadlock, serialization failure);
    /// trying it again is safe.
    #[error("the transaction conflicted with another")]
    Conflict,
}

impl StoreError {
    /// Whether the transaction lost a deadlock or serialization conflict (Postgres
    /// SQLSTATE 40P01 / 40001), so running it again may well succeed.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Conflict => true,
            StoreError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// Whether trying the same call again later may well succeed: the database is
    /// unreachable or restarting, busy, or the transaction lost a conflict (as opposed
    /// to a query that is wrong or data that is corrupt).
    pub fn is_transient(&self) -> bool {
        self.is_unavailable()
            || self.is_conflict()
            || match self {
                StoreError::Database(sqlx::Error::Database(e)) => {
                    let code = e.code();
                    let code = code.as_deref().unwrap_or("");
                    // Postgres (five-character SQLSTATEs): connection exceptions (08…),
                    // shutting down or starting up (57P01–57P03), out of resources (53…).
                    // SQLite (result codes of up to four digits): BUSY and LOCKED, and
                    // their extended codes.
                    if code.len() == 5 {
                        code.starts_with("08")
                            || code.starts_with("53")
                            || matches!(code, "57P01" | "57P02" | "57P03")
                    } else {
                        code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                    }
                }
                StoreError::Database(sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed) => true,
                _ => false,
            }
    }

    /// Whether the database is unreachable (as opposed to a query failing), so callers
    /// can answer "try again later" rather than "bug".
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
                | StoreError::Timeout
        )
    }
}
