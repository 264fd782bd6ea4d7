//! Planning one query and splitting its plan at the windowed aggregate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;

use super::over::{OverPlan, has_window_functions, split_over};
use super::slot::BatchSlot;
use super::window_sql::{WindowCall, rewrite_window};
use super::{diagnostic_at, locate_word};
use crate::config::EmitMode;
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::window::{GroupColumn, WindowedAggregate};

/// A table a query may select from.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub schema: SchemaRef,
    pub role: TableRole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRole {
    /// A source; `event_time` names its event-time column.
    Source { event_time: String },
    /// A source's late rows.
    Late,
    /// Another query's results: `windows` when they are window results (a
    /// windowed query's, or a query's reading those), `updates` when a window
    /// can appear in them more than once (an `emit: update` query's).
    Query { windows: bool, updates: bool },
}

/// How a planned query runs.
pub enum QueryShape {
    /// Filters and projections: the whole plan runs on each micro-batch.
    Stateless { plan: Arc<dyn ExecutionPlan> },
    /// A windowed aggregate, split around the window operator.
    Windowed(Box<WindowedPlan>),
    /// Window functions over a key's earlier rows, split around its history.
    Over(Box<OverPlan>),
}

/// `pre` runs on each micro-batch and feeds the window operator; `post` runs
/// on the rows the operator emits (through `post_input`).
pub struct WindowedPlan {
    pub call: WindowCall,
    pub pre: Arc<dyn ExecutionPlan>,
    pub aggregate: WindowedAggregate,
    pub post_input: BatchSlot,
    pub post: Arc<dyn ExecutionPlan>,
}

/// One query, planned.
pub struct QueryPlan {
    pub name: String,
    pub emit: EmitMode,
    /// The one table it reads, and the slot its rows go in.
    pub input: String,
    pub input_slot: BatchSlot,
    pub input_schema: SchemaRef,
    pub shape: QueryShape,
    pub output_schema: SchemaRef,
    pub task_ctx: Arc<TaskContext>,
}

