//! With the feature `otel`: a request is an OpenTelemetry span in its caller's trace, and the
//! events it stores hang from that span (`cargo test -p demo-shop --features otel --test otel`).
#![cfg(feature = "otel")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use demo_shop::gateway::SimulatedGateway;
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Keeps what is exported.
#[derive(Clone, Debug, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("spans").extend(batch);
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_is_a_span_of_its_callers_trace_and_its_events_hang_from_it() {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // One thread: the server's tasks run under this subscriber too.
    let _subscriber = tracing::subscriber::set_default(subscriber);

    let shop = Arc::new(Shop::new(
        Storage::in_memory(),
        Arc::new(SimulatedGateway::new()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = demo_shop::http::router(Arc::clone(&shop));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let body = serde_json::json!({ "sku": "MUG", "name": "Mug", "price_cents": 1200 });
    let (status, answer) = demo_shop::http_client::request_with_headers(
        addr,
        "POST",
        "/products",
        Some(&body),
        &[("traceparent", &caller)],
        Duration::from_secs(10),
    )
    .await
    .expect("register a product");
    assert_eq!(status, 202, "{answer}");
    provider.force_flush().expect("flush");

    let spans = collected.0.lock().expect("spans").clone();
    let request = spans
        .iter()
        .find(|s| s.name == "http_request")
        .unwrap_or_else(|| panic!("no http_request span among {spans:?}"));
    assert_eq!(request.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(request.parent_span_id.to_string(), CALLER_SPAN);

    let stream = cqrs_core::StreamId::new("inventory-MUG").expect("stream id");
    let events =
        cqrs_core::store::read_stream_to_end(shop.storage().store.as_ref(), &stream, 1, 10)
            .await
            .expect("read");
    let stored = events[0]
        .metadata
        .trace()
        .expect("the event carries the trace");
    assert_eq!(stored.trace_id(), TRACE_ID);
    assert_eq!(
        stored.parent_id(),
        request.span_context.span_id().to_string(),
        "the event hangs from the request's span"
    );
}
