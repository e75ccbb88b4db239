//! Reading one's own writes: a query may name the log position it wants to see
//! (`?min_position=812/40`, as returned by a command) and waits briefly until the read model
//! has reached it.

use std::time::Duration;

use cqrs_core::Position;
use serde::Deserialize;

use super::error::ApiError;
use crate::shop::Shop;

/// How long a query waits for its read model to reach `min_position`.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

/// The `min_position` query parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinPosition {
    /// The position to wait for, as `"{commit}/{sequence}"`.
    pub min_position: Option<String>,
}

impl MinPosition {
    /// Waits until `projection` has reached the position, if one was given. A read model
    /// that is still behind after [`MAX_WAIT`] answers anyway.
    pub async fn wait(&self, shop: &Shop, projection: &str) -> Result<(), ApiError> {
        let Some(text) = &self.min_position else {
            return Ok(());
        };
        let position: Position = text.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "min_position {text:?} is not a position like \"812/40\""
            ))
        })?;
        shop.wait_for(projection, position, MAX_WAIT).await?;
        Ok(())
    }
}
