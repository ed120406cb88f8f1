//! The audit log: append-only entries with a gapless, commit-ordered sequence number, so
//! a SIEM reading with a cursor never skips or repeats an entry.

use super::{Store, with_pool};
use crate::StoreError;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// One audit entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    /// Position in the log; cursors resume after it.
    pub seq: i64,
    /// When (ms since the epoch).
    pub at: i64,
    /// Who: an API key id, `key_env` (the configured admin token) or `system`.
    pub actor: String,
    /// What: `POST /v1/jobs/{id}/pause`-style for API changes, `delivery.attempt`.
    pub action: String,
    /// The kind of object (`job`, `webhook`, `delivery`, ...).
    pub object_type: String,
    /// Its id, when known.
    pub object_id: Option<String>,
    /// The client's address, for API changes.
    pub source: Option<String>,
    /// More about it, as JSON text.
    pub detail: String,
}

impl AuditEntry {
    /// The entry as one NDJSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "at": DateTime::from_timestamp_millis(self.at).map(crate::domain::event::format_time),
            "actor": self.actor,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "source": self.source,
            "detail": serde_json::from_str::<Value>(&self.detail).unwrap_or(Value::Null),
        })
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// The kind of object.
    pub object_type: &'a str,
    /// Its id.
    pub object_id: Option<&'a str>,
    /// The client's address.
    pub source: Option<&'a str>,
    /// More about it.
    pub detail: Value,
}

/// Appends the entries of the slice `$entries` inside transaction `$tx`, taking their
/// sequence numbers with one counter update and writing them with multi-row inserts.
macro_rules! append_audit_batch {
    ($tx:expr, $entries:expr, $now:expr) => {{
        let entries: &[$crate::store::audit::NewAuditEntry<'_>] = $entries;
        if !entries.is_empty() {
            let n = i64::try_from(entries.len()).unwrap_or(i64::MAX);
            let last: i64 =
                sqlx::query_scalar("UPDATE audit_counter SET last = last + $1 WHERE id = 1 RETURNING last")
                    .bind(n)
                    .fetch_one(&mut *$tx)
                    .await?;
            let at = $now.timestamp_millis();
            for (c, chunk) in entries.chunks(1000).enumerate() {
                let first = last - n + 1 + i64::try_from(c * 1000).unwrap_or(0);
                let mut b = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_log (seq, at, actor, action, object_type, object_id, source, detail) ",
                );
                let mut seq = first;
                b.push_values(chunk, |mut row, e| {
                    row.push_bind(seq)
                        .push_bind(at)
                        .push_bind(e.actor)
                        .push_bind(e.action)
                        .push_bind(e.object_type)
                        .push_bind(e.object_id)
                        .push_bind(e.source)
                        .push_bind(e.detail.to_string());
                    seq += 1;
                });
                b.build().execute(&mut *$tx).await?;
            }
        }
    }};
}
pub(crate) use append_audit_batch;

impl Store {
    /// Appends one entry (in its own transaction).
    pub async fn append_audit(
        &self,
        entry: &NewAuditEntry<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        super::with_tx!(self, tx, q => {
            append_audit_batch!(tx, std::slice::from_ref(entry), now);
        });
        Ok(())
    }

    /// Up to `limit` entries after `after` (a seq), in order.
    pub async fn read_audit(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = with_pool!(self, pool => sqlx::query_as(
            "SELECT seq, at, actor, action, object_type, object_id, source, detail FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }
}
