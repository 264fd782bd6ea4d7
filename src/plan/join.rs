//! Planning an interval join: the query's one `JOIN` is taken out of
//! DataFusion's optimized logical plan; each side below it becomes a
//! row-local plan over its source, the ON clause gives the keys, the event
//! time bound and the residual condition, and what is above the join runs
//! on the joined rows (see [`crate::operator::join`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, JoinType, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, ExprSchemable, Join, LogicalPlan, LogicalPlanBuilder,
    Operator as BinaryOp,
};
use datafusion::prelude::SessionContext;

use super::incremental::require_row_local;
use super::query::{passes_unchanged, tables_read};
use super::slot::BatchSlot;
use super::{TableDef, TableRole, locate_keyword};
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::operator::SubPlan;
use crate::operator::join::{IntervalJoin, IntervalJoinSpec};
use crate::source::EventTimeUnit;

/// The table the post plan reads the joined rows from.
const JOINED: &str = "joined_rows";

const UNBOUNDED: &str = "a join of streams without an event-time bound on both sides keeps \
                         both sides forever, and joined per micro-batch it answers differently \
                         for every batch size";
const BOUND_FIX: &str = "make it an interval join: join on a key and bound one side's event time \
                         by the other's, e.g. `ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '5' \
                         MINUTE AND b.ts + INTERVAL '5' MINUTE` (offsets of an integer event time \
                         count its unit)";

