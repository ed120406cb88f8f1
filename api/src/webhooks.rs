//! `/v1/webhooks`: subscriptions (create, list, read, change, delete), secret rotation
//! and the test event.

use crate::{
    ApiError, ApiState, ApiTags,
    audit::changed_by,
    auth::BearerAuth,
    dto::webhooks::{TestSentOut, WebhookIn, WebhookList, WebhookOut, WebhookPatchIn, WebhookWithSecretOut},
};
use cronflow_jobs::domain::{PageRequest, WebhookId, WebhookSecret};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};

#[derive(ApiResponse)]
enum Created {
    /// The subscription, with its secret (shown this once).
    #[oai(status = 201)]
    Webhook(Json<WebhookWithSecretOut>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// The subscription is gone; its pending deliveries end `dead`.
    #[oai(status = 204)]
    Webhook,
}

#[derive(ApiResponse)]
enum TestAccepted {
    /// A `webhook.test` event was queued for this subscription.
    #[oai(status = 202)]
    Sent(Json<TestSentOut>),
}

fn parse_id(id: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(id).ok_or_else(|| ApiError::not_found("webhook", id))
}

pub(crate) struct WebhooksApi;

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Subscribe an endpoint to job events. The answer holds the signing secret, once.
    #[oai(path = "/v1/webhooks", method = "post", operation_id = "create_webhook")]
    async fn create(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        body: Json<WebhookIn>,
    ) -> Result<Created, ApiError> {
        let (spec, secret) = body.0.into_spec(state.url_policy)?;
        let hook = state
            .store
            .create_webhook(spec, secret, &changed_by(&auth, req, 201), state.clock.now())
            .await?;
        Ok(Created::Webhook(Json(WebhookWithSecretOut {
            webhook: WebhookOut::from(&hook),
            secret: hook.secret.expose().to_owned(),
        })))
    }

    /// List subscriptions, oldest first.
    #[oai(path = "/v1/webhooks", method = "get", operation_id = "list_webhooks")]
    async fn list(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// Items per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<WebhookList>, ApiError> {
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let page = state.store.list_webhooks(&page).await?;
        Ok(Json(WebhookList {
            items: page.items.iter().map(WebhookOut::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }))
    }

    /// Get a subscription.
    #[oai(path = "/v1/webhooks/:id", method = "get", operation_id = "get_webhook")]
    async fn get(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<WebhookOut>, ApiError> {
        let hook_id = parse_id(&id)?;
        match state.store.get_webhook(&hook_id).await? {
            Some(h) => Ok(Json(WebhookOut::from(&h))),
            None => Err(ApiError::not_found("webhook", &id)),
        }
    }

    /// Change a subscription; `{"enabled": true}` re-enables a disabled one.
    #[oai(path = "/v1/webhooks/:id", method = "patch", operation_id = "update_webhook")]
    async fn update(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
        body: Json<WebhookPatchIn>,
    ) -> Result<Json<WebhookOut>, ApiError> {
        let hook_id = parse_id(&id)?;
        let current = state
            .store
            .get_webhook(&hook_id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook", &id))?;
        let discard_held = body.0.discard_held();
        let spec = body.0.apply(&current, state.url_policy)?;
        match state
            .store
            .update_webhook(
                &hook_id,
                spec,
                discard_held,
                &changed_by(&auth, req, 200),
                state.clock.now(),
            )
            .await?
        {
            Some(h) => Ok(Json(WebhookOut::from(&h))),
            None => Err(ApiError::not_found("webhook", &id)),
        }
    }

    /// Delete a subscription.
    #[oai(path = "/v1/webhooks/:id", method = "delete", operation_id = "delete_webhook")]
    async fn delete(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Deleted, ApiError> {
        let hook_id = parse_id(&id)?;
        if state
            .store
            .delete_webhook(&hook_id, &changed_by(&auth, req, 204), state.clock.now())
            .await?
        {
            Ok(Deleted::Webhook)
        } else {
            Err(ApiError::not_found("webhook", &id))
        }
    }

    /// Rotate the signing secret. The new secret is in the answer (once); the previous
    /// one keeps signing beside it for 24 hours, so receivers can switch without losing
    /// a delivery.
    #[oai(
        path = "/v1/webhooks/:id/rotate-secret",
        method = "post",
        operation_id = "rotate_webhook_secret"
    )]
    async fn rotate(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Json<WebhookWithSecretOut>, ApiError> {
        let hook_id = parse_id(&id)?;
        let hook = state
            .store
            .rotate_webhook_secret(
                &hook_id,
                WebhookSecret::generate(),
                &changed_by(&auth, req, 200),
                state.clock.now(),
            )
            .await?
            .ok_or_else(|| ApiError::not_found("webhook", &id))?;
        Ok(Json(WebhookWithSecretOut {
            webhook: WebhookOut::from(&hook),
            secret: hook.secret.expose().to_owned(),
        }))
    }

    /// Send a `webhook.test` event to this subscription.
    #[oai(
        path = "/v1/webhooks/:id/test",
        method = "post",
        operation_id = "test_webhook"
    )]
    async fn test(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<TestAccepted, ApiError> {
        let hook_id = parse_id(&id)?;
        let delivery = state
            .store
            .send_test_event(&hook_id, &changed_by(&auth, req, 202), state.clock.now())
            .await?
            .ok_or_else(|| ApiError::not_found("webhook", &id))?;
        Ok(TestAccepted::Sent(Json(TestSentOut {
            delivery_id: delivery.to_string(),
        })))
    }
}
