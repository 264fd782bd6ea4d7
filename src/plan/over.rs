//! Planning a rule query with SQL window functions (`lag`, moving averages
//! over `ROWS BETWEEN n PRECEDING ...`) over another query's window results.
//!
//! Each micro-batch brings only the newest windows, but `lag(x) OVER
//! (PARTITION BY service ORDER BY window_start)` needs the key's earlier
//! ones. The engine keeps, per key, as many earlier rows as the functions can
//! look back (the history, see [`crate::operator::history`]) and runs the window
//! functions over history + new rows. The logical plan is cut below its
//! window functions: `pre` (scan, WHERE, projections) runs on the new rows;
//! `post` reads history and new rows from a slot with an extra marker column,
//! computes the window functions, and keeps only the rows marked new.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{NullTreatment, WindowFunction};
use datafusion::logical_expr::{
    Expr, Filter, LogicalPlan, LogicalPlanBuilder, Projection, Window, WindowFrameBound,
    WindowFrameUnits, col,
};
use datafusion::physical_plan::ExecutionPlan;

use super::diagnostic_at;
use super::slot::BatchSlot;
use crate::error::{Result, StreamSqlError};

/// The column that marks the rows of this micro-batch in `post`'s input.
pub const NEW_ROW: &str = "__streamsql_new_row";

/// How much of each key's past the window functions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySpec {
    /// Indices (in `pre`'s output) of the PARTITION BY columns.
    pub keys: Vec<usize>,
    /// Index of the ORDER BY column.
    pub order: usize,
    /// Rows kept per key: the furthest any function looks back.
    pub depth: usize,
}

/// A rule query split around the key history.
pub struct OverPlan {
    pub pre: Arc<dyn ExecutionPlan>,
    pub history: HistorySpec,
    /// `pre`'s output schema plus [`NEW_ROW`].
    pub post_input: BatchSlot,
    pub post: Arc<dyn ExecutionPlan>,
}

