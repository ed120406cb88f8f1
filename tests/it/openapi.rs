//! The committed `openapi.yaml` is what the code generates.

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
        "openapi.yaml is stale. Regenerate it with `cargo run -q -- openapi > openapi.yaml` \
         (or UPDATE_OPENAPI=1 cargo test --workspace) and commit it."
    );
}

#[test]
fn every_operation_has_an_id_and_documents_its_errors() {
    let spec: serde_json::Value = serde_json::from_str(&cronflow_api::spec_json()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            if path.starts_with("/v1/") {
                for status in ["400", "401", "403", "404", "422"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
}
