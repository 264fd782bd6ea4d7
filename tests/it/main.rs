//! streamsql's integration tests, in one test binary (as DataFusion's
//! `tests/` are): each module tests one part of the engine from the outside,
//! against real services where users have them. `scripts/test.sh` installs
//! those services; without them their tests are skipped with the reason
//! printed (under `CI=true` they fail instead).

mod aggregates_match_datafusion;
mod bad_input;
mod batch_invariance;
mod checkpoint_restart;
mod cli;
mod common;
mod elasticsearch;
mod interval_join;
mod kafka;
mod lookup_join;
mod nexmark;
mod pipeline_behaviour;
mod prometheus;
mod w1_real_trace;
mod window_properties;
mod workloads;
