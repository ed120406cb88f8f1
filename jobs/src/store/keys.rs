//! API keys: stored hashed, looked up by the id embedded in the token.

use super::{ChangedBy, Store};
use crate::StoreError;
use crate::domain::{
    ApiKey, ApiKeyId, Cursor, NewApiKey, Page, PageRequest, Scope,
    api_key::{key_id_of_token, token_matches},
};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    scope: String,
    token_hash: String,
    created_at: i64,
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("api key {}: {what}", self.id));
        Ok(ApiKey {
            id: ApiKeyId::parse(&self.id).ok_or_else(|| corrupt("id"))?,
            name: self.name.clone(),
            scope: Scope::parse(&self.scope).ok_or_else(|| corrupt("scope"))?,
            created_at: DateTime::from_timestamp_millis(self.created_at)
                .ok_or_else(|| corrupt("created_at"))?,
        })
    }
}

impl Store {
    /// Stores a new key (its hash only).
    pub async fn insert_api_key(&self, new: &NewApiKey, by: &ChangedBy) -> Result<(), StoreError> {
        let k = &new.key;
        let mut tx = self.begin().await?;
        tx.execute(
            "INSERT INTO api_keys (id, name, scope, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                k.id.as_str().into(),
                (&k.name).into(),
                k.scope.as_str().into(),
                (&new.token_hash).into(),
                k.created_at.timestamp_millis().into(),
            ],
        )
        .await?;
        by.record(&mut tx, "key", Some(k.id.as_str()), k.created_at)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether any key exists (the first start creates one if not).
    pub async fn has_api_keys(&self) -> Result<bool, StoreError> {
        let (n,): (i64,) = self
            .reader()
            .fetch_one("SELECT COUNT(*) FROM api_keys", &[])
            .await?;
        Ok(n > 0)
    }

    /// The key a bearer token belongs to, if the token is genuine. The stored hash is
    /// compared in constant time; an unknown id and a wrong secret look the same.
    pub async fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<Option<ApiKey>, StoreError> {
        let Some(id) = key_id_of_token(token) else {
            return Ok(None);
        };
        let row: Option<KeyRow> = self
            .reader()
            .fetch_optional(
                "SELECT id, name, scope, token_hash, created_at FROM api_keys WHERE id = $1",
                &[id.as_str().into()],
            )
            .await?;
        let Some(row) = row.filter(|r| token_matches(token, &r.token_hash)) else {
            return Ok(None);
        };
        // Best effort, and at most once a minute per key, to keep reads cheap.
        let _ = self
            .writer()
            .execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
                &[
                    id.as_str().into(),
                    now.timestamp_millis().into(),
                    (now.timestamp_millis() - 60_000).into(),
                ],
            )
            .await;
        row.into_key().map(Some)
    }

    /// Keys in creation order.
    pub async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>, StoreError> {
        let (after_ms, after_id) = page
            .after
            .as_ref()
            .map_or((i64::MIN, ""), |c| (c.created_at_ms, c.id.as_str()));
        let rows: Vec<KeyRow> = self
            .reader()
            .fetch_all(
                "SELECT id, name, scope, token_hash, created_at FROM api_keys \
                 WHERE created_at > $1 OR (created_at = $1 AND id > $2) ORDER BY created_at, id LIMIT $3",
                &[
                    after_ms.into(),
                    after_id.into(),
                    (i64::from(page.limit) + 1).into(),
                ],
            )
            .await?;
        let items = rows
            .into_iter()
            .map(KeyRow::into_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, page.limit, |k| {
            Cursor::after(k.created_at, k.id.as_str())
        }))
    }

    /// Revokes a key; `false` if there was none.
    pub async fn delete_api_key(
        &self,
        id: &ApiKeyId,
        by: &ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n = tx
            .execute("DELETE FROM api_keys WHERE id = $1", &[id.as_str().into()])
            .await?;
        if n > 0 {
            by.record(&mut tx, "key", Some(id.as_str()), now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
