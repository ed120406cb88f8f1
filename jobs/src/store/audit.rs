//! The audit log: append-only entries with a gapless, commit-ordered sequence number, so
//! a SIEM reading with a cursor never skips or repeats an entry.
//!
//! Every change made through the API or the dashboard is recorded by the store method
//! that makes it, in the change's own transaction: the change and its entry commit
//! together or not at all. Such methods take a [`ChangedBy`] saying who asked.
//!
//! The entries form a hash chain (`domain::audit_chain`): each append takes the previous
//! hash from the counter row it locks anyway, so the chain follows commit order.

use super::{
    Store,
    db::{Statement, Tx},
};
use crate::StoreError;
use crate::domain::audit_chain::{self, Anchor, GENESIS, Verdict, Verifier};
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
    /// The previous entry's hash (`None` only before the chain existed, until the next
    /// start chains the entry).
    pub prev_hash: Option<String>,
    /// This entry's hash, see `domain::audit_chain`.
    pub hash: Option<String>,
}

/// The stream form of an entry without its chain fields: what its hash covers.
#[allow(clippy::too_many_arguments)]
fn stream_form(
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    object_type: &str,
    object_id: Option<&str>,
    source: Option<&str>,
    detail: Value,
) -> Value {
    json!({
        "seq": seq,
        "at": DateTime::from_timestamp_millis(at).map(crate::domain::event::format_time),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "source": source,
        "detail": detail,
    })
}

impl AuditEntry {
    /// The entry as one NDJSON object, with `prev_hash` and `hash`.
    pub fn to_json(&self) -> Value {
        let mut v = self.unchained();
        v["prev_hash"] = json!(self.prev_hash);
        v["hash"] = json!(self.hash);
        v
    }

    /// The entry without its chain fields.
    fn unchained(&self) -> Value {
        stream_form(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            &self.object_type,
            self.object_id.as_deref(),
            self.source.as_deref(),
            serde_json::from_str::<Value>(&self.detail).unwrap_or(Value::Null),
        )
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

    /// Adds `key: value` to the entry's detail (an object).
    pub(crate) fn add_detail(&mut self, key: &str, value: Value) {
        if !self.detail.is_object() {
            self.detail = json!({});
        }
        if let Some(map) = self.detail.as_object_mut() {
            map.insert(key.to_owned(), value);
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

/// Audit entries per multi-row INSERT (10 parameters each).
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
    let (last, last_hash): (i64, Option<String>) = tx
        .fetch_one(
            "UPDATE audit_counter SET last = last + $1 WHERE id = 1 RETURNING last, last_hash",
            &[n.into()],
        )
        .await?;
    let at = now.timestamp_millis();
    let first = last - n + 1;
    // Each entry's (prev_hash, hash), in order.
    let mut prev = last_hash.unwrap_or_else(|| GENESIS.to_owned());
    let links: Vec<(String, String)> = entries
        .iter()
        .zip(first..)
        .map(|(e, seq)| {
            let form = stream_form(
                seq,
                at,
                e.actor,
                e.action,
                e.object_type,
                e.object_id,
                e.source,
                e.detail.clone(),
            );
            let hash = audit_chain::entry_hash(&prev, &form);
            (std::mem::replace(&mut prev, hash.clone()), hash)
        })
        .collect();
    for (i, chunk) in entries.chunks(ROWS).enumerate() {
        let mut s = Statement::new(
            "INSERT INTO audit_log (seq, at, actor, action, object_type, object_id, source, detail, prev_hash, hash) ",
        );
        let mut k = i * ROWS;
        s.values(chunk, |row, e| {
            let (prev_hash, hash) = &links[k];
            row.bind(first + k as i64)
                .bind(at)
                .bind(e.actor)
                .bind(e.action)
                .bind(e.object_type)
                .bind(e.object_id)
                .bind(e.source)
                .bind(e.detail.to_string())
                .bind(prev_hash.as_str())
                .bind(hash.as_str());
            k += 1;
        });
        tx.run(s).await?;
    }
    tx.execute(
        "UPDATE audit_counter SET last_hash = $1 WHERE id = 1",
        &[prev.as_str().into()],
    )
    .await?;
    Ok(())
}

/// The counter row: the last `seq` and hash, and the chain's anchor.
#[derive(sqlx::FromRow)]
struct Counter {
    last: i64,
    last_hash: Option<String>,
    anchor_seq: i64,
    anchor_hash: String,
}

/// Entries read per page when chaining or verifying.
const PAGE: i64 = 1000;

const COLUMNS: &str = "seq, at, actor, action, object_type, object_id, source, detail, prev_hash, hash";

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
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        Ok(self
            .reader()
            .fetch_all(sql, &[after.into(), limit.into()])
            .await?)
    }

    /// Chains the entries written before the chain existed (no hash yet), in `seq`
    /// order after the last chained one, in one transaction; returns how many. Run by
    /// [`Store::migrate`]; a no-op once done.
    pub(crate) async fn chain_audit_entries(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        // Locks the counter, as an append does, so no entry is written meanwhile.
        let counter: Counter = tx
            .fetch_one(
                "UPDATE audit_counter SET last = last WHERE id = 1 \
                 RETURNING last, last_hash, anchor_seq, anchor_hash",
                &[],
            )
            .await?;
        if counter.last_hash.is_some() || counter.last == 0 {
            return Ok(0);
        }
        let (first,): (Option<i64>,) = tx.fetch_one("SELECT MIN(seq) FROM audit_log", &[]).await?;
        let mut prev = counter.anchor_hash;
        if let Some(first) = first
            && first > counter.anchor_seq + 1
        {
            // Older entries were pruned before the chain existed: it starts here.
            tx.execute(
                "UPDATE audit_counter SET anchor_seq = $1 WHERE id = 1",
                &[(first - 1).into()],
            )
            .await?;
        }
        let (mut after, mut chained) = (i64::MIN, 0);
        loop {
            let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
            let page: Vec<AuditEntry> = tx.fetch_all(sql, &[after.into(), PAGE.into()]).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                let hash = audit_chain::entry_hash(&prev, &e.unchained());
                tx.execute(
                    "UPDATE audit_log SET prev_hash = $2, hash = $3 WHERE seq = $1",
                    &[e.seq.into(), prev.as_str().into(), hash.as_str().into()],
                )
                .await?;
                prev = hash;
                chained += 1;
            }
        }
        tx.execute(
            "UPDATE audit_counter SET last_hash = $1 WHERE id = 1",
            &[prev.as_str().into()],
        )
        .await?;
        tx.commit().await?;
        Ok(chained)
    }

