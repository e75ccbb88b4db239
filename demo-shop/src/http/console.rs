//! The web console, served by `serve` at `/console`: plain server-rendered HTML, one small
//! script that keeps the projections' figures live, nothing fetched from elsewhere.
//!
//! | page | shows |
//! | --- | --- |
//! | `GET /console` | every projection with state, generation, checkpoint, lag and lease (refreshed each second from `GET /status`), with pause/resume; the open dead letters of each, with retry and skip |
//! | `GET /console/streams?id=…&from=…` | a stream's events, a page at a time, with their metadata |
//! | `GET /console/correlations/{id}` | every event of one correlation id, across streams, in log order |
//!
//! Its forms `POST` to `/console/projections/{name}/…` and come back to the overview; a `POST`
//! a browser sends from another site is refused (403), and the pages forbid framing and any
//! script but the console's own (`/console/console.js`). The console has no login: give it
//! and `/metrics` a port only operators reach with `serve --admin-addr` (without it, they
//! share the API's port).

use std::fmt::Write as _;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cqrs_core::{EventFilter, Position, RecordedEvent, StreamId};
use projections::Resolution;
use serde::Deserialize;
use uuid::Uuid;

use super::extract::{Path, Query};
use super::AppState;

/// Events on one page of the stream browser.
pub(crate) const PAGE: usize = 50;
/// The most events a correlation page lists.
pub(crate) const CORRELATED_MAX: usize = 500;
/// Events read per round when the log is scanned for a correlation id.
const SCAN_PAGE: usize = 2_000;
/// The most events one correlation page scans; the page links to the next stretch.
pub(crate) const SCAN_MAX: usize = 100_000;

/// The console's routes.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/console.js", get(script))
        .route("/console/streams", get(stream))
        .route("/console/correlations/{id}", get(correlation))
        .route("/console/projections/{name}/{action}", post(operate))
        .route(
            "/console/projections/{name}/dead-letters/{event_id}/{action}",
            post(resolve),
        )
        .layer(axum::middleware::from_fn(guard))
}

/// Refuses a `POST` a browser sent from another site (a form there could otherwise pause a
/// projection or skip an event in the operator's name), and sends every answer with headers
/// that forbid framing, other scripts and caching.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::POST && !same_origin(request.headers()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "the console takes forms from its own pages only",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether a request comes from the console's own pages: a browser says so in
/// `Sec-Fetch-Site`, or (older ones) in an `Origin` naming this host; a request without
/// either is not a browser's (curl, a script) and cannot be forged by another site.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok();
    matches!((origin, host), (Some(origin), Some(host))
        if origin == format!("http://{host}") || origin == format!("https://{host}"))
}

/// `GET /console/console.js`: the console's one script.
async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// A page, or a page that says what went wrong.
type PageResult = Result<Html<String>, Response>;

/// An error page with `status`.
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = layout(
        "Error",
        &format!("<p class=\"error\">{}</p>", escape(message)),
    );
    (status, Html(body)).into_response()
}

/// A store failure as an error page: bad input 400, an outage 503 (try again), anything else
/// 500; the cause goes to the log, not to the page.
fn store_failed(error: cqrs_core::Error) -> Response {
    match error {
        cqrs_core::Error::InvalidInput(message) => error_page(StatusCode::BAD_REQUEST, &message),
        e if e.is_retryable() => unavailable(&e),
        e => internal(&e),
    }
}

/// A read-model failure as an error page (503 for an outage, 500 otherwise).
fn host_failed(error: projections::Error) -> Response {
    match error {
        projections::Error::Store(e) => store_failed(e),
        e if e.is_transient() => unavailable(&e),
        e => internal(&e),
    }
}

fn unavailable(error: &(dyn std::error::Error + 'static)) -> Response {
    tracing::warn!(error = %cqrs_core::error::chain(error), "console: the stores cannot be reached");
    let mut page = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "the stores cannot be reached now; try again",
    );
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    page
}

