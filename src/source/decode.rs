//! CSV and JSON lines into typed RecordBatches (arrow-csv, arrow-json).
//!
//! A whole micro-batch is decoded in one call; only when that fails is it
//! decoded line by line, so one bad line costs its own dead letter and no
//! good row is lost.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, is_not_null};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::{csv, json};

use super::{DeadLetter, RawRecord, SourceBatch, SourcePosition};
use crate::config::{EventTimeUnit, Format, SourceConfig};
use crate::error::Result;

pub struct Decoder {
    source: String,
    format: Format,
    delimiter: u8,
    /// The declared columns: what a record holds.
    record_schema: SchemaRef,
    /// The rows produced: the record's columns, then the Kafka message
    /// timestamp when the source adds it.
    schema: SchemaRef,
    event_time_index: usize,
    event_time_unit: EventTimeUnit,
}

impl Decoder {
    pub fn new(config: &SourceConfig) -> Result<Self> {
        let schema = config.schema();
        let event_time_index = schema.index_of(&config.event_time.column)?;
        let record_schema =
            Arc::new(schema.project(&(0..config.columns.len()).collect::<Vec<_>>())?);
        Ok(Self {
            source: config.name.clone(),
            format: config.format,
            delimiter: config.csv.delimiter as u8,
            record_schema,
            schema,
            event_time_index,
            event_time_unit: config.event_time.unit,
        })
    }

    /// The schema of the rows produced.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn decode_bytes(&self, bytes: &[u8]) -> Result<RecordBatch, ArrowError> {
        let rows = bytes.iter().filter(|b| **b == b'\n').count() + 1;
        match self.format {
            Format::Csv => {
                let mut decoder = csv::ReaderBuilder::new(Arc::clone(&self.record_schema))
                    .with_delimiter(self.delimiter)
                    .with_batch_size(rows)
                    .build_decoder();
                decode_all(bytes, &mut decoder, &self.record_schema)
            }
            Format::Json => {
                let mut decoder = json::ReaderBuilder::new(Arc::clone(&self.record_schema))
                    .with_batch_size(rows)
                    .with_strict_mode(false)
                    .build_decoder()?;
                decode_all(bytes, &mut decoder, &self.record_schema)
            }
        }
    }

    /// Decodes `bytes`: records each ending in `\n`, listed by `lines`.
    /// `position` is where the source stands after these records.
    pub fn decode(
        &self,
        bytes: &[u8],
        lines: &[RawRecord],
        position: SourcePosition,
    ) -> Result<SourceBatch> {
        let mut dead_letters = Vec::new();
        // `row_lines[r]`: the line row `r` came from.
        let (rows, row_lines) = match self.decode_bytes(bytes) {
            Ok(batch) if batch.num_rows() == lines.len() => {
                (batch, (0..lines.len()).collect::<Vec<_>>())
            }
            _ => {
                let mut good = Vec::new();
                let mut row_lines = Vec::new();
                for (i, record) in lines.iter().enumerate() {
                    let range = &record.bytes;
                    let mut line = bytes[range.clone()].to_vec();
                    line.push(b'\n');
                    match self.decode_bytes(&line) {
                        Ok(batch) if batch.num_rows() == 1 => {
                            good.push(batch);
                            row_lines.push(i);
                        }
                        Ok(batch) => dead_letters.push(self.dead_letter(
                            record,
                            &bytes[range.clone()],
                            format!("expected one record, found {}", batch.num_rows()),
                        )),
                        Err(e) => dead_letters.push(self.dead_letter(
                            record,
                            &bytes[range.clone()],
                            e.to_string(),
                        )),
                    }
                }
                (concat_batches(&self.record_schema, &good)?, row_lines)
            }
        };
        let rows = if self.schema.fields().len() > self.record_schema.fields().len() {
            let timestamps: TimestampMillisecondArray =
                row_lines.iter().map(|&l| lines[l].timestamp).collect();
            let mut columns = rows.columns().to_vec();
            columns.push(Arc::new(timestamps));
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?
        } else {
            rows
        };
        let column = Arc::clone(rows.column(self.event_time_index));
        let rows = if column.null_count() > 0 {
            let name = self.schema.field(self.event_time_index).name();
            for r in (0..rows.num_rows()).filter(|r| column.is_null(*r)) {
                let record = &lines[row_lines[r]];
                dead_letters.push(self.dead_letter(
                    record,
                    &bytes[record.bytes.clone()],
                    format!("event time column `{name}` is empty"),
                ));
            }
            filter_record_batch(&rows, &is_not_null(&column)?)?
        } else {
            rows
        };
        let event_time =
            event_time_millis(rows.column(self.event_time_index), self.event_time_unit)?;
        Ok(SourceBatch {
            rows,
            dead_letters,
            lines: lines.len(),
            position,
            event_time_progress: event_time.iter().copied().max().unwrap_or(i64::MIN),
            event_time,
        })
    }

    fn dead_letter(&self, record: &RawRecord, line: &[u8], reason: String) -> DeadLetter {
        DeadLetter {
            source: self.source.clone(),
            position: record.to_string(),
            reason,
            raw: String::from_utf8_lossy(line).into_owned(),
        }
    }
}

fn event_time_millis(column: &ArrayRef, unit: EventTimeUnit) -> Result<Vec<i64>> {
    let any = column.as_any();
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Ok(a.values().iter().map(|v| unit.to_millis(*v)).collect());
    }
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return Ok(a
            .values()
            .iter()
            .map(|v| unit.to_millis(i64::from(*v)))
            .collect());
    }
    if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
        return Ok(a.values().to_vec());
    }
    Err(crate::error::StreamSqlError::Internal(format!(
        "event time column of type {} passed config checks",
        column.data_type()
    )))
}

/// arrow-csv's and arrow-json's push decoders, behind one interface.
trait PushDecoder {
    fn decode(&mut self, bytes: &[u8]) -> Result<usize, ArrowError>;
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl PushDecoder for csv::reader::Decoder {
    fn decode(&mut self, bytes: &[u8]) -> Result<usize, ArrowError> {
        csv::reader::Decoder::decode(self, bytes)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        csv::reader::Decoder::flush(self)
    }
}

impl PushDecoder for json::reader::Decoder {
    fn decode(&mut self, bytes: &[u8]) -> Result<usize, ArrowError> {
        json::reader::Decoder::decode(self, bytes)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        json::reader::Decoder::flush(self)
    }
}

/// Feeds all of `bytes` (ending in a newline) to a push decoder.
fn decode_all(
    bytes: &[u8],
    decoder: &mut dyn PushDecoder,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let mut offset = 0;
    let mut batches = Vec::new();
    while offset < bytes.len() {
        let read = decoder.decode(&bytes[offset..])?;
        if read == 0 {
            // The decoder's batch is full: take it and go on.
            match decoder.flush()? {
                Some(batch) => batches.push(batch),
                None => return Err(ArrowError::ParseError("decoder made no progress".into())),
            }
        }
        offset += read;
    }
    batches.extend(decoder.flush()?);
    concat_batches(schema, &batches)
}
