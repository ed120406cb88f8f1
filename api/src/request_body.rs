//! Request bodies over [`crate::MAX_BODY_BYTES`] are refused with 413, whether the
//! client declares the length or streams the body chunked (poem's own `SizeLimit`
//! answers 411 to bodies without a length, including plain GETs).

use crate::{ApiError, MAX_BODY_BYTES};
use poem::{Endpoint, IntoResponse, Request, Response};

pub(crate) async fn check_body<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES).into());
    }
    let has_body =
        declared.is_some_and(|n| n > 0) || req.header(poem::http::header::TRANSFER_ENCODING).is_some();
    if has_body {
        let body = req
            .take_body()
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
        req.set_body(body);
    }
    next.call(req).await.map(IntoResponse::into_response)
}
