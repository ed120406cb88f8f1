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
    /// A subscription's sealed signing secret does not open with the store's key:
    /// another key sealed it, or the row was edited or copied by hand. Nothing is
    /// signed with it.
    #[error("the signing secret of webhook {webhook_id} cannot be read: {source}")]
    SealedSecret {
        /// The subscription whose secret it is.
        webhook_id: String,
        /// Why it does not open.
        #[source]
        source: crate::domain::secret_box::OpenError,
    },
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
                    // shutting down or starting up (57P01–57P03), out of resources (53…),
                    // and a statement cancelled by CronFlow's `statement_timeout` (57014:
                    // it waited on locks or a saturated server longer than that).
                    // SQLite (result codes of up to four digits): BUSY and LOCKED, and
                    // their extended codes.
                    if code.len() == 5 {
                        code.starts_with("08")
                            || code.starts_with("53")
                            || matches!(code, "57P01" | "57P02" | "57P03" | "57014")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error with only a code, as a driver reports it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn transient(code: &'static str) -> bool {
        StoreError::Database(sqlx::Error::Database(Box::new(Coded(code)))).is_transient()
    }

    #[test]
    fn waiting_helps_with_an_unreachable_busy_or_conflicting_database_and_nothing_else() {
        // Postgres: connection lost, too many connections, shutting down, statement
        // timeout, deadlock, serialization failure.
        for code in ["08006", "53300", "57P01", "57014", "40P01", "40001"] {
            assert!(transient(code), "{code}");
        }
        // SQLite: BUSY, LOCKED, BUSY_SNAPSHOT (517).
        for code in ["5", "6", "517"] {
            assert!(transient(code), "{code}");
        }
        // A unique violation, a syntax error, SQLite's CONSTRAINT and CORRUPT.
        for code in ["23505", "42601", "19", "11"] {
            assert!(!transient(code), "{code}");
        }
        assert!(!StoreError::Corrupt("x".into()).is_transient());
        assert!(StoreError::Timeout.is_transient());
    }
}
