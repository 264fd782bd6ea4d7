//! The replay source's settings: `replay: { path, batch_rows }`.

use serde::Deserialize;

/// The embedded default source: replays the lines of local files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// A glob, relative to pipelines.yaml; matches are replayed in name order.
    /// Files ending in `.gz` are decompressed.
    pub path: String,
    /// Rows per micro-batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

pub(crate) fn default_batch_rows() -> usize {
    8192
}
