//! [`ApiError`]: the one place errors become status codes and JSON bodies.
//!
//! A rule violation is 422, a conflict 409, something missing 404, malformed input 400;
//! anything else is 500 with a generic message, logged once here.

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
}

impl ApiError {
    /// Malformed input (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
        }
    }

    /// Nothing there (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.message, "kind": self.kind })),
        )
            .into_response()
    }
}

impl From<ShopError> for ApiError {
    fn from(error: ShopError) -> Self {
        match error {
            ShopError::Rejected(message) => Self {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                kind: "rejected",
                message,
            },
            ShopError::NotFound(message) => Self::not_found(message),
            ShopError::Conflict(message) => Self {
                status: StatusCode::CONFLICT,
                kind: "conflict",
                message,
            },
            ShopError::Storage(detail) => {
                tracing::error!(%detail, "request failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "internal",
                    message: "internal error".into(),
                }
            }
        }
    }
}

impl From<projections::Error> for ApiError {
    fn from(error: projections::Error) -> Self {
        ShopError::from(error).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::bad_request(rejection.body_text())
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
