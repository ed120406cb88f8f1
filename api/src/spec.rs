//! The OpenAPI document: what poem-openapi derives from the operations and DTOs, then
//! one tidying pass, so that every mainstream client generator takes it without a
//! warning and it states everything the server enforces. `cronflow openapi`,
//! `GET /openapi.yaml`, `/docs` and the request check all read the tidied document; the
//! committed `openapi.yaml` must equal it.
//!
//! # The tidying pass
//! 1. **Plain references.** poem-openapi wraps a `$ref` field that has a description or
//!    a default as `allOf: [{$ref}, {description, default}]`; openapi-python-client
//!    refuses such a property ("Cannot take allOf a non-object") and drops every
//!    operation that uses its object. The wrapper becomes the plain `$ref` (OpenAPI 3.0
//!    ignores siblings of `$ref` anyway; the type's own description stays).
//! 2. **One schema per tagged-union variant.** A `oneOf` with a discriminator names
//!    variants `Target_CommandTarget` = `allOf: [{type: {enum: [command]}}, $ref
//!    CommandTarget]`. Each variant becomes one object (`CommandTarget`, with its `type`
//!    property) so that it can be closed (3.): `additionalProperties: false` on one part
//!    of an `allOf` would refuse the other part's fields.
//! 3. **Closed request bodies.** Every object schema a request body reaches, at any
//!    depth, gets `additionalProperties: false`: the server refuses unknown fields, so
//!    the document says so.
//! 4. **Event payloads.** The JSON Schemas of the webhook events (from the engine's
//!    payload types) are added as named components (`JobCompletedEvent`, ...), so
//!    receivers can generate types from this one document.
//! 5. **Links.** The answers that create an object link to the operations taking its
//!    id ([`LINKS`]), so tools can chain calls (create a job, then read, change,
//!    trigger and delete it) without guessing.

use serde_yaml::{Mapping, Value};
use std::{collections::BTreeSet, sync::OnceLock};

/// The tidied document as YAML.
pub(crate) fn yaml() -> &'static str {
    static YAML: OnceLock<String> = OnceLock::new();
    YAML.get_or_init(|| serde_yaml::to_string(tidied()).expect("the OpenAPI document serialises"))
}

/// The tidied document as JSON text.
pub(crate) fn json_text() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_string(json()).expect("the OpenAPI document serialises"))
}

/// The tidied document as a JSON value (for the request check).
pub(crate) fn json() -> &'static serde_json::Value {
    static JSON: OnceLock<serde_json::Value> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_value(tidied()).expect("the OpenAPI document converts to JSON"))
}

fn tidied() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let raw = crate::openapi_service().spec_yaml();
        let mut doc: Value = serde_yaml::from_str(&raw).expect("poem-openapi writes valid YAML");
        tidy(&mut doc);
        doc
    })
}

/// Applies the tidying pass (see the module docs) to a poem-openapi document.
fn tidy(doc: &mut Value) {
    plain_refs(doc);
    if let Some(schemas) = doc
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(Value::as_mapping_mut)
    {
        merge_union_variants(schemas);
        for (name, schema) in crate::dto::events::openapi_components() {
            schemas.insert(name.into(), schema);
        }
        sort_keys(schemas);
    }
    close_request_bodies(doc);
    add_links(doc);
}

/// `(operation, status, field of its answer, operations taking that value as `id`)`.
const LINKS: [(&str, &str, &str, &[&str]); 5] = [
    (
        "create_job",
        "201",
        "id",
        &[
            "get_job",
            "update_job",
            "pause_job",
            "resume_job",
            "trigger_job",
            "list_job_runs",
            "delete_job",
        ],
    ),
    ("trigger_job", "202", "id", &["get_run", "cancel_run"]),
    (
        "create_webhook",
        "201",
        "id",
        &[
            "get_webhook",
            "update_webhook",
            "rotate_webhook_secret",
            "test_webhook",
            "delete_webhook",
        ],
    ),
    (
        "test_webhook",
        "202",
        "delivery_id",
        &[
            "get_delivery",
            "replay_dead_delivery",
            "acknowledge_dead_delivery",
        ],
    ),
    ("create_key", "201", "id", &["delete_key"]),
];

