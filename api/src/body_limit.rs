//! Refuses request bodies over [`crate::MAX_BODY_BYTES`] with 413, whether the client
//! declares the length or streams the body chunked (poem's own `SizeLimit` answers 411 to
//! bodies without a length, including plain GETs).

use crate::{ApiError, MAX_BODY_BYTES};
use poem::{Endpoint, IntoResponse, Request, Response};

pub(crate) async fn limit_body<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES).into());
        }
        Some(_) => {}
        None if req.header(poem::http::header::TRANSFER_ENCODING).is_some() => {
            let body = req
                .take_body()
                .into_bytes_limit(MAX_BODY_BYTES)
                .await
                .map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
            req.set_body(body);
        }
        None => {}
    }
    next.call(req).await.map(IntoResponse::into_response)
}
