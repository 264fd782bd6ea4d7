//! Planning one query: its SQL to a DataFusion plan, split into row-local
//! sub-plans around the one operator that keeps state, or refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;

use super::incremental::{GROUP_BY, refuse_statement, require_per_window, require_row_local};
use super::join::{has_join, plan_join};
use super::over::{has_window_functions, split_over};
use super::params::bind_params;
use super::slot::BatchSlot;
use super::window_sql::{WATERMARK_COLUMN, WindowCall, rewrite_window};
use super::{diagnostic_at, locate_word};
use crate::config::EmitMode;
use crate::error::{Diagnostic, Diagnostics, Result, StreamSqlError};
use crate::operator::history::HistoryOperator;
use crate::operator::per_window::PerWindow;
use crate::operator::row_local::RowLocal;
use crate::operator::window::{GroupColumn, WindowOperator, WindowSpec, WindowedAggregate};
use crate::operator::{Operator, SubPlan};
use crate::source::EventTimeUnit;
use crate::table::{LookupJoins, TableRows};

/// A table a query may select from.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub schema: SchemaRef,
    pub role: TableRole,
    /// A lookup table's rows, which its scans read.
    pub lookup: Option<TableRows>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRole {
    /// A source; `event_time` names its event-time column, `unit` says
    /// what an integer value of it counts.
    Source {
        event_time: String,
        unit: EventTimeUnit,
    },
    /// A source's late rows.
    Late,
    /// A lookup table (see [`crate::table`]): joined by key, never a stream.
    Lookup,
    /// Another query's results: `windows` when they are window results (a
    /// windowed query's, or a query's reading those), `updates` when a window
    /// can appear in them more than once (an `emit: update` query's), `times`
    /// the columns its watermark bounds (what a join of results is bounded
    /// by).
    Query {
        windows: bool,
        updates: bool,
        times: Vec<TimeColumn>,
    },
}

/// A timestamp column of a query's results that the query's watermark
/// bounds: once the watermark is `w`, every row still to come has
/// `column >= w - lag` (a window's end is after the watermark that closes
/// it, its start at most its length before that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeColumn {
    pub column: String,
    pub lag: i64,
}

/// One query, planned into its operator (one instance per worker).
pub struct QueryPlan {
    pub name: String,
    pub emit: EmitMode,
    /// The tables it reads, one per input port: one, or a join's two (the
    /// same twice for a self-join).
    pub inputs: Vec<String>,
    /// What its rows are when the query itself decides (a windowed query's
    /// or a join's); `None` when they are what its input's rows are.
    pub output: Option<TableRole>,
    pub output_schema: SchemaRef,
    pub operators: Vec<Box<dyn Operator>>,
}

