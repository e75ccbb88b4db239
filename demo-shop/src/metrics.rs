//! The shop's Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! The names, labels and meanings below are a contract: dashboards and alerts rely on them,
//! so a change here is a breaking change of the service.
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `es_appends_total` | counter | `outcome`: `appended`, `already_stored` (a retry of a stored append: nothing written), `conflict` (expected version not met), `duplicate` (an event id stored before), `invalid` (bad input, a reused command id), `unavailable` (the store out of reach), `failed` | append attempts of the shop's commands; a command retried after a conflict counts once per attempt |
//! | `es_append_duration_seconds` | histogram | | how long an append attempt took (0.5 ms to 4 s buckets) |
//! | `es_projection_position_commit`, `es_projection_position_sequence` | gauge | `projection` | the two parts of the log position (`commit/sequence`) its checkpoint is at; the commit part grows as the log does, even while the projection has nothing to apply |
//! | `es_projection_lag_events` | gauge | `projection` | events of the log after its checkpoint, held-back ones included; events its filter skips count until its next idle checkpoint (a second at most); 0 when caught up |
//! | `es_projection_lag_seconds` | gauge | `projection` | while it has events after its checkpoint: seconds since the newest event it applied was recorded (so after a long quiet spell, the length of that spell until it applies the new ones); 0 when caught up |
//! | `es_log_held_back_events` | gauge | | committed events no reader can see yet, held back by an open transaction (the log's, not one projection's) |
//! | `es_projection_state` | gauge | `projection`, `state`: `running`, `catching_up`, `stalled`, `failed`, `rebuilding`, `paused` | 1 for the state it is in, 0 for the others |
//! | `es_projection_dead_letters` | gauge | `projection` | dead letters an operator has still to retry or skip (projections this process hosts) |
//! | `es_projection_lease_held` | gauge | `projection` | 1 while a process holds its lease, 0 while none does |
//! | `es_projection_lease_holder` | gauge | `projection`, `holder` | 1 for the process (`pid@host`) holding its lease |
//! | `es_process_instances` | gauge | `process`, `status`: `active`, `retrying`, `parked` | the checkout's instances (`active`: neither retrying nor parked, finished ones included) |
//! | `es_process_due_inputs` | gauge | `process` | inputs of the checkout due and not handled yet |
//! | `es_metrics_refresh_errors_total` | counter | | scrapes whose gauges could not be read from the stores within 2 s (the gauges are then left out of that scrape) |
//! | `http_requests_total` | counter | `method` (`other` for a non-standard one), `route` (the template, `/orders/{id}`; `unmatched` for an unknown path), `status` | requests answered |
//! | `http_request_duration_seconds` | histogram | `method`, `route` | how long answering took |
//!
//! Projections include the relays of events to a broker (`relay_*`): their position is how
//! far the broker has been told (a relay started on its own, outside the host, has no dead
//! letter gauge). The gauges are read from the stores when `/metrics` is scraped, so they are
//! never older than the scrape; lag reads 0 within a second of catching up.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cqrs_core::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, Horizon, Metadata, NewEvent, Position,
    ReadAllPage, RecordedEvent, ReplayedEvent, Snapshot, StreamId,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::AppState;

