//! Errors as the API shows them: JSON `{code, message, field}` with a stable `code`.
//!
//! Domain validation failures are 422 and name the field; malformed requests (bad JSON,
//! wrong types, unknown fields) are 400; internal failures are a bare 500 whose cause
//! is logged, never shown.

use cronflow_jobs::{
    StoreError, ValidationError,
    store::{JobError, RunError},
};
use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json};

/// The body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Stable, machine-readable code (`validation_failed`, `not_found`, `unauthorized`, ...).
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
    /// The offending input field, dotted for nested fields (`target.url`), when known.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
}

impl ErrorBody {
    pub(crate) fn new(code: &str, message: impl Into<String>, field: Option<String>) -> Json<ErrorBody> {
        Json(ErrorBody {
            code: code.to_owned(),
            message: message.into(),
            field,
        })
    }
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a wrong type, an unknown field.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No API key, or an unknown one.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The API key's scope does not allow this operation.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such object.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The object is in a state that does not allow this (e.g. cancelling a finished run).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is larger than the server accepts.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The request body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The request is well-formed but a value is invalid; `field` names it.
    #[oai(status = 422)]
    Invalid(Json<ErrorBody>),
    /// Something failed inside CronFlow; the cause is in the server's log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database is unreachable or busy; the same request may succeed shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl ApiError {
    /// 404 for an object of `kind` (`job`, `key`, ...) with `id`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        ApiError::NotFound(ErrorBody::new(
            "not_found",
            format!("no {kind} with id `{id}`"),
            None,
        ))
    }

    /// 401.
    pub fn unauthorized(message: &str) -> Self {
        ApiError::Unauthorized(ErrorBody::new("unauthorized", message, None))
    }

    /// 403.
    pub fn forbidden(message: &str) -> Self {
        ApiError::Forbidden(ErrorBody::new("forbidden", message, None))
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::PayloadTooLarge(ErrorBody::new(
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
            None,
        ))
    }

    fn internal() -> Self {
        ApiError::Internal(ErrorBody::new("internal", "internal error", None))
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Invalid(ErrorBody::new(
            "validation_failed",
            format!("{}: {}", e.field, e.message),
            Some(e.field.into_owned()),
        ))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = ?e, "storage error while serving a request");
        // Unreachable, restarting, busy past a timeout, or a lost conflict: the same call
        // may well succeed shortly, so the client hears "try again", not "bug".
        if e.is_transient() {
            ApiError::Unavailable(ErrorBody::new(
                "unavailable",
                "the database is unavailable or busy; try again shortly",
                None,
            ))
        } else {
            ApiError::internal()
        }
    }
}

/// 400 with a message and, when known, the field at fault.
pub(crate) fn bad_request(message: String, field: Option<String>) -> ApiError {
    ApiError::BadRequest(ErrorBody::new("bad_request", message, field))
}

/// Converts a run operation's failure; `kind` and `id` name what was asked for.
pub(crate) fn run_error(e: RunError, kind: &str, id: &str) -> ApiError {
    match e {
        RunError::NotFound => ApiError::not_found(kind, id),
        RunError::AlreadyFinal(state) => ApiError::Conflict(ErrorBody::new(
            "conflict",
            format!("the run is already {state}"),
            None,
        )),
        RunError::Invalid(v) => v.into(),
        RunError::Store(s) => s.into(),
    }
}

/// Converts a job operation's failure; `id` is the job asked for.
pub(crate) fn job_error(e: JobError, id: &str) -> ApiError {
    match e {
        JobError::NotFound => ApiError::not_found("job", id),
        JobError::Invalid(v) => v.into(),
        JobError::Store(s) => s.into(),
    }
}

/// Turns any error that is not already JSON (poem's parse, routing and size errors)
/// into an [`ErrorBody`] with the same status.
pub(crate) async fn json_error(err: poem::Error) -> Response {
    if !err.has_source() {
        // Our own ApiError: already a JSON response.
        return err.into_response();
    }
    let status = err.status();
    let message = err.to_string();
    let param = err
        .downcast_ref::<poem_openapi::error::ParseParamError>()
        .map(|e| e.name.to_owned());
    let (code, field) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", param.or_else(|| field_in_message(&message))),
        StatusCode::UNAUTHORIZED => ("unauthorized", None),
        StatusCode::FORBIDDEN => ("forbidden", None),
        StatusCode::NOT_FOUND => ("not_found", None),
        StatusCode::CONFLICT => ("conflict", None),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", None),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", None),
        StatusCode::LENGTH_REQUIRED => ("length_required", None),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", None),
        s if s.is_server_error() => {
            tracing::error!(error = %message, "internal error while serving a request");
            let body = ErrorBody::new("internal", "internal error", None);
            return (status, body).into_response();
        }
        _ => ("error", None),
    };
    let message = match status {
        StatusCode::UNAUTHORIZED => {
            "missing or invalid API key: send `Authorization: Bearer <key>`".to_owned()
        }
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        _ => message,
    };
    (status, ErrorBody::new(code, message, field)).into_response()
}

/// poem-openapi's parse errors mention the field in backquotes or quotes
/// (`... field `name` ...`, `(occurred while parsing "target")`); take the last such
/// name that is not a type name, so clients get a `field` for them too.
fn field_in_message(message: &str) -> Option<String> {
    let mut found = None;
    for quote in ['`', '"'] {
        let mut parts = message.split(quote);
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next().or(Some(""))) {
            let looks_like_field = !inside.is_empty()
                && inside.len() <= 64
                && inside
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
            if looks_like_field {
                found = Some(inside.to_owned());
            }
        }
        if found.is_some() {
            break;
        }
    }
    found
}
