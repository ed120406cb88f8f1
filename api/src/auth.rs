//! Bearer API keys. Every `/v1` operation takes a [`BearerAuth`]; its checker finds the
//! key and decides from the request alone whether the key's scope allows it:
//! `GET`/`HEAD` need read access (`/v1/audit` needs audit access), anything else needs an
//! admin key. Deciding here, not in each handler, means no handler can forget.

use crate::{ApiError, ApiState};
use cronflow_jobs::domain::{
    ApiKey, Scope,
    api_key::{Access, token_matches},
};
use poem::{Request, http::Method};
use poem_openapi::{SecurityScheme, auth::Bearer};

/// Who is calling: the key's id and its scope, as the checker found them. Changes are
/// audited as made by this key.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// `key_…`, or `key_env` for `CRONFLOW_ADMIN_TOKEN`.
    pub(crate) key_id: String,
    /// What the key may do.
    pub(crate) scope: Scope,
}

/// `Authorization: Bearer <API key>`.
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "cf_…",
    checker = "check_key",
    rename = "ApiKey"
)]
pub(crate) struct BearerAuth(pub(crate) Principal);

fn access_needed(req: &Request) -> Access {
    let path = req.uri().path();
    if path == "/v1/audit" || path.starts_with("/v1/audit/") {
        Access::Audit
    } else if req.method() == Method::GET || req.method() == Method::HEAD {
        Access::Read
    } else {
        Access::Write
    }
}

/// The checker of [`BearerAuth`]. The request check (`validate.rs`) authenticates a
/// secured operation's caller before it looks at the input, and leaves the
/// [`Principal`] in the request's extensions: that one is taken as it is.
async fn check_key(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    if let Some(principal) = req.extensions().get::<Principal>() {
        return Ok(principal.clone());
    }
    authorize(req, &bearer.token).await
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(crate) fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.header(poem::http::header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Finds the key `token` and checks that its scope allows `req`: 401 for an unknown or
/// revoked key, 403 for a scope that does not allow the operation.
pub(crate) async fn authorize(req: &Request, token: &str) -> poem::Result<Principal> {
    let state = req
        .data::<ApiState>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    let now = state.clock.now();
    let principal = match &state.admin_token_hash {
        Some(hash) if token_matches(token, hash) => Principal {
            key_id: "key_env".to_owned(),
            scope: Scope::Admin,
        },
        _ => match state
            .store
            .authenticate(token, now)
            .await
            .map_err(ApiError::from)?
        {
            Some(ApiKey { id, scope, .. }) => Principal {
                key_id: id.to_string(),
                scope,
            },
            None => return Err(ApiError::unauthorized("unknown or revoked API key").into()),
        },
    };
    let access = access_needed(req);
    if !principal.scope.allows(access) {
        let need = match access {
            Access::Read => "read",
            Access::Audit => "audit",
            Access::Write => "admin",
        };
        return Err(ApiError::forbidden(&format!(
            "this {} key cannot do that: it needs an {need} key",
            principal.scope.as_str()
        ))
        .into());
    }
    Ok(principal)
}
