//! W3C trace context: the `traceparent` that ties a request, the events it caused, the
//! process steps they started and the messages other services consumed into one trace.
//!
//! [`Metadata::traceparent`](crate::Metadata::traceparent) keeps it with every event;
//! [`Metadata::caused_by`](crate::Metadata::caused_by) hands it on to the work an event causes,
//! and brokers carry it as the CloudEvents `traceparent` attribute.
//!
//! ```
//! use cqrs_core::trace::TraceParent;
//!
//! let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let parent = TraceParent::parse(incoming).unwrap();
//! assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(parent.to_string(), incoming);
//! assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! let root = TraceParent::new_root();
//! assert_ne!(root.trace_id(), parent.trace_id());
//! ```

use std::fmt;

use uuid::Uuid;

/// The name of the W3C trace-context header (HTTP) and message header (brokers).
pub const HEADER: &str = "traceparent";

/// A valid W3C `traceparent` (version `00`): trace id, parent id, flags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_hex(len: usize) -> String {
    let mut hex = Uuid::new_v4().simple().to_string();
    hex.truncate(len);
    hex
}

impl TraceParent {
    /// Reads a `traceparent` header value; `None` when it is not one the W3C rules accept
    /// (the caller then starts a new trace, as the rules ask).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = is_hex(version, 2)
            && version != "ff"
            // Version 00 has exactly four fields; a later version may add more.
            && (version != "00" || parts.next().is_none())
            && is_hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && is_hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && is_hex(flags, 2);
        valid.then(|| Self {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// The start of a new trace (sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: random_hex(32),
            parent_id: random_hex(16),
            flags: "01".to_owned(),
        }
    }

    /// The same trace, with a new parent id: what a step of it passes on. Only the flags
    /// defined so far (sampled, random) are kept.
    pub fn child(&self) -> Self {
        let flags = u8::from_str_radix(&self.flags, 16).unwrap_or(0) & 0x03;
        Self {
            trace_id: self.trace_id.clone(),
            parent_id: random_hex(16),
            flags: format!("{flags:02x}"),
        }
    }

    /// The trace id: 32 lowercase hex digits, the same across the whole trace.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The parent id: 16 lowercase hex digits, the span this part of the trace hangs from.
    pub fn parent_id(&self) -> &str {
        &self.parent_id
    }

    /// Whether the trace is sampled (the flags' lowest bit).
    pub fn is_sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|f| f & 0x01 == 1)
    }
}

/// This service's part of the trace `caller` started (a new trace without one), answered in
/// `span`: with feature `otel` and an OpenTelemetry layer recording `span`, `span` becomes the
/// child of `caller` and the part's parent id is `span`'s own, so what follows from it hangs
/// from `span` in the exported trace; otherwise a fresh parent id.
pub fn part_of(span: &tracing::Span, caller: Option<&TraceParent>) -> TraceParent {
    #[cfg(feature = "otel")]
    if let Some(own) = otel::adopt(span, caller) {
        return own;
    }
    let _ = span;
    caller.map_or_else(TraceParent::new_root, TraceParent::child)
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceParent;

    /// Makes `span` the OpenTelemetry child of `parent`.
    pub(super) fn set_parent(span: &tracing::Span, parent: &TraceParent) {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(parent.trace_id()),
            SpanId::from_hex(parent.parent_id()),
        ) else {
            return;
        };
        let flags = if parent.is_sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
        // Refused only once the span was started, when its parent is settled already.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// `span`'s own part of the trace, if an OpenTelemetry layer records it.
    pub(super) fn adopt(span: &tracing::Span, caller: Option<&TraceParent>) -> Option<TraceParent> {
        if let Some(caller) = caller {
            set_parent(span, caller);
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        own.is_valid().then(|| TraceParent {
            trace_id: own.trace_id().to_string(),
            parent_id: own.span_id().to_string(),
            flags: if own.is_sampled() { "01" } else { "00" }.to_owned(),
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// Records `metadata`'s trace id, correlation id and causation id on `span`, whose fields
/// `trace_id`, `correlation_id` and `causation_id` were declared (as `tracing::field::Empty`);
/// what the metadata lacks stays empty. With feature `otel`, `span` (not entered yet) also
/// becomes the OpenTelemetry child of the metadata's `traceparent`.
pub fn record_on(span: &tracing::Span, metadata: &crate::Metadata) {
    record_ids(
        span,
        metadata.traceparent.as_deref(),
        metadata.correlation_id,
        metadata.causation_id,
    );
}

/// [`record_on`] for ids carried elsewhere than in a [`Metadata`](crate::Metadata) (a
/// message's attributes, say); a `traceparent` the W3C rules refuse is left out. Nothing is
/// done for a span no subscriber records.
pub fn record_ids(
    span: &tracing::Span,
    traceparent: Option<&str>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
) {
    // A span no subscriber records (a debug span, as a rule) costs no parsing.
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = traceparent.and_then(TraceParent::parse) {
        span.record("trace_id", parent.trace_id());
        #[cfg(feature = "otel")]
        otel::set_parent(span, &parent);
    }
    if let Some(id) = correlation_id {
        span.record("correlation_id", tracing::field::display(id));
    }
    if let Some(id) = causation_id {
        span.record("causation_id", tracing::field::display(id));
    }
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn only_well_formed_trace_parents_are_accepted() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceParent::parse(good).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root.clone()));
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child, root);
        // Flags not defined yet are not handed on.
        let odd = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff");
        assert!(odd.expect("valid").child().to_string().ends_with("-03"));
    }
}
