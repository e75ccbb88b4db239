//! Streams and places in the log: [`StreamId`], [`ExpectedVersion`] and [`Position`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest stream id a store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 200;

/// The name of one event stream, usually `"{aggregate type}-{aggregate id}"`.
///
/// The part before the first `-` is the stream's *category* (for example `order` in
/// `order-7f0c…`); readers of the global log can filter by it.
///
/// ```
/// use cqrs_core::StreamId;
///
/// let stream = StreamId::new("order-42").unwrap();
/// assert_eq!(stream.category(), "order");
/// assert!(StreamId::new("").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
// Shared, not owned: every event read from a stream carries its id, and a clone is then a
// count, not a copy.
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Checks and wraps a stream id: it must be non-empty, at most [`MAX_STREAM_ID_LEN`] bytes
    /// and free of control characters.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        Self::checked(&id.into())
    }

    fn checked(id: &str) -> Result<Self> {
        if id.is_empty() {
            return Err(Error::InvalidInput("stream id must not be empty".into()));
        }
        if id.len() > MAX_STREAM_ID_LEN {
            return Err(Error::InvalidInput(format!(
                "stream id is {} bytes long; at most {MAX_STREAM_ID_LEN} are allowed",
                id.len()
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!(
                "stream id {id:?} contains a control character"
            )));
        }
        Ok(Self(id.into()))
    }

    /// The stream of one aggregate instance: `"{aggregate_type}-{id}"`.
    pub fn for_aggregate(aggregate_type: &str, id: &str) -> Result<Self> {
        if aggregate_type.is_empty() || aggregate_type.contains('-') {
            return Err(Error::InvalidInput(format!(
                "aggregate type {aggregate_type:?} must be non-empty and contain no '-'"
            )));
        }
        if id.is_empty() {
            return Err(Error::InvalidInput("aggregate id must not be empty".into()));
        }
        Self::new(format!("{aggregate_type}-{id}"))
    }

    /// What separates a stream's category from the rest of its id.
    pub const CATEGORY_SEPARATOR: char = '-';

    /// The stream's category: everything before the first `-` (the whole id if there is none).
    pub fn category(&self) -> &str {
        self.0
            .split(Self::CATEGORY_SEPARATOR)
            .next()
            .unwrap_or(&self.0)
    }

    /// The ids of the streams in `category`, for a store that matches ids instead of
    /// computing [`category`](Self::category) for each: an id is in it when it equals the
    /// first string or starts with the second. `None` when no stream can be in it (it holds
    /// the separator).
    ///
    /// ```
    /// use cqrs_core::StreamId;
    ///
    /// assert_eq!(StreamId::category_ids("order"), Some(("order", "order-".to_owned())));
    /// assert_eq!(StreamId::category_ids("order-42"), None);
    /// ```
    pub fn category_ids(category: &str) -> Option<(&str, String)> {
        (!category.contains(Self::CATEGORY_SEPARATOR))
            .then(|| (category, format!("{category}{}", Self::CATEGORY_SEPARATOR)))
    }

    /// The aggregate's own id: everything after the first `-` (the whole id if there is
    /// none), the inverse of [`StreamId::for_aggregate`].
    ///
    /// ```
    /// let stream = cqrs_core::StreamId::for_aggregate("order", "42-b").unwrap();
    /// assert_eq!((stream.category(), stream.aggregate_id()), ("order", "42-b"));
    /// ```
    pub fn aggregate_id(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(_, id)| id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a stream id as [`StreamId::new`] checks it (one allocation, for a reader that holds
/// the text borrowed).
impl FromStr for StreamId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self> {
        Self::checked(id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;

    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0.as_ref().to_owned()
    }
}

/// What the writer believes about a stream's version before it appends.
///
/// Stream versions count events: the first event of a stream has version 1, and a stream that
/// does not exist has version 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (no concurrency check).
    Any,
    /// The stream must not exist yet (same as `Exact(0)`).
    NoStream,
    /// The stream must already hold at least one event.
    StreamExists,
    /// The stream's current version must be exactly this.
    Exact(u64),
}

impl ExpectedVersion {
    /// The stream versions this expectation accepts: from the first, up to and including the
    /// second (`None`: no upper bound). The one statement of the rule: the stores check
    /// against this range (the PostgreSQL store passes it to its append function).
    ///
    /// ```
    /// use cqrs_core::ExpectedVersion;
    ///
    /// assert_eq!(ExpectedVersion::NoStream.accepted_versions(), (0, Some(0)));
    /// assert_eq!(ExpectedVersion::StreamExists.accepted_versions(), (1, None));
    /// assert!(ExpectedVersion::Exact(3).is_satisfied_by(3));
    /// ```
    pub fn accepted_versions(self) -> (u64, Option<u64>) {
        match self {
            Self::Any => (0, None),
            Self::NoStream => (0, Some(0)),
            Self::StreamExists => (1, None),
            Self::Exact(expected) => (expected, Some(expected)),
        }
    }

    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn is_satisfied_by(self, actual: u64) -> bool {
        let (min, max) = self.accepted_versions();
        min <= actual && max.is_none_or(|max| actual <= max)
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// A place in the global log, ordered first by `commit`, then by `sequence`.
///
/// `sequence` numbers events in the order they were written. `commit` orders the transactions
/// that wrote them, so that a reader never finds a committed event *behind* a position it
/// has already passed, even when a transaction that took an early sequence commits late.
/// (The PostgreSQL store uses the writing transaction's id; the in-memory store a commit
/// counter.) A reader's checkpoint is a `Position`; [`Position::START`] is before every event.
///
/// Its one text form is `"{commit}/{sequence}"`: `Display`, `FromStr` and serde all use it
/// (serde also reads the older `{"commit": …, "sequence": …}` form):
///
/// ```
/// use cqrs_core::Position;
///
/// let p: Position = "812/40".parse().unwrap();
/// assert_eq!(p, Position::new(812, 40));
/// assert!(Position::START < p);
/// assert_eq!(p.to_string(), "812/40");
/// assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!("812/40"));
/// let old: Position = serde_json::from_str(r#"{"commit": 812, "sequence": 40}"#).unwrap();
/// assert_eq!(old, p);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Orders the transactions (commits) that wrote events.
    pub commit: u64,
    /// Orders the events in the order they were written.
    pub sequence: u64,
}

impl Position {
    /// Before the first event of every log.
    pub const START: Position = Position {
        commit: 0,
        sequence: 0,
    };

    /// A position from its two parts.
    pub const fn new(commit: u64, sequence: u64) -> Self {
        Self { commit, sequence }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, to: S) -> std::result::Result<S::Ok, S::Error> {
        to.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(from: D) -> std::result::Result<Self, D::Error> {
        /// The two forms a position has been stored in.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Text(String),
            Parts { commit: u64, sequence: u64 },
        }
        match Stored::deserialize(from)? {
            Stored::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Stored::Parts { commit, sequence } => Ok(Self::new(commit, sequence)),
        }
    }
}

impl FromStr for Position {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidInput(format!("{s:?} is not a position like \"812/40\""));
        let (commit, sequence) = s.split_once('/').ok_or_else(bad)?;
        Ok(Self {
            commit: commit.trim().parse().map_err(|_| bad())?,
            sequence: sequence.trim().parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::StreamId;

    #[test]
    fn category_ids_match_exactly_the_streams_of_the_category() {
        let ids = [
            "order",
            "order-1",
            "order-1-2",
            "orders-1",
            "order_1",
            "-x",
            "-",
            "a%b-1",
            "o",
        ];
        let categories = ["order", "orders", "", "order-1", "a%b", "o", "%", "_rder"];
        for id in ids {
            let stream = StreamId::new(id).expect("valid id");
            for category in categories {
                let by_ids = StreamId::category_ids(category)
                    .is_some_and(|(exact, prefix)| id == exact || id.starts_with(&prefix));
                assert_eq!(
                    by_ids,
                    stream.category() == category,
                    "{id:?} in {category:?}"
                );
            }
        }
    }
}