/// Whether the plan computes SQL window functions.
pub fn has_window_functions(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        found |= matches!(node, LogicalPlan::Window(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}

/// Splits `logical` (which has window functions) around the key history.
pub async fn split_over(
    file: &str,
    sql: &str,
    state: &SessionState,
    logical: LogicalPlan,
) -> Result<OverPlan> {
    let problem = |word: &str, message: String, fix: &str| -> StreamSqlError {
        diagnostic_at(file, sql, word, message).with_fix(fix).into()
    };
    let chain = window_chain(&logical).ok_or_else(|| {
        problem(
            "OVER",
            "window functions in more than one SELECT of the query".into(),
            "compute every window function in one SELECT; filter on them in an outer SELECT",
        )
    })?;
    let lowest = chain
        .last()
        .ok_or_else(|| StreamSqlError::Internal("empty chain".into()))?;
    let below = Arc::clone(&lowest.input);
    let below_schema = below.schema();
    let index_of = |expr: &Expr, what: &str| -> Result<usize> {
        match expr {
            Expr::Column(c) => Ok(below_schema.index_of_column(c)?),
            other => Err(problem(
                "OVER",
                format!("{what} `{other}` is not a column"),
                "compute it as a column of the upstream query, then PARTITION BY / ORDER BY that column",
            )),
        }
    };
    let mut spec: Option<(Vec<usize>, usize)> = None;
    let mut depth = 0usize;
    for expr in chain.iter().flat_map(|w| &w.window_expr) {
        let Some(function) = window_function(expr) else {
            return Err(StreamSqlError::Internal(format!(
                "window expression {expr}"
            )));
        };
        let params = &function.params;
        let keys = params
            .partition_by
            .iter()
            .map(|e| index_of(e, "PARTITION BY"))
            .collect::<Result<Vec<_>>>()?;
        let [order] = params.order_by.as_slice() else {
            return Err(problem(
                "OVER",
                format!("`{}` needs ORDER BY one column", function.fun.name()),
                "write OVER (PARTITION BY <key> ORDER BY window_start ...)",
            ));
        };
        if !order.asc {
            return Err(problem(
                "DESC",
                "a key's history runs forward in time: ORDER BY ... DESC would need future windows"
                    .into(),
                "order ascending and look back with lag or ROWS ... PRECEDING",
            ));
        }
        let order = index_of(&order.expr, "ORDER BY")?;
        match &spec {
            None => spec = Some((keys, order)),
            Some(first) if *first == (keys, order) => {}
            Some(_) => {
                return Err(problem(
                    "OVER",
                    "the window functions differ in PARTITION BY or ORDER BY".into(),
                    "use one window for all of them (e.g. a WINDOW w AS (...) clause)",
                ));
            }
        }
        depth = depth
            .max(look_back(function).map_err(|(word, message, fix)| problem(word, message, fix))?);
    }
    let (keys, order) =
        spec.ok_or_else(|| StreamSqlError::Internal("no window expression".into()))?;

    let pre = state.create_physical_plan(&below).await?;
    let pre_schema = pre.schema();
    let mut fields: Vec<Field> = pre_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(NEW_ROW, DataType::Boolean, false));
    let post_schema: SchemaRef = Arc::new(Schema::new(fields));
    let post_input = BatchSlot::new(Arc::clone(&post_schema));
    let scan_table =
        StreamingTable::try_new(Arc::clone(&post_schema), vec![Arc::new(post_input.clone())])?;
    let scan = LogicalPlanBuilder::scan(
        "__streamsql_history",
        provider_as_source(Arc::new(scan_table)),
        None,
    )?
    .build()?;
    // Give the columns back the names (with qualifiers) the window
    // expressions were planned against.
    let mut renamed: Vec<Expr> = below_schema
        .iter()
        .map(|(qualifier, field)| {
            Expr::Column(Column::new(Some("__streamsql_history"), field.name()))
                .alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    renamed.push(Expr::Column(Column::new(Some("__streamsql_history"), NEW_ROW)).alias(NEW_ROW));
    let mut rebuilt = LogicalPlan::Projection(Projection::try_new(renamed, Arc::new(scan))?);
    for window in chain.iter().rev() {
        rebuilt = LogicalPlan::Window(Window::try_new(
            window.window_expr.clone(),
            Arc::new(rebuilt),
        )?);
    }
    let only_new = LogicalPlan::Filter(Filter::try_new(col(NEW_ROW), Arc::new(rebuilt))?);
    let top_schema = chain[0].schema.clone();
    let columns: Vec<Expr> = top_schema
        .iter()
        .map(|(qualifier, field)| Expr::Column(Column::new(qualifier.cloned(), field.name())))
        .collect();
    let replacement = LogicalPlan::Projection(Projection::try_new(columns, Arc::new(only_new))?);
    let top = LogicalPlan::Window(chain[0].clone());
    let mut replaced = false;
    let post_logical = logical
        .transform_down(|node| {
            Ok(if !replaced && node == top {
                replaced = true;
                Transformed::new(replacement.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    if !replaced {
        return Err(StreamSqlError::Internal(
            "window functions not found for the history".into(),
        ));
    }
    let post = state.create_physical_plan(&post_logical).await?;
    Ok(OverPlan {
        pre,
        history: HistorySpec { keys, order, depth },
        post_input,
        post,
    })
}

/// The window nodes from the top-most down, when they are stacked directly
/// on each other (as DataFusion plans one SELECT's window functions).
fn window_chain(plan: &LogicalPlan) -> Option<Vec<Window>> {
    let mut windows = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::Window(w) = node {
            windows.push(w.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let stacked = windows
        .windows(2)
        .all(|pair| matches!(pair[0].input.as_ref(), LogicalPlan::Window(w) if *w == pair[1]));
    let below = windows.last()?.input.as_ref();
    let more_below = has_window_functions(below).unwrap_or(true);
    (stacked && !more_below).then_some(windows)
}

fn window_function(expr: &Expr) -> Option<&WindowFunction> {
    match expr {
        Expr::WindowFunction(function) => Some(function),
        Expr::Alias(alias) => window_function(&alias.expr),
        _ => None,
    }
}

type Problem = (&'static str, String, &'static str);

/// How many earlier rows of its key `function` reads.
fn look_back(function: &WindowFunction) -> std::result::Result<usize, Problem> {
    let name = function.fun.name().to_lowercase();
    match name.as_str() {
        "lag" if function.params.null_treatment == Some(NullTreatment::IgnoreNulls) => {
            return Err((
                "IGNORE",
                "lag(...) IGNORE NULLS may reach back past any number of windows".into(),
                "drop IGNORE NULLS, or filter the NULL rows out in the upstream query",
            ));
        }
        "lag" => {
            return match function.params.args.get(1) {
                None => Ok(1),
                Some(Expr::Literal(value, _)) => scalar_count(value).ok_or((
                    "lag",
                    format!("lag offset {value} is not a non-negative integer"),
                    "write lag(column, n) with a literal n",
                )),
                Some(other) => Err((
                    "lag",
                    format!("lag offset `{other}` is not a literal"),
                    "write lag(column, n) with a literal n",
                )),
            };
        }
        "lead" => {
            return Err((
                "lead",
                "lead() reads later windows, which have not happened yet".into(),
                "compare with earlier windows instead: lag(column, n)",
            ));
        }
        "row_number" | "rank" | "dense_rank" | "percent_rank" | "cume_dist" | "ntile" => {
            return Err((
                "OVER",
                format!(
                    "{name}() counts every earlier window of the key, a history that grows forever"
                ),
                "to skip a key's first N windows write `lag(window_start, N) OVER (...) IS NOT NULL`",
            ));
        }
        _ => {}
    }
    let frame = &function.params.window_frame;
    let bounded =
        "give the frame a bound: ROWS BETWEEN n PRECEDING AND CURRENT ROW (or AND 1 PRECEDING)";
    if frame.units != WindowFrameUnits::Rows {
        return Err((
            "OVER",
            format!(
                "{name}() OVER a {} frame reaches back without a bound (the default frame is RANGE UNBOUNDED PRECEDING)",
                frame.units
            ),
            bounded,
        ));
    }
    if matches!(frame.end_bound, WindowFrameBound::Following(_)) {
        return Err((
            "FOLLOWING",
            format!(
                "{name}() OVER a frame ending FOLLOWING reads later windows, which have not happened yet"
            ),
            bounded,
        ));
    }
    match &frame.start_bound {
        WindowFrameBound::CurrentRow => Ok(0),
        WindowFrameBound::Preceding(value) => scalar_count(value).ok_or((
            "UNBOUNDED",
            format!("{name}() OVER a frame from UNBOUNDED PRECEDING keeps every earlier window"),
            bounded,
        )),
        WindowFrameBound::Following(_) => Err((
            "FOLLOWING",
            format!("{name}() OVER a frame starting FOLLOWING reads later windows"),
            bounded,
        )),
    }
}

/// A literal row count (NULL, as in UNBOUNDED, is none).
fn scalar_count(value: &ScalarValue) -> Option<usize> {
    match value.cast_to(&DataType::UInt64).ok()? {
        ScalarValue::UInt64(Some(n)) => usize::try_from(n).ok(),
        _ => None,
    }
}