/// Whether `plan` joins two streams (the query is then planned here); a
/// lookup table joined with a stream is row-local (see [`crate::table`]).
pub fn has_join(plan: &LogicalPlan, lookups: &[&str]) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        found |= joins_streams(node, lookups);
        Ok(match found {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(found)
}

/// Whether `node` is a join of two streams (not a lookup join).
fn joins_streams(node: &LogicalPlan, lookups: &[&str]) -> bool {
    let reads_stream = |side: &LogicalPlan| tables_read(side, lookups).is_ok_and(|t| !t.is_empty());
    matches!(node, LogicalPlan::Join(j) if reads_stream(&j.left) && reads_stream(&j.right))
}

/// A planned join query: the tables of its two ports and its operator.
pub struct PlannedJoin {
    pub inputs: Vec<String>,
    /// What its rows are.
    pub output: TableRole,
    pub operator: IntervalJoin,
}

/// Plans `logical` (a query with a join) as an interval join, or refuses it.
pub async fn plan_join(
    file: &str,
    sql: &str,
    ctx: &SessionContext,
    logical: &LogicalPlan,
    slots: &[(&TableDef, BatchSlot)],
    lookups: &[&str],
) -> Result<PlannedJoin> {
    let at_join = |message: &str, fix: &str| -> StreamSqlError {
        let (line, column) = locate_keyword(sql, "JOIN")
            .or_else(|| locate_keyword(sql, "FROM"))
            .unwrap_or((1, 1));
        Diagnostic::new(file, Some(line), message)
            .at_column(Some(column))
            .with_fix(fix)
            .into()
    };
    let state = ctx.state();
    let optimized = state.optimize(logical)?;
    let mut joins = Vec::new();
    // Lookup joins below stay in the sides' row-local plans.
    optimized.apply(|node| {
        if let LogicalPlan::Join(join) = node
            && joins_streams(node, lookups)
        {
            joins.push(join.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let join = match joins.as_slice() {
        [join] => join.clone(),
        _ => {
            return Err(at_join(
                "a query joins two streams, once",
                "join two streams per query; to join a third, join its rows with another \
                 query's in a query of its own",
            ));
        }
    };
    if !matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    ) {
        return Err(at_join(
            &format!("a {} join cannot run on streams", join.join_type),
            "write an inner, LEFT, RIGHT or FULL interval join",
        ));
    }
    let mut sides = Vec::new();
    for side in [&join.left, &join.right] {
        sides.push(side_of(side, slots, lookups).map_err(|(m, fix)| at_join(&m, fix))?);
    }
    if join.on.is_empty() {
        return Err(at_join(
            "a join of streams needs a key: without one every row is compared with every row \
             of the other stream",
            BOUND_FIX,
        ));
    }
    // The first pair of time columns, one per side, the ON clause bounds.
    let mut bounded = None;
    for (l, r) in (sides[0].times.iter()).flat_map(|l| sides[1].times.iter().map(move |r| (l, r))) {
        if l.unit != r.unit {
            continue;
        }
        let columns = [l.column.clone(), r.column.clone()];
        if let (Some(lo), Some(hi)) = time_bounds(&join, &columns, l.unit.is_some()) {
            bounded = Some(([l.clone(), r.clone()], lo, hi));
            break;
        }
    }
    let Some((time, lo, hi)) = bounded else {
        let units: Vec<_> = sides
            .iter()
            .flat_map(|s| &s.times)
            .map(|t| t.unit)
            .collect();
        if units.windows(2).any(|u| u[0] != u[1]) {
            return Err(at_join(
                "the two sides' event times differ in type or unit, so one cannot bound the other",
                "join sources whose event-time columns are both timestamps, or integers of one unit",
            ));
        }
        return Err(at_join(UNBOUNDED, BOUND_FIX));
    };
    let unit = time[0].unit;
    // Integer offsets count the column's unit; widened by a millisecond each
    // way, as the watermark's milliseconds are rounded down.
    let (lo, hi) = match unit {
        None => (lo, hi),
        Some(unit) => (
            unit.to_millis(lo).unwrap_or(i64::MIN).saturating_sub(1),
            unit.to_millis(hi).unwrap_or(i64::MAX).saturating_add(1),
        ),
    };
    let mut keys = [Vec::new(), Vec::new()];
    for (l, r) in &join.on {
        let (lt, rt) = (
            l.get_type(join.left.schema())?,
            r.get_type(join.right.schema())?,
        );
        if lt != rt {
            return Err(at_join(
                &format!("join keys `{l}` ({lt}) and `{r}` ({rt}) differ in type"),
                "cast one key to the other's type",
            ));
        }
        keys[0].push(state.create_physical_expr(l.clone(), join.left.schema())?);
        keys[1].push(state.create_physical_expr(r.clone(), join.right.schema())?);
    }
    // The time equality of a window join does not route: a key's windows
    // stay on one worker.
    let is_time = |(l, r): &(Expr, Expr)| {
        matches!((l, r), (Expr::Column(l), Expr::Column(r))
            if *l == time[0].column && *r == time[1].column)
    };
    let mut routing_keys: Vec<usize> = (0..join.on.len())
        .filter(|i| !is_time(&join.on[*i]))
        .collect();
    if routing_keys.is_empty() {
        routing_keys = (0..join.on.len()).collect();
    }
    let filter = match &join.filter {
        Some(f) => Some(state.create_physical_expr(f.clone(), &join.schema)?),
        None => None,
    };
    let mut condition: Vec<String> = join.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
    condition.extend(join.filter.iter().map(|f| f.to_string()));
    let mut pre = Vec::new();
    let mut time_columns = [(0, None); 2];
    for (s, side) in [&join.left, &join.right].into_iter().enumerate() {
        let plan = state.create_physical_plan(side).await?;
        require_row_local(file, sql, &plan, false)?;
        time_columns[s] = (side.schema().index_of_column(&time[s].column)?, unit);
        pre.push(SubPlan {
            input: sides[s].slot.clone(),
            plan,
            task_ctx: ctx.task_ctx(),
        });
    }
    let (post_input, post_logical) = above_join(&optimized, &join)?;
    let post = state.create_physical_plan(&post_logical).await?;
    require_row_local(file, sql, &post, false)?;
    let [left, right]: [SubPlan; 2] = pre
        .try_into()
        .map_err(|_| crate::internal_error!("a join has two sides"))?;
    let operator = IntervalJoin::new(
        IntervalJoinSpec {
            join_type: join.join_type,
            lo,
            hi,
            time_columns,
            watermark_lags: [time[0].lag, time[1].lag],
            keys,
            routing_keys,
            filter,
            condition: condition.join(" AND "),
        },
        [left, right],
        SubPlan {
            input: post_input,
            plan: post,
            task_ctx: ctx.task_ctx(),
        },
    )?;
    // An inner join of two window results on an equality of their windows
    // is window results too: a key's pairs come out in window order (a rule
    // query may compare them). A range of windows would pair a later window
    // of one side before an earlier one of the other.
    let windows = join.join_type == JoinType::Inner && lo == hi && sides.iter().all(|s| s.windows);
    Ok(PlannedJoin {
        inputs: sides.into_iter().map(|s| s.table).collect(),
        output: TableRole::Query {
            windows,
            updates: false,
            times: Vec::new(),
        },
        operator,
    })
}

/// One side of the join: the table it reads, its slot, and the time
/// columns that may bound the join.
struct JoinSide {
    table: String,
    slot: BatchSlot,
    /// Its source's event time, or the time columns of the results it reads,
    /// as far as the side passes them on unchanged.
    times: Vec<SideTime>,
    /// Whether it reads window results (emitted once each).
    windows: bool,
}

/// A column of a join side its table's watermark bounds.
#[derive(Clone)]
struct SideTime {
    column: Column,
    /// What an integer value counts; `None` for a timestamp.
    unit: Option<EventTimeUnit>,
    /// How far behind the table's watermark its values may still come
    /// (see [`crate::plan::TimeColumn`]).
    lag: i64,
}

/// Side `plan` of a join, or why it cannot be joined (message and fix).
fn side_of(
    plan: &LogicalPlan,
    slots: &[(&TableDef, BatchSlot)],
    lookups: &[&str],
) -> Result<JoinSide, (String, &'static str)> {
    let read: Vec<String> = tables_read(plan, lookups)
        .map_err(|e| (e.to_string(), BOUND_FIX))?
        .into_iter()
        .collect();
    let [table] = read.as_slice() else {
        return Err((
            format!(
                "each side of a join reads one stream; this one reads {}",
                read.join(", ")
            ),
            BOUND_FIX,
        ));
    };
    let Some((def, slot)) = slots.iter().find(|(t, _)| t.name == *table) else {
        return Err((
            format!("`{table}` is not a table of this pipeline"),
            BOUND_FIX,
        ));
    };
    // The table's bounded columns: (name, unit of integers, lag).
    let (declared, windows): (Vec<(&str, EventTimeUnit, i64)>, bool) = match &def.role {
        TableRole::Source { event_time, unit } => (vec![(event_time.as_str(), *unit, 0)], false),
        TableRole::Late => {
            return Err((
                format!(
                    "`{table}` holds rows behind their source's watermark: no watermark bounds \
                     them, so they cannot be joined"
                ),
                "join the source itself; late rows can be counted or selected in a query of \
                 their own",
            ));
        }
        TableRole::Lookup => {
            return Err((
                format!("`{table}` is a lookup table, not a stream"),
                "join a stream with it by key",
            ));
        }
        TableRole::Query { updates: true, .. } => {
            return Err((
                format!("`{table}` emits updates: a window's row may change after it was joined"),
                "set `emit: final` on the windowed query a join reads",
            ));
        }
        TableRole::Query { times, windows, .. } => {
            if times.is_empty() {
                return Err((
                    format!(
                        "`{table}`'s rows have no time column its watermark bounds, so nothing \
                         bounds a join of them"
                    ),
                    "join a windowed query's results (TUMBLE or HOP) on `window_start` or \
                     `window_end`, selected unchanged, or join the sources",
                ));
            }
            let unit = EventTimeUnit::default();
            let times = times.iter().map(|t| (t.column.as_str(), unit, t.lag));
            (times.collect(), *windows)
        }
    };
    let mut times = Vec::new();
    for (name, unit, lag) in declared {
        let Some((q, field)) = (plan.schema().iter()).find(|(_, f)| f.name() == name) else {
            continue;
        };
        let column = Column::new(q.cloned(), field.name());
        if !passes_unchanged(plan, &column, name) {
            return Err((
                format!(
                    "the join must bound `{table}`'s time `{name}`, but that side does not \
                     select it unchanged"
                ),
                BOUND_FIX,
            ));
        }
        let unit = match field.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, _) => None,
            t if t.is_integer() => Some(unit),
            _ => {
                return Err((
                    format!("`{table}`'s time `{name}` is not a time"),
                    BOUND_FIX,
                ));
            }
        };
        times.push(SideTime { column, unit, lag });
    }
    Ok(JoinSide {
        table: table.clone(),
        slot: slot.clone(),
        times,
        windows,
    })
}

/// `lo <= left.time - right.time <= hi`, as far as the ON clause bounds it:
/// in milliseconds for timestamps (offsets are intervals), in the columns'
/// unit for `integer` times (offsets are integers).
fn time_bounds(join: &Join, time: &[Column; 2], integer: bool) -> (Option<i64>, Option<i64>) {
    let offset = |e: &Expr| match integer {
        true => integer_literal(e),
        false => interval_ms(e),
    };
    let (mut lo, mut hi) = (None::<i64>, None::<i64>);
    let mut bound = |op: BinaryOp, v: i64| match op {
        BinaryOp::Gt | BinaryOp::GtEq => lo = Some(lo.map_or(v, |l| l.max(v))),
        BinaryOp::Lt | BinaryOp::LtEq => hi = Some(hi.map_or(v, |h| h.min(v))),
        BinaryOp::Eq => {
            lo = Some(lo.map_or(v, |l| l.max(v)));
            hi = Some(hi.map_or(v, |h| h.min(v)));
        }
        _ => {}
    };
    let mut comparisons: Vec<(Expr, BinaryOp, Expr)> = (join.on.iter())
        .map(|(l, r)| (l.clone(), BinaryOp::Eq, r.clone()))
        .collect();
    for conjunct in join.filter.iter().flat_map(split_conjunction) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                comparisons.push((left.as_ref().clone(), *op, right.as_ref().clone()));
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                comparisons.push((expr.as_ref().clone(), BinaryOp::GtEq, low.as_ref().clone()));
                comparisons.push((expr.as_ref().clone(), BinaryOp::LtEq, high.as_ref().clone()));
            }
            _ => {}
        }
    }
    for (l, op, r) in comparisons {
        let (Some((cl, ol)), Some((cr, or))) = (linear(&l, &offset), linear(&r, &offset)) else {
            continue;
        };
        // cl + ol op cr + or, so cl - cr op or - ol.
        let v = or.saturating_sub(ol);
        if cl == time[0] && cr == time[1] {
            bound(op, v);
        } else if cl == time[1] && cr == time[0] {
            // right - left op v: left - right flipped op -v.
            let flipped = match op {
                BinaryOp::Gt => BinaryOp::Lt,
                BinaryOp::GtEq => BinaryOp::LtEq,
                BinaryOp::Lt => BinaryOp::Gt,
                BinaryOp::LtEq => BinaryOp::GtEq,
                other => other,
            };
            bound(flipped, v.saturating_neg());
        }
    }
    (lo, hi)
}

