//! The bounded per-key history of a rule query with window functions.
//!
//! `lag(error_rate) OVER (PARTITION BY service ORDER BY window_start)` over
//! a windowed query's results needs each service's previous window, which
//! came in an earlier micro-batch. The history keeps, per key, the newest
//! `depth` rows (what the query's functions can reach back to, see
//! [`crate::plan::HistorySpec`]); `post` computes the functions over that
//! history plus the new rows and keeps only the new ones. The history is
//! checkpointed like window state, so a restart computes the same
//! comparisons.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows as KeyRows, SortField};

use super::window::KeyTable;
use super::{Description, Operator, Rows, StateSize, SubPlan};
use crate::error::Result;
use crate::plan::HistorySpec;
use crate::state::{KeyGroups, key_group, with_key_groups, without_key_groups};

/// A rule query split around the key history: `pre` (row-local) on the new
/// rows, `post` (the window functions) on history + new rows.
pub struct HistoryOperator {
    history: KeyHistory,
    pre: SubPlan,
    post: SubPlan,
}

impl HistoryOperator {
    pub fn new(spec: HistorySpec, pre: SubPlan, post: SubPlan) -> Result<Self> {
        let history = KeyHistory::new(spec, pre.plan.schema(), Arc::clone(post.input.schema()))?;
        Ok(Self { history, pre, post })
    }
}

#[async_trait]
impl Operator for HistoryOperator {
    async fn prepare(&mut self, _port: usize, input: &Rows) -> Result<Vec<RecordBatch>> {
        self.pre.run(vec![input.batch.clone()]).await
    }

    fn key_groups(&self, _port: usize, prepared: &RecordBatch) -> Result<Option<Vec<u16>>> {
        self.history.key_groups(prepared).map(Some)
    }

    async fn process(
        &mut self,
        _port: usize,
        prepared: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let rows = concat_batches(&self.pre.plan.schema(), &prepared)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        out.extend(
            self.post
                .run(vec![self.history.with_history(&rows)?])
                .await?,
        );
        self.history.remember(&rows)
    }

    fn signature(&self) -> Option<&str> {
        Some(&self.history.signature)
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let groups = self.history.key_groups(&self.history.rows)?;
        Ok(vec![with_key_groups(&self.history.rows, groups)?])
    }

    fn restore(
        &mut self,
        state: &[RecordBatch],
        owned: &KeyGroups,
        _watermarks: &[i64],
    ) -> Result<()> {
        let rows = state
            .iter()
            .map(without_key_groups)
            .collect::<Result<Vec<_>>>()?;
        let rows = concat_batches(&self.history.schema, &rows)?;
        self.history.rows = owned.keep(&rows, self.history.key_groups(&rows)?)?;
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.history.rows.num_rows(),
            bytes: self.history.rows.get_array_memory_size(),
        }
    }

    fn describe(&self) -> Description {
        let spec = &self.history.spec;
        let schema = self.pre.plan.schema();
        let name = |i: &usize| schema.field(*i).name().clone();
        Description {
            summary: format!(
                "window functions over each key's earlier rows, partitioned by [{}], ordered by {}",
                spec.keys.iter().map(name).collect::<Vec<_>>().join(", "),
                name(&spec.order)
            ),
            state: Some(format!(
                "the newest {} rows per key (bounded per key; every key seen is kept)",
                spec.depth
            )),
            plans: vec![
                (
                    "on each batch, on the new rows".into(),
                    Arc::clone(&self.pre.plan),
                ),
                (
                    "over history + new rows (new rows kept)".into(),
                    Arc::clone(&self.post.plan),
                ),
            ],
        }
    }
}

struct KeyHistory {
    spec: HistorySpec,
    /// The rows `pre` produces (the history's rows).
    schema: SchemaRef,
    /// `schema` plus the new-row marker: what `post` reads.
    post_schema: SchemaRef,
    converter: RowConverter,
    /// At most `spec.depth` rows per key.
    rows: RecordBatch,
    signature: String,
}

impl KeyHistory {
    pub fn new(spec: HistorySpec, schema: SchemaRef, post_schema: SchemaRef) -> Result<Self> {
        let converter = RowConverter::new(
            spec.keys
                .iter()
                .map(|k| SortField::new(schema.field(*k).data_type().clone()))
                .collect(),
        )?;
        let name = |i: &usize| schema.field(*i).name().clone();
        let signature = format!(
            "history of {} rows per key [{}] by {}, rows ({})",
            spec.depth,
            spec.keys.iter().map(name).collect::<Vec<_>>().join(", "),
            name(&spec.order),
            schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Self {
            rows: RecordBatch::new_empty(Arc::clone(&schema)),
            spec,
            schema,
            post_schema,
            converter,
            signature,
        })
    }

