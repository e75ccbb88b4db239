//! [`Follower`]: reads the global log as it grows, like `tail -f`, for tools that watch what a
//! service does (the demo's `follow` command, a debugging session, a test).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cqrs_core::follow::Follower;
//! use cqrs_core::{EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, Metadata, NewEvent, Position, RawEvent, StreamId};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(InMemoryEventStore::new());
//! let mut follower = Follower::new(store.clone(), Position::START, EventFilter::all());
//! assert!(follower.next(Duration::from_millis(10)).await.unwrap().is_empty());
//!
//! let payload = serde_json::json!({ "text": "hello" });
//! let noted = NewEvent { event_id: uuid::Uuid::new_v4(), data: RawEvent { event_type: "Noted".into(), schema_version: 1, payload } };
//! let stream = StreamId::new("note-1").unwrap();
//! store.append(&stream, ExpectedVersion::Any, vec![noted], &Metadata::default()).await.unwrap();
//! let seen = follower.next(Duration::from_secs(1)).await.unwrap();
//! assert_eq!(seen[0].event.event_type, "Noted");
//! # });
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::store::{EventFilter, EventStore};
use crate::stream::Position;

/// How many events one call of [`Follower::next`] returns at most.
pub const FOLLOW_PAGE: usize = 500;

/// Reads the log after a position, in log order, and waits for more once it has read
/// everything: each event once, none skipped (it moves on as [`ReadAllPage::scanned_to`]
/// says, so a transaction that commits late is not passed by).
///
/// [`ReadAllPage::scanned_to`]: crate::ReadAllPage::scanned_to
pub struct Follower {
    store: Arc<dyn EventStore>,
    after: Position,
    filter: EventFilter,
}

impl Follower {
    /// Follows `store`'s events that pass `filter`, from after `after` ([`Position::START`]
    /// for the whole log; the store's [`head`](EventStore::head) for new events only).
    pub fn new(store: Arc<dyn EventStore>, after: Position, filter: EventFilter) -> Self {
        Self {
            store,
            after,
            filter,
        }
    }

    /// The next events, waiting up to `wait` for some when there are none yet: empty when
    /// none came in that time (events the filter rejects do not end the wait).
    pub async fn next(&mut self, wait: Duration) -> Result<Vec<RecordedEvent>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let events = self.read().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !events.is_empty() || left.is_zero() {
                return Ok(events);
            }
            self.store.wait_for_events(self.after, left).await?;
        }
    }

    /// Where it has read to: every matching event up to here has been returned.
    pub fn position(&self) -> Position {
        self.after
    }

    async fn read(&mut self) -> Result<Vec<RecordedEvent>> {
        let page = self
            .store
            .read_all(self.after, FOLLOW_PAGE, &self.filter)
            .await?;
        self.after = self.after.max(page.scanned_to);
        Ok(page.events)
    }
}
