//! Signing in and out, and the guard every dashboard request passes: the CSRF check of
//! every POST, who is asking, and what their key allows.

use super::{Ctx, Failure, Viewer, forms::FormFields, html, layout, see_other};
use crate::{ApiState, MAX_BODY_BYTES};
use cronflow_jobs::domain::{ApiKeyId, Scope, api_key::token_matches};
use maud::html as markup;
use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{Method, StatusCode, header},
    middleware::Csrf,
    session::{CookieConfig, MemoryStorage, ServerSession, Session},
    web::{CsrfVerifier, cookie::SameSite},
};
use rand::RngCore;
use std::time::Duration;

/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session's key id: `key_…`, or `key_env`.
const KEY_ID: &str = "key_id";

/// Server-side sessions, in memory; the cookie holds only a random id.
pub(super) fn sessions() -> ServerSession<MemoryStorage> {
    ServerSession::new(
        CookieConfig::new()
            .name("cronflow_session")
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            // Set per request by `secure_cookies_over_https`.
            .secure(false)
            .max_age(SESSION_TTL),
        MemoryStorage::new(),
    )
}

/// poem's CSRF protection, with a random key per process.
pub(super) fn csrf() -> Csrf {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    Csrf::new()
        .cookie_name("cronflow_csrf")
        .key(key)
        .secure(false)
        .same_site(SameSite::Strict)
        .ttl(SESSION_TTL)
}

/// Whether the client reached CronFlow over HTTPS (directly, or through a proxy that
/// says so).
fn over_https(req: &Request) -> bool {
    req.uri().scheme_str() == Some("https")
        || req
            .header("x-forwarded-proto")
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || req
            .header(header::FORWARDED)
            .is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"))
}

/// Marks the dashboard's cookies `Secure` when the request came over HTTPS (a `Secure`
/// cookie sent over plain HTTP to anything but localhost would be dropped by browsers),
/// and sets the security headers of every dashboard response.
pub(super) async fn harden<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let https = over_https(&req);
    let mut resp = next.call(req).await?.into_response();
    let h = resp.headers_mut();
    if https {
        let cookies: Vec<header::HeaderValue> = h.get_all(header::SET_COOKIE).iter().cloned().collect();
        h.remove(header::SET_COOKIE);
        for c in cookies {
            let text = c.to_str().unwrap_or_default();
            let secured = if text.to_ascii_lowercase().contains("; secure") {
                text.to_owned()
            } else {
                format!("{text}; Secure")
            };
            if let Ok(v) = header::HeaderValue::from_str(&secured) {
                h.append(header::SET_COOKIE, v);
            }
        }
    }
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    Ok(resp)
}

/// Every dashboard request passes here. A POST must carry the CSRF token of a page we
/// rendered (403 otherwise), and change things only with an admin key (403). Pages need
/// a signed-in session; without one, GETs go to the sign-in page.
pub(super) async fn guard<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/assets/") {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    let is_post = req.method() == Method::POST;
    if is_post {
        let body = req
            .take_body()
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|_| crate::ApiError::payload_too_large(MAX_BODY_BYTES))?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let token = fields
            .iter()
            .find(|(k, _)| k == "csrf_token")
            .map_or("", |(_, v)| v.as_str());
        let valid = req
            .extensions()
            .get::<CsrfVerifier>()
            .is_some_and(|v| v.is_valid(token));
        if !valid {
            return Ok(Failure::forbidden(
                "This form was not sent from a page CronFlow rendered just now (its CSRF token is \
                 missing or stale). Reload the page and try again.",
            )
            .into_response());
        }
        req.extensions_mut().insert(FormFields(fields));
    }
    if path == "/login" {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    let viewer = match viewer_of(&req).await {
        Ok(v) => v,
        Err(f) => return Ok(f.into_response()),
    };
    let Some(viewer) = viewer else {
        let next_page = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let to = if is_post || next_page == "/" {
            "/login".to_owned()
        } else {
            format!("/login?next={}", urlencode(next_page))
        };
        return Ok(see_other(&to));
    };
    if is_post && viewer.scope != Scope::Admin && path != "/logout" {
        return Ok(Failure::forbidden(
            "Your key is a read key: it can look at everything and change nothing. Sign in with an \
             admin key to make changes.",
        )
        .into_response());
    }
    req.extensions_mut().insert(viewer);
    next.call(req).await.map(IntoResponse::into_response)
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_owned()
}

