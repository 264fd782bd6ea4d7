//! streamsql: SQL-first streaming analytics on Apache Arrow and DataFusion.
//!
//! One folder per pipeline stage, in the order data flows: [`source`]
//! (connectors and decoding; [`table`] for lookup tables) -> [`operator`] (the dataflow's steps: row-local
//! parts, window aggregates, key histories), planned from SQL by [`plan`] ->
//! [`sink`]; [`state`] holds checkpoints, and [`runtime`] drives the graph
//! and the commit protocol, all declared in [`config`]. [`metrics`] and
//! [`cli`] face people.

pub mod cli;
pub mod config;
pub mod error;
pub mod metrics;
pub(crate) mod operator;
pub mod plan;
pub mod runtime;
pub mod sink;
pub mod source;
pub(crate) mod state;
pub mod table;

pub use error::{Result, StreamSqlError};
