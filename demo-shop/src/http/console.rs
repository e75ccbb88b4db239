//! The web console, served by `serve` at `/console`: plain server-rendered HTML, one small
//! script that keeps the projections' figures live, nothing fetched from elsewhere.
//!
//! | page | shows |
//! | --- | --- |
//! | `GET /console` | every projection with state, generation, checkpoint, lag and lease (refreshed each second from `GET /status`), with pause/resume; the open dead letters of each, with retry and skip |
//! | `GET /console/streams?id=…&from=…` | a stream's events, a page at a time, with their metadata |
//! | `GET /console/correlations/{id}` | every event of one correlation id, across streams, in log order |
//!
//! Its forms `POST` to `/console/projections/{name}/…` and come back to the overview. The
//! console has no login: serve it where only operators reach (as `/metrics`).

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::StatusCode;
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
pub const PAGE: usize = 50;
/// The most events a correlation page lists.
pub const CORRELATED_MAX: usize = 500;
/// Events read per round when the log is scanned for a correlation id.
const SCAN_PAGE: usize = 2_000;

/// The console's routes.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/streams", get(stream))
        .route("/console/correlations/{id}", get(correlation))
        .route("/console/projections/{name}/{action}", post(operate))
        .route(
            "/console/projections/{name}/dead-letters/{event_id}/{action}",
            post(resolve),
        )
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

/// A store or read-model failure as an error page (503: try again).
fn unavailable(error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "console: the stores cannot be read");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the stores cannot be read now: {error}"),
    )
}

async fn overview(State(shop): AppState) -> PageResult {
    let host = shop.host();
    let statuses = host.status().await.map_err(unavailable)?;
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
                "<form method=\"post\" action=\"/console/projections/{}/{action}\"><button>{action}</button></form>",
                escape(&s.name)
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
        let letters = host.dead_letters(name).await.map_err(unavailable)?;
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
                        escape(name),
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
    body.push_str(LIVE_SCRIPT);
    Ok(Html(layout("Projections", &body)))
}

/// Keeps the projections' figures live: `GET /status` each second into the table's cells.
const LIVE_SCRIPT: &str = r#"<script>
async function refresh() {
  try {
    const response = await fetch('/status', { headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error('status ' + response.status);
    for (const s of await response.json()) {
      const row = document.querySelector(`tr[data-projection="${CSS.escape(s.name)}"]`);
      if (!row) continue;
      const set = (field, text) => { const cell = row.querySelector(`[data-field="${field}"]`); if (cell) cell.textContent = text; };
      set('state', s.state); set('generation', s.generation); set('checkpoint', s.checkpoint);
      set('head', s.head); set('lag_events', s.lag_events); set('lag_seconds', s.lag_seconds.toFixed(1));
      set('lease_holder', s.lease_holder ?? ''); set('last_error', s.last_error ?? '');
    }
    document.getElementById('updated').textContent = 'live, ' + new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed ?? 0) + 1);
  } catch (e) {
    document.getElementById('updated').textContent = 'not refreshed: ' + e.message;
  }
}
refresh();
setInterval(refresh, 1000);
</script>"#;

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
        .map_err(unavailable)?;
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
            "<a id=\"newer\" href=\"/console/streams?id={q}&amp;from={back}\">← earlier</a> "
        );
    }
    if more {
        let next = from + PAGE as u64;
        let _ = write!(
            body,
            "<a id=\"older\" href=\"/console/streams?id={q}&amp;from={next}\">later →</a>"
        );
    }
    body.push_str("</p>");
    body.push_str(&events_table(shown, false));
    Ok(Html(layout(stream.as_str(), &body)))
}

async fn correlation(State(shop): AppState, Path(id): Path<Uuid>) -> PageResult {
    let store = &shop.storage().store;
    let mut after = Position::START;
    let mut found = Vec::new();
    loop {
        let page = store
            .read_all(after, SCAN_PAGE, &EventFilter::all())
            .await
            .map_err(unavailable)?;
        found.extend(
            page.events
                .iter()
                .filter(|e| e.metadata.correlation_id == Some(id))
                .cloned(),
        );
        if page.events.is_empty() || found.len() >= CORRELATED_MAX || page.scanned_to <= after {
            break;
        }
        after = page.scanned_to;
    }
    found.truncate(CORRELATED_MAX);
    let body = if found.is_empty() {
        format!("<p>No event carries the correlation id <code>{id}</code>.</p>")
    } else {
        format!(
            "<h2>Correlation <code id=\"correlation\">{id}</code>: {} events</h2>{}",
            found.len(),
            events_table(&found, true)
        )
    };
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
    done.map_err(|e| operation_failed(&e))?;
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
        .map_err(|e| operation_failed(&e))?;
    Ok(Redirect::to("/console"))
}

/// An operation the host refused (404 for what is not there) or could not carry out (503).
fn operation_failed(error: &projections::Error) -> Response {
    match error {
        projections::Error::UnknownProjection(_) | projections::Error::NoDeadLetter { .. } => {
            error_page(StatusCode::NOT_FOUND, &error.to_string())
        }
        _ => unavailable(error),
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
         <form onsubmit=\"location.href='/console/correlations/'+encodeURIComponent(this.elements.c.value.trim());return false\"><input name=\"c\" placeholder=\"correlation id\" aria-label=\"correlation id\"><button>follow correlation</button></form>\
         </header><main>{body}</main></body></html>",
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
pub fn escape(text: &str) -> String {
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
}
