//! The lookup join's plan node, put in place of DataFusion's hash join by a
//! physical optimizer rule ([`LookupJoins`]) wherever one side scans lookup
//! tables only.
//!
//! Our plans are built once and executed again for every micro-batch.
//! DataFusion's hash join builds its hash table once per plan (a shared
//! `OnceAsync`): executed again, it joins with the first execution's build
//! side, the first batch's events or the table's first version (measured on
//! Nexmark q13: 76 distinct side values in the output instead of 10,000).
//! This node indexes the table's current version once, and again only when
//! a new version is read, looks each batch's events up in it, and emits
//! each event's matches in the events' order, so what follows sees the same
//! rows in the same order however the stream is cut.

use hashbrown::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExprRef};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, collect,
};
use futures::{StreamExt, TryStreamExt};

use super::TableRows;

/// Whether every table `plan` scans is a lookup table (marked by
/// [`LookupTableExec`]).
pub fn scans_lookup_only(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.is::<LookupTableExec>() {
        return true;
    }
    let children = plan.children();
    !children.is_empty() && children.iter().all(|c| scans_lookup_only(c))
}

/// The lookup tables `plan` scans.
fn lookup_tables(plan: &Arc<dyn ExecutionPlan>, found: &mut Vec<(String, TableRows)>) {
    match plan.downcast_ref::<LookupTableExec>() {
        Some(scan) => found.push((scan.name.clone(), scan.rows.clone())),
        None => plan
            .children()
            .into_iter()
            .for_each(|c| lookup_tables(c, found)),
    }
}

/// A scan of a lookup table, marked as one: the scan DataFusion planned,
/// and which table it reads (a stream's scan looks just the same).
#[derive(Debug)]
pub struct LookupTableExec {
    name: String,
    rows: TableRows,
    scan: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for LookupTableExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LookupTableExec: table={}", self.name)
    }
}

impl ExecutionPlan for LookupTableExec {
    fn name(&self) -> &'static str {
        "LookupTableExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.scan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&PhysicalExprRef) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let (Some(scan), None) = (children.pop(), children.pop()) else {
            return Err(DataFusionError::Internal(
                "a lookup table scan has one child".into(),
            ));
        };
        Ok(Arc::new(Self {
            name: self.name.clone(),
            rows: self.rows.clone(),
            scan,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        self.scan.execute(partition, context)
    }
}

/// What a lookup join passes on for an event row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Each match.
    Inner,
    /// Each match, or the row with NULLs for the table's columns.
    Outer,
}

/// The physical optimizer rule: every hash join of a stream with lookup
/// tables that passes on event rows only (inner, or outer on the events'
/// side) becomes a [`LookupJoinExec`].
#[derive(Debug)]
pub struct LookupJoins {
    /// Every lookup table of the pipeline, by name.
    pub tables: Vec<(String, TableRows)>,
}

impl PhysicalOptimizerRule for LookupJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            // A scan of a table's rows (by identity: its partition is
            // them) is marked; a join with marked scans on one side becomes
            // a lookup join where it can.
            if let Some(scan) = node.downcast_ref::<StreamingTableExec>()
                && let Some((name, rows)) = (self.tables.iter())
                    .find(|(_, rows)| Arc::ptr_eq(scan.partition_schema(), rows.schema()))
            {
                let marked = LookupTableExec {
                    name: name.clone(),
                    rows: rows.clone(),
                    scan: Arc::clone(&node),
                };
                return Ok(Transformed::yes(Arc::new(marked) as Arc<dyn ExecutionPlan>));
            }
            Ok(match node.downcast_ref::<HashJoinExec>() {
                Some(join) => match LookupJoinExec::try_new(join)? {
                    Some(lookup) => Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>),
                    None => Transformed::no(node),
                },
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "streamsql_lookup_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A stream joined with lookup tables through an index of their rows.
#[derive(Debug)]
pub struct LookupJoinExec {
    /// The events.
    stream: Arc<dyn ExecutionPlan>,
    join: Arc<Lookup>,
    properties: Arc<PlanProperties>,
}

/// What a lookup join does, and its index, shared by the streams it runs.
#[derive(Debug)]
struct Lookup {
    /// The table side (lookup scans, filters, projections).
    table: Arc<dyn ExecutionPlan>,
    /// Whether the events are the join's left side.
    stream_is_left: bool,
    join_type: JoinType,
    kind: Kind,
    stream_keys: Vec<PhysicalExprRef>,
    table_keys: Vec<PhysicalExprRef>,
    filter: Option<JoinFilter>,
    null_equality: NullEquality,
    /// Columns of the join's schema (left, then right) that it outputs.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    /// The tables read, to tell when a new version came.
    rows: Vec<TableRows>,
    names: Vec<String>,
    index: Mutex<Option<Arc<Index>>>,
}

/// A version of the table side, by key.
#[derive(Debug)]
struct Index {
    /// The versions of the tables it was built from.
    versions: Vec<Arc<RecordBatch>>,
    table: RecordBatch,
    key_types: Vec<DataType>,
    converter: RowConverter,
    /// The rows of `table` per key, in table order.
    rows: HashMap<Box<[u8]>, Vec<u32>>,
}

impl LookupJoinExec {
    /// The lookup join doing what `join` does, when one side of it scans
    /// lookup tables only and it passes on event rows only.
    fn try_new(join: &HashJoinExec) -> DFResult<Option<Self>> {
        let (left, right) = (join.left(), join.right());
        let stream_is_left = match (scans_lookup_only(left), scans_lookup_only(right)) {
            (false, true) => true,
            (true, false) => false,
            _ => return Ok(None),
        };
        let kind = match (join.join_type(), stream_is_left) {
            (JoinType::Inner, _) => Kind::Inner,
            (JoinType::Left, true) | (JoinType::Right, false) => Kind::Outer,
            // Semi and anti joins come from subqueries, refused before.
            _ => return Ok(None),
        };
        if join.null_aware {
            return Ok(None);
        }
        let (stream, table) = match stream_is_left {
            true => (left, right),
            false => (right, left),
        };
        let pick = |pair: &(PhysicalExprRef, PhysicalExprRef), left_side: bool| match left_side {
            true => Arc::clone(&pair.0),
            false => Arc::clone(&pair.1),
        };
        let mut tables = Vec::new();
        lookup_tables(table, &mut tables);
        let (names, rows) = tables.into_iter().unzip();
        let schema = join.schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            stream.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Some(Self {
            stream: Arc::clone(stream),
            join: Arc::new(Lookup {
                table: Arc::clone(table),
                stream_is_left,
                join_type: *join.join_type(),
                kind,
                stream_keys: join.on().iter().map(|p| pick(p, stream_is_left)).collect(),
                table_keys: join.on().iter().map(|p| pick(p, !stream_is_left)).collect(),
                filter: join.filter().cloned(),
                null_equality: join.null_equality(),
                projection: join.projection.as_ref().map(|p| p.to_vec()),
                schema,
                rows,
                names,
                index: Mutex::new(None),
            }),
            properties: Arc::new(properties),
        }))
    }
}

