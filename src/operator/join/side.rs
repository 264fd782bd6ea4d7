//! One side of an interval join: its rows in chunks of one time bucket each,
//! and an index from join key to rows.
//!
//! Rows are kept in time buckets so that the watermark frees them a whole
//! chunk at a time, without compaction: a chunk goes once the last time its
//! bucket can hold is past the bound. Memory beyond the live rows is at most
//! one bucket's worth.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::HashMap;

use crate::error::Result;
use crate::source::EventTimeUnit;
use crate::state::key_group;

/// Where a stored row is: its bucket, the part of the bucket, the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    pub bucket: i64,
    pub part: u32,
    pub row: u32,
}

/// Rows of one input batch that fell in one bucket.
struct Part {
    rows: RecordBatch,
    times: Vec<i64>,
    /// The row's encoded key; `None` when a key column is NULL (it never
    /// matches, as in SQL).
    keys: Vec<Option<Box<[u8]>>>,
    matched: Vec<bool>,
    groups: Vec<u16>,
}

/// A prepared batch's keys, key groups and event times, evaluated once.
pub struct Evaluated {
    pub keys: Vec<Option<Box<[u8]>>>,
    /// The key group of each row, from its routing keys.
    pub groups: Vec<u16>,
    pub times: Vec<i64>,
}

pub struct Side {
    pub schema: SchemaRef,
    /// The event-time column of the prepared rows, and the unit of its
    /// values when they are integers (`None`: a timestamp column).
    time_column: usize,
    unit: Option<EventTimeUnit>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    /// The keys (indices into `keys`) that decide a row's key group, and
    /// their encoder when they are not all of them.
    routing: Vec<usize>,
    routing_converter: Option<RowConverter>,
    /// Milliseconds of event time per bucket.
    bucket_width: i64,
    buckets: BTreeMap<i64, Vec<Part>>,
    index: HashMap<Box<[u8]>, Vec<RowRef>>,
    rows: usize,
}

impl Side {
    pub fn new(
        schema: SchemaRef,
        (time_column, unit): (usize, Option<EventTimeUnit>),
        keys: Vec<Arc<dyn PhysicalExpr>>,
        routing: Vec<usize>,
        bucket_width: i64,
    ) -> Result<Self> {
        let fields = keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let routing_converter = match routing.len() == keys.len() {
            true => None,
            false => Some(RowConverter::new(
                routing.iter().map(|i| fields[*i].clone()).collect(),
            )?),
        };
        Ok(Self {
            converter: RowConverter::new(fields)?,
            routing,
            routing_converter,
            schema,
            time_column,
            unit,
            keys,
            bucket_width: bucket_width.max(1),
            buckets: BTreeMap::new(),
            index: HashMap::new(),
            rows: 0,
        })
    }

