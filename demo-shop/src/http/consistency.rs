//! Reading one's own writes: a query may name the log position it wants to see
//! (`?min_position=812/40`, as returned by a command) and waits briefly until the read model
//! has reached it, woken by the projection's worker.
//!
//! A read model still behind after [`MAX_WAIT`] never answers with stale data as if fresh:
//! the query answers `503 Service Unavailable` with `Retry-After: 1` and a JSON body
//! `{"kind": "behind", "projection", "checkpoint", "min_position", "error"}`; one stopped at
//! an event it cannot handle answers `503` with `"kind": "projection_failed"`.

use std::time::Duration;

use cqrs_core::Position;
use projections::WaitOutcome;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::shop::{Shop, ShopError};

/// How long a query waits for its read model to reach `min_position`.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

/// The `min_position` query parameter.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MinPosition {
    /// The log position to wait for, as a command returned it (`"{commit}/{sequence}"`):
    /// the answer then includes that command's effects, or is a 503 after 3 s.
    #[param(example = "812/40", pattern = "^[0-9]{1,19}/[0-9]{1,19}$")]
    pub min_position: Option<String>,
}

impl MinPosition {
    /// Waits until `projection` has reached the position, if one was given; a read model
    /// still behind after [`MAX_WAIT`], or stopped, is an error (503).
    pub async fn wait(&self, shop: &Shop, projection: &str) -> Result<(), ApiError> {
        let Some(text) = &self.min_position else {
            return Ok(());
        };
        let position: Position = text.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "min_position {text:?} is not a position like \"812/40\""
            ))
        })?;
        let host = shop.host();
        // Reached already (the common case): answered from the worker's progress alone.
        if host
            .wait_for(projection, position, Duration::ZERO)
            .await?
            .is_reached()
        {
            return Ok(());
        }
        // Every committed event is at or before the barrier, so a position after it was
        // never returned by a command: waiting for it would only end in a 503.
        let barrier = shop
            .storage()
            .store
            .read_barrier()
            .await
            .map_err(ShopError::from)?;
        if position > barrier {
            return Err(ApiError::unprocessable(format!(
                "min_position {position} is beyond the end of the log ({barrier}): no command returned it"
            )));
        }
        match host.wait_for(projection, position, MAX_WAIT).await? {
            WaitOutcome::Reached { .. } => Ok(()),
            WaitOutcome::TimedOut { checkpoint } => Err(ApiError::behind(
                format!("the read model {projection} has not reached {position} yet (it is at {checkpoint}); try again"),
                json!({ "projection": projection, "checkpoint": checkpoint.to_string(), "min_position": position.to_string() }),
            )),
            WaitOutcome::Failed { failure } => Err(ApiError::projection_failed(
                format!("the read model {projection} stopped at {} before reaching {position}", failure.position),
                json!({ "projection": projection, "error_position": failure.position.to_string(), "min_position": position.to_string() }),
            )),
        }
    }
}