/// 5: adds the [`LINKS`] to the answers they start from.
fn add_links(doc: &mut Value) {
    for (from, status, field, targets) in LINKS {
        let mut links = Mapping::new();
        for target in targets {
            let mut parameters = Mapping::new();
            parameters.insert(str_value("id"), str_value(&format!("$response.body#/{field}")));
            let mut link = Mapping::new();
            link.insert(str_value("operationId"), str_value(target));
            link.insert(str_value("parameters"), Value::Mapping(parameters));
            links.insert(str_value(target), Value::Mapping(link));
        }
        let response = doc["paths"]
            .as_mapping_mut()
            .into_iter()
            .flat_map(|paths| paths.values_mut())
            .filter_map(Value::as_mapping_mut)
            .flat_map(|item| item.values_mut())
            .find(|op| op["operationId"].as_str() == Some(from))
            .and_then(|op| op["responses"].get_mut(status))
            .and_then(Value::as_mapping_mut);
        match response {
            Some(response) => {
                response.insert(str_value("links"), Value::Mapping(links));
            }
            None => tracing::error!(
                operation = from,
                status,
                "a link starts from an answer the document lacks"
            ),
        }
    }
}

fn str_value(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// The component a `#/components/schemas/NAME` reference names.
fn ref_name(v: &Value) -> Option<&str> {
    v.get("$ref")?.as_str()?.strip_prefix("#/components/schemas/")
}

/// 1: `{allOf: [{$ref: X}, {annotations}], annotations}` becomes `{$ref: X}`.
fn plain_refs(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            if let Some(reference) = wrapped_ref(m) {
                let mut plain = Mapping::new();
                plain.insert(str_value("$ref"), reference);
                *m = plain;
                return;
            }
            for (_, child) in m.iter_mut() {
                plain_refs(child);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(plain_refs),
        _ => {}
    }
}

/// The `$ref` of a schema that only wraps one with annotations, if it is one.
fn wrapped_ref(m: &Mapping) -> Option<Value> {
    const ANNOTATIONS: [&str; 4] = ["allOf", "description", "default", "title"];
    let parts = m.get("allOf")?.as_sequence()?;
    if !m
        .keys()
        .all(|k| k.as_str().is_some_and(|k| ANNOTATIONS.contains(&k)))
    {
        return None;
    }
    let mut reference = None;
    for part in parts {
        let part = part.as_mapping()?;
        match part.get("$ref") {
            Some(r) if part.len() == 1 && reference.is_none() => reference = Some(r.clone()),
            Some(_) => return None,
            None if part
                .keys()
                .all(|k| k.as_str().is_some_and(|k| ANNOTATIONS.contains(&k))) => {}
            None => return None,
        }
    }
    reference
}

/// 2: each discriminated variant `Union_Variant` (`allOf: [{tag}, $ref Variant]`) is
/// merged into `Variant`, which the union's `oneOf` and mapping then name.
fn merge_union_variants(schemas: &mut Mapping) {
    let unions: Vec<String> = schemas
        .iter()
        .filter(|(_, s)| s.get("discriminator").is_some() && s.get("oneOf").is_some())
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
        .collect();
    for union in unions {
        let variants: Vec<String> = schemas[union.as_str()]["oneOf"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| ref_name(v).map(str::to_owned))
            .collect();
        let mut renamed = Vec::new();
        for wrapper_name in variants {
            let Some(wrapper) = schemas.get(wrapper_name.as_str()).cloned() else {
                continue;
            };
            let Some(parts) = wrapper.get("allOf").and_then(Value::as_sequence) else {
                continue;
            };
            let (Some(tag), Some(target)) = (
                parts.iter().find(|p| p.get("properties").is_some()),
                parts.iter().find_map(ref_name).map(str::to_owned),
            ) else {
                continue;
            };
            let Some(Value::Mapping(body)) = schemas.get(target.as_str()).cloned() else {
                continue;
            };
            schemas.insert(str_value(&target), merge_tag(tag, body));
            schemas.shift_remove(wrapper_name.as_str());
            renamed.push((wrapper_name, target));
        }
        let refs = |name: &str| format!("#/components/schemas/{name}");
        let union_schema = &mut schemas[union.as_str()];
        for (from, to) in &renamed {
            for v in union_schema["oneOf"].as_sequence_mut().into_iter().flatten() {
                if ref_name(v) == Some(from.as_str()) {
                    v["$ref"] = str_value(&refs(to));
                }
            }
            for (_, v) in union_schema["discriminator"]["mapping"]
                .as_mapping_mut()
                .into_iter()
                .flatten()
            {
                if v.as_str() == Some(refs(from).as_str()) {
                    *v = str_value(&refs(to));
                }
            }
        }
    }
}

/// `body` with the tag part's properties first and its required fields added.
fn merge_tag(tag: &Value, body: Mapping) -> Value {
    let mut merged = Mapping::new();
    let mut required: Vec<Value> = tag["required"].as_sequence().cloned().unwrap_or_default();
    required.extend(
        body.get("required")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default(),
    );
    let mut properties = tag["properties"].as_mapping().cloned().unwrap_or_default();
    for (k, v) in body
        .get("properties")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        properties.insert(k.clone(), v.clone());
    }
    for (k, v) in body {
        match k.as_str() {
            Some("required") | Some("properties") => {}
            _ => {
                merged.insert(k, v);
            }
        }
    }
    merged.insert(str_value("required"), Value::Sequence(required));
    merged.insert(str_value("properties"), Value::Mapping(properties));
    Value::Mapping(merged)
}