    /// Checks the whole chain in the database: from its anchor, every entry in `seq`
    /// order up to the last the counter records, each following the one before, and
    /// the last one's hash the counter's (so entries removed at the end are caught too).
    pub async fn verify_audit(&self) -> Result<Verdict, StoreError> {
        let counter: Counter = self
            .reader()
            .fetch_one(
                "SELECT last, last_hash, anchor_seq, anchor_hash FROM audit_counter WHERE id = 1",
                &[],
            )
            .await?;
        let mut v = Verifier::new(Anchor {
            seq: counter.anchor_seq,
            hash: counter.anchor_hash,
        });
        let mut after = i64::MIN;
        loop {
            let sql =
                format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3");
            let page: Vec<AuditEntry> = self
                .reader()
                .fetch_all(sql, &[after.into(), counter.last.into(), PAGE.into()])
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            page.iter().for_each(|e| v.push(&e.to_json()));
            if matches!(v.verdict(), Verdict::Broken { .. }) {
                break;
            }
        }
        Ok(match v.verdict() {
            Verdict::Intact { last_seq, .. } if last_seq < counter.last => Verdict::Broken {
                seq: last_seq + 1,
                reason: format!(
                    "entries {} to {} are missing (the log has written {} entries)",
                    last_seq + 1,
                    counter.last,
                    counter.last
                ),
            },
            Verdict::Intact {
                last_hash, last_seq, ..
            } if counter.last_hash.as_ref().is_some_and(|h| *h != last_hash) => Verdict::Broken {
                seq: last_seq,
                reason: format!("entry {last_seq} is not the last entry the log wrote"),
            },
            verdict => verdict,
        })
    }

    /// Deletes the oldest entries written before `cutoff` (ms since the epoch), up to
    /// `limit`, always a prefix of the chain, and records the last one's hash as the
    /// anchor the first kept entry continues from; one transaction. Returns how many.
    pub(crate) async fn prune_audit(&self, cutoff: i64, limit: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        tx.execute("UPDATE audit_counter SET last = last WHERE id = 1", &[])
            .await?;
        let oldest: Vec<(i64, i64, Option<String>)> = tx
            .fetch_all(
                "SELECT seq, at, hash FROM audit_log ORDER BY seq LIMIT $1",
                &[limit.into()],
            )
            .await?;
        let Some((seq, _, hash)) = oldest.iter().take_while(|(_, at, _)| *at < cutoff).last() else {
            return Ok(0);
        };
        let n = tx
            .execute("DELETE FROM audit_log WHERE seq <= $1", &[(*seq).into()])
            .await?;
        tx.execute(
            "UPDATE audit_counter SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1",
            &[(*seq).into(), hash.as_deref().unwrap_or(GENESIS).into()],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }
}