/// Who the session belongs to, if anyone: its key must still exist (a revoked key's
/// session ends at its next request) and may not be an audit key.
async fn viewer_of(req: &Request) -> Result<Option<Viewer>, Failure> {
    let (Some(session), Some(state)) = (req.extensions().get::<Session>(), req.data::<ApiState>()) else {
        return Ok(None);
    };
    let Some(key_id) = session.get::<String>(KEY_ID) else {
        return Ok(None);
    };
    let scope = if key_id == "key_env" {
        state.admin_token_hash.as_ref().map(|_| Scope::Admin)
    } else {
        match ApiKeyId::parse(&key_id) {
            Some(id) => state.store.api_key(&id).await?.map(|k| k.scope),
            None => None,
        }
    };
    match scope {
        Some(scope @ (Scope::Admin | Scope::Read)) => Ok(Some(Viewer { key_id, scope })),
        _ => {
            session.purge();
            Ok(None)
        }
    }
}

/// A local path to go to after signing in (never another site).
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if local { next } else { "/" }
}

fn login_page(status: StatusCode, csrf: &str, next: &str, error: Option<&str>) -> Response {
    let body = markup! {
        main.login {
            h1 { "Sign in to CronFlow" }
            p.muted { "Use an API key: an admin key to make changes, a read key to look around." }
            @if let Some(e) = error {
                p.error role="alert" id="login-error" { (e) }
            }
            form method="post" action="/login" {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="api_key" { "API key" }
                input #api_key type="password" name="api_key" autocomplete="current-password"
                    required autofocus placeholder="cf_…" aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| "login-error")];
                button.primary type="submit" { "Sign in" }
            }
            p.muted.small {
                "No key yet? The first start of "
                code { "cronflow serve" }
                " prints an admin key; "
                code { "cronflow keys create" }
                " makes more."
            }
        }
    };
    let mut resp = html(layout::bare("Sign in", body));
    resp.set_status(status);
    resp
}

pub(super) async fn login_form(req: Request) -> Result<Response, Failure> {
    let next = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|q| q.into_iter().find(|(k, _)| k == "next").map(|(_, v)| v))
        .unwrap_or_default();
    Ok(login_page(
        StatusCode::OK,
        &super::csrf_token(&req),
        safe_next(&next),
        None,
    ))
}

pub(super) async fn login(req: Request) -> Result<Response, Failure> {
    let state = req
        .data::<ApiState>()
        .cloned()
        .ok_or_else(|| Failure::internal("the dashboard has no state"))?;
    let fields = FormFields::of(&req);
    let token = fields.get("api_key");
    let next = safe_next(fields.get("next"));
    let csrf = super::csrf_token(&req);
    let found = match &state.admin_token_hash {
        Some(hash) if token_matches(token, hash) => Some(("key_env".to_owned(), Scope::Admin)),
        _ => state
            .store
            .authenticate(token, state.clock.now())
            .await?
            .map(|k| (k.id.to_string(), k.scope)),
    };
    match found {
        None => Ok(login_page(
            StatusCode::UNAUTHORIZED,
            &csrf,
            next,
            Some("This API key is not known: it may be mistyped or revoked."),
        )),
        Some((_, Scope::Audit)) => Ok(login_page(
            StatusCode::FORBIDDEN,
            &csrf,
            next,
            Some(
                "This is an audit key: it can only read the audit log (GET /v1/audit), not the \
                 dashboard. Sign in with an admin or a read key.",
            ),
        )),
        Some((key_id, _)) => {
            let session = req
                .extensions()
                .get::<Session>()
                .ok_or_else(|| Failure::internal("no session middleware"))?;
            // A new session id at sign-in, so an id planted before cannot be used after.
            session.renew();
            session.set(KEY_ID, key_id);
            Ok(see_other(next))
        }
    }
}

pub(super) async fn logout_form(req: Request) -> Result<Response, Failure> {
    let cx = Ctx::of(&req)?;
    let body = markup! {
        h1 { "Sign out" }
        form method="post" action="/logout" {
            input type="hidden" name="csrf_token" value=(cx.csrf);
            button.primary type="submit" { "Sign out" }
        }
    };
    cx.render("Sign out", body).await
}

pub(super) async fn logout(req: Request) -> Result<Response, Failure> {
    if let Some(session) = req.extensions().get::<Session>() {
        session.purge();
    }
    Ok(see_other("/login"))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/jobs/wf_1?x=1"), "/jobs/wf_1?x=1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil"), "/");
    }
}