impl Lookup {
    /// The index of the tables' current versions: the cached one while no
    /// new version came, else built anew.
    async fn index(&self, ctx: Arc<TaskContext>) -> DFResult<Arc<Index>> {
        let versions: Vec<Arc<RecordBatch>> = self.rows.iter().map(TableRows::current).collect();
        let cached = self.index.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(index) = cached
            && index.versions.len() == versions.len()
            && index
                .versions
                .iter()
                .zip(&versions)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return Ok(index);
        }
        let schema = self.table.schema();
        let table = concat_batches(&schema, &collect(Arc::clone(&self.table), ctx).await?)?;
        let keys = evaluate(&self.table_keys, &table)?;
        let key_types: Vec<DataType> = keys.iter().map(|k| k.data_type().clone()).collect();
        let converter = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let encoded = converter.convert_columns(&keys)?;
        let mut rows: HashMap<Box<[u8]>, Vec<u32>> = HashMap::with_capacity(table.num_rows());
        for r in 0..table.num_rows() {
            if self.skips(&keys, r) {
                continue;
            }
            rows.entry(encoded.row(r).as_ref().into())
                .or_default()
                .push(r as u32);
        }
        let index = Arc::new(Index {
            versions,
            table,
            key_types,
            converter,
            rows,
        });
        *self.index.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&index));
        Ok(index)
    }

    /// Whether row `r` of `keys` matches nothing: a NULL key equals no key
    /// (unless the join says `IS NOT DISTINCT FROM`).
    fn skips(&self, keys: &[ArrayRef], r: usize) -> bool {
        self.null_equality == NullEquality::NullEqualsNothing && keys.iter().any(|k| k.is_null(r))
    }

    /// One batch of events joined with `index`.
    fn join(&self, index: &Index, events: &RecordBatch) -> DFResult<RecordBatch> {
        let keys = evaluate(&self.stream_keys, events)?;
        // DataFusion gave both sides' keys one type; a cast here could make
        // false matches (an overflow turned NULL, 1.5 turned 1).
        if let Some((k, t)) = (keys.iter().zip(&index.key_types)).find(|(k, t)| k.data_type() != *t)
        {
            return Err(DataFusionError::Internal(format!(
                "lookup join keys of types {} and {t}",
                k.data_type()
            )));
        }
        let encoded = index.converter.convert_columns(&keys)?;
        // Every (event, table row) pair with equal keys, in event order.
        let (mut event_rows, mut table_rows) = (Vec::new(), Vec::new());
        for r in 0..events.num_rows() {
            if self.skips(&keys, r) {
                continue;
            }
            if let Some(matches) = index.rows.get(encoded.row(r).as_ref()) {
                for &t in matches {
                    event_rows.push(r as u32);
                    table_rows.push(Some(t));
                }
            }
        }
        if let Some(filter) = &self.filter {
            let kept = self.filter_pairs(filter, events, &index.table, &event_rows, &table_rows)?;
            let mut k = kept.iter();
            event_rows.retain(|_| k.next().is_some_and(|v| v == Some(true)));
            let mut k = kept.iter();
            table_rows.retain(|_| k.next().is_some_and(|v| v == Some(true)));
        }
        let (event_rows, table_rows) = match self.kind {
            Kind::Inner => (event_rows, table_rows),
            Kind::Outer => {
                let (mut events_out, mut table_out) = (Vec::new(), Vec::new());
                let mut pairs = event_rows.iter().zip(&table_rows).peekable();
                for r in 0..events.num_rows() as u32 {
                    let mut any = false;
                    while let Some((_, t)) = pairs.next_if(|(e, _)| **e == r) {
                        events_out.push(r);
                        table_out.push(*t);
                        any = true;
                    }
                    if !any {
                        events_out.push(r);
                        table_out.push(None);
                    }
                }
                (events_out, table_out)
            }
        };
        let rows = event_rows.len();
        let events_taken = take_columns(events, &UInt32Array::from(event_rows))?;
        let table_taken = take_columns(&index.table, &table_rows.into_iter().collect())?;
        let columns = match self.stream_is_left {
            true => [events_taken, table_taken].concat(),
            false => [table_taken, events_taken].concat(),
        };
        self.project(columns, rows)
    }

    /// The filter of the ON clause, for each candidate pair.
    fn filter_pairs(
        &self,
        filter: &JoinFilter,
        events: &RecordBatch,
        table: &RecordBatch,
        event_rows: &[u32],
        table_rows: &[Option<u32>],
    ) -> DFResult<BooleanArray> {
        let event_rows = UInt32Array::from(event_rows.to_vec());
        let table_rows: UInt32Array = table_rows.iter().copied().collect();
        let columns = (filter.column_indices().iter())
            .map(|c| {
                let events_side = (c.side == JoinSide::Left) == self.stream_is_left;
                match events_side {
                    true => take(events.column(c.index), &event_rows, None),
                    false => take(table.column(c.index), &table_rows, None),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let intermediate = RecordBatch::try_new(Arc::clone(filter.schema()), columns)?;
        let mask = filter
            .expression()
            .evaluate(&intermediate)?
            .into_array(intermediate.num_rows())?;
        mask.as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("join filter is not boolean".into()))
    }

    /// The output columns of the join's `columns` (its schema's, in order),
    /// `rows` long (a projection may keep no column).
    fn project(&self, columns: Vec<ArrayRef>, rows: usize) -> DFResult<RecordBatch> {
        let columns = match &self.projection {
            Some(p) => p.iter().map(|i| Arc::clone(&columns[*i])).collect(),
            None => columns,
        };
        let schema = Arc::clone(&self.schema);
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            schema, columns, &options,
        )?)
    }
}

