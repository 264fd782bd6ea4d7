//! What the stateful window operator computes, lifted out of DataFusion's
//! physical `AggregateExec`: the group expressions, the aggregate functions
//! (each with its arguments and FILTER), and the output layout.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int8Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::cast::as_boolean_array;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use super::spec::WindowSpec;
use crate::error::Result;
use crate::state::{KeyGroups, key_group};

/// One column of the aggregate's group part, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    WindowStart,
    WindowEnd,
    /// The watermark each row met (see [`crate::plan::WATERMARK_COLUMN`]):
    /// grouped by so that DataFusion carries it through the query's filters
    /// to the operator, which reads it instead of grouping by it.
    Watermark,
    /// The n-th non-window key.
    Key(usize),
}

/// A windowed aggregate, as planned by DataFusion and run by our operator.
#[derive(Debug, Clone)]
pub struct WindowedAggregate {
    pub spec: WindowSpec,
    /// Evaluates to each row's pane start (the `window_start` column the
    /// runtime fills in before the query sees the rows).
    pub pane_start: Arc<dyn PhysicalExpr>,
    /// Evaluates to the watermark each row met.
    pub watermark: Arc<dyn PhysicalExpr>,
    /// Non-window group keys with their output names.
    pub keys: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// The group part of the output, in order.
    pub group_columns: Vec<GroupColumn>,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Per aggregate: the expressions it consumes (its arguments, then its
    /// ORDER BY expressions, which order-sensitive accumulators sort by).
    pub arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Per aggregate: its FILTER (WHERE ...) clause.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The aggregate's output schema: group columns, then one per aggregate.
    pub output_schema: SchemaRef,
}

/// Per aggregate: its argument arrays and its FILTER mask.
pub type AggregateInputs = (Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>);

/// One micro-batch of aggregate input, evaluated once.
pub struct EvaluatedInput {
    /// Per row: pane start (or event time, for sessions).
    pub times: Vec<i64>,
    /// Per row: the watermark it met.
    pub watermarks: Vec<i64>,
    pub key_rows: Rows,
    /// Per aggregate: its argument arrays.
    pub arguments: Vec<Vec<ArrayRef>>,
    pub filters: Vec<Option<BooleanArray>>,
}

impl EvaluatedInput {
    /// The arguments and filters of the rows at `indices` (all rows when `None`).
    pub fn select(
        &self,
        indices: Option<&datafusion::arrow::array::UInt32Array>,
    ) -> Result<AggregateInputs> {
        let Some(indices) = indices else {
            return Ok((self.arguments.clone(), self.filters.clone()));
        };
        let arguments = self
            .arguments
            .iter()
            .map(|args| {
                args.iter()
                    .map(|a| take(a, indices, None))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| -> Result<BooleanArray> {
                        Ok(as_boolean_array(&take(f, indices, None)?)?.clone())
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((arguments, filters))
    }
}

impl WindowedAggregate {
    /// A converter for the key columns. With no keys, a constant key stands in,
    /// so one mechanism serves `GROUP BY TUMBLE(...)` alone too.
    pub fn key_converter(&self, input_schema: &SchemaRef) -> Result<RowConverter> {
        let mut fields = Vec::new();
        for (expr, _) in &self.keys {
            fields.push(SortField::new(expr.data_type(input_schema)?));
        }
        if fields.is_empty() {
            fields.push(SortField::new(datafusion::arrow::datatypes::DataType::Int8));
        }
        Ok(RowConverter::new(fields)?)
    }

    /// The key group of each row of `batch` (a `pre` output), as
    /// [`Self::state_batch`] computes it for the state.
    pub fn key_groups(&self, converter: &RowConverter, batch: &RecordBatch) -> Result<Vec<u16>> {
        let keys = converter.convert_columns(&self.key_columns(batch)?)?;
        Ok(keys.iter().map(|k| key_group(k.as_ref())).collect())
    }

    /// The key columns of `batch`; a constant without keys.
    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let mut keys = Vec::with_capacity(self.keys.len().max(1));
        for (expr, _) in &self.keys {
            keys.push(expr.evaluate(batch)?.into_array(batch.num_rows())?);
        }
        if keys.is_empty() {
            keys.push(Arc::new(Int8Array::from(vec![0i8; batch.num_rows()])) as ArrayRef);
        }
        Ok(keys)
    }

    pub fn evaluate_input(
        &self,
        converter: &RowConverter,
        batch: &RecordBatch,
    ) -> Result<EvaluatedInput> {
        let millis = |expr: &Arc<dyn PhysicalExpr>| -> Result<Vec<i64>> {
            let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
            Ok(array
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .ok_or_else(|| crate::internal_error!("{expr} is not a millisecond timestamp"))?
                .values()
                .to_vec())
        };
        let times = millis(&self.pane_start)?;
        let watermarks = millis(&self.watermark)?;
        let key_rows = converter.convert_columns(&self.key_columns(batch)?)?;
        let mut arguments = Vec::with_capacity(self.arguments.len());
        for exprs in &self.arguments {
            let mut args = Vec::with_capacity(exprs.len());
            for expr in exprs {
                args.push(expr.evaluate(batch)?.into_array(batch.num_rows())?);
            }
            arguments.push(args);
        }
        let mut filters = Vec::with_capacity(self.filters.len());
        for filter in &self.filters {
            filters.push(match filter {
                Some(expr) => {
                    let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
                    Some(as_boolean_array(&array)?.clone())
                }
                None => None,
            });
        }
        Ok(EvaluatedInput {
            times,
            watermarks,
            key_rows,
            arguments,
            filters,
        })
    }

    /// Fresh accumulators, one per aggregate: DataFusion's `GroupsAccumulator`
    /// where the function has one, its row `Accumulator` behind the adapter
    /// otherwise (exactly what DataFusion's hash aggregation does).
    pub fn new_accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.aggregates
            .iter()
            .map(|aggregate| -> Result<Box<dyn GroupsAccumulator>> {
                if aggregate.groups_accumulator_supported() {
                    Ok(aggregate.create_groups_accumulator()?)
                } else {
                    let aggregate = Arc::clone(aggregate);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        aggregate.create_accumulator()
                    })))
                }
            })
            .collect()
    }

    /// Builds output rows: per row its window bounds, key columns (decoded
    /// from `key_rows`) and the aggregate results.
    pub fn assemble(
        &self,
        converter: &RowConverter,
        window_starts: Vec<i64>,
        window_ends: Vec<i64>,
        key_rows: &Rows,
        results: Vec<ArrayRef>,
    ) -> Result<RecordBatch> {
        let keys = converter.convert_rows(key_rows.iter())?;
        let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from(window_starts));
        let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from(window_ends));
        let mut columns: Vec<ArrayRef> = self
            .group_columns
            .iter()
            .map(|c| match c {
                GroupColumn::WindowStart => Arc::clone(&starts),
                GroupColumn::WindowEnd | GroupColumn::Watermark => Arc::clone(&ends),
                GroupColumn::Key(i) => Arc::clone(&keys[*i]),
            })
            .collect();
        columns.extend(results);
        // Casts nothing in the common case; aligns nullability and timestamp
        // metadata with the schema DataFusion planned.
        let columns = columns
            .into_iter()
            .zip(self.output_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    datafusion::arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.output_schema),
            columns,
        )?)
    }
}