fn internal(error: &(dyn std::error::Error + 'static)) -> Response {
    tracing::error!(error = %cqrs_core::error::chain(error), "console: request failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

async fn overview(State(shop): AppState) -> PageResult {
    let host = shop.host();
    let statuses = host.status().await.map_err(host_failed)?;
    let mut body = String::from(
        "<h2>Projections <small id=\"updated\"></small></h2>\
         <table id=\"projections\"><thead><tr><th>projection</th><th>state</th><th>gen</th>\
         <th>checkpoint</th><th>head</th><th>lag (events)</th><th>lag (s)</th>\
         <th>lease holder</th><th>last error</th><th></th></tr></thead><tbody>",
    );
    for s in &statuses {
        let hosted = host.names().contains(&s.name.as_str());
        let action = if s.paused_at.is_some() {
            "resume"
        } else {
            "pause"
        };
        let button = if hosted {
            format!(
                "<form class=\"pause\" method=\"post\" action=\"/console/projections/{}/{action}\"><button>{action}</button></form>",
                query_escape(&s.name)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-projection=\"{name}\"><td>{name}</td><td data-field=\"state\">{state}</td>\
             <td data-field=\"generation\">{generation}</td><td data-field=\"checkpoint\">{checkpoint}</td>\
             <td data-field=\"head\">{head}</td><td data-field=\"lag_events\">{lag}</td>\
             <td data-field=\"lag_seconds\">{lag_s:.1}</td><td data-field=\"lease_holder\">{holder}</td>\
             <td data-field=\"last_error\">{error}</td><td>{button}</td></tr>",
            name = escape(&s.name),
            state = s.state.as_str(),
            generation = s.generation,
            checkpoint = escape(&s.checkpoint),
            head = escape(&s.head),
            lag = s.lag_events,
            lag_s = s.lag_seconds,
            holder = escape(s.lease_holder.as_deref().unwrap_or("")),
            error = escape(s.last_error.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table>");

    body.push_str("<h2>Dead letters</h2>");
    let mut any = false;
    for name in host.names() {
        let letters = host.dead_letters(name).await.map_err(host_failed)?;
        let open: Vec<_> = letters.iter().filter(|l| l.status.is_open()).collect();
        if open.is_empty() {
            continue;
        }
        any = true;
        let _ = write!(
            body,
            "<h3>{}</h3><table class=\"letters\" data-letters=\"{0}\"><thead><tr><th>event</th><th>stream</th>\
             <th>type</th><th>position</th><th>status</th><th>tries</th><th>error</th><th></th></tr></thead><tbody>",
            escape(name)
        );
        for letter in open {
            let f = &letter.failure;
            let forms: String = ["retry", "skip"]
                .iter()
                .map(|action| {
                    format!(
                        "<form method=\"post\" action=\"/console/projections/{}/dead-letters/{}/{action}\"><button>{action}</button></form>",
                        query_escape(name),
                        f.event_id
                    )
                })
                .collect();
            let _ = write!(
                body,
                "<tr><td><code>{id}</code></td><td><a href=\"/console/streams?id={stream_q}\">{stream}</a></td>\
                 <td>{ty}</td><td>{position}</td><td>{status}{blocking}</td><td>{tries}</td><td>{error}</td><td>{forms}</td></tr>",
                id = f.event_id,
                stream_q = query_escape(&f.stream_id),
                stream = escape(&f.stream_id),
                ty = escape(&f.event_type),
                position = f.position,
                status = letter.status.as_str(),
                blocking = if letter.blocking { " (stopped here)" } else { "" },
                tries = letter.attempts,
                error = escape(&f.error),
            );
        }
        body.push_str("</tbody></table>");
    }
    if !any {
        body.push_str("<p id=\"no-letters\">No open dead letters.</p>");
    }
    Ok(Html(layout("Projections", &body)))
}

/// The console's script: keeps the projections' figures live (`GET /status` a second after
/// the last answer, while the page is shown) and sends the correlation finder's form.
const SCRIPT: &str = r#"'use strict';
const table = document.getElementById('projections');
async function refresh() {
  const updated = document.getElementById('updated');
  try {
    if (document.hidden) return;
    const response = await fetch('/status', { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5000) });
    if (!response.ok) throw new Error('status ' + response.status);
    const status = await response.json();
    for (const s of status) {
      const row = table.querySelector(`tr[data-projection="${CSS.escape(s.name)}"]`);
      if (!row) continue;
      const set = (field, text) => { const cell = row.querySelector(`[data-field="${field}"]`); if (cell) cell.textContent = text; };
      set('state', s.state); set('generation', s.generation); set('checkpoint', s.checkpoint);
      set('head', s.head); set('lag_events', s.lag_events); set('lag_seconds', s.lag_seconds.toFixed(1));
      set('lease_holder', s.lease_holder ?? ''); set('last_error', s.last_error ?? '');
      const button = row.querySelector('form.pause button');
      if (button) {
        const action = s.paused_at ? 'resume' : 'pause';
        button.textContent = action;
        button.form.action = button.form.action.replace(/\/(pause|resume)$/, '/' + action);
      }
    }
    window.lastStatus = status;
    updated.textContent = 'live, ' + new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed ?? 0) + 1);
  } catch (e) {
    updated.textContent = 'not refreshed: ' + e.message;
  } finally {
    setTimeout(refresh, 1000);
  }
}
if (table) refresh();
document.getElementById('follow-correlation').addEventListener('submit', (event) => {
  event.preventDefault();
  location.href = '/console/correlations/' + encodeURIComponent(event.target.elements.c.value.trim());
});
"#;

/// `?id=…&from=…` of the stream browser.
#[derive(Debug, Default, Deserialize)]
struct StreamQuery {
    /// The stream id (`order-…`, `inventory-…`, `payment-…`).
    id: Option<String>,
    /// The first version to show.
    from: Option<u64>,
}

async fn stream(State(shop): AppState, Query(query): Query<StreamQuery>) -> PageResult {
    let Some(id) = query.id.filter(|id| !id.trim().is_empty()) else {
        return Ok(Html(layout(
            "Streams",
            "<p>Find a stream with the form above.</p>",
        )));
    };
    let stream = StreamId::new(id.trim()).map_err(|e| {
        error_page(
            StatusCode::BAD_REQUEST,
            &format!("{id:?} is not a stream id: {e}"),
        )
    })?;
    let from = query.from.unwrap_or(1).max(1);
    let store = &shop.storage().store;
    let events = store
        .read_stream(&stream, from, PAGE + 1)
        .await
        .map_err(store_failed)?;
    if events.is_empty() {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            &format!("stream {stream} holds no event from version {from} on"),
        ));
    }
    let more = events.len() > PAGE;
    let shown = &events[..events.len().min(PAGE)];
    let mut body = format!(
        "<h2>Stream <code id=\"stream\">{}</code></h2>",
        escape(stream.as_str())
    );
    let q = query_escape(stream.as_str());
    body.push_str("<p class=\"pages\">");
    if from > 1 {
        let back = from.saturating_sub(PAGE as u64).max(1);
        let _ = write!(
            body,
            "<a id=\"earlier\" href=\"/console/streams?id={q}&amp;from={back}\">← earlier</a> "
        );
    }
    if more {
        let next = from + PAGE as u64;
        let _ = write!(
            body,
            "<a id=\"later\" href=\"/console/streams?id={q}&amp;from={next}\">later →</a>"
        );
    }
    body.push_str("</p>");
    body.push_str(&events_table(shown, false));
    Ok(Html(layout(stream.as_str(), &body)))
}

/// `?after=…` of a correlation page: where its scan of the log starts.
#[derive(Debug, Default, Deserialize)]
struct ScanFrom {
    /// A position (`commit/sequence`); the start of the log without it.
    after: Option<String>,
}

/// Scans the log (from `?after=`, at most [`SCAN_MAX`] events, up to the end it had when the
/// request came) for the events of one correlation id; a page that stopped short links to
/// the rest.
async fn correlation(
    State(shop): AppState,
    Path(id): Path<Uuid>,
    Query(from): Query<ScanFrom>,
) -> PageResult {
    let mut after = match from.after.as_deref() {
        None => Position::START,
        Some(text) => text.parse().map_err(store_failed)?,
    };
    let store = &shop.storage().store;
    let end = store.read_barrier().await.map_err(store_failed)?;
    let mut found = Vec::new();
    let mut scanned = 0;
    while after < end && scanned < SCAN_MAX && found.len() < CORRELATED_MAX {
        let page = store
            .read_all(after, SCAN_PAGE, &EventFilter::all())
            .await
            .map_err(store_failed)?;
        let mut reached = page.scanned_to;
        for event in &page.events {
            if event.metadata.correlation_id == Some(id) {
                if found.len() == CORRELATED_MAX {
                    // The next page starts just before this match, so it misses none.
                    reached = found.last().map_or(after, |e: &RecordedEvent| e.position);
                    break;
                }
                found.push(event.clone());
            }
        }
        scanned += page.events.len();
        if reached <= after {
            break; // Held back by an open transaction: the rest is not readable yet.
        }
        after = reached;
    }
    let mut body = format!(
        "<h2>Correlation <code id=\"correlation\">{id}</code>: {} events</h2>",
        found.len()
    );
    if !found.is_empty() {
        body.push_str(&events_table(&found, true));
    }
    if after < end {
        let _ = write!(
            body,
            "<p>Scanned the log up to {after}. <a id=\"scan-on\" href=\"/console/correlations/{id}?after={after}\">Scan on from there</a></p>"
        );
    }
    Ok(Html(layout("Correlation", &body)))
}

/// A table of events with their metadata; `with_stream` adds the stream of each.
fn events_table(events: &[RecordedEvent], with_stream: bool) -> String {
    let mut html = String::from("<table id=\"events\"><thead><tr>");
    if with_stream {
        html.push_str("<th>stream</th>");
    }
    html.push_str(
        "<th>version</th><th>position</th><th>recorded</th><th>type</th><th>trace</th>\
         <th>correlation</th><th>causation</th><th>payload</th></tr></thead><tbody>",
    );
    for e in events {
        html.push_str("<tr class=\"event\">");
        if with_stream {
            let _ = write!(
                html,
                "<td><a href=\"/console/streams?id={}\">{}</a></td>",
                query_escape(e.stream_id.as_str()),
                escape(e.stream_id.as_str())
            );
        }
        let trace = e.metadata.trace();
        let correlation = e.metadata.correlation_id.map_or_else(String::new, |c| {
            format!("<a class=\"correlation\" href=\"/console/correlations/{c}\">{c}</a>")
        });
        let payload = serde_json::to_string_pretty(&e.event.payload).unwrap_or_default();
        let _ = write!(
            html,
            "<td>{version}</td><td>{position}</td><td>{at}</td><td class=\"type\">{ty}</td>\
             <td><code>{trace}</code></td><td>{correlation}</td><td><code>{causation}</code></td>\
             <td><pre>{payload}</pre></td></tr>",
            version = e.stream_version,
            position = e.position,
            at = e
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ty = escape(&e.event.event_type),
            trace = trace.as_ref().map_or("", |t| t.trace_id()),
            causation = e
                .metadata
                .causation_id
                .map_or_else(String::new, |c| c.to_string()),
            payload = escape(&payload),
        );
    }
    html.push_str("</tbody></table>");
    html
}

/// `POST /console/projections/{name}/pause|resume`.
async fn operate(
    State(shop): AppState,
    Path((name, action)): Path<(String, String)>,
) -> Result<Redirect, Response> {
    let done = match action.as_str() {
        "pause" => shop.host().pause(&name).await,
        "resume" => shop.host().resume(&name).await,
        _ => return Err(error_page(StatusCode::NOT_FOUND, "no such action")),
    };
    done.map_err(operation_failed)?;
    Ok(Redirect::to("/console"))
}

/// `POST /console/projections/{name}/dead-letters/{event_id}/retry|skip`.
async fn resolve(
    State(shop): AppState,
    Path((name, event_id, action)): Path<(String, Uuid, String)>,
) -> Result<Redirect, Response> {
    let resolution = match action.as_str() {
        "retry" => Resolution::Retry,
        "skip" => Resolution::Skip,
        _ => return Err(error_page(StatusCode::NOT_FOUND, "no such action")),
    };
    shop.host()
        .resolve_dead_letter(&name, event_id, resolution)
        .await
        .map_err(operation_failed)?;
    Ok(Redirect::to("/console"))
}

/// An operation the host refused (404 for what is not there) or could not carry out (503).
fn operation_failed(error: projections::Error) -> Response {
    match error {
        projections::Error::UnknownProjection(_) | projections::Error::NoDeadLetter { .. } => {
            error_page(StatusCode::NOT_FOUND, &error.to_string())
        }
        error => host_failed(error),
    }
}

/// The page around `body`: the title, the navigation with the stream and correlation
/// finders, and the style.
fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><link rel=\"icon\" href=\"data:,\">\
         <title>{title} · demo-shop console</title><style>{STYLE}</style></head><body>\
         <header><h1><a href=\"/console\">demo-shop console</a></h1>\
         <form action=\"/console/streams\" method=\"get\"><input name=\"id\" placeholder=\"stream id, e.g. order-…\" aria-label=\"stream id\"><button>find stream</button></form>\
         <form id=\"follow-correlation\"><input name=\"c\" placeholder=\"correlation id\" aria-label=\"correlation id\"><button>follow correlation</button></form>\
         </header><main>{body}</main><script src=\"/console/console.js\"></script></body></html>",
        title = escape(title),
    )
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330}\
header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.2em;background:#1d2330;color:#fff}\
header a{color:#fff;text-decoration:none}h1{font-size:1.1em;margin:0}main{padding:1em 1.2em}\
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}th,td{border-bottom:1px solid #dde;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f2f4f8}pre{margin:0;font-size:12px;white-space:pre-wrap;max-width:40em}code{font-size:12px}\
form{display:inline}small{font-weight:normal;color:#667}.error{color:#a00}";

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a query-string value (percent-encoded, then safe in an attribute).
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html_and_queries() {
        assert_eq!(
            escape(r#"<script>alert("x&'y")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(query_escape("order-1 2&x=é"), "order-1%202%26x%3D%C3%A9");
    }

    #[test]
    fn only_the_consoles_own_pages_and_non_browsers_may_post() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[])), "curl sends neither");
        let host = ("host", "127.0.0.1:3000");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:3000")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
    }
}