/// `expr` as a column plus a constant `offset`.
fn linear(expr: &Expr, offset: &dyn Fn(&Expr) -> Option<i64>) -> Option<(Column, i64)> {
    match expr {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            match (op, linear(left, offset), offset(right), offset(left)) {
                (BinaryOp::Plus, Some((c, o)), Some(v), _) => Some((c, o.saturating_add(v))),
                (BinaryOp::Minus, Some((c, o)), Some(v), _) => Some((c, o.saturating_sub(v))),
                (BinaryOp::Plus, None, None, Some(v)) => {
                    linear(right, offset).map(|(c, o)| (c, o.saturating_add(v)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A literal integer.
fn integer_literal(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) if value.data_type().is_integer() => {
            value.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                ScalarValue::Int64(v) => v,
                _ => None,
            })
        }
        _ => None,
    }
}

/// A literal interval or duration in milliseconds (not months: their length
/// varies).
fn interval_ms(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    const DAY: i64 = 86_400_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * DAY + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * DAY + i64::from(v.milliseconds))
        }
        ScalarValue::DurationSecond(Some(s)) => s.checked_mul(1000),
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(us / 1000),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns / 1_000_000),
        _ => None,
    }
}

/// The plan above the join, reading the joined rows from a slot: the join
/// is replaced by a projection naming the slot's columns as the join's.
fn above_join(optimized: &LogicalPlan, join: &Join) -> Result<(BatchSlot, LogicalPlan)> {
    let fields: Vec<Field> = (join.schema.fields().iter().enumerate())
        .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), f.is_nullable()))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let slot = BatchSlot::new(Arc::clone(&schema));
    let provider = StreamingTable::try_new(schema, vec![Arc::new(slot.clone())])?;
    let names: Vec<Expr> = (join.schema.iter().enumerate())
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(Some(JOINED), format!("c{i}")))
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    let joined = LogicalPlanBuilder::scan(JOINED, provider_as_source(Arc::new(provider)), None)?
        .project(names)?
        .build()?;
    let post = optimized
        .clone()
        .transform_up(|node| {
            Ok(match node {
                LogicalPlan::Join(_) => Transformed::yes(joined.clone()),
                other => Transformed::no(other),
            })
        })?
        .data;
    Ok((slot, post))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn intervals_on_either_side_give_the_bound_of_left_minus_right() {
        let minutes = |m: i64| {
            Expr::Literal(
                ScalarValue::new_interval_mdn(0, 0, m * 60_000_000_000),
                None,
            )
        };
        let (l, r) = (col("a.ts"), col("b.ts"));
        // a.ts BETWEEN b.ts - 5 min AND b.ts + 10 min: -5 min <= a - b <= 10 min.
        let between = l
            .clone()
            .between(r.clone() - minutes(5), r.clone() + minutes(10));
        // b.ts <= a.ts + 1 min: a - b >= -1 min.
        let flipped = r.clone().lt_eq(l.clone() + minutes(1));
        let columns = [
            Column::from_qualified_name("a.ts"),
            Column::from_qualified_name("b.ts"),
        ];
        let cases = [
            (between, (Some(-300_000), Some(600_000))),
            (flipped, (Some(-60_000), None)),
            (l.gt(lit(1)), (None, None)),
        ];
        for (filter, expected) in cases {
            let (lo, hi) = bounds_of(&filter, &columns);
            assert_eq!((lo, hi), expected, "{filter}");
        }
    }

    fn bounds_of(filter: &Expr, time: &[Column; 2]) -> (Option<i64>, Option<i64>) {
        let empty = Arc::new(LogicalPlan::EmptyRelation(
            datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            },
        ));
        let join = Join {
            left: Arc::clone(&empty),
            right: empty,
            on: Vec::new(),
            filter: Some(filter.clone()),
            join_type: JoinType::Inner,
            join_constraint: datafusion::logical_expr::JoinConstraint::On,
            schema: Arc::new(datafusion::common::DFSchema::empty()),
            null_equality: datafusion::common::NullEquality::NullEqualsNothing,
            null_aware: false,
        };
        time_bounds(&join, time, false)
    }
}