/// Operator state read back from a checkpoint: per group its bounds (pane
/// or session), its `changed` flag, its key and its partial aggregate state.
pub struct StateRows {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub changed: Vec<bool>,
    pub keys: Rows,
    /// Per aggregate: its state arrays.
    pub states: Vec<Vec<ArrayRef>>,
}

impl WindowedAggregate {
    /// What the operator's state means: window, key types and every
    /// aggregate with its state fields. A checkpoint is only restored into an
    /// operator with the same signature.
    pub fn signature(&self, input_schema: &SchemaRef) -> Result<String> {
        let keys = self
            .keys
            .iter()
            .map(|(expr, name)| Ok(format!("{name} {}", expr.data_type(input_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = self
            .aggregates
            .iter()
            .map(|a| {
                let fields = a
                    .state_fields()?
                    .iter()
                    .map(|f| f.data_type().to_string())
                    .collect::<Vec<_>>();
                Ok(format!("{} [{}]", a.name(), fields.join(", ")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(format!(
            "{}; keys: {}; aggregates: {}",
            self.spec,
            keys.join(", "),
            aggregates.join("; ")
        ))
    }

    /// The checkpoint layout of state: `start`, `end`, `changed`, one column
    /// per key (`key.<name>`), one per aggregate state field. Plain columns,
    /// so the state can be inspected with any Parquet reader. Returned with
    /// each row's key group.
    pub fn state_batch(
        &self,
        converter: &RowConverter,
        bounds: (Vec<i64>, Vec<i64>),
        changed: Vec<bool>,
        keys: &Rows,
        states: &[Vec<ArrayRef>],
    ) -> Result<(RecordBatch, Vec<u16>)> {
        let groups = keys.iter().map(|k| key_group(k.as_ref())).collect();
        let mut fields = vec![
            Field::new("start", DataType::Int64, false),
            Field::new("end", DataType::Int64, false),
            Field::new("changed", DataType::Boolean, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(bounds.0)),
            Arc::new(Int64Array::from(bounds.1)),
            Arc::new(BooleanArray::from(changed)),
        ];
        let key_names: Vec<&str> = match self.keys.len() {
            0 => vec!["none"],
            _ => self.keys.iter().map(|(_, name)| name.as_str()).collect(),
        };
        for (array, name) in converter
            .convert_rows(keys.iter())?
            .into_iter()
            .zip(key_names)
        {
            fields.push(Field::new(
                format!("key.{name}"),
                array.data_type().clone(),
                true,
            ));
            columns.push(array);
        }
        for (aggregate, state) in self.aggregates.iter().zip(states) {
            for (field, array) in aggregate.state_fields()?.iter().zip(state) {
                let name = format!("{}.{}", aggregate.name(), field.name());
                fields.push(Field::new(name, array.data_type().clone(), true));
                columns.push(Arc::clone(array));
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok((batch, groups))
    }

    /// Reads a batch written by [`Self::state_batch`] back, keeping the rows
    /// whose key falls in a group of `owned`.
    pub fn read_state_batch(
        &self,
        converter: &RowConverter,
        batch: &RecordBatch,
        owned: &KeyGroups,
    ) -> Result<StateRows> {
        let key_count = self.keys.len().max(1);
        let keys = converter.convert_columns(&batch.columns()[3..3 + key_count])?;
        let batch = &owned.keep(batch, keys.iter().map(|k| key_group(k.as_ref())))?;
        let int64 = |i: usize| -> Result<Vec<i64>> {
            Ok(datafusion::common::cast::as_int64_array(batch.column(i))?
                .values()
                .to_vec())
        };
        let mut next = 3 + key_count;
        let mut states = Vec::with_capacity(self.aggregates.len());
        for aggregate in &self.aggregates {
            let width = aggregate.state_fields()?.len();
            if next + width > batch.num_columns() {
                return crate::internal_err!(
                    "checkpointed state has fewer columns than the query's aggregates"
                );
            }
            states.push(batch.columns()[next..next + width].to_vec());
            next += width;
        }
        Ok(StateRows {
            starts: int64(0)?,
            ends: int64(1)?,
            changed: as_boolean_array(batch.column(2))?
                .iter()
                .map(|c| c == Some(true))
                .collect(),
            keys: converter.convert_columns(&batch.columns()[3..3 + key_count])?,
            states,
        })
    }
}

/// Evaluates all groups of `accumulators`, leaving them empty.
pub fn evaluate_all(accumulators: &mut [Box<dyn GroupsAccumulator>]) -> Result<Vec<ArrayRef>> {
    accumulators
        .iter_mut()
        .map(|a| a.evaluate(EmitTo::All).map_err(Into::into))
        .collect()
}

/// The partial state of every group, leaving the accumulators empty.
pub fn state_all(accumulators: &mut [Box<dyn GroupsAccumulator>]) -> Result<Vec<Vec<ArrayRef>>> {
    accumulators
        .iter_mut()
        .map(|a| a.state(EmitTo::All).map_err(Into::into))
        .collect()
}

/// Merges partial `states` (one list per accumulator) into `accumulators`,
/// state row `i` going to group `groups[i]`.
pub fn merge_states(
    accumulators: &mut [Box<dyn GroupsAccumulator>],
    states: &[Vec<ArrayRef>],
    groups: &[usize],
    total_groups: usize,
) -> Result<()> {
    for (acc, state) in accumulators.iter_mut().zip(states) {
        acc.merge_batch(state, groups, total_groups)?;
    }
    Ok(())
}

/// The rows of `states` at `indices`.
pub fn take_states(
    states: &[Vec<ArrayRef>],
    indices: &datafusion::arrow::array::UInt32Array,
) -> Result<Vec<Vec<ArrayRef>>> {
    states
        .iter()
        .map(|s| {
            s.iter()
                .map(|a| take(a, indices, None))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}

pub fn accumulators_size(accumulators: &[Box<dyn GroupsAccumulator>]) -> usize {
    accumulators.iter().map(|a| a.size()).sum()
}
