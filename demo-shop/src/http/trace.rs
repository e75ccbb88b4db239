//! Trace context of a request: the W3C `traceparent` header read (or a new trace started when
//! there is none, or none the rules accept), a correlation id minted, both put on the request
//! for [`RequestMetadata`](super::idempotency::RequestMetadata), so that every event the
//! request causes carries them, and on the span the request is answered in. The answer
//! carries the `traceparent` of this service's part of the trace.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use cqrs_core::trace::TraceParent;
use tracing::Instrument;
use uuid::Uuid;

/// The header of the W3C trace context.
pub const TRACEPARENT: &str = cqrs_core::trace::HEADER;

/// What a request's commands are traced and correlated by.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// This service's part of the trace: the caller's trace (or a new one), a parent id of
    /// its own.
    pub trace: TraceParent,
    /// Ties together everything that follows from this request.
    pub correlation_id: Uuid,
}

/// Middleware: reads or starts the trace, answers the request in a span with its trace and
/// correlation ids, and sends the `traceparent` back.
pub async fn trace_context(mut request: Request, next: Next) -> Response {
    // Several `traceparent` headers, or one the rules refuse: a new trace, as the rules ask.
    let mut headers = request.headers().get_all(TRACEPARENT).iter();
    let caller = match (headers.next(), headers.next()) {
        (Some(value), None) => value.to_str().ok().and_then(TraceParent::parse),
        _ => None,
    };
    let correlation_id = Uuid::new_v4();
    let route = crate::metrics::route_of(&request);
    let span = tracing::info_span!(
        "http_request",
        method = %request.method(),
        route,
        trace_id = tracing::field::Empty,
        correlation_id = %correlation_id,
    );
    // With OpenTelemetry exporting (feature `otel`), this request's part is its span.
    let trace = cqrs_core::trace::part_of(&span, caller.as_ref());
    span.record("trace_id", trace.trace_id());
    let context = RequestContext {
        trace,
        correlation_id,
    };
    let header = HeaderValue::from_str(&context.trace.to_string()).ok();
    request.extensions_mut().insert(context);
    let mut response = next.run(request).instrument(span).await;
    // A replayed answer belongs to the first request's trace, not this one's.
    let replayed = response
        .headers()
        .contains_key(super::idempotency::REPLAYED);
    if let (Some(header), false) = (header, replayed) {
        response.headers_mut().insert(TRACEPARENT, header);
    }
    response
}
