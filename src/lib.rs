//! streamsql: SQL-first streaming analytics on Apache Arrow and DataFusion.
//!
//! One folder per pipeline stage, in the order data flows:
//! [`source`] (replay, decode) -> [`window`] (the stateful operator, planned by
//! [`plan`]) -> [`history`] (a key's earlier windows, for rule queries with
//! window functions) -> [`sink`], driven by [`runtime`] from [`config`].

pub mod cli;
pub mod config;
pub mod error;
pub mod history;
pub mod metrics;
pub mod plan;
pub mod replay;
pub mod runtime;
pub mod sample;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;

pub use error::{Result, StreamSqlError};
