//! # projections
//!
//! The read side: the `Projection` trait and the checkpointed runner that turns the global
//! log into read models exactly once, the lease that keeps one active worker per projection,
//! the error policy, status and lag, and rebuild by replay.
