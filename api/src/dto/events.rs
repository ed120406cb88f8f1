//! Webhook payload schemas ("View Payload Schema"): what `GET /v1/schemas/events`
//! returns, and the event schemas as OpenAPI components.

use cronflow_jobs::domain::event::{EVENT_KINDS, EventKind};
use poem_openapi::Object;
use serde_json::Value;

/// One event type's payload schema, with a real example.
#[derive(Debug, Object)]
#[oai(rename = "EventSchema")]
pub(crate) struct EventSchemaOut {
    /// The event type (`job.completed`, ...), as in the body's `event` field and the
    /// `X-CronFlow-Event` header.
    event_type: String,
    /// The schema's name among this document's components (`JobCompletedEvent`).
    schema_name: String,
    /// The JSON Schema (2020-12) of the whole request body CronFlow sends.
    schema: Value,
    /// A payload of this type, built by the code that builds deliveries.
    example: Value,
}

impl From<&EventKind> for EventSchemaOut {
    fn from(kind: &EventKind) -> Self {
        EventSchemaOut {
            event_type: kind.event_type.as_str().to_owned(),
            schema_name: kind.schema_name.to_owned(),
            schema: kind.json_schema(),
            example: kind.example(),
        }
    }
}

/// Every event type's payload schema.
#[derive(Debug, Object)]
#[oai(rename = "EventSchemaList")]
pub(crate) struct EventSchemaList {
    pub(crate) items: Vec<EventSchemaOut>,
}

impl EventSchemaList {
    pub(crate) fn all() -> Self {
        EventSchemaList {
            items: EVENT_KINDS.iter().map(EventSchemaOut::from).collect(),
        }
    }
}

/// The event schemas (and the `data` types they refer to) as OpenAPI 3.0 components.
pub(crate) fn openapi_components() -> Vec<(String, serde_yaml::Value)> {
    EVENT_KINDS
        .iter()
        .flat_map(EventKind::openapi_components)
        .map(|(name, schema)| {
            let schema = serde_yaml::to_value(schema).expect("a JSON schema converts to YAML");
            (name, schema)
        })
        .collect()
}
