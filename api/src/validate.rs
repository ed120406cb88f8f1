//! Every request is checked against the OpenAPI document (`crate::spec`) before a
//! handler runs, so the server refuses exactly what the document says is invalid, and
//! every refusal names the input at fault (`field`, dotted for nested fields:
//! `target.cwd`, `events[0]`).
//!
//! - **400**: the input does not have the documented shape: a wrong JSON type (no
//!   coercion: `"name": 1` is not a string), `null` where a value is expected (`null` is
//!   never "absent"), a missing or unknown field at any depth, a value outside an enum,
//!   a malformed date-time, a query parameter that is not a number or a boolean.
//! - **422**: the shape is right but a value is not: out of the documented range, too
//!   long or short, not matching the documented pattern (an id with the wrong prefix).
//!   The domain's own checks, which a schema cannot state (a cron expression, a time
//!   zone, a private address), answer 422 too.
//!
//! A route that exists without the request's method answers 405 with `Allow`. Requests
//! to secured operations without an `Authorization` header are left to the operation,
//! which answers 401 before looking at any input.

use crate::{
    ApiError, auth,
    error::{ErrorBody, bad_request},
};
use cronflow_jobs::ValidationError;
use jsonschema::{ValidationError as SchemaError, Validator, error::ValidationErrorKind as Kind};
use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{Method, StatusCode, header},
};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// One operation of the document, ready to check requests.
struct Operation {
    method: Method,
    /// Path segments; `{name}` segments match any value.
    template: Vec<String>,
    secured: bool,
    query: Vec<QueryParam>,
    body: Option<Checker>,
}

struct QueryParam {
    name: String,
    required: bool,
    /// The JSON type the raw text is read as (`integer`, `boolean`, `number`, `string`).
    json_type: String,
    checker: Checker,
}

/// A schema of the document and its compiled validator.
struct Checker {
    root: Value,
    validator: Validator,
}

impl Checker {
    fn new(schema: &Value, components: &Value) -> Option<Checker> {
        let root = json!({ "allOf": [schema], "components": components });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| tracing::error!(error = %e, "a schema of the OpenAPI document does not compile"))
            .ok()?;
        Some(Checker { root, validator })
    }

    /// The first problem with `instance`: shape problems (400) before value problems (422).
    fn first_problem(&self, instance: &Value) -> Option<Problem> {
        let mut found = Vec::new();
        for err in self.validator.iter_errors(instance) {
            describe(&self.root, instance, &err, &mut found);
        }
        found.sort_by_key(|p| p.value_error);
        found.into_iter().next()
    }
}

/// What is wrong with one input.
#[derive(Debug)]
struct Problem {
    /// Out of range, length or pattern (422) rather than the wrong shape (400).
    value_error: bool,
    field: String,
    message: String,
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        if p.value_error {
            ValidationError::new(p.field, p.message).into()
        } else {
            bad_request(format!("{}: {}", p.field, p.message), Some(p.field))
        }
    }
}

fn operations() -> &'static [Operation] {
    static OPS: OnceLock<Vec<Operation>> = OnceLock::new();
    OPS.get_or_init(|| {
        let spec = crate::spec::json();
        let components = &spec["components"];
        let mut ops = Vec::new();
        for (path, item) in spec["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let query = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| {
                        let schema = &p["schema"];
                        Some(QueryParam {
                            name: p["name"].as_str()?.to_owned(),
                            required: p["required"] == true,
                            json_type: json_type(spec, schema),
                            checker: Checker::new(schema, components)?,
                        })
                    })
                    .collect();
                let body = op["requestBody"]["content"]
                    .as_object()
                    .and_then(|c| c.iter().find(|(media, _)| media.starts_with("application/json")))
                    .and_then(|(_, media)| Checker::new(&media["schema"], components));
                ops.push(Operation {
                    method,
                    template: path.split('/').map(str::to_owned).collect(),
                    secured: op.get("security").is_some(),
                    query,
                    body,
                });
            }
        }
        ops
    })
}

/// The JSON type of a (possibly referenced) schema.
fn json_type(spec: &Value, schema: &Value) -> String {
    let resolved = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| spec.pointer(p))
        .unwrap_or(schema);
    resolved["type"].as_str().unwrap_or("string").to_owned()
}

fn path_matches(template: &[String], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    template.len() == segments.len()
        && template
            .iter()
            .zip(&segments)
            .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty()))
}

