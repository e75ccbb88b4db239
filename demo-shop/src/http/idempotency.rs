//! `Idempotency-Key`: every `POST` may carry one. The first request with a key is carried
//! out as the command the key and the request name ([`CommandId::from_key`]); every later
//! request with the same key and the same method, path and body gets the same status and
//! body, without carrying anything out again (across restarts, on PostgreSQL). The same key
//! with another request is refused with 422.
//!
//! Requests with one key that arrive together are all carried out as that one command: the
//! repository stores it once and answers each with the original events, and every one of
//! them answers with the answer kept first. Answers that a retry may change (409, 429, 5xx)
//! are not kept.

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cqrs_core::{CommandId, Metadata};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::idempotency_keys::{Answer, Claim};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header set on an answer given again.
pub const REPLAYED: &str = "idempotent-replayed";
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 200;
/// The largest request body accepted: axum's default limit, as without a key.
const MAX_BODY: usize = 2 << 20;
/// The namespace of request fingerprints.
const FINGERPRINTS: Uuid = Uuid::from_u128(0x3d0c_6f0e_2b8a_4f51_9e64_7c1d_a5b2_0e93);

/// The `Idempotency-Key` header, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by the middleware from the headers; this type only documents it.
pub struct IdempotencyKey {
    /// Sent again with the same key, method, path and body, a request gets the first answer
    /// again and nothing is carried out twice; 1 to 200 visible ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[\\x21-\\x7e]+$"
    )]
    idempotency_key: String,
}

/// The middleware: answers a known key from its kept answer, refuses a reused one, and
/// otherwise runs the request with the key's command id and keeps its answer.
pub async fn layer(State(shop): AppState, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    let key = match checked_key(key) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return ApiError::too_large(format!("the body is larger than {MAX_BODY} bytes"))
            .into_response();
    };
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let fingerprint = Uuid::new_v5(
        &FINGERPRINTS,
        &[
            parts.method.as_str().as_bytes(),
            b"\n",
            target.as_bytes(),
            b"\n",
            &body,
        ]
        .concat(),
    );
    let keys = &shop.storage().idempotency_keys;
    match keys.claim(&key, fingerprint).await {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(Claim::Mismatch) => {
            return ApiError::unprocessable(format!(
                "Idempotency-Key {key:?} was already used with another request"
            ))
            .into_response()
        }
        Ok(Claim::Replay(answer)) => return replay(answer),
        Ok(Claim::Proceed) => {}
    }
    // The command is named by the key and the request together: the same request stays one
    // command even after its key was forgotten, and a forgotten key can name a new one.
    parts.extensions.insert(CommandId::from_key(
        "http",
        &format!("{key}\n{fingerprint}"),
    ));
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if !keeps(response.status()) {
        return response;
    }
    let status = response.status().as_u16();
    let Ok(body) = to_bytes(response.into_body(), usize::MAX).await else {
        return ApiError::internal("the answer to keep could not be read").into_response();
    };
    let answer = Answer {
        status,
        body: body.to_vec(),
    };
    match keys.complete(&key, answer).await {
        Ok(kept) if kept.status == status && kept.body == body => respond(kept),
        Ok(kept) => replay(kept),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Whether an answer with `status` is kept for the key: successes and the client's own
/// mistakes are final; conflicts, throttling and server failures may pass on a retry.
fn keeps(status: StatusCode) -> bool {
    (status.is_success() || status.is_client_error())
        && !matches!(
            status,
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT
        )
}

fn checked_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(format!(
            "an Idempotency-Key is 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(key.to_owned())
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn replay(answer: Answer) -> Response {
    let mut response = respond(answer);
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The metadata of a command that comes in over HTTP: the request's trace and correlation id
/// ([`super::trace`]), and the command id of the request's `Idempotency-Key` (a fresh one
/// without a key).
pub struct RequestMetadata(pub Metadata);

impl<S: Send + Sync> FromRequestParts<S> for RequestMetadata {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let command_id = parts
            .extensions
            .get::<CommandId>()
            .copied()
            .unwrap_or_default();
        let mut metadata = Metadata::new_request()
            .with_actor("http")
            .with_command_id(command_id);
        if let Some(context) = parts.extensions.get::<super::trace::RequestContext>() {
            metadata.correlation_id = Some(context.correlation_id);
            metadata = metadata.with_trace(&context.trace);
        }
        Ok(Self(metadata))
    }
}