fn sort_keys(m: &mut Mapping) {
    let mut entries: Vec<(Value, Value)> = std::mem::take(m).into_iter().collect();
    entries.sort_by(|(a, _), (b, _)| a.as_str().cmp(&b.as_str()));
    m.extend(entries);
}

/// 3: `additionalProperties: false` on every object schema a request body reaches.
fn close_request_bodies(doc: &mut Value) {
    let mut names = BTreeSet::new();
    let mut pending: Vec<Value> = Vec::new();
    for (_, item) in doc["paths"].as_mapping().into_iter().flatten() {
        for (_, op) in item.as_mapping().into_iter().flatten() {
            for (_, media) in op["requestBody"]["content"].as_mapping().into_iter().flatten() {
                pending.push(media["schema"].clone());
            }
        }
    }
    while let Some(schema) = pending.pop() {
        collect_refs(&schema, &mut |name| {
            if names.insert(name.to_owned()) {
                pending.push(doc["components"]["schemas"][name].clone());
            }
        });
    }
    for name in &names {
        close_objects(&mut doc["components"]["schemas"][name.as_str()]);
    }
}

fn collect_refs(v: &Value, found: &mut impl FnMut(&str)) {
    match v {
        Value::Mapping(m) => {
            if let Some(name) = ref_name(v) {
                found(name);
            }
            m.values().for_each(|c| collect_refs(c, found));
        }
        Value::Sequence(items) => items.iter().for_each(|c| collect_refs(c, found)),
        _ => {}
    }
}

/// Closes `schema` and the inline object schemas inside it (not maps, which declare
/// their own `additionalProperties`, nor unions, whose variants are closed instead).
fn close_objects(schema: &mut Value) {
    let Value::Mapping(m) = schema else { return };
    if m.get("properties").is_some() && m.get("additionalProperties").is_none() && m.get("oneOf").is_none() {
        m.insert(str_value("additionalProperties"), Value::Bool(false));
    }
    if let Some(Value::Mapping(props)) = m.get_mut("properties") {
        props.values_mut().for_each(close_objects);
    }
    if let Some(items) = m.get_mut("items") {
        close_objects(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        let mut v: Value = serde_yaml::from_str(yaml).unwrap();
        tidy(&mut v);
        v
    }

    #[test]
    fn an_annotated_reference_becomes_a_plain_one() {
        let v = doc(
            "components:\n  schemas:\n    A:\n      type: object\n      properties:\n        e:\n          description: d\n          default: null\n          allOf:\n          - $ref: '#/components/schemas/E'\n          - description: d\n            default: null\n",
        );
        let e = &v["components"]["schemas"]["A"]["properties"]["e"];
        assert_eq!(e.as_mapping().unwrap().len(), 1, "{e:?}");
        assert_eq!(e["$ref"].as_str(), Some("#/components/schemas/E"));
    }

    #[test]
    fn union_variants_are_merged_and_request_bodies_closed() {
        let v = doc(r##"
paths:
  /x:
    post:
      requestBody:
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/In'
components:
  schemas:
    In:
      type: object
      properties:
        t:
          $ref: '#/components/schemas/T'
    T:
      type: object
      oneOf:
      - $ref: '#/components/schemas/T_A'
      discriminator:
        propertyName: type
        mapping:
          a: '#/components/schemas/T_A'
    T_A:
      allOf:
      - type: object
        required: [type]
        properties:
          type: {type: string, enum: [a]}
      - $ref: '#/components/schemas/A'
    A:
      type: object
      required: [x]
      properties:
        x: {type: string}
    Out:
      type: object
      properties:
        y: {type: string}
"##);
        let s = &v["components"]["schemas"];
        assert!(s.get("T_A").is_none());
        assert_eq!(
            s["T"]["oneOf"][0]["$ref"].as_str(),
            Some("#/components/schemas/A")
        );
        assert_eq!(
            s["T"]["discriminator"]["mapping"]["a"].as_str(),
            Some("#/components/schemas/A")
        );
        let required: Vec<&str> = s["A"]["required"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(required, ["type", "x"]);
        assert!(s["A"]["properties"]["type"].is_mapping());
        assert_eq!(s["A"]["additionalProperties"], Value::Bool(false));
        assert_eq!(s["In"]["additionalProperties"], Value::Bool(false));
        assert!(
            s["T"].get("additionalProperties").is_none(),
            "a union is closed through its variants"
        );
        assert!(
            s["Out"].get("additionalProperties").is_none(),
            "responses stay open"
        );
    }
}
