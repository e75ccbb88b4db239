//! # demo-shop
//!
//! A small e-commerce service on the toolkit: orders, inventory and payments, a checkout
//! process across them, read models, an HTTP API and a CLI. It runs in memory with no
//! database, or on PostgreSQL with `DATABASE_URL`.
//!
//! ## Layout
//!
//! | module | holds |
//! | --- | --- |
//! | [`domain`] | the aggregates: [`domain::inventory`], [`domain::order`], [`domain::payment`]; money and ids |
//! | [`checkout`] | the process manager from placed to confirmed or cancelled, one instance per order |
//! | [`gateway`] | the payment provider: the simulated one, its HTTP service and the client |
//! | [`read_models`] | one projection and its queries per file |
//! | [`shop`] | [`shop::Shop`]: commands, workers, status, rebuild |
//! | [`storage`] | in memory or PostgreSQL |
//! | [`idempotency_keys`] | the answers kept for requests with an `Idempotency-Key` |
//! | [`http`] | the axum API; [`http::error::ApiError`] maps errors to status codes |
//! | [`metrics`] | the Prometheus metrics at `/metrics`, their names and meanings |
//! | [`cli`] | the command line |
//! | [`scenario`] | the narrated scenario |
//! | [`simulate`] | the load driver; [`http_client`] its minimal client |

pub mod checkout;
pub mod cli;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod http_client;
pub mod idempotency_keys;
pub mod integration;
pub mod metrics;
pub mod read_models;
pub mod scenario;
pub mod shop;
pub mod simulate;
pub mod storage;
pub mod telemetry;
pub mod warehouse;
