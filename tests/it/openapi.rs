//! The committed `openapi.yaml` is what the code generates, and it is a document client
//! generators take as it is: every operation has a stable id, a summary, a tag and its
//! documented errors; no property wraps a `$ref` in an `allOf`; every `$ref` resolves.

use serde_json::Value;
use std::path::Path;

#[test]
fn committed_openapi_yaml_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    let generated = cronflow_api::spec_yaml();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.yaml");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.yaml is stale. Regenerate it with `cargo run -q -p cronflow -- openapi > openapi.yaml` \
         (or UPDATE_OPENAPI=1 cargo test --workspace) and commit it."
    );
}

fn spec() -> Value {
    serde_json::from_str(&cronflow_api::spec_json()).unwrap()
}

#[test]
fn every_operation_has_an_id_a_summary_a_tag_and_documents_its_errors() {
    let spec = spec();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str();
            assert!(
                id.is_some_and(|id| ids.insert(id.to_owned())),
                "{method} {path}: no or a repeated operationId"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no summary"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| t.len() == 1),
                "{method} {path} has no tag"
            );
            if path.starts_with("/v1/") {
                let mut statuses = vec!["400", "401", "403", "404", "422"];
                if op.get("requestBody").is_some() {
                    statuses.extend(["413", "415"]);
                }
                for status in statuses {
                    let response = &op["responses"][status];
                    assert!(response.is_object(), "{method} {path} does not document {status}");
                    assert_eq!(
                        response["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

fn walk<'a>(v: &'a Value, at: String, visit: &mut impl FnMut(&'a Value, &str)) {
    visit(v, &at);
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| walk(c, format!("{at}/{k}"), visit)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| walk(c, format!("{at}/{i}"), visit)),
        _ => {}
    }
}

#[test]
fn references_are_plain_and_all_resolve() {
    let spec = spec();
    walk(&spec, String::new(), &mut |v, at| {
        if let Some(parts) = v.get("allOf").and_then(Value::as_array) {
            assert!(
                !parts.iter().any(|p| p.get("$ref").is_some()),
                "{at} wraps a $ref in allOf (openapi-python-client refuses it)"
            );
        }
        if let Some(r) = v.get("$ref").and_then(Value::as_str) {
            assert!(
                spec.pointer(r.trim_start_matches('#')).is_some(),
                "{at}: {r} does not resolve"
            );
        }
    });
}

#[test]
fn the_event_payload_schemas_are_named_components() {
    let spec = spec();
    for name in [
        "JobCompletedEvent",
        "JobFailedEvent",
        "JobTimedOutEvent",
        "WebhookTestEvent",
    ] {
        let schema = &spec["components"]["schemas"][name];
        assert_eq!(schema["additionalProperties"], false, "{name}");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            required,
            ["event", "timestamp", "job_id", "environment", "data"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_server_serves_the_same_document_and_swagger_ui_shows_it() {
    let app = crate::helpers::TestApp::spawn(crate::helpers::Backend::Sqlite).await;
    let served = app.client.get(app.url("/openapi.yaml")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), cronflow_api::spec_yaml());
    for path in ["/docs", "/docs/"] {
        let page = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("JobCompletedEvent") && !html.contains("Target_CommandTarget"),
            "{path} embeds the tidied document"
        );
    }
    app.stop().await;
}
