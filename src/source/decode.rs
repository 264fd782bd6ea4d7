//! CSV, JSON and regex-matched lines into typed RecordBatches (arrow-csv,
//! arrow-json, regex).
//!
//! A whole micro-batch is decoded in one call; only when that fails is it
//! decoded line by line, so one bad line costs its own dead letter and no
//! good row is lost. Each format first yields its "text schema" (the declared
//! types, except that timestamps with a `format` and every column of a regex
//! source are text); [`Decoder::typed`] then turns text into declared types.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringBuilder,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::{csv, json};
use regex::Regex;

use super::{
    ColumnConfig, CsvOptions, EventTimeUnit, Format, MAX_RECORD_BYTES, RawRecord, SourceBatch,
    SourceConfig, SourceInput, SourcePosition,
};
use crate::error::Result;
use crate::sink::{DeadLetter, DeadLetterKind};
use crate::table::{TableConfig, TableFormat};

/// How much of a record longer than `max_record_bytes` its dead letter keeps.
pub const KEPT_OF_TOO_LONG: usize = 1024;

pub struct Decoder {
    source: String,
    format: Format,
    delimiter: u8,
    /// For `format: regex`: the pattern and, per column, its group index.
    regex: Option<(Regex, Vec<usize>)>,
    /// What the format decoder yields (see the module comment).
    text_schema: SchemaRef,
    /// Per declared column, its timestamp `format` when it has one.
    timestamp_formats: Vec<Option<String>>,
    /// The declared columns: what a record holds.
    record_schema: SchemaRef,
    /// The rows produced: the record's columns, then the columns the source
    /// adds (Kafka message timestamp, processing time).
    schema: SchemaRef,
    kafka_timestamp: bool,
    processing_time: bool,
    /// A source's event time; a lookup table has none.
    event_time: Option<EventTime>,
    max_record_bytes: usize,
}

struct EventTime {
    index: usize,
    unit: EventTimeUnit,
    /// `event_time.max_ahead` in milliseconds.
    max_ahead_millis: Option<i64>,
}

