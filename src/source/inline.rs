//! Rows given up front, cut into micro-batches by whoever gives them (golden
//! tests): they replace a source's input; its format and columns still apply.

use std::collections::VecDeque;
use std::sync::Arc;

use super::SourceConfig;
use super::{Decoder, RawRecord, SourceBatch, SourcePosition};
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
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(batch.lines.len());
        for (index, text) in &batch.lines {
            let start = bytes.len();
            bytes.extend_from_slice(text.as_bytes());
            records.push(RawRecord {
                bytes: start..bytes.len(),
                origin: Arc::clone(&batch.origin),
                index: *index,
                timestamp: None,
            });
            bytes.push(b'\n');
        }
        let position = SourcePosition::Replay {
            file: batch.origin.to_string(),
            line: records.last().map_or(0, |r| r.index),
        };
        Some(self.decoder.decode(&bytes, &records, position))
    }
}