/// Checks the request against its operation; see the module docs.
/// The operations whose path template `path` matches best: a literal segment wins over
/// a `{param}` one, as in the router (`/v1/dlq/replay` is not `/v1/dlq/{id}`).
fn routes_for(path: &str) -> Vec<&'static Operation> {
    let literal = |o: &Operation| o.template.iter().filter(|t| !t.starts_with('{')).count();
    let matching: Vec<&Operation> = operations()
        .iter()
        .filter(|o| path_matches(&o.template, path))
        .collect();
    let best = matching.iter().map(|o| literal(o)).max().unwrap_or(0);
    matching.into_iter().filter(|o| literal(o) == best).collect()
}

/// The first problem the API finds with `body` sent to `method` `path`, as the field at
/// fault and the message: the dashboard's forms go through the same check as the API's
/// requests, so a bad value gets the same words.
pub(crate) fn body_problem(method: &Method, path: &str, body: &Value) -> Option<(String, String)> {
    let problem = routes_for(path)
        .into_iter()
        .find(|o| o.method == *method)?
        .body
        .as_ref()?
        .first_problem(body)?;
    Some((problem.field, problem.message))
}

pub(crate) async fn check_request<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let routes = routes_for(&path);
    if routes.is_empty() {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    let method = req.method().clone();
    let Some(op) = routes
        .iter()
        .find(|o| o.method == method || (method == Method::HEAD && o.method == Method::GET))
    else {
        return Ok(method_not_allowed(&routes, &method));
    };
    if op.secured {
        // Who calls comes before what they send: a caller without a valid key learns
        // nothing about the input (401 or 403, never a 400 naming a field). Without a
        // bearer token the API itself answers 401.
        let Some(token) = auth::bearer_token(&req) else {
            return next.call(req).await.map(IntoResponse::into_response);
        };
        let principal = auth::authorize(&req, token).await?;
        req.extensions_mut().insert(principal);
    }
    if let Some(problem) = check_query(op, req.uri().query().unwrap_or_default()) {
        return Err(ApiError::from(problem).into());
    }
    let is_json = req
        .content_type()
        .is_some_and(|c| c.starts_with("application/json"));
    if let (Some(checker), true) = (&op.body, is_json) {
        let body = req.take_body().into_bytes().await?;
        req.set_body(body.clone());
        if !body.is_empty() {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| bad_request(format!("the body is not valid JSON: {e}"), None))?;
            if let Some(problem) = checker.first_problem(&value) {
                return Err(ApiError::from(problem).into());
            }
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

fn method_not_allowed(routes: &[&Operation], method: &Method) -> Response {
    let mut allowed: Vec<&str> = routes.iter().map(|o| o.method.as_str()).collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    let allow = allowed.join(", ");
    let body = ErrorBody::new(
        "method_not_allowed",
        format!("{method} is not allowed here; allowed: {allow}"),
        None,
    );
    let mut resp = (StatusCode::METHOD_NOT_ALLOWED, body).into_response();
    if let Ok(v) = allow.parse() {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

fn check_query(op: &Operation, query: &str) -> Option<Problem> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    for param in &op.query {
        let shape = |message: &str| Problem {
            value_error: false,
            field: param.name.clone(),
            message: message.to_owned(),
        };
        let Some((_, raw)) = pairs.iter().find(|(k, _)| *k == param.name) else {
            if param.required {
                return Some(shape("is required"));
            }
            continue;
        };
        let value = match param.json_type.as_str() {
            "integer" => match raw.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Some(shape(&format!("`{raw}` is not an integer"))),
            },
            "number" => match raw.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) => Value::Number(n),
                None => return Some(shape(&format!("`{raw}` is not a number"))),
            },
            "boolean" => match raw.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Some(shape(&format!("`{raw}` is not `true` or `false`"))),
            },
            _ => Value::String(raw.clone()),
        };
        if let Some(mut problem) = param.checker.first_problem(&value) {
            problem.field = param.name.clone();
            return Some(problem);
        }
    }
    None
}

/// `/target/command/0` as `target.command[0]`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

