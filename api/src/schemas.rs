//! `/v1/schemas/events`: the JSON Schema of every webhook payload ("View Payload
//! Schema"), so a receiver can validate deliveries or generate types from them. The same
//! schemas are components of the OpenAPI document (`JobCompletedEvent`, ...).

use crate::{ApiError, ApiTags, auth::BearerAuth, dto::events::EventSchemaList};
use cronflow_jobs::domain::{EventType, event::event_kind};
use poem_openapi::{OpenApi, param::Path, payload::Json};
use serde_json::Value;

pub(crate) struct SchemasApi;

#[OpenApi(tag = "ApiTags::Events")]
impl SchemasApi {
    /// Every event type, with the JSON Schema (2020-12) of its payload and an example.
    #[oai(
        path = "/v1/schemas/events",
        method = "get",
        operation_id = "list_event_schemas"
    )]
    async fn list(&self, _auth: BearerAuth) -> Result<Json<EventSchemaList>, ApiError> {
        Ok(Json(EventSchemaList::all()))
    }

    /// The JSON Schema (2020-12) of one event type's payload (`job.completed`,
    /// `job.failed`, `job.timed_out`, `webhook.test`).
    #[oai(
        path = "/v1/schemas/events/:event_type",
        method = "get",
        operation_id = "get_event_schema"
    )]
    async fn get(&self, _auth: BearerAuth, event_type: Path<String>) -> Result<Json<Value>, ApiError> {
        EventType::parse(&event_type)
            .and_then(event_kind)
            .map(|kind| Json(kind.json_schema()))
            .ok_or_else(|| ApiError::not_found("event type", &event_type))
    }
}
