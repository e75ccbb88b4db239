//! Logs, and (with the cargo feature `otel`) spans exported over OTLP.
//!
//! Logs go to stderr (stdout holds what a command prints), coloured only on a terminal and
//! never with `NO_COLOR` set (<https://no-color.org>); `RUST_LOG` filters them.
//!
//! Built with `--features otel` and run with `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g.
//! `http://127.0.0.1:4318`, an OpenTelemetry collector's OTLP/HTTP port), the service also
//! exports its spans: the HTTP request, the command, the checkout's steps and the broker
//! consumer's handlers, each the child of the W3C `traceparent` it works for, so one order is
//! one trace across services. `OTEL_SERVICE_NAME` names the service (`demo-shop` otherwise);
//! the exporter's other `OTEL_EXPORTER_OTLP_*` variables apply.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the exporter running; dropping it sends the spans still buffered.
#[must_use = "dropping it stops the export"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("demo-shop: the last spans could not be exported: {error}");
            }
        }
    }
}

/// Installs the logs (at `default_level` unless `RUST_LOG` says otherwise) and, where it is
/// built in and configured, the span export. An exporter that cannot be built is reported
/// on stderr and left out: the service runs without it.
pub fn init(default_level: &str) -> Telemetry {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter).with(logs);
    #[cfg(feature = "otel")]
    {
        let provider = otlp::provider();
        let layer = provider.as_ref().map(otlp::layer);
        registry.with(layer).init();
        Telemetry { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        Telemetry {}
    }
}

#[cfg(feature = "otel")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// The span exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub(super) fn provider() -> Option<SdkTracerProvider> {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("demo-shop: no span export: {error}");
                return None;
            }
        };
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "demo-shop".to_owned());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(name)
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    }

    /// The layer that turns spans into OpenTelemetry spans for `provider`.
    pub(super) fn layer<S>(
        provider: &SdkTracerProvider,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("demo-shop"))
    }
}
