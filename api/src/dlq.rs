//! The dead letter queue (`/v1/dlq`): deliveries whose retries are exhausted; replay
//! them one by one or in bulk (same delivery id, so the same idempotency key), or
//! acknowledge them.

use crate::{
    ApiError, ApiState, ApiTags,
    audit::changed_by,
    auth::BearerAuth,
    dto::{
        deliveries::{DeliveryList, DeliveryOut},
        dlq::{ReplayIn, ReplayedOut},
    },
};
use cronflow_jobs::{
    domain::{DeliveryId, PageRequest},
    store::ReplayFilter,
};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};

#[derive(ApiResponse)]
enum Replayed {
    /// The delivery is queued again (status `pending`, a fresh retry schedule).
    #[oai(status = 202)]
    Delivery(Json<DeliveryOut>),
}

#[derive(ApiResponse)]
enum Acknowledged {
    /// The delivery left the DLQ list (it stays on record as `dead`).
    #[oai(status = 204)]
    Done,
}

fn parse_id(id: &str) -> Result<DeliveryId, ApiError> {
    DeliveryId::parse(id).ok_or_else(|| ApiError::not_found("delivery", id))
}

pub(crate) struct DlqApi;

#[OpenApi(tag = "ApiTags::Deliveries")]
impl DlqApi {
    /// Dead, unacknowledged deliveries, oldest first.
    #[oai(path = "/v1/dlq", method = "get", operation_id = "list_dlq")]
    async fn list(
        &self,
        state: Data<&ApiState>,
        _auth: BearerAuth,
        /// Items per page, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveryList>, ApiError> {
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let page = state.store.list_dlq(&page).await?;
        Ok(Json(DeliveryList::from_page(page)))
    }

    /// Replay one dead delivery.
    #[oai(
        path = "/v1/dlq/:id/replay",
        method = "post",
        operation_id = "replay_dead_delivery"
    )]
    async fn replay(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Replayed, ApiError> {
        let dlv = parse_id(&id)?;
        let n = state
            .store
            .replay_dead(
                Some(&dlv),
                &ReplayFilter::default(),
                &changed_by(&auth, req, 202),
                state.clock.now(),
            )
            .await?;
        if n == 0 {
            return Err(ApiError::not_found("dead delivery", &id));
        }
        let (d, _) = state
            .store
            .get_delivery(&dlv)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery", &id))?;
        Ok(Replayed::Delivery(Json(DeliveryOut::new(d, None))))
    }

    /// Replay every dead delivery matching the filter (all of them with an empty body),
    /// at most 10,000 per call.
    #[oai(
        path = "/v1/dlq/replay",
        method = "post",
        operation_id = "replay_dead_deliveries"
    )]
    async fn replay_bulk(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        body: Json<ReplayIn>,
    ) -> Result<Json<ReplayedOut>, ApiError> {
        let filter = body.0.into_filter()?;
        let replayed = state
            .store
            .replay_dead(None, &filter, &changed_by(&auth, req, 200), state.clock.now())
            .await?;
        Ok(Json(ReplayedOut { replayed }))
    }

    /// Acknowledge a dead delivery: it leaves the DLQ.
    #[oai(
        path = "/v1/dlq/:id",
        method = "delete",
        operation_id = "acknowledge_dead_delivery"
    )]
    async fn acknowledge(
        &self,
        state: Data<&ApiState>,
        auth: BearerAuth,
        req: &Request,
        id: Path<String>,
    ) -> Result<Acknowledged, ApiError> {
        let dlv = parse_id(&id)?;
        if state
            .store
            .acknowledge_dead(&dlv, &changed_by(&auth, req, 204), state.clock.now())
            .await?
        {
            Ok(Acknowledged::Done)
        } else {
            Err(ApiError::not_found("dead delivery", &id))
        }
    }
}
