//! # eventstore-postgres
//!
//! The append-only PostgreSQL event store (`PgEventStore`).