/// The two columns a windowed query's source gains: each row's pane bounds.
pub fn with_window_columns(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["window_start", "window_end"] {
        fields.push(Field::new(
            name,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

fn new_context() -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
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
        let ctx = new_context();
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
        let call = match &mut statement {
            DFStatement::Statement(inner) => rewrite_window(inner, &file_name)?,
            _ => {
                return Err(Diagnostic::new(&file_name, Some(1), "not a query")
                    .with_fix("a query file holds one SELECT statement")
                    .into());
            }
        };
        let mut slots = Vec::new();
        for table in tables {
            let schema = match (&table.role, &call) {
                (TableRole::Source { .. }, Some(_)) => with_window_columns(&table.schema),
                _ => Arc::clone(&table.schema),
            };
            let slot = BatchSlot::new(Arc::clone(&schema));
            let provider =
                StreamingTable::try_new(Arc::clone(&schema), vec![Arc::new(slot.clone())])?;
            ctx.register_table(table.name.as_str(), Arc::new(provider))?;
            slots.push((table, slot, schema));
        }
        let logical = state.statement_to_plan(statement).await.map_err(|e| {
            sql_diagnostic(
                &file_name,
                sql,
                e,
                "tables are the sources, `<source>_late` and earlier queries of the pipeline",
            )
        })?;
        let logical = bind_params(&file_name, sql, logical, params)?;
        let read = tables_read(&logical)?;
        let input = match read.len() {
            1 => read.into_iter().next().unwrap_or_default(),
            0 => {
                return Err(
                    Diagnostic::new(&file_name, Some(1), "the query reads no table")
                        .with_fix("select FROM a source, `<source>_late` or an earlier query")
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
        let Some((table, input_slot, input_schema)) =
            slots.into_iter().find(|(t, _, _)| t.name == input)
        else {
            return Err(StreamSqlError::Internal(format!(
                "planned table {input} is not registered"
            )));
        };
        if let Some(call) = &call {
            let at = Diagnostic::new(&file_name, Some(call.line), String::new())
                .at_column(Some(call.column));
            match &table.role {
                TableRole::Source { event_time } if *event_time == call.time_column => {}
                TableRole::Source { event_time } => {
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
                } => {}
                TableRole::Query {
                    windows: true,
                    updates: true,
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
                            "window functions (OVER) read a key's earlier window results; `{input}` is a stream of events"
                        ),
                        "aggregate the events in a windowed query first, and use OVER in a query that selects from it",
                    ));
                }
            }
            let over = split_over(&file_name, sql, &state, logical).await?;
            if find_aggregate(&over.pre).is_some() || find_aggregate(&over.post).is_some() {
                return Err(unbounded_group_by(&file_name));
            }
            let output_schema = over.post.schema();
            return Ok(Self {
                name: name.to_string(),
                emit,
                input,
                input_slot,
                input_schema,
                shape: QueryShape::Over(Box::new(over)),
                output_schema,
                task_ctx: ctx.task_ctx(),
            });
        }
        let physical = state.create_physical_plan(&logical).await?;
        let task_ctx = ctx.task_ctx();
        let output_schema = physical.schema();
        let shape = match call {
            None => {
                if find_aggregate(&physical).is_some() {
                    return Err(unbounded_group_by(&file_name));
                }
                QueryShape::Stateless { plan: physical }
            }
            Some(call) => split_windowed(&file_name, call, physical)?,
        };
        Ok(Self {
            name: name.to_string(),
            emit,
            input,
            input_slot,
            input_schema,
            shape,
            output_schema,
            task_ctx,
        })
    }

    /// Human-readable plan, for `explain`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "query {} (reads {}, emit {})\n",
            self.name,
            self.input,
            format!("{:?}", self.emit).to_lowercase()
        );
        match &self.shape {
            QueryShape::Stateless { plan } => {
                out.push_str("  per micro-batch:\n");
                out.push_str(&indent(
                    &displayable(plan.as_ref()).indent(true).to_string(),
                ));
            }
            QueryShape::Over(over) => {
                let OverPlan {
                    pre, history, post, ..
                } = over.as_ref();
                let schema = pre.schema();
                let name = |i: &usize| schema.field(*i).name().clone();
                out.push_str("  per micro-batch, on the new rows:\n");
                out.push_str(&indent(&displayable(pre.as_ref()).indent(true).to_string()));
                out.push_str(&format!(
                    "  key history: the newest {} rows per [{}], ordered by {}\n",
                    history.depth,
                    history.keys.iter().map(name).collect::<Vec<_>>().join(", "),
                    name(&history.order)
                ));
                out.push_str("  over history + new rows (new rows kept):\n");
                out.push_str(&indent(
                    &displayable(post.as_ref()).indent(true).to_string(),
                ));
            }
            QueryShape::Windowed(windowed) => {
                let WindowedPlan {
                    call,
                    pre,
                    aggregate,
                    post,
                    ..
                } = windowed.as_ref();
                out.push_str("  per micro-batch (feeds the window operator):\n");
                out.push_str(&indent(&displayable(pre.as_ref()).indent(true).to_string()));
                let keys: Vec<&str> = aggregate.keys.iter().map(|(_, n)| n.as_str()).collect();
                let aggs: Vec<&str> = aggregate.aggregates.iter().map(|a| a.name()).collect();
                out.push_str(&format!(
                    "  window operator: {} on `{}`, keys [{}], aggregates [{}]\n",
                    call.spec,
                    call.time_column,
                    keys.join(", "),
                    aggs.join(", ")
                ));
                out.push_str("  on emitted rows:\n");
                out.push_str(&indent(
                    &displayable(post.as_ref()).indent(true).to_string(),
                ));
            }
        }
        out
    }
}