impl Decoder {
    pub fn new(config: &SourceConfig) -> Result<Self> {
        let schema = config.schema();
        let regex = match config.regex_groups() {
            None => None,
            Some(compiled) => {
                let (regex, groups) =
                    compiled.map_err(|e| crate::internal_error!("regex passed checks: {e}"))?;
                let groups = groups
                    .into_iter()
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| crate::internal_error!("regex groups passed checks"))?;
                Some((regex, groups))
            }
        };
        let mut decoder = Self::of_records(
            &config.name,
            config.format,
            &config.columns,
            &config.csv,
            regex,
            config.max_record_bytes,
        );
        decoder.event_time = Some(EventTime {
            index: schema.index_of(&config.event_time.column)?,
            unit: config.event_time.unit,
            max_ahead_millis: config
                .event_time
                .max_ahead
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        });
        decoder.kafka_timestamp = matches!(
            &config.input,
            SourceInput::Kafka(kafka) if kafka.timestamp_column.is_some()
        );
        decoder.processing_time = config.processing_time_column.is_some();
        decoder.schema = schema;
        Ok(decoder)
    }

    /// For a lookup table's CSV or JSON records: the declared columns, and
    /// no event time.
    pub fn for_table(config: &TableConfig) -> Result<Self> {
        let format = match config.format {
            TableFormat::Csv => Format::Csv,
            TableFormat::Json => Format::Json,
            TableFormat::Parquet => {
                return crate::internal_err!("a Parquet table is read by the parquet crate");
            }
        };
        Ok(Self::of_records(
            &config.name,
            format,
            &config.columns,
            &config.csv,
            None,
            MAX_RECORD_BYTES,
        ))
    }

    fn of_records(
        name: &str,
        format: Format,
        columns: &[ColumnConfig],
        csv: &CsvOptions,
        regex: Option<(Regex, Vec<usize>)>,
        max_record_bytes: usize,
    ) -> Self {
        let record_schema = Arc::new(Schema::new(
            columns.iter().map(ColumnConfig::field).collect::<Vec<_>>(),
        ));
        let text_schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| {
                    let text = regex.is_some() || c.format.is_some();
                    let data_type = if text {
                        DataType::Utf8
                    } else {
                        c.column_type.data_type()
                    };
                    Field::new(&c.name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ));
        Self {
            source: name.to_string(),
            format,
            delimiter: csv.delimiter as u8,
            regex,
            text_schema,
            timestamp_formats: columns.iter().map(|c| c.format.clone()).collect(),
            schema: Arc::clone(&record_schema),
            record_schema,
            kafka_timestamp: false,
            processing_time: false,
            event_time: None,
            max_record_bytes,
        }
    }

    /// The schema of the rows produced.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn decode_bytes(&self, bytes: &[u8]) -> Result<RecordBatch, ArrowError> {
        let rows = bytes.iter().filter(|b| **b == b'\n').count() + 1;
        let schema = &self.text_schema;
        let text = match (&self.format, &self.regex) {
            (Format::Csv, _) => {
                let mut decoder = csv::ReaderBuilder::new(Arc::clone(schema))
                    .with_delimiter(self.delimiter)
                    .with_batch_size(rows)
                    .build_decoder();
                decode_all(bytes, &mut decoder, schema)?
            }
            (Format::Json, _) => {
                let mut decoder = json::ReaderBuilder::new(Arc::clone(schema))
                    .with_batch_size(rows)
                    .with_strict_mode(false)
                    .build_decoder()?;
                decode_all(bytes, &mut decoder, schema)?
            }
            (Format::Regex, Some((regex, groups))) => {
                decode_regex(bytes, regex, groups, schema, rows)?
            }
            (Format::Regex, None) => {
                return Err(ArrowError::InvalidArgumentError(
                    "regex source without a regex".into(),
                ));
            }
        };
        self.typed(text)
    }

    /// Text columns to their declared types: timestamps by their `format`,
    /// anything else by Arrow's cast, where a value that does not convert is
    /// an error (the line goes to the dead letters) rather than a NULL.
    fn typed(&self, text: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut columns = Vec::with_capacity(text.num_columns());
        for (i, field) in self.record_schema.fields().iter().enumerate() {
            let column = text.column(i);
            columns.push(match &self.timestamp_formats[i] {
                Some(format) => parse_timestamps(column, format, field.name())?,
                None if column.data_type() != field.data_type() => {
                    cast_with_options(column, field.data_type(), &strict).map_err(|e| {
                        ArrowError::ParseError(format!("column `{}`: {e}", field.name()))
                    })?
                }
                None => Arc::clone(column),
            });
        }
        RecordBatch::try_new(Arc::clone(&self.record_schema), columns)
    }

    /// Decodes `bytes` (records each ending in `\n`, listed by `lines`)
    /// into the declared columns: the rows, the line each row came from,
    /// and a dead letter for each record that does not decode.
    pub fn records(
        &self,
        bytes: &[u8],
        lines: &[RawRecord],
    ) -> Result<(RecordBatch, Vec<usize>, Vec<DeadLetter>)> {
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
                            DeadLetterKind::MalformedRecord,
                            record,
                            &bytes[range.clone()],
                            format!("expected one record, found {}", batch.num_rows()),
                        )),
                        Err(e) => dead_letters.push(self.dead_letter(
                            DeadLetterKind::MalformedRecord,
                            record,
                            &bytes[range.clone()],
                            e.to_string(),
                        )),
                    }
                }
                (concat_batches(&self.record_schema, &good)?, row_lines)
            }
        };
        Ok((rows, row_lines, dead_letters))
    }

    /// Decodes `bytes`: records each ending in `\n`, listed by `lines`.
    /// `position` is where the source stands after these records.
    pub fn decode(
        &self,
        bytes: &[u8],
        lines: &[RawRecord],
        position: SourcePosition,
    ) -> Result<SourceBatch> {
        let (rows, row_lines, mut dead_letters) = self.records(bytes, lines)?;
        let rows = if self.kafka_timestamp || self.processing_time {
            let mut columns = rows.columns().to_vec();
            if self.kafka_timestamp {
                let timestamps: TimestampMillisecondArray =
                    row_lines.iter().map(|&l| lines[l].timestamp).collect();
                columns.push(Arc::new(timestamps));
            }
            if self.processing_time {
                let now = chrono::Utc::now().timestamp_millis();
                columns.push(Arc::new(TimestampMillisecondArray::from(
                    vec![now; rows.num_rows()],
                )));
            }
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?
        } else {
            rows
        };
        let (rows, event_time) = match &self.event_time {
            Some(guard) => {
                self.guard_event_times(guard, rows, &row_lines, lines, bytes, &mut dead_letters)?
            }
            None => (rows, Vec::new()),
        };
        Ok(SourceBatch {
            rows,
            dead_letters,
            lines: lines.len(),
            position,
            event_time_progress: event_time.iter().copied().max().unwrap_or(i64::MIN),
            progress: progress_before(&event_time, i64::MIN),
            event_time,
        })
    }

    /// Keeps the rows whose event time can be used and returns them with
    /// their event times in milliseconds; the others become dead letters: an
    /// empty event time, one outside the years 0000-9999 (window arithmetic
    /// stays far from `i64` overflow), or one further ahead of the clock than
    /// `event_time.max_ahead` (it would hold the watermark for good).
    fn guard_event_times(
        &self,
        guard: &EventTime,
        rows: RecordBatch,
        row_lines: &[usize],
        lines: &[RawRecord],
        bytes: &[u8],
        dead_letters: &mut Vec<DeadLetter>,
    ) -> Result<(RecordBatch, Vec<i64>)> {
        let name = self.schema.field(guard.index).name();
        let column = rows.column(guard.index);
        let (raw, unit) = event_time_values(column, guard.unit)?;
        let latest = guard
            .max_ahead_millis
            .map(|ahead| chrono::Utc::now().timestamp_millis().saturating_add(ahead));
        let mut keep = Vec::with_capacity(raw.len());
        let mut event_time = Vec::with_capacity(raw.len());
        for (r, value) in raw.iter().enumerate() {
            let refusal = match value {
                None => Some((
                    DeadLetterKind::MissingEventTime,
                    format!("event time column `{name}` is empty"),
                )),
                Some(v) => match unit.to_millis(*v) {
                    Some(t) if EVENT_TIME_RANGE.contains(&t) => match latest {
                        Some(latest) if t > latest => Some((
                            DeadLetterKind::EventTimeTooFarAhead,
                            format!(
                                "event time `{name}` = {v} is more than event_time.max_ahead ahead of the clock"
                            ),
                        )),
                        _ => {
                            event_time.push(t);
                            None
                        }
                    },
                    _ => Some((
                        DeadLetterKind::EventTimeOutOfRange,
                        format!(
                            "event time `{name}` = {v} ({:?}) is outside the years 0000-9999",
                            unit
                        ),
                    )),
                },
            };
            keep.push(refusal.is_none());
            if let Some((kind, reason)) = refusal {
                let record = &lines[row_lines[r]];
                dead_letters.push(self.dead_letter(
                    kind,
                    record,
                    &bytes[record.bytes.clone()],
                    reason,
                ));
            }
        }
        if event_time.len() == rows.num_rows() {
            return Ok((rows, event_time));
        }
        let rows = filter_record_batch(&rows, &BooleanArray::from(keep))?;
        Ok((rows, event_time))
    }

    /// The longest record decoded: a longer one goes to [`Self::too_long`].
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The dead letter for a record of `length` bytes, longer than
    /// `max_record_bytes`: it keeps the first [`KEPT_OF_TOO_LONG`] bytes of `start`.
    pub fn too_long(&self, record: &RawRecord, start: &[u8], length: u64) -> DeadLetter {
        let prefix = &start[..start.len().min(KEPT_OF_TOO_LONG)];
        let reason = format!(
            "record of {length} bytes is longer than max_record_bytes ({}); its first {} bytes are kept here",
            self.max_record_bytes,
            prefix.len()
        );
        self.dead_letter(DeadLetterKind::RecordTooLong, record, prefix, reason)
    }

    fn dead_letter(
        &self,
        kind: DeadLetterKind,
        record: &RawRecord,
        line: &[u8],
        reason: String,
    ) -> DeadLetter {
        DeadLetter {
            kind,
            source: self.source.clone(),
            position: record.to_string(),
            reason,
            raw: String::from_utf8_lossy(line).into_owned(),
        }
    }
}

