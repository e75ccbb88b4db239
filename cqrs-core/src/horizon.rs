//! [`Horizon`]: what holds readers of the log back. Where events become readable only once
//! older transactions end (PostgreSQL), a transaction left open stalls every reader; this
//! names the events it holds back and the transactions in the way.

use std::time::Duration;

use serde::Serialize;

/// Readers of the log, held back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Horizon {
    /// Events committed but not yet readable, because older transactions are still open.
    pub held_back: u64,
    /// The open transactions that hold them back, oldest first.
    pub blockers: Vec<HorizonBlocker>,
}

impl Horizon {
    /// Whether any reader is held back.
    pub fn is_stalled(&self) -> bool {
        self.held_back > 0
    }
}

/// An open transaction that holds back every reader of the log until it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HorizonBlocker {
    /// The server process of a session (`pg_terminate_backend(pid)` ends it); `None` for a
    /// prepared transaction, which belongs to no session.
    pub pid: Option<i32>,
    /// The global id of a prepared transaction (`ROLLBACK PREPARED '<gid>'` ends it).
    pub prepared: Option<String>,
    /// The transaction's id as the server's activity views show it: the 32-bit id, without
    /// the epoch that positions carry.
    pub transaction_id: u64,
    /// The database it is in.
    pub database: Option<String>,
    /// The role it runs as.
    pub role: Option<String>,
    /// The client's `application_name`.
    pub application_name: Option<String>,
    /// How long it has been open; `None` when the server does not say (another role's
    /// session, seen without the `pg_read_all_stats` privilege).
    pub transaction_age: Option<Duration>,
    /// How many transactions have started since it did (always known).
    pub transactions_since: u64,
    /// `active`, `idle in transaction`, `prepared`, …
    pub state: Option<String>,
    /// The start of its current or last query, if visible.
    pub query: Option<String>,
}
