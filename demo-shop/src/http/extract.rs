//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the same JSON
//! error body as everything else.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// A JSON body (400 when it is malformed, has unknown fields or lacks the JSON content type).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// Path parameters (400 when an id does not parse).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters (400 when one does not parse).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