/// The content type of `/metrics`.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfProjection {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionState {
    projection: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseHolder {
    projection: String,
    holder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceStatus {
    process: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfProcess {
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRequest {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRoute {
    method: &'static str,
    route: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the shop, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    appends: Family<Outcome, Counter>,
    append_seconds: Histogram,
    projection_commit: Family<OfProjection, Gauge>,
    projection_sequence: Family<OfProjection, Gauge>,
    projection_lag_events: Family<OfProjection, Gauge>,
    projection_lag_seconds: Family<OfProjection, FloatGauge>,
    log_held_back: Gauge,
    projection_state: Family<ProjectionState, Gauge>,
    projection_dead_letters: Family<OfProjection, Gauge>,
    projection_lease: Family<LeaseHolder, Gauge>,
    projection_lease_held: Family<OfProjection, Gauge>,
    refresh_errors: Counter,
    process_instances: Family<InstanceStatus, Gauge>,
    process_due_inputs: Family<OfProcess, Gauge>,
    http_requests: Family<HttpRequest, Counter>,
    http_seconds: Family<HttpRoute, Histogram>,
    /// Scrapes refresh and encode the gauges one at a time (two at once would interleave
    /// one's clearing with the other's reading).
    scraping: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `metric`, registered under `name` with `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

fn latency_histogram() -> Histogram {
    // 0.5 ms, 1 ms, 2 ms … 4.1 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let metrics = Self {
            appends: registered(r, "es_appends", "Append attempts of the shop's commands to the event store, by outcome", Family::default()),
            append_seconds: registered(r, "es_append_duration_seconds", "How long an append attempt took", latency_histogram()),
            projection_commit: registered(r, "es_projection_position_commit", "Commit part of the log position a projection's checkpoint is at", Family::default()),
            projection_sequence: registered(r, "es_projection_position_sequence", "Sequence part of the log position a projection's checkpoint is at", Family::default()),
            projection_lag_events: registered(r, "es_projection_lag_events", "Events of the log after a projection's checkpoint, held-back ones included", Family::default()),
            projection_lag_seconds: registered(r, "es_projection_lag_seconds", "Age of the newest event a projection applied, while it is behind; 0 when caught up", Family::default()),
            log_held_back: registered(r, "es_log_held_back_events", "Committed events no reader can see yet, held back by an open transaction", Gauge::default()),
            projection_state: registered(r, "es_projection_state", "1 for the state a projection is in, 0 for the others", Family::default()),
            projection_dead_letters: registered(r, "es_projection_dead_letters", "Dead letters an operator still has to retry or skip", Family::default()),
            projection_lease: registered(r, "es_projection_lease_holder", "1 for the process holding a projection's lease", Family::default()),
            projection_lease_held: registered(r, "es_projection_lease_held", "1 while some process holds a projection's lease, 0 while none does", Family::default()),
            refresh_errors: registered(r, "es_metrics_refresh_errors", "Scrapes whose gauges could not be read from the stores", Counter::default()),
            process_instances: registered(r, "es_process_instances", "Instances of a process manager, by status", Family::default()),
            process_due_inputs: registered(r, "es_process_due_inputs", "Inputs of a process manager due and not handled yet", Family::default()),
            http_requests: registered(r, "http_requests", "HTTP requests answered, by route template and status", Family::default()),
            http_seconds: registered(r, "http_request_duration_seconds", "How long answering an HTTP request took", Family::new_with_constructor(latency_histogram as fn() -> _)),
            scraping: tokio::sync::Mutex::new(()),
            registry,
        };
        for outcome in APPEND_OUTCOMES {
            metrics
                .appends
                .get_or_create(&Outcome { outcome })
                .inc_by(0);
        }
        metrics
    }

    /// Counts one append attempt that ended with `outcome` after `took`.
    fn record_append(&self, outcome: &cqrs_core::Result<AppendResult>, took: Duration) {
        let outcome = match outcome {
            Ok(result) if result.already_stored => "already_stored",
            Ok(_) => "appended",
            Err(e) => append_error_outcome(e),
        };
        self.appends.get_or_create(&Outcome { outcome }).inc();
        self.append_seconds.observe(took.as_secs_f64());
    }

    /// Reads the projections' and the checkout's state from `shop` into the gauges (within
    /// [`REFRESH_TIMEOUT`]), and answers every metric in the OpenMetrics text format. When
    /// the stores cannot be read, the gauges are left out (so `absent()` alerts fire) and
    /// `es_metrics_refresh_errors_total` counts up; the counters are answered all the same.
    pub async fn scrape(&self, shop: &crate::shop::Shop) -> Result<String, ApiError> {
        let _one_at_a_time = self.scraping.lock().await;
        let read = tokio::time::timeout(REFRESH_TIMEOUT, Gauges::read(shop)).await;
        self.clear_gauges();
        match read {
            Ok(Ok(gauges)) => self.set_gauges(&gauges),
            Ok(Err(error)) => {
                tracing::warn!(error = %cqrs_core::error::chain(&error), "metrics: the gauges could not be read");
                self.refresh_errors.inc();
            }
            Err(_) => {
                tracing::warn!(timeout = ?REFRESH_TIMEOUT, "metrics: reading the gauges timed out");
                self.refresh_errors.inc();
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|_| ApiError::internal("the metrics could not be encoded"))?;
        Ok(text)
    }

    fn clear_gauges(&self) {
        for family in [
            &self.projection_commit,
            &self.projection_sequence,
            &self.projection_lag_events,
            &self.projection_dead_letters,
            &self.projection_lease_held,
        ] {
            family.clear();
        }
        self.projection_lag_seconds.clear();
        self.projection_state.clear();
        self.projection_lease.clear();
        self.process_instances.clear();
        self.process_due_inputs.clear();
        self.log_held_back.set(0);
    }

    fn set_gauges(&self, gauges: &Gauges) {
        for (status, dead_letters) in &gauges.projections {
            let name = label(&status.name);
            let of = OfProjection {
                projection: name.clone(),
            };
            if let Ok(position) = status.checkpoint.parse::<Position>() {
                self.projection_commit
                    .get_or_create(&of)
                    .set(gauge(position.commit));
                self.projection_sequence
                    .get_or_create(&of)
                    .set(gauge(position.sequence));
            }
            self.projection_lag_events
                .get_or_create(&of)
                .set(gauge(status.lag_events));
            self.projection_lag_seconds
                .get_or_create(&of)
                .set(status.lag_seconds);
            if let Some(open) = dead_letters {
                self.projection_dead_letters
                    .get_or_create(&of)
                    .set(gauge(*open));
            }
            for state in projections::ProjectionState::ALL {
                self.projection_state
                    .get_or_create(&ProjectionState {
                        projection: name.clone(),
                        state: state.as_str(),
                    })
                    .set(i64::from(status.state == state));
            }
            self.projection_lease_held
                .get_or_create(&of)
                .set(i64::from(status.lease_holder.is_some()));
            if let Some(holder) = &status.lease_holder {
                self.projection_lease
                    .get_or_create(&LeaseHolder {
                        projection: name,
                        holder: label(holder),
                    })
                    .set(1);
            }
        }
        self.log_held_back.set(gauge(gauges.held_back));
        let summary = &gauges.checkout;
        let process = crate::checkout::NAME.to_owned();
        let active = summary
            .instances
            .saturating_sub(summary.retrying)
            .saturating_sub(summary.parked);
        for (status, count) in [
            ("active", active),
            ("retrying", summary.retrying),
            ("parked", summary.parked),
        ] {
            self.process_instances
                .get_or_create(&InstanceStatus {
                    process: process.clone(),
                    status,
                })
                .set(gauge(count));
        }
        self.process_due_inputs
            .get_or_create(&OfProcess { process })
            .set(gauge(summary.due_inputs));
    }
}

/// How long a scrape may spend reading the gauges from the stores.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the gauges show, read from the stores.
struct Gauges {
    /// Each projection's status, and its open dead letters (`None` for one another process
    /// hosts: only its host can list them).
    projections: Vec<(projections::ProjectionStatus, Option<u64>)>,
    checkout: projections::process::ProcessSummary,
    /// Committed events no reader can see yet (the log's, whatever projections there are).
    held_back: u64,
}

impl Gauges {
    async fn read(shop: &crate::shop::Shop) -> Result<Self, crate::shop::ShopError> {
        let mut projections = Vec::new();
        for status in shop.host().status().await? {
            let open = match shop.host().dead_letters(&status.name).await {
                Ok(letters) => Some(letters.iter().filter(|d| d.status.is_open()).count() as u64),
                Err(projections::Error::UnknownProjection(_)) => None,
                Err(error) => return Err(error.into()),
            };
            projections.push((status, open));
        }
        let checkout = shop.checkout_summary().await?;
        // Every status read the horizon already; without projections, it is read here.
        let held_back = match projections.first() {
            Some((status, _)) => status.held_back_events,
            None => shop.storage().store.horizon().await?.held_back,
        };
        Ok(Self {
            projections,
            checkout,
            held_back,
        })
    }
}

/// The outcome label of an append that failed with `error`.
fn append_error_outcome(error: &cqrs_core::Error) -> &'static str {
    match error {
        e if e.is_conflict() => "conflict",
        cqrs_core::Error::DuplicateEventId { .. } => "duplicate",
        cqrs_core::Error::InvalidInput(_) | cqrs_core::Error::CommandReused { .. } => "invalid",
        e if e.is_retryable() => "unavailable",
        _ => "failed",
    }
}

/// Every outcome label of `es_appends_total`, present from the start at 0.
const APPEND_OUTCOMES: [&str; 7] = [
    "appended",
    "already_stored",
    "conflict",
    "duplicate",
    "invalid",
    "unavailable",
    "failed",
];

/// A label value safe in the text format whatever it holds (a host name from the
/// environment, say): quotes, backslashes and line breaks become `_`.
fn label(value: &str) -> String {
    value.replace(['"', '\\', '\n', '\r'], "_")
}

/// The method label: the standard methods, and `other` for any token a client made up (which
/// would otherwise add a series per token).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `GET /metrics`: refreshes the gauges from the stores and answers every metric.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Every metric, in the OpenMetrics text format (names and meanings: the metrics module)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn scrape(State(shop): AppState) -> Result<Response, ApiError> {
    let text = shop.metrics().scrape(&shop).await?;
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text).into_response())
}

/// The route template a request matched (`/orders/{id}`), or `unmatched`.
pub(crate) fn route_of(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// Middleware: counts every request by method, route template and status, and times it.
pub async fn track_requests(State(shop): AppState, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = route_of(&request).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = shop.metrics();
    metrics
        .http_seconds
        .get_or_create(&HttpRoute {
            method,
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpRequest {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// An event store that counts and times the appends made through it.
pub struct MeteredStore {
    inner: Arc<dyn EventStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// `inner`, with its appends recorded in `metrics`.
    pub fn new(inner: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl EventStore for MeteredStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> cqrs_core::Result<AppendResult> {
        let started = Instant::now();
        let result = self.inner.append(stream, expected, events, metadata).await;
        self.metrics.record_append(&result, started.elapsed());
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> cqrs_core::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn replay_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
        apply: &mut (dyn FnMut(ReplayedEvent) -> cqrs_core::Result<()> + Send),
    ) -> cqrs_core::Result<usize> {
        self.inner
            .replay_stream(stream, from_version, limit, apply)
            .await
    }
    async fn read_event(&self, event_id: Uuid) -> cqrs_core::Result<Option<RecordedEvent>> {
        self.inner.read_event(event_id).await
    }

    async fn stream_version(&self, stream: &StreamId) -> cqrs_core::Result<u64> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> cqrs_core::Result<ReadAllPage> {
        self.inner.read_all(after, limit, filter).await
    }

    async fn head(&self) -> cqrs_core::Result<Position> {
        self.inner.head().await
    }

    async fn read_barrier(&self) -> cqrs_core::Result<Position> {
        self.inner.read_barrier().await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> cqrs_core::Result<bool> {
        self.inner.wait_for_events(after, timeout).await
    }

    async fn count_after(&self, after: Position, limit: u64) -> cqrs_core::Result<u64> {
        self.inner.count_after(after, limit).await
    }

    async fn horizon(&self) -> cqrs_core::Result<Horizon> {
        self.inner.horizon().await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> cqrs_core::Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
    async fn load_snapshot_and_tail(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> cqrs_core::Result<cqrs_core::SnapshotAndTail> {
        self.inner
            .load_snapshot_and_tail(stream, schema_version, limit)
            .await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> cqrs_core::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
}