/// Per row, the newest of `start` and the event times before it.
pub fn progress_before(event_time: &[i64], start: i64) -> Vec<i64> {
    let mut newest = start;
    event_time
        .iter()
        .map(|t| {
            let before = newest;
            newest = newest.max(*t);
            before
        })
        .collect()
}

/// Event times that can be represented: 0000-01-01 to 9999-12-31 UTC, in
/// milliseconds (chrono's and Kibana's range; `i64` arithmetic on them with
/// any window size up to centuries cannot overflow).
pub(crate) const EVENT_TIME_RANGE: std::ops::RangeInclusive<i64> =
    -62_167_219_200_000..=253_402_300_799_999;

/// The event-time column's values as written, `None` where empty, and
/// their unit: `unit` for an integer column, milliseconds for a timestamp
/// column (`unit` does not apply to it).
fn event_time_values(
    column: &ArrayRef,
    unit: EventTimeUnit,
) -> Result<(Vec<Option<i64>>, EventTimeUnit)> {
    let any = column.as_any();
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Ok((a.iter().collect(), unit));
    }
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return Ok((a.iter().map(|v| v.map(i64::from)).collect(), unit));
    }
    if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
        return Ok((a.iter().collect(), EventTimeUnit::Ms));
    }
    crate::internal_err!(
        "event time column of type {} passed config checks",
        column.data_type()
    )
}