fn evaluate(exprs: &[PhysicalExprRef], batch: &RecordBatch) -> DFResult<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// The rows `indices` of every column (a NULL index: a row of NULLs).
fn take_columns(batch: &RecordBatch, indices: &UInt32Array) -> DFResult<Vec<ArrayRef>> {
    Ok(batch
        .columns()
        .iter()
        .map(|c| take(c, indices, None))
        .collect::<Result<_, _>>()?)
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let join = &self.join;
        let keys: Vec<String> = (join.stream_keys.iter().zip(&join.table_keys))
            .map(|(s, t)| format!("{s} = {t}"))
            .collect();
        write!(
            f,
            "LookupJoinExec: table={}, join_type={}, on=[{}]",
            join.names.join(", "),
            join.join_type,
            keys.join(", ")
        )?;
        if let Some(filter) = &join.filter {
            write!(f, ", filter={filter}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.stream, &self.join.table]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&PhysicalExprRef) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        let join = &self.join;
        for expr in join.stream_keys.iter().chain(&join.table_keys) {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        match &join.filter {
            Some(filter) => f(filter.expression()),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let (Some(table), Some(stream), None) = (children.pop(), children.pop(), children.pop())
        else {
            return Err(DataFusionError::Internal(
                "a lookup join has two children".into(),
            ));
        };
        let join = match Arc::ptr_eq(&table, &self.join.table) {
            true => Arc::clone(&self.join),
            // Another table side: an index of its own.
            false => {
                let j = &self.join;
                Arc::new(Lookup {
                    table,
                    stream_is_left: j.stream_is_left,
                    join_type: j.join_type,
                    kind: j.kind,
                    stream_keys: j.stream_keys.clone(),
                    table_keys: j.table_keys.clone(),
                    filter: j.filter.clone(),
                    null_equality: j.null_equality,
                    projection: j.projection.clone(),
                    schema: Arc::clone(&j.schema),
                    rows: j.rows.clone(),
                    names: j.names.clone(),
                    index: Mutex::new(None),
                })
            }
        };
        Ok(Arc::new(Self {
            stream,
            join,
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let events = self.stream.execute(partition, Arc::clone(&context))?;
        let join = Arc::clone(&self.join);
        let joined = async move {
            let index = join.index(context).await?;
            Ok::<_, DataFusionError>(
                events.map(move |batch| batch.and_then(|b| join.join(&index, &b))),
            )
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::once(joined).try_flatten(),
        )))
    }
}