/// The schema holding the keyword that `err` is about.
fn keyword_parent<'a>(root: &'a Value, err: &SchemaError<'_>) -> Option<&'a Value> {
    let location = err.schema_path().as_str();
    root.pointer(location.rsplit_once('/')?.0)
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn listed(options: &Value) -> String {
    options
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| format!("`{}`", o.as_str().map_or_else(|| o.to_string(), str::to_owned)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Adds what `err` says about `instance` to `found`, in the client's terms.
fn describe(root: &Value, instance: &Value, err: &SchemaError<'_>, found: &mut Vec<Problem>) {
    let at = dotted(err.instance_path().as_str());
    let here = err.instance();
    let mut push = |value_error: bool, field: String, message: String| {
        found.push(Problem {
            value_error,
            field: if field.is_empty() { "body".into() } else { field },
            message,
        })
    };
    match err.kind() {
        Kind::Type { .. } if here.is_null() => push(false, at, "must not be null".into()),
        Kind::Type { kind } => {
            let expected = format!("{kind:?}").to_lowercase();
            let expected = if expected.contains("integer") {
                "an integer"
            } else if expected.contains("number") {
                "a number"
            } else if expected.contains("string") {
                "a string"
            } else if expected.contains("boolean") {
                "true or false"
            } else if expected.contains("array") {
                "an array"
            } else if expected.contains("object") {
                "an object"
            } else {
                "of another type"
            };
            push(false, at, format!("must be {expected}"));
        }
        Kind::Required { property } => push(false, join(&at, &shown(property)), "is required".into()),
        Kind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                push(
                    false,
                    join(&at, name),
                    "unknown field: the API does not take it".into(),
                );
            }
        }
        Kind::Enum { options } => push(
            false,
            at,
            format!("`{}` is not one of {}", shown(here), listed(options)),
        ),
        Kind::Constant { expected_value } => push(false, at, format!("must be `{}`", shown(expected_value))),
        Kind::Format { format } => {
            let what = match format.as_str() {
                "date-time" => "an RFC 3339 date-time (`2024-03-15T08:42:11Z`)".to_owned(),
                other => format!("a valid {other}"),
            };
            push(false, at, format!("must be {what}"));
        }
        Kind::OneOfNotValid { context } => match keyword_parent(root, err) {
            Some(union) if union.get("discriminator").is_some() => {
                discriminated(root, instance, here, union, context, &at, found)
            }
            _ => push(false, at, "does not match any of the documented forms".into()),
        },
        Kind::Minimum { limit } | Kind::ExclusiveMinimum { limit } => {
            push(true, at, format!("must be at least {}", shown(limit)))
        }
        Kind::Maximum { limit } | Kind::ExclusiveMaximum { limit } => {
            push(true, at, format!("must be at most {}", shown(limit)))
        }
        Kind::MinLength { limit } => push(
            true,
            at,
            format!("must be at least {}", plural(*limit, "character")),
        ),
        Kind::MaxLength { limit } => push(
            true,
            at,
            format!("must be at most {}", plural(*limit, "character")),
        ),
        Kind::Pattern { pattern } => push(true, at, format!("`{}` does not match `{pattern}`", shown(here))),
        Kind::MinItems { limit } => push(true, at, format!("must have at least {}", plural(*limit, "item"))),
        Kind::MaxItems { limit } => push(true, at, format!("must have at most {}", plural(*limit, "item"))),
        Kind::UniqueItems => push(true, at, "must not hold the same value twice".into()),
        Kind::MaxProperties { limit } => {
            push(true, at, format!("must have at most {}", plural(*limit, "entry")))
        }
        Kind::MinProperties { limit } => push(
            true,
            at,
            format!("must have at least {}", plural(*limit, "entry")),
        ),
        _ => push(false, at, err.to_string()),
    }
}

/// A tagged union: the variant the tag names is checked (its problems are reported), or
/// the tag itself is the problem.
fn discriminated(
    root: &Value,
    instance: &Value,
    here: &Value,
    union: &Value,
    context: &[Vec<SchemaError<'static>>],
    at: &str,
    found: &mut Vec<Problem>,
) {
    let property = union["discriminator"]["propertyName"].as_str().unwrap_or("type");
    let mapping = union["discriminator"]["mapping"].as_object();
    let tags = mapping
        .map(|m| m.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let tag_field = join(at, property);
    let shape = |message: String| Problem {
        value_error: false,
        field: if tag_field.is_empty() {
            "body".into()
        } else {
            tag_field.clone()
        },
        message,
    };
    let tag = match here.get(property) {
        None | Some(Value::Null) => return found.push(shape(format!("is required: one of {tags}"))),
        Some(Value::String(t)) => t,
        Some(other) => return found.push(shape(format!("`{other}` is not one of {tags}"))),
    };
    let chosen = mapping.and_then(|m| m.get(tag)).and_then(|reference| {
        union["oneOf"]
            .as_array()?
            .iter()
            .position(|v| v["$ref"] == *reference)
    });
    match chosen.and_then(|i| context.get(i)) {
        Some(errors) => {
            for err in errors {
                describe(root, instance, err, found);
            }
        }
        None => found.push(shape(format!("`{tag}` is not one of {tags}"))),
    }
}