/// Matches each line of `bytes` against `regex`; column `c` is group
/// `groups[c]` (NULL where the group takes no part in the match).
fn decode_regex(
    bytes: &[u8],
    regex: &Regex,
    groups: &[usize],
    schema: &SchemaRef,
    rows: usize,
) -> Result<RecordBatch, ArrowError> {
    let mut builders: Vec<StringBuilder> = groups
        .iter()
        .map(|_| StringBuilder::with_capacity(rows, bytes.len()))
        .collect();
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ArrowError::ParseError(format!("not UTF-8 text: {e}")))?;
    for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
        let found = regex.captures(line).ok_or_else(|| {
            ArrowError::ParseError("the line does not match the source's regex".into())
        })?;
        for (builder, group) in builders.iter_mut().zip(groups) {
            builder.append_option(found.get(*group).map(|m| m.as_str()));
        }
    }
    let columns: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Parses text with a chrono `strftime` pattern into UTC milliseconds: a
/// date-time with `%z` offset, else a naive date-time taken as UTC, else a
/// time of day (on 1970-01-01), else a date (at midnight).
fn parse_timestamps(column: &ArrayRef, format: &str, name: &str) -> Result<ArrayRef, ArrowError> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
    let parse = |text: &str| -> Option<i64> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.timestamp_millis());
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
        if let Ok(t) = NaiveTime::parse_from_str(text, format) {
            return Some(
                i64::from(t.num_seconds_from_midnight()) * 1000
                    + i64::from(t.nanosecond() / 1_000_000),
            );
        }
        NaiveDate::parse_from_str(text, format)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
    };
    let text = column.as_string::<i32>();
    let mut millis = Vec::with_capacity(text.len());
    for value in text.iter() {
        millis.push(match value {
            None => None,
            Some(v) => Some(parse(v).ok_or_else(|| {
                ArrowError::ParseError(format!(
                    "column `{name}`: `{v}` does not match the timestamp format `{format}`"
                ))
            })?),
        });
    }
    Ok(Arc::new(TimestampMillisecondArray::from(millis)))
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
