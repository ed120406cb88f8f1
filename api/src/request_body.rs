//! Request bodies: a size limit, and errors that name the offending field.
//!
//! Bodies over [`crate::MAX_BODY_BYTES`] are refused with 413 whether the client
//! declares the length or streams the body chunked (poem's own `SizeLimit` answers 411
//! to bodies without a length, including plain GETs).
//!
//! poem-openapi's messages for a body that does not fit its schema name the type, not
//! the field ("Expected input type "string", found null (occurred while parsing
//! "JobIn")"). When that happens, the JSON body is checked against the operation's
//! schema in the OpenAPI document itself, and the 400 names the first field at fault
//! (`target.command: is required`). No per-type code: the document is the one source.

use crate::{ApiError, MAX_BODY_BYTES, error::bad_request};
use poem::{Endpoint, IntoResponse, Request, Response, http::Method};
use poem_openapi::error::ParseRequestPayloadError;
use serde_json::{Map, Value};
use std::sync::OnceLock;

pub(crate) async fn check_body<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES).into());
    }
    let has_body =
        declared.is_some_and(|n| n > 0) || req.header(poem::http::header::TRANSFER_ENCODING).is_some();
    if !has_body {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    let body = req
        .take_body()
        .into_bytes_limit(MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
    req.set_body(body.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match next.call(req).await {
        Ok(r) => Ok(r.into_response()),
        Err(e) if e.is::<ParseRequestPayloadError>() => {
            let found = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| diagnose(&method, &path, &v));
            match found {
                Some((field, message)) => Err(bad_request(format!("{field}: {message}"), Some(field)).into()),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The OpenAPI document as JSON, built once.
fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| serde_json::from_str(&crate::openapi_service().spec()).unwrap_or(Value::Null))
}

/// The first field of `body` that does not fit the request schema of the operation at
/// `method` `path`, with what is wrong with it.
pub(crate) fn diagnose(method: &Method, path: &str, body: &Value) -> Option<(String, String)> {
    let spec = spec();
    let paths = spec.get("paths")?.as_object()?;
    let operation = paths
        .iter()
        .find(|(template, _)| path_matches(template, path))?
        .1
        .get(method.as_str().to_ascii_lowercase())?;
    let schema = operation.pointer("/requestBody/content/application~1json; charset=utf-8/schema")?;
    let mut problem = None;
    check(spec, schema, body, "", false, &mut problem);
    problem
}

fn path_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .and_then(|p| spec.pointer(&format!("/{p}")))
            .unwrap_or(schema),
        None => schema,
    }
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

/// Records in `problem` the first mismatch between `value` and `schema`, if none yet.
/// `in_all_of`: the schema is one part of an `allOf`, so fields it does not list may
/// belong to another part.
fn check(
    spec: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    in_all_of: bool,
    problem: &mut Option<(String, String)>,
) {
    if problem.is_some() {
        return;
    }
    let schema = resolve(spec, schema);
    let mut fail = |msg: String| {
        *problem = Some((
            if at.is_empty() {
                "body".into()
            } else {
                at.to_owned()
            },
            msg,
        ))
    };
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            check(spec, part, value, at, true, problem);
        }
        return;
    }
    if let Some(d) = schema.get("discriminator") {
        let prop = d.get("propertyName").and_then(Value::as_str).unwrap_or("type");
        let mapping = d.get("mapping").and_then(Value::as_object);
        let Some(obj) = value.as_object() else {
            return fail("must be an object".into());
        };
        let tags: Vec<&String> = mapping.map(|m| m.keys().collect()).unwrap_or_default();
        let choices = tags
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match obj.get(prop).and_then(Value::as_str) {
            None => *problem = Some((join(at, prop), format!("is required: one of {choices}"))),
            Some(tag) => match mapping.and_then(|m| m.get(tag)).and_then(Value::as_str) {
                Some(r) => check(spec, &serde_json::json!({ "$ref": r }), value, at, false, problem),
                None => *problem = Some((join(at, prop), format!("`{tag}` is not one of {choices}"))),
            },
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => match value.as_object() {
            None => fail("must be an object".into()),
            Some(obj) => check_object(spec, schema, obj, at, in_all_of, problem),
        },
        Some("array") => match value.as_array() {
            None => fail("must be an array".into()),
            Some(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        check(spec, item_schema, item, &format!("{at}[{i}]"), false, problem);
                    }
                }
            }
        },
        Some("string") => {
            let allowed = schema.get("enum").and_then(Value::as_array);
            match value.as_str() {
                None => fail("must be a string".into()),
                Some(s) if allowed.is_some_and(|a| !a.iter().any(|a| a.as_str() == Some(s))) => {
                    let list: Vec<String> = allowed.into_iter().flatten().map(Value::to_string).collect();
                    fail(format!("`{s}` is not one of {}", list.join(", ")));
                }
                Some(_) => {}
            }
        }
        Some("integer") => {
            let min = schema.get("minimum").and_then(Value::as_f64);
            if value.as_i64().is_none() && value.as_u64().is_none() {
                fail("must be an integer".into());
            } else if let Some(min) = min.filter(|m| value.as_f64().is_some_and(|v| v < *m)) {
                fail(format!("must be at least {min}"));
            }
        }
        Some("number") if !value.is_number() => fail("must be a number".into()),
        Some("boolean") if !value.is_boolean() => fail("must be true or false".into()),
        _ => {}
    }
}

fn check_object(
    spec: &Value,
    schema: &Value,
    obj: &Map<String, Value>,
    at: &str,
    in_all_of: bool,
    problem: &mut Option<(String, String)>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = req.as_str().unwrap_or_default();
        if obj.get(name).is_none_or(Value::is_null) {
            *problem = Some((join(at, name), "is required".into()));
            return;
        }
    }
    for (name, v) in obj {
        match props.and_then(|p| p.get(name)) {
            Some(s) if !v.is_null() => check(spec, s, v, &join(at, name), false, problem),
            Some(_) => {}
            None if !in_all_of && props.is_some() && schema.get("additionalProperties").is_none() => {
                *problem = Some((join(at, name), "unknown field: the API does not take it".into()));
            }
            None => {
                if let Some(extra) = schema.get("additionalProperties") {
                    check(spec, extra, v, &join(at, name), false, problem);
                }
            }
        }
        if problem.is_some() {
            return;
        }
    }
}