    /// The keys (arrow's row encoding) and event times of `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let n = batch.num_rows();
        let columns = (self.keys.iter())
            .map(|k| Ok(k.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let encoded = self.converter.convert_columns(&columns)?;
        let keys = (0..n)
            .map(|r| {
                let null = columns.iter().any(|c| c.is_null(r));
                (!null).then(|| Box::from(encoded.row(r).as_ref()))
            })
            .collect();
        // A NULL key's group is that of its encoding: some fixed group, it
        // never matches anyway.
        let groups = match &self.routing_converter {
            None => (0..n).map(|r| key_group(encoded.row(r).as_ref())).collect(),
            Some(converter) => {
                let routed: Vec<ArrayRef> = (self.routing.iter())
                    .map(|i| Arc::clone(&columns[*i]))
                    .collect();
                let routed = converter.convert_columns(&routed)?;
                (0..n).map(|r| key_group(routed.row(r).as_ref())).collect()
            }
        };
        // In milliseconds, as the source converts it for its watermark.
        let raw = cast(batch.column(self.time_column), &DataType::Int64)?;
        let Some(raw) = raw.as_any().downcast_ref::<Int64Array>() else {
            return crate::internal_err!("join time column is not a time");
        };
        // A NULL or out-of-range event time never reaches a join: the
        // source dead-letters it.
        let times = (raw.values().iter())
            .map(|v| match self.unit {
                Some(unit) => unit.to_millis(*v).unwrap_or(*v),
                None => *v,
            })
            .collect();
        Ok(Evaluated {
            keys,
            groups,
            times,
        })
    }

    /// Stored rows with the key of each new row whose time `fits` the new
    /// row's: (new row, stored row) pairs, in new-row order.
    pub fn probe(
        &self,
        new: &Evaluated,
        fits: impl Fn(i64, i64) -> bool,
    ) -> (Vec<u32>, Vec<RowRef>) {
        let (mut news, mut stored) = (Vec::new(), Vec::new());
        for (r, key) in new.keys.iter().enumerate() {
            let Some(found) = key.as_ref().and_then(|k| self.index.get(k)) else {
                continue;
            };
            for at in found {
                if fits(new.times[r], self.part(at).times[at.row as usize]) {
                    news.push(r as u32);
                    stored.push(*at);
                }
            }
        }
        (news, stored)
    }

    fn part(&self, at: &RowRef) -> &Part {
        &self.buckets[&at.bucket][at.part as usize]
    }

    /// The columns of the stored rows `at`, in that order.
    pub fn take(&self, at: &[RowRef]) -> Result<Vec<ArrayRef>> {
        // Each part used gets a number for `interleave`.
        let mut ids: HashMap<(i64, u32), usize> = HashMap::new();
        let mut parts: Vec<(i64, u32)> = Vec::new();
        let indices: Vec<(usize, usize)> = at
            .iter()
            .map(|r| {
                let id = *ids.entry((r.bucket, r.part)).or_insert_with(|| {
                    parts.push((r.bucket, r.part));
                    parts.len() - 1
                });
                (id, r.row as usize)
            })
            .collect();
        let batches: Vec<&RecordBatch> = (parts.iter())
            .map(|(b, p)| &self.buckets[b][*p as usize].rows)
            .collect();
        (0..self.schema.fields().len())
            .map(|c| {
                let columns: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&columns, &indices)?)
            })
            .collect()
    }

    pub fn mark_matched(&mut self, at: &[RowRef]) {
        for r in at {
            if let Some(part) =
                (self.buckets.get_mut(&r.bucket)).and_then(|b| b.get_mut(r.part as usize))
            {
                part.matched[r.row as usize] = true;
            }
        }
    }

    /// Stores the rows of `batch` (with their keys and times), each with
    /// whether it has matched yet.
    pub fn insert(
        &mut self,
        batch: &RecordBatch,
        new: Evaluated,
        matched: Vec<bool>,
    ) -> Result<()> {
        let mut by_bucket: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (r, t) in new.times.iter().enumerate() {
            by_bucket
                .entry(t.div_euclid(self.bucket_width))
                .or_default()
                .push(r as u32);
        }
        let whole = by_bucket.len() == 1;
        let mut keys: Vec<Option<Option<Box<[u8]>>>> = new.keys.into_iter().map(Some).collect();
        for (bucket, rows) in by_bucket {
            let parts = self.buckets.entry(bucket).or_default();
            let part = parts.len() as u32;
            let part_keys: Vec<Option<Box<[u8]>>> = rows
                .iter()
                .map(|r| keys[*r as usize].take().flatten())
                .collect();
            for (row, key) in part_keys.iter().enumerate() {
                if let Some(key) = key {
                    let at = RowRef {
                        bucket,
                        part,
                        row: row as u32,
                    };
                    self.index.entry(key.clone()).or_default().push(at);
                }
            }
            self.rows += rows.len();
            parts.push(Part {
                rows: match whole {
                    true => batch.clone(),
                    false => take_record_batch(batch, &UInt32Array::from(rows.clone()))?,
                },
                times: rows.iter().map(|r| new.times[*r as usize]).collect(),
                keys: part_keys,
                matched: rows.iter().map(|r| matched[*r as usize]).collect(),
                groups: rows.iter().map(|r| new.groups[*r as usize]).collect(),
            });
        }
        Ok(())
    }

    /// Frees every row whose time is before `before` (whole buckets: every
    /// time a freed bucket can hold is before it). Returns the freed rows
    /// that never matched, for an outer join to emit.
    pub fn expire(&mut self, before: i64) -> Result<Vec<RecordBatch>> {
        let mut unmatched = Vec::new();
        while let Some((&bucket, _)) = self.buckets.first_key_value() {
            let last = bucket
                .saturating_mul(self.bucket_width)
                .saturating_add(self.bucket_width - 1);
            if last >= before && before != i64::MAX {
                break;
            }
            let Some(parts) = self.buckets.remove(&bucket) else {
                break;
            };
            for part in parts {
                for key in part.keys.iter().flatten() {
                    if let Some(rows) = self.index.get_mut(key.as_ref()) {
                        rows.retain(|r| r.bucket != bucket);
                        if rows.is_empty() {
                            self.index.remove(key.as_ref());
                        }
                    }
                }
                self.rows -= part.rows.num_rows();
                let never: Vec<u32> = (0..part.matched.len() as u32)
                    .filter(|r| !part.matched[*r as usize])
                    .collect();
                if !never.is_empty() {
                    unmatched.push(take_record_batch(&part.rows, &UInt32Array::from(never))?);
                }
            }
        }
        Ok(unmatched)
    }

    /// Every stored row, part by part, with whether it has matched and its
    /// key group.
    pub fn rows(&self) -> impl Iterator<Item = (&RecordBatch, &[bool], Vec<u16>)> {
        (self.buckets.values().flatten())
            .map(|part| (&part.rows, part.matched.as_slice(), part.groups.clone()))
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// Bytes held, for the state-size metric.
    pub fn bytes(&self) -> usize {
        let rows: usize = (self.buckets.values().flatten())
            .map(|p| p.rows.get_array_memory_size() + p.times.len() * 9)
            .sum();
        let index: usize = (self.index.iter())
            .map(|(k, v)| k.len() + v.capacity() * std::mem::size_of::<RowRef>())
            .sum();
        rows + index
    }
}