    /// What `post` reads for `new` rows: the history of their keys (marked
    /// old) and the rows themselves (marked new).
    pub fn with_history(&self, new: &RecordBatch) -> Result<RecordBatch> {
        let marked = |batch: &RecordBatch, new: bool| -> Result<RecordBatch> {
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(BooleanArray::from(vec![new; batch.num_rows()])) as ArrayRef);
            Ok(RecordBatch::try_new(
                Arc::clone(&self.post_schema),
                columns,
            )?)
        };
        if self.spec.keys.is_empty() {
            // No PARTITION BY: one key, the whole stream.
            return Ok(concat_batches(
                &self.post_schema,
                &[marked(&self.rows, false)?, marked(new, true)?],
            )?);
        }
        let mut keys = KeyTable::new(&self.converter);
        let new_keys = self.converter.convert_columns(&self.key_columns(new))?;
        for row in new_keys.iter() {
            keys.intern(row);
        }
        let old_keys = self
            .converter
            .convert_columns(&self.key_columns(&self.rows))?;
        let wanted: BooleanArray = old_keys
            .iter()
            .map(|r| Some(keys.find(r).is_some()))
            .collect();
        let old = filter_record_batch(&self.rows, &wanted)?;
        Ok(concat_batches(
            &self.post_schema,
            &[marked(&old, false)?, marked(new, true)?],
        )?)
    }

    /// Adds `new` rows, keeping the newest `depth` rows of each key.
    pub fn remember(&mut self, new: &RecordBatch) -> Result<()> {
        let all = concat_batches(&self.schema, [&self.rows, new])?;
        let mut sort: Vec<SortColumn> = self
            .key_columns(&all)
            .into_iter()
            .map(|values| SortColumn {
                values,
                options: None,
            })
            .collect();
        sort.push(SortColumn {
            values: Arc::clone(all.column(self.spec.order)),
            options: None,
        });
        let sorted = take_record_batch(&all, &lexsort_to_indices(&sort, None)?)?;
        let keys = match self.spec.keys.is_empty() {
            true => None,
            false => Some(self.converter.convert_columns(&self.key_columns(&sorted))?),
        };
        let same_key = |i: usize, j: usize| keys.as_ref().is_none_or(|k| k.row(i) == k.row(j));
        // Walking backwards, keep a row while its key has fewer than `depth`
        // newer rows.
        let mut keep = Vec::new();
        let mut run = 0;
        for i in (0..sorted.num_rows()).rev() {
            run = if i + 1 < sorted.num_rows() && same_key(i, i + 1) {
                run + 1
            } else {
                0
            };
            if run < self.spec.depth {
                keep.push(i as u32);
            }
        }
        keep.reverse();
        self.rows = take_record_batch(&sorted, &UInt32Array::from(keep))?;
        Ok(())
    }

    /// The key group of each row of `batch` (all in one group without
    /// PARTITION BY: the whole stream is one key).
    fn key_groups(&self, batch: &RecordBatch) -> Result<Vec<u16>> {
        if self.spec.keys.is_empty() {
            return Ok(vec![key_group(&[]); batch.num_rows()]);
        }
        let keys: KeyRows = self.converter.convert_columns(&self.key_columns(batch))?;
        Ok(keys.iter().map(|k| key_group(k.as_ref())).collect())
    }

    fn key_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.spec
            .keys
            .iter()
            .map(|k| Arc::clone(batch.column(*k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, keys: &[&str], order: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(order.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn keeps_the_newest_rows_of_each_key_and_feeds_only_the_keys_asked_for() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("t", DataType::Int64, false),
        ]));
        let mut post = schema.fields().to_vec();
        post.push(Arc::new(Field::new("new", DataType::Boolean, false)));
        let spec = HistorySpec {
            keys: vec![0],
            order: 1,
            depth: 2,
        };
        let mut history =
            KeyHistory::new(spec, Arc::clone(&schema), Arc::new(Schema::new(post))).unwrap();
        history
            .remember(&batch(&schema, &["a", "b", "a", "a"], &[3, 1, 1, 2]))
            .unwrap();
        history
            .remember(&batch(&schema, &["a", "c"], &[4, 1]))
            .unwrap();
        assert_eq!(
            history.rows,
            batch(&schema, &["a", "a", "b", "c"], &[3, 4, 1, 1])
        );
        let input = history.with_history(&batch(&schema, &["a"], &[5])).unwrap();
        let marks: Vec<bool> = input
            .column(2)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap()
            .iter()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(input.num_rows(), 3);
        assert_eq!(marks, vec![false, false, true]);
    }
}
