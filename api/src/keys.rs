//! `/v1/keys`: create (shown once), list and revoke API keys. Admin keys only.

use crate::{
    ApiError, ApiState, ApiTags,
    audit::changed_by,
    auth::BearerAuth,
    dto::keys::{KeyIn, KeyList, KeyOut, NewKeyOut},
};
use cronflow_jobs::{
    ValidationError,
    domain::{ApiKeyId, NewApiKey, PageRequest},
};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};

/// Longest key name.
const MAX_NAME: usize = 200;

#[derive(ApiResponse)]
enum Created {
    /// The key and its token, shown this once.
    #[oai(status = 201)]
    Key(Json<NewKeyOut>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// The key is revoked.
    #[oai(status = 204)]
    Key,
}

pub(crate) struct KeysApi;

#[OpenApi(tag = "ApiTags::Keys")]
impl KeysApi {
    /// Create an API key. The response holds its token; it is never shown again.
    #[oai(path = "/v1/keys", method = "post", operation_id = "create_key")]
    async fn create(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        body: Json<KeyIn>,
    ) -> Result<Created, ApiError> {
        let name = body.0.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "name",
                format!("1 to {MAX_NAME} characters, no control characters"),
            )
            .into());
        }
        let new = NewApiKey::generate(name, body.0.scope.into(), state.clock.now());
        state
            .store
            .insert_api_key(&new, &changed_by(&auth, req, 201))
            .await?;
        Ok(Created::Key(Json(NewKeyOut {
            key: KeyOut::from(&new.key),
            token: new.token,
        })))
    }

    /// List API keys (without their tokens).
    #[oai(path = "/v1/keys", method = "get", operation_id = "list_keys")]
    async fn list(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// Items per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<KeyList>, ApiError> {
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let page = state.store.list_api_keys(&page).await?;
        Ok(Json(KeyList {
            items: page.items.iter().map(KeyOut::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }))
    }

    /// Revoke an API key; requests made with it fail from now on.
    #[oai(path = "/v1/keys/:id", method = "delete", operation_id = "delete_key")]
    async fn delete(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Deleted, ApiError> {
        let key_id = ApiKeyId::parse(&id).ok_or_else(|| ApiError::not_found("key", &id))?;
        if state
            .store
            .delete_api_key(&key_id, &changed_by(&auth, req, 204), state.clock.now())
            .await?
        {
            Ok(Deleted::Key)
        } else {
            Err(ApiError::not_found("key", &id))
        }
    }
}
