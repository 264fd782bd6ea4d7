//! Rows given up front, cut into micro-batches by whoever gives them (golden
//! tests): they replace a source's input; its format and columns still apply.

use std::collections::VecDeque;
use std::sync::Arc;

use super::SourceConfig;
use super::{Decoder, Records, SourceBatch, SourcePosition};
use crate::error::Result;

/// One micro-batch of raw records: (line number where they were written, text).
#[derive(Debug, Clone)]
pub struct InlineBatch {
    /// Where the lines were written (a test file), for dead letters.
    pub origin: Arc<str>,
    pub lines: Vec<(u64, String)>,
}

pub struct InlineRows {
    decoder: Decoder,
    batches: VecDeque<InlineBatch>,
}

impl InlineRows {
    pub fn start(config: &SourceConfig, batches: Vec<InlineBatch>) -> Result<Self> {
        Ok(Self {
            decoder: Decoder::new(config)?,
            batches: batches
                .into_iter()
                .filter(|b| !b.lines.is_empty())
                .collect(),
        })
    }

    /// The next micro-batch, decoded, or `None` when all were given.
    pub fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        let batch = self.batches.pop_front()?;
        let mut records = Records::default();
        for (index, text) in &batch.lines {
            records.push(text.as_bytes(), &batch.origin, *index, None);
        }
        let position = SourcePosition::Replay {
            file: batch.origin.to_string(),
            line: records.lines.last().map_or(0, |r| r.index),
        };
        Some(
            self.decoder
                .decode(&records.bytes, &records.lines, position),
        )
    }
}
