//! The audit log: append-only entries with a gapless, commit-ordered sequence number, so
//! a SIEM reading with a cursor never skips or repeats an entry.
//!
//! Every change made through the API or the dashboard is recorded by the store method
//! that makes it, in the change's own transaction: the change and its entry commit
//! together or not at all. Such methods take a [`ChangedBy`] saying who asked.

use super::{
    Store,
    db::{Statement, Tx},
};
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

/// Who asks for a change, and how: the audit entry the change writes in its own
/// transaction is made of this and the changed object.
#[derive(Debug, Clone)]
pub struct ChangedBy {
    /// The key id (`key_…`), `key_env` for the configured admin token, or `system`.
    pub actor: String,
    /// The API route the change goes through (or, from the dashboard, the route that makes
    /// the same change), as `POST /v1/jobs/{id}/pause`.
    pub action: String,
    /// The client's address.
    pub source: Option<String>,
    /// More about it (the answer's status, `via: dashboard`, ...).
    pub detail: Value,
}

impl ChangedBy {
    /// A change CronFlow makes on its own or from its command line, on behalf of no key.
    pub fn system(action: &str) -> Self {
        ChangedBy {
            actor: "system".to_owned(),
            action: action.to_owned(),
            source: None,
            detail: json!({}),
        }
    }

    /// Writes the entry of this change to `object_type` `object_id` inside `tx`.
    pub(crate) async fn record(
        &self,
        tx: &mut Tx,
        object_type: &str,
        object_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let entry = NewAuditEntry {
            actor: &self.actor,
            action: &self.action,
            object_type,
            object_id,
            source: self.source.as_deref(),
            detail: self.detail.clone(),
        };
        append_audit_batch(tx, std::slice::from_ref(&entry), now).await
    }
}

/// Audit entries per multi-row INSERT (8 parameters each).
const ROWS: usize = 1000;

/// Appends `entries` inside `tx`, taking their sequence numbers with one counter update
/// and writing them with multi-row inserts.
pub(crate) async fn append_audit_batch(
    tx: &mut Tx,
    entries: &[NewAuditEntry<'_>],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(entries.len()).unwrap_or(i64::MAX);
    let (last,): (i64,) = tx
        .fetch_one(
            "UPDATE audit_counter SET last = last + $1 WHERE id = 1 RETURNING last",
            &[n.into()],
        )
        .await?;
    let at = now.timestamp_millis();
    let mut seq = last - n;
    for chunk in entries.chunks(ROWS) {
        let mut s = Statement::new(
            "INSERT INTO audit_log (seq, at, actor, action, object_type, object_id, source, detail) ",
        );
        s.values(chunk, |row, e| {
            seq += 1;
            row.bind(seq)
                .bind(at)
                .bind(e.actor)
                .bind(e.action)
                .bind(e.object_type)
                .bind(e.object_id)
                .bind(e.source)
                .bind(e.detail.to_string());
        });
        tx.run(s).await?;
    }
    Ok(())
}

impl Store {
    /// Records an action that changes nothing but belongs on the audit trail (an admin
    /// reading stored credentials), in its own transaction: callers record first and
    /// act after, so no such action goes unrecorded.
    pub async fn record_action(
        &self,
        by: &ChangedBy,
        object_type: &str,
        object_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        by.record(&mut tx, object_type, Some(object_id), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` entries after `after` (a seq), in order.
    pub async fn read_audit(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .reader()
            .fetch_all(
                "SELECT seq, at, actor, action, object_type, object_id, source, detail FROM audit_log \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[after.into(), limit.into()],
            )
            .await?;
        Ok(rows)
    }
}
