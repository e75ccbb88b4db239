//! [`ApiError`]: the one place errors become status codes and JSON bodies.
//!
//! A rule violation or a value out of range is 422, a conflict 409, something missing 404, malformed input 400;
//! anything else is 500 with a generic message. A 5xx is logged once, with its cause chain,
//! when the response is made (as axum's own examples do), never where an error is converted.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::shop::ShopError;

/// An error answer: a status and a message, sent as `{"error": "...", "kind": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// More fields of the JSON body, for errors a client acts on.
    details: Option<serde_json::Value>,
    /// What caused a 5xx, logged with the response and never sent.
    cause: Option<cqrs_core::BoxError>,
}

impl ApiError {
    /// Malformed input (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Well-formed input the API cannot take (422).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// Nothing there (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A body over the size limit (413).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// A fault of the server's own (500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A route that exists, asked with a method it does not take (405).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }

    /// A read model that has not reached the position asked for in time (503, retry soon).
    pub fn behind(message: impl Into<String>, details: serde_json::Value) -> Self {
        Self {
            details: Some(details),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "behind", message)
        }
    }

    /// A read model stopped at an event it cannot handle (503).
    pub fn projection_failed(message: impl Into<String>, details: serde_json::Value) -> Self {
        Self {
            details: Some(details),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection_failed",
                message,
            )
        }
    }

    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            details: None,
            cause: None,
        }
    }

    fn caused_by(mut self, cause: cqrs_core::BoxError) -> Self {
        self.cause = Some(cause);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            let error = cqrs_core::error::chain(cause.as_ref());
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(status = self.status.as_u16(), %error, "storage unavailable");
            } else {
                tracing::error!(status = self.status.as_u16(), %error, "request failed");
            }
        }
        let mut body = json!({ "error": self.message, "kind": self.kind });
        if let (Some(serde_json::Value::Object(details)), Some(fields)) =
            (self.details, body.as_object_mut())
        {
            fields.extend(details);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<ShopError> for ApiError {
    fn from(error: ShopError) -> Self {
        match error {
            ShopError::Rejected(message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", message)
            }
            ShopError::NotFound(message) => Self::not_found(message),
            ShopError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            ShopError::Unavailable(cause) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage unavailable, try again",
            )
            .caused_by(cause),
            ShopError::Storage(cause) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .caused_by(cause),
        }
    }
}

impl From<projections::Error> for ApiError {
    fn from(error: projections::Error) -> Self {
        ShopError::from(error).into()
    }
}

impl From<JsonRejection> for ApiError {
    /// Well-formed JSON with a value out of its field's range (a negative or overflowing
    /// price, say) is 422; a body that is not `application/json` is 415, one over the size
    /// limit 413; anything else malformed is 400.
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => Self::unprocessable(rejection.body_text()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with Content-Type: application/json",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::too_large(rejection.body_text()),
            _ => Self::bad_request(rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}