/// The columns a windowed query's source gains: each row's pane bounds as
/// `window_start`/`window_end`, and the watermark it met.
fn with_window_columns(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["window_start", "window_end", WATERMARK_COLUMN] {
        fields.push(Field::new(
            name,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// A session for planning one query; `tables` are the pipeline's tables,
/// whose lookup tables' joins become [`crate::table::LookupJoinExec`]s.
fn new_context(tables: &[TableDef]) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    let lookups = LookupJoins {
        tables: (tables.iter())
            .filter_map(|t| Some((t.name.clone(), t.lookup.clone()?)))
            .collect(),
    };
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(lookups))
        .build();
    let ctx = SessionContext::new_with_state(state);
    // This rule turns `count(DISTINCT x)` into two stacked aggregates; our
    // operator keeps the distinct set as partial state of one aggregate.
    ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    ctx
}

/// Turns a DataFusion error about a SQL file into a diagnostic with its
/// position: DataFusion's own span where it gives one, otherwise the first
/// occurrence in `sql` of the name the error is about.
fn sql_diagnostic(file: &str, sql: &str, error: DataFusionError, fix: &str) -> Diagnostic {
    let (mut line, mut column, helps) = match error.diagnostic() {
        Some(d) => {
            let span = d.span.or_else(|| d.notes.iter().find_map(|n| n.span));
            let helps: Vec<String> = d.helps.iter().map(|h| h.message.clone()).collect();
            (
                span.map(|s| s.start.line as usize).filter(|l| *l > 0),
                span.map(|s| s.start.column as usize),
                helps,
            )
        }
        None => (None, None, Vec::new()),
    };
    let message = error.strip_backtrace().replace('\n', " ");
    if line.is_none()
        && let Some(name) = message
            .split("No field named ")
            .nth(1)
            .and_then(|rest| rest.split(['.', ' ']).next())
        && let Some((l, c)) = locate_word(sql, name.trim_matches('"'))
    {
        (line, column) = (Some(l), Some(c));
    }
    let fix = if helps.is_empty() {
        fix.to_string()
    } else {
        helps.join("; ")
    };
    Diagnostic::new(file, line.or(Some(1)), message)
        .at_column(column)
        .with_fix(fix)
}

impl QueryPlan {
    /// Plans `sql` (read from `file`) against `tables`.
    pub async fn build(
        name: &str,
        file: &Path,
        sql: &str,
        emit: EmitMode,
        tables: &[TableDef],
        params: &BTreeMap<String, serde_yaml::Value>,
    ) -> Result<Self> {
        let file_name = file.display().to_string();
        let ctx = new_context(tables);
        let lookups: Vec<&str> = (tables.iter())
            .filter(|t| t.role == TableRole::Lookup)
            .map(|t| t.name.as_str())
            .collect();
        let state = ctx.state();
        let mut statement = state
            .sql_to_statement(sql, &Dialect::Generic)
            .map_err(|e| {
                sql_diagnostic(
                    &file_name,
                    sql,
                    e,
                    "a query file holds one SELECT statement",
                )
            })?;
        // A GROUP BY without a window is refused unless the query turns out
        // to aggregate window results per window (known once planned).
        let mut group_by_refused = None;
        let call = match &mut statement {
            DFStatement::Statement(inner) => {
                let call = rewrite_window(inner, &file_name)?;
                if let Err(Diagnostics(found)) = refuse_statement(&file_name, sql, inner, &lookups)
                {
                    if found.iter().any(|d| d.message != GROUP_BY.message) {
                        return Err(StreamSqlError::Invalid(Diagnostics(found)));
                    }
                    group_by_refused = Some(Diagnostics(found));
                }
                call
            }
            _ => {
                return Err(Diagnostic::new(&file_name, Some(1), "not a query")
                    .with_fix("a query file holds one SELECT statement")
                    .into());
            }
        };
        let mut slots = Vec::new();
        for table in tables {
            if let Some(rows) = &table.lookup {
                let provider = StreamingTable::try_new(
                    Arc::clone(rows.schema()),
                    vec![Arc::new(rows.clone())],
                )?;
                ctx.register_table(table.name.as_str(), Arc::new(provider))?;
                continue;
            }
            let schema = match (&table.role, &call) {
                (TableRole::Source { .. }, Some(_)) => with_window_columns(&table.schema),
                _ => Arc::clone(&table.schema),
            };
            let slot = BatchSlot::new(Arc::clone(&schema));
            let provider =
                StreamingTable::try_new(Arc::clone(&schema), vec![Arc::new(slot.clone())])?;
            ctx.register_table(table.name.as_str(), Arc::new(provider))?;
            slots.push((table, slot));
        }
        let logical = state.statement_to_plan(statement).await.map_err(|e| {
            sql_diagnostic(
                &file_name,
                sql,
                e,
                "tables are the sources, `<source>_late`, the lookup tables and earlier queries \
                 of the pipeline",
            )
        })?;
        let logical = bind_params(&file_name, sql, logical, params)?;
        let refused = |found: Option<Diagnostics>| match found {
            Some(found) => Err(StreamSqlError::Invalid(found)),
            None => Ok(()),
        };
        if has_join(&logical, &lookups)? {
            refused(group_by_refused.clone())?;
            if let Some(call) = &call {
                return Err(Diagnostic::new(
                    &file_name,
                    Some(call.line),
                    "a window over joined rows is not supported yet",
                )
                .at_column(Some(call.column))
                .with_fix("window each source in a query of its own, or join the raw events")
                .into());
            }
            let planned = plan_join(&file_name, sql, &ctx, &logical, &slots, &lookups).await?;
            return Ok(Self {
                name: name.to_string(),
                emit,
                inputs: planned.inputs,
                output: Some(planned.output),
                output_schema: planned.operator.output_schema(),
                operators: vec![Box::new(planned.operator)],
            });
        }
        let read = tables_read(&logical, &lookups)?;
        let input = match read.len() {
            1 => read.into_iter().next().unwrap_or_default(),
            0 => {
                return Err(
                    Diagnostic::new(&file_name, Some(1), "the query reads no stream")
                        .with_fix(
                            "select FROM a source, `<source>_late` or an earlier query (a \
                             lookup table is joined with one of them)",
                        )
                        .into(),
                );
            }
            _ => {
                return Err(Diagnostic::new(
                    &file_name,
                    Some(1),
                    format!(
                        "the query reads {} tables ({}); a query reads one stream",
                        read.len(),
                        read.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                )
                .with_fix("split it into one query per stream and combine them downstream")
                .into());
            }
        };
        let Some((table, input_slot)) = slots.into_iter().find(|(t, _)| t.name == input) else {
            return crate::internal_err!("planned table {input} is not registered");
        };
        let output = call.as_ref().map(|call| TableRole::Query {
            windows: true,
            updates: emit == EmitMode::Update,
            times: window_times(&logical, &call.spec),
        });
        if let Some(call) = &call {
            let at = Diagnostic::new(&file_name, Some(call.line), String::new())
                .at_column(Some(call.column));
            match &table.role {
                TableRole::Source { event_time, .. } if *event_time == call.time_column => {}
                TableRole::Source { event_time, .. } => {
                    return Err(Diagnostic {
                        message: format!("windows are on the source's event time `{event_time}`, not `{}`", call.time_column),
                        fix: format!("write the window on `{event_time}` (declared as event_time in pipelines.yaml)"),
                        ..at
                    }
                    .into());
                }
                _ => {
                    return Err(Diagnostic {
                        message: format!("`{}` has no event time to window by", table.name),
                        fix: "window a source directly; rule queries over window results come without a window".into(),
                        ..at
                    }
                    .into());
                }
            }
        }
        if call.is_none()
            && let Some(window) = per_window_column(&table.role, &logical)?
        {
            let physical = state.create_physical_plan(&logical).await?;
            require_per_window(&file_name, sql, &physical)?;
            let window_column = input_slot.schema().index_of(&window.column)?;
            let output_schema = physical.schema();
            let TableRole::Query { times, .. } = &table.role else {
                return crate::internal_err!("per-window input is not window results");
            };
            let output = TableRole::Query {
                windows: true,
                updates: false,
                times: passed_times(&logical, times),
            };
            let operator = PerWindow::new(
                SubPlan {
                    input: input_slot,
                    plan: physical,
                    task_ctx: ctx.task_ctx(),
                },
                window_column,
            );
            return Ok(Self {
                name: name.to_string(),
                emit,
                inputs: vec![input],
                output: Some(output),
                output_schema,
                operators: vec![Box::new(operator)],
            });
        }
        if let (
            Some(Diagnostics(found)),
            TableRole::Query {
                windows: true,
                updates,
                times,
            },
        ) = (&mut group_by_refused, &table.role)
        {
            let fix = match (updates, times.is_empty()) {
                (false, false) => format!(
                    "`{input}` holds window results: group them by their window (`GROUP BY \
                     window_start`, and keys), whose rows come together; for coarser \
                     buckets, window the source by them"
                ),
                (true, _) => format!(
                    "`{input}` emits updates: set `emit: final` on it to aggregate its \
                     windows by `window_start`"
                ),
                (false, true) => format!(
                    "`{input}`'s windows are not traced to a windowed query's `window_start`: \
                     aggregate a windowed query's results directly"
                ),
            };
            for d in found {
                d.fix = fix.clone();
            }
        }
        refused(group_by_refused)?;
        if let Some(call) = &call
            && has_window_functions(&logical)?
        {
            return Err(Diagnostic::new(
                &file_name,
                Some(call.line),
                "window functions (OVER) in a windowed query would see one window's result at a time",
            )
            .at_column(Some(call.column))
            .with_fix("compute the windows in this query and use OVER in a query that selects from it")
            .into());
        }
        if call.is_none() && has_window_functions(&logical)? {
            let over_input = |message: String, fix: &str| -> StreamSqlError {
                diagnostic_at(&file_name, sql, &input, message)
                    .with_fix(fix)
                    .into()
            };
            match &table.role {
                TableRole::Query {
                    windows: true,
                    updates: false,
                    ..
                } => {}
                TableRole::Query {
                    windows: true,
                    updates: true,
                    ..
                } => {
                    return Err(over_input(
                        format!(
                            "window functions need each window of `{input}` once, but it emits updates"
                        ),
                        "set `emit: final` on the upstream windowed query",
                    ));
                }
                _ => {
                    return Err(over_input(
                        format!(
                            "window functions (OVER) read a key's earlier window results; `{input}` is a stream of events, not window results in window order"
                        ),
                        "aggregate the events in a windowed query first, and use OVER in a query that selects from it (or from an inner join of two on equal windows)",
                    ));
                }
            }
            let over = split_over(&file_name, sql, &state, logical).await?;
            require_row_local(&file_name, sql, &over.pre, false)?;
            require_row_local(&file_name, sql, &over.post, true)?;
            let task_ctx = ctx.task_ctx();
            let output_schema = over.post.schema();
            let operator = HistoryOperator::new(
                over.history,
                SubPlan {
                    input: input_slot,
                    plan: over.pre,
                    task_ctx: Arc::clone(&task_ctx),
                },
                SubPlan {
                    input: over.post_input,
                    plan: over.post,
                    task_ctx,
                },
            )?;
            return Ok(Self {
                name: name.to_string(),
                emit,
                inputs: vec![input],
                output: None,
                output_schema,
                operators: vec![Box::new(operator)],
            });
        }
        let physical = state.create_physical_plan(&logical).await?;
        let task_ctx = ctx.task_ctx();
        let output_schema = physical.schema();
        let operator: Box<dyn Operator> = match call {
            None => {
                require_row_local(&file_name, sql, &physical, false)?;
                Box::new(RowLocal::new(SubPlan {
                    input: input_slot,
                    plan: physical,
                    task_ctx,
                }))
            }
            Some(call) => {
                let split = split_windowed(&file_name, &call, physical)?;
                require_row_local(&file_name, sql, &split.pre, false)?;
                require_row_local(&file_name, sql, &split.post, false)?;
                Box::new(WindowOperator::new(
                    call.time_column,
                    split.aggregate,
                    emit,
                    SubPlan {
                        input: input_slot,
                        plan: split.pre,
                        task_ctx: Arc::clone(&task_ctx),
                    },
                    SubPlan {
                        input: split.post_input,
                        plan: split.post,
                        task_ctx,
                    },
                )?)
            }
        };
        Ok(Self {
            name: name.to_string(),
            emit,
            inputs: vec![input],
            output,
            output_schema,
            operators: vec![operator],
        })
    }

    /// How the query runs, for `explain`.
    pub fn describe(&self) -> String {
        let description = self.operators[0].describe();
        let mut out = format!("query {} (reads {})\n", self.name, self.inputs.join(", "));
        out.push_str(&format!("  {}\n", description.summary));
        match &description.state {
            Some(state) => out.push_str(&format!("  state: {state}\n")),
            None => out.push_str("  state: none\n"),
        }
        for (title, plan) in &description.plans {
            out.push_str(&format!("  {title}:\n"));
            out.push_str(&indent(
                &displayable(plan.as_ref()).indent(true).to_string(),
            ));
        }
        out
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The columns of a windowed query's results that are its windows' bounds,
/// unchanged: `window_end` follows the watermark, `window_start` lags it by
/// the window's length (sessions have no fixed length: none).
fn window_times(logical: &LogicalPlan, spec: &WindowSpec) -> Vec<TimeColumn> {
    if matches!(spec, WindowSpec::Session { .. }) {
        return Vec::new();
    }
    let bounds = [
        TimeColumn {
            column: "window_start".into(),
            lag: spec.size(),
        },
        TimeColumn {
            column: "window_end".into(),
            lag: 0,
        },
    ];
    passed_times(logical, &bounds)
}

/// The output columns of `logical` that are one of its input's time columns
/// `times`, unchanged, with the same lag.
fn passed_times(logical: &LogicalPlan, times: &[TimeColumn]) -> Vec<TimeColumn> {
    let mut passed = Vec::new();
    for (q, field) in logical.schema().iter() {
        let column = datafusion::common::Column::new(q.cloned(), field.name());
        for time in times {
            if passes_unchanged(logical, &column, &time.column) {
                passed.push(TimeColumn {
                    column: field.name().clone(),
                    lag: time.lag,
                });
            }
        }
    }
    passed
}

/// When `logical` reads window results (`role`) and aggregates or ranks
/// them per window (every GROUP BY, and every window function's PARTITION
/// BY, holds one of their time columns): the time column that routes them.
/// `None` when it is not such a query.
fn per_window_column(role: &TableRole, logical: &LogicalPlan) -> Result<Option<TimeColumn>> {
    use datafusion::logical_expr::Expr;
    let TableRole::Query {
        windows: true,
        updates: false,
        times,
    } = role
    else {
        return Ok(None);
    };
    // The input time column `expr` is, below `input`.
    let time_of = |expr: &Expr, input: &LogicalPlan| -> Option<TimeColumn> {
        let Expr::Column(c) = expr else {
            return None;
        };
        (times.iter())
            .find(|t| passes_unchanged(input, c, &t.column))
            .cloned()
    };
    let (mut per_window, mut found) = (true, None::<TimeColumn>);
    logical.apply(|node| {
        let keyed: Vec<Option<TimeColumn>> = match node {
            LogicalPlan::Aggregate(a) => {
                vec![a.group_expr.iter().find_map(|e| time_of(e, &a.input))]
            }
            LogicalPlan::Window(w) => (w.window_expr.iter())
                .map(|e| match e.clone().unalias() {
                    Expr::WindowFunction(f) => f
                        .params
                        .partition_by
                        .iter()
                        .find_map(|e| time_of(e, &w.input)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for time in keyed {
            match time {
                Some(time) => found = found.take().or(Some(time)),
                None => per_window = false,
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found.filter(|_| per_window))
}

/// Whether `column` of `plan` is the scanned table's column `scanned`,
/// passed on unchanged (renamed at most) by every node below, grouped by
/// included.
pub(super) fn passes_unchanged(
    plan: &LogicalPlan,
    column: &datafusion::common::Column,
    scanned: &str,
) -> bool {
    use datafusion::logical_expr::Expr;
    let Ok(index) = plan.schema().index_of_column(column) else {
        return false;
    };
    let below = |expr: &Expr, input: &LogicalPlan| match expr {
        Expr::Column(c) => passes_unchanged(input, c, scanned),
        Expr::Alias(a) => match a.expr.as_ref() {
            Expr::Column(c) => passes_unchanged(input, c, scanned),
            _ => false,
        },
        _ => false,
    };
    match plan {
        LogicalPlan::TableScan(_) => column.name == scanned,
        LogicalPlan::Projection(p) => below(&p.expr[index], &p.input),
        LogicalPlan::Aggregate(a) => {
            index < a.group_expr.len() && below(&a.group_expr[index], &a.input)
        }
        // A join passes on its left input's columns, then its right's.
        LogicalPlan::Join(j)
            if matches!(
                j.join_type,
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
            ) =>
        {
            let left = j.left.schema().fields().len();
            let (input, index) = match index < left {
                true => (&j.left, index),
                false => (&j.right, index - left),
            };
            let (q, f) = input.schema().qualified_field(index);
            passes_unchanged(
                input,
                &datafusion::common::Column::new(q.cloned(), f.name()),
                scanned,
            )
        }
        // A window node passes its input's columns on, its functions after.
        LogicalPlan::Window(w) if index >= w.input.schema().fields().len() => false,
        LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Window(_) => {
            let input = plan.inputs()[0];
            let (q, f) = input.schema().qualified_field(index);
            passes_unchanged(
                input,
                &datafusion::common::Column::new(q.cloned(), f.name()),
                scanned,
            )
        }
        _ => false,
    }
}

/// The streams `plan` reads: sources, late rows and results, not the
/// `lookups` tables.
pub(super) fn tables_read(plan: &LogicalPlan, lookups: &[&str]) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && !lookups.contains(&scan.table_name.table())
        {
            names.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(names)
}

/// The top-most aggregate of a physical plan.
fn find_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if plan.is::<AggregateExec>() {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(find_aggregate)
}

/// A windowed query's physical plan, taken apart at its aggregate: `pre`
/// feeds the window operator, `post` (reading `post_input`) runs on what it
/// emits.
struct WindowedSplit {
    pre: Arc<dyn ExecutionPlan>,
    aggregate: WindowedAggregate,
    post_input: BatchSlot,
    post: Arc<dyn ExecutionPlan>,
}

fn split_windowed(
    file: &str,
    call: &WindowCall,
    physical: Arc<dyn ExecutionPlan>,
) -> Result<WindowedSplit> {
    let unsupported = |what: &str| -> StreamSqlError {
        Diagnostic::new(
            file,
            Some(call.line),
            format!("cannot run this windowed query incrementally: {what}"),
        )
        .at_column(Some(call.column))
        .with_fix(
            "keep one windowed GROUP BY per query; put further aggregation in a downstream query",
        )
        .into()
    };
    let top = find_aggregate(&physical).ok_or_else(|| unsupported("no aggregate found"))?;
    let top_exec = top
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| crate::internal_error!("aggregate downcast"))?;
    // A two-phase plan computes per-row work in the Partial aggregate.
    let lower = match top_exec.mode() {
        AggregateMode::Final | AggregateMode::FinalPartitioned => top_exec
            .input()
            .children()
            .into_iter()
            .chain(std::iter::once(top_exec.input()))
            .find_map(find_aggregate)
            .ok_or_else(|| unsupported("final aggregate without partial"))?,
        _ => Arc::clone(&top),
    };
    let lower_exec = lower
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| crate::internal_error!("aggregate downcast"))?;
    if find_aggregate(lower_exec.input()).is_some() {
        return Err(unsupported("an aggregate below the windowed aggregate"));
    }
    if !lower_exec.group_expr().is_single() {
        return Err(unsupported("GROUPING SETS, CUBE and ROLLUP"));
    }
    let (mut pane_start, mut watermark) = (None, None);
    let mut keys = Vec::new();
    let mut group_columns = Vec::new();
    for (expr, name) in lower_exec.group_expr().expr() {
        let column = expr.downcast_ref::<Column>().map(Column::name);
        match column {
            Some("window_start") => {
                pane_start = Some(Arc::clone(expr));
                group_columns.push(GroupColumn::WindowStart);
            }
            Some("window_end") => group_columns.push(GroupColumn::WindowEnd),
            Some(WATERMARK_COLUMN) => {
                watermark = Some(Arc::clone(expr));
                group_columns.push(GroupColumn::Watermark);
            }
            _ => {
                group_columns.push(GroupColumn::Key(keys.len()));
                keys.push((Arc::clone(expr), name.clone()));
            }
        }
    }
    let pane_start = pane_start.ok_or_else(|| unsupported("window_start is not a group column"))?;
    let watermark = watermark.ok_or_else(|| unsupported("the watermark is not a group column"))?;
    let aggregate = WindowedAggregate {
        spec: call.spec,
        pane_start,
        watermark,
        keys,
        group_columns,
        aggregates: lower_exec.aggr_expr().to_vec(),
        // Exactly what DataFusion's own partial aggregation evaluates per row.
        arguments: aggregate_expressions(lower_exec.aggr_expr(), &AggregateMode::Partial, 0)?,
        filters: lower_exec.filter_expr().to_vec(),
        output_schema: top.schema(),
    };
    let pre = Arc::clone(lower_exec.input());
    let post_input = BatchSlot::new(top.schema());
    let leaf: Arc<dyn ExecutionPlan> = Arc::new(StreamingTableExec::try_new(
        top.schema(),
        vec![Arc::new(post_input.clone())],
        None,
        Vec::new(),
        false,
        None,
    )?);
    let post = physical
        .transform_down(|node| {
            Ok(if Arc::ptr_eq(&node, &top) {
                Transformed::new(Arc::clone(&leaf), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    Ok(WindowedSplit {
        pre,
        aggregate,
        post_input,
        post,
    })
}
