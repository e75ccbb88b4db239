//! Cross-crate integration and fault tests against a real PostgreSQL.