fn unbounded_group_by(file: &str) -> StreamSqlError {
    Diagnostic::new(
        file,
        Some(1),
        "GROUP BY without a window keeps state forever",
    )
    .with_fix("group by TUMBLE(...), HOP(...) or SESSION(...) on the event time column")
    .into()
}

/// Replaces the `$name` placeholders of the SQL with the pipeline's
/// `params`, converted to the type the SQL expects where it implies one.
fn bind_params(
    file: &str,
    sql: &str,
    plan: LogicalPlan,
    params: &BTreeMap<String, serde_yaml::Value>,
) -> Result<LogicalPlan> {
    let mut wanted: Vec<_> = plan.get_parameter_types()?.into_iter().collect();
    if wanted.is_empty() {
        return Ok(plan);
    }
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for (id, data_type) in &wanted {
        let name = id.trim_start_matches('$');
        let at = diagnostic_at(file, sql, id, String::new());
        let scalar = match params.get(name) {
            Some(serde_yaml::Value::Bool(b)) => ScalarValue::Boolean(Some(*b)),
            Some(serde_yaml::Value::Number(n)) if n.is_i64() => ScalarValue::Int64(n.as_i64()),
            Some(serde_yaml::Value::Number(n)) => ScalarValue::Float64(n.as_f64()),
            Some(serde_yaml::Value::String(s)) => ScalarValue::Utf8(Some(s.clone())),
            Some(other) => {
                problems.push(Diagnostic {
                    message: format!(
                        "parameter `{id}` is {other:?}, not a number, string or boolean"
                    ),
                    fix: format!(
                        "give `params: {{ {name}: ... }}` a single value in pipelines.yaml"
                    ),
                    ..at
                });
                continue;
            }
            None => {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
                problems.push(Diagnostic {
                    message: format!("parameter `{id}` has no value"),
                    fix: format!(
                        "declare it under the pipeline's `params:` in pipelines.yaml (declared: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                    ..at
                });
                continue;
            }
        };
        let scalar = match data_type {
            // Only a lossless conversion: 2.5 must not become 2.
            Some(t) => match scalar.cast_to(t) {
                Ok(cast) if cast.cast_to(&scalar.data_type()).ok().as_ref() == Some(&scalar) => {
                    cast
                }
                _ => {
                    problems.push(Diagnostic {
                        message: format!("parameter `{id}` = {scalar} does not fit the {t} the SQL compares it with"),
                        fix: format!("give `{name}` a value of type {t}"),
                        ..at
                    });
                    continue;
                }
            },
            None => scalar,
        };
        values.push((name.to_string(), scalar));
    }
    if !problems.is_empty() {
        return Err(StreamSqlError::Invalid(crate::error::Diagnostics(problems)));
    }
    Ok(plan.with_param_values(values)?)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn tables_read(plan: &LogicalPlan) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
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

fn split_windowed(
    file: &str,
    call: WindowCall,
    physical: Arc<dyn ExecutionPlan>,
) -> Result<QueryShape> {
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
        .ok_or_else(|| StreamSqlError::Internal("aggregate downcast".into()))?;
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
        .ok_or_else(|| StreamSqlError::Internal("aggregate downcast".into()))?;
    if find_aggregate(lower_exec.input()).is_some() {
        return Err(unsupported("an aggregate below the windowed aggregate"));
    }
    if !lower_exec.group_expr().is_single() {
        return Err(unsupported("GROUPING SETS, CUBE and ROLLUP"));
    }
    let mut pane_start = None;
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
            _ => {
                group_columns.push(GroupColumn::Key(keys.len()));
                keys.push((Arc::clone(expr), name.clone()));
            }
        }
    }
    let pane_start = pane_start.ok_or_else(|| unsupported("window_start is not a group column"))?;
    let aggregate = WindowedAggregate {
        spec: call.spec,
        pane_start,
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
    Ok(QueryShape::Windowed(Box::new(WindowedPlan {
        call,
        pre,
        aggregate,
        post_input,
        post,
    })))
}
