//! The batch-invariance rule: a query runs only if its answer cannot depend
//! on where the input is cut into micro-batches.
//!
//! Every node of a query's plans must be row-local (a row's output depends on
//! that row alone: filters, projections, scalar functions, unnest, UNION ALL)
//! or be replaced by a stateful incremental operator (the window aggregate,
//! the key history, the interval join). Anything else — a join without an
//! event-time bound, a subquery, LIMIT, DISTINCT, an
//! aggregate without a window — would be answered per micro-batch, so `check`
//! refuses it with the file, line, column and the incremental way to write it.
//!
//! The rule is checked twice: on the SQL text, where positions and fixes are
//! precise ([`refuse_statement`]), and on the physical plans DataFusion made,
//! where nothing can slip past ([`require_row_local`]).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::sql::sqlparser::ast::{
    Distinct, Expr, GroupByExpr, Query, SetExpr, SetOperator, SetQuantifier, Spanned, Statement,
    TableFactor, Visit, Visitor,
};

use super::{WATERMARK_COLUMN, locate_keyword};
use crate::error::{Diagnostic, Diagnostics};
use crate::table::scans_lookup_only;

/// Why a construct cannot run incrementally, and how to write it instead.
pub(super) struct Refusal {
    pub message: &'static str,
    fix: &'static str,
}

const JOIN: Refusal = Refusal {
    message: "a join inside a windowed or rule query would be answered per micro-batch",
    fix: "join in a query of its own, as an interval join of two sources (see docs/sql.md), \
          and filter or project its rows there",
};

const LOOKUP_JOIN: Refusal = Refusal {
    message: "a lookup join passes on the stream's rows, joined by an equality with the \
              table's columns: a table row that matched no event (RIGHT or FULL JOIN keeping \
              the table's side) would depend on which events share a micro-batch, and without \
              an equality every event would be compared with every row",
    fix: "join each event with the table by key, as an inner or LEFT JOIN with the table on \
          the right: `FROM events e LEFT JOIN machines m ON m.machine_id = e.machine_id`",
};

const SECOND_JOIN: Refusal = Refusal {
    message: "a query joins two streams, once",
    fix: "join two streams per query; to join a third, join its rows with another query's in a \
          query of its own",
};

const SUBQUERY: Refusal = Refusal {
    message: "a subquery over a stream compares each row with rows that arrive at other times \
              (IN, EXISTS and scalar subqueries would be answered per micro-batch)",
    fix: "compute what the subquery computes in a windowed query, then write the comparison as \
          a rule query that selects from its results",
};

const LIMIT: Refusal = Refusal {
    message: "a stream has no first or last rows: LIMIT (or FETCH, OFFSET) would keep some rows \
              of each micro-batch",
    fix: "filter the rows with WHERE, or aggregate them per window; LIMIT works in \
          `streamsql query` over a pipeline's outputs",
};

const SET_OPERATION: Refusal = Refusal {
    message: "UNION (without ALL), EXCEPT and INTERSECT compare a row with every row of the \
              stream, a state that grows forever",
    fix: "UNION ALL passes each row on as it comes; to drop duplicates, GROUP BY a window and \
          the columns: GROUP BY TUMBLE(<time>, INTERVAL '1' MINUTE), <columns>",
};

const DISTINCT: Refusal = Refusal {
    message: "SELECT DISTINCT over a stream must remember every row it has seen",
    fix: "deduplicate per window: GROUP BY TUMBLE(<time>, INTERVAL '1' MINUTE), <the columns>",
};

pub(super) const GROUP_BY: Refusal = Refusal {
    message: "GROUP BY without a window keeps state forever",
    fix: "group by TUMBLE(...), HOP(...) or SESSION(...) on the event time column",
};

const AGGREGATE: Refusal = Refusal {
    message: "an aggregate over a whole stream keeps state forever, and per micro-batch it \
              answers for each batch alone",
    fix: "aggregate per window: GROUP BY TUMBLE(<time>, INTERVAL '1' MINUTE)",
};

const WINDOW_FUNCTION: Refusal = Refusal {
    message: "window functions (OVER) here would see each micro-batch on its own",
    fix: "compute the windows in a windowed query and use OVER (PARTITION BY <key> ORDER BY \
          window_start ...) in a query that selects from it",
};

/// Finds what the rule refuses in the SQL of `file` (after
/// [`super::rewrite_window`]: a windowed SELECT groups by the watermark
/// column).
/// `lookups` are the lookup tables' names: joining them adds no stream.
pub fn refuse_statement(
    file: &str,
    sql: &str,
    statement: &Statement,
    lookups: &[&str],
) -> Result<(), Diagnostics> {
    let mut finder = Finder {
        file,
        sql,
        lookups,
        found: Vec::new(),
    };
    let _ = statement.visit(&mut finder);
    match finder.found.is_empty() {
        true => Ok(()),
        false => Err(Diagnostics(finder.found)),
    }
}

struct Finder<'a> {
    file: &'a str,
    sql: &'a str,
    lookups: &'a [&'a str],
    found: Vec<Diagnostic>,
}

impl Finder<'_> {
    fn refuse(&mut self, at: Option<(usize, usize)>, refusal: &Refusal) {
        let (line, column) = at.unwrap_or((1, 1));
        if self.found.iter().any(|d| d.message == refusal.message) {
            return;
        }
        self.found.push(
            Diagnostic::new(self.file, Some(line), refusal.message)
                .at_column(Some(column))
                .with_fix(refusal.fix),
        );
    }

    fn refuse_at(&mut self, node: &impl Spanned, refusal: &Refusal) {
        let span = node.span();
        let at =
            (span.start.line > 0).then_some((span.start.line as usize, span.start.column as usize));
        self.refuse(at, refusal);
    }

    fn refuse_keyword(&mut self, keyword: &str, refusal: &Refusal) {
        self.refuse(locate_keyword(self.sql, keyword), refusal);
    }

    /// The SELECTs and set operations of one query's body.
    fn body(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(select) => {
                // One join, of two streams; the planner proves it an
                // interval join (see `super::join`). Lookup tables are no
                // streams (see `crate::table`).
                let lookups = self.lookups;
                let mut relations = (select.from.iter())
                    .flat_map(|f| {
                        std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation))
                    })
                    .filter(|r| {
                        !matches!(r, TableFactor::Table { name, .. }
                            if lookups.iter().any(|l| name.to_string().trim_matches('"') == *l))
                    });
                if let Some(third) = relations.nth(2) {
                    self.refuse_at(third, &SECOND_JOIN);
                }
                if matches!(select.distinct, Some(Distinct::Distinct | Distinct::On(_))) {
                    self.refuse_keyword("DISTINCT", &DISTINCT);
                }
                if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
                    let windowed = exprs
                        .iter()
                        .any(|e| matches!(e, Expr::Identifier(i) if i.value == WATERMARK_COLUMN));
                    if let (false, Some(first)) = (windowed, exprs.first()) {
                        self.refuse_at(first, &GROUP_BY);
                    }
                }
            }
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let all = matches!(
                    set_quantifier,
                    SetQuantifier::All | SetQuantifier::AllByName
                );
                if !(all && *op == SetOperator::Union) {
                    self.refuse_keyword(&op.to_string(), &SET_OPERATION);
                }
                self.body(left);
                self.body(right);
            }
            // A parenthesized query is visited as a query of its own.
            _ => {}
        }
    }
}

impl Visitor for Finder<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if query.limit_clause.is_some() {
            let keyword = ["LIMIT", "OFFSET"]
                .into_iter()
                .find(|k| locate_keyword(self.sql, k).is_some())
                .unwrap_or("LIMIT");
            self.refuse_keyword(keyword, &LIMIT);
        }
        if query.fetch.is_some() {
            self.refuse_keyword("FETCH", &LIMIT);
        }
        self.body(&query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if matches!(
            expr,
            Expr::InSubquery { .. } | Expr::Exists { .. } | Expr::Subquery(_)
        ) {
            self.refuse_at(expr, &SUBQUERY);
        }
        ControlFlow::Continue(())
    }
}

/// Proves every node of `plan` row-local, or refuses the query at the first
/// that is not (positioned at its keyword in `sql` when there is one). A sort
/// without a limit is accepted: it only orders the rows of one emission.
/// `window_functions`: the plan is the key history's (see
/// [`crate::operator::history`]), whose window functions see every row they
/// need.
pub fn require_row_local(
    file: &str,
    sql: &str,
    plan: &Arc<dyn ExecutionPlan>,
    window_functions: bool,
) -> Result<(), Diagnostic> {
    let allowed = |name: &str| match name {
        "WindowAggExec" | "BoundedWindowAggExec" => window_functions,
        _ => false,
    };
    require_steps(file, sql, plan, &allowed)
}

/// Like [`require_row_local`], accepting aggregates and window functions
/// too: the plan runs over complete windows (see
/// [`crate::operator::per_window`]).
pub fn require_per_window(
    file: &str,
    sql: &str,
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<(), Diagnostic> {
    let allowed = |name: &str| {
        matches!(
            name,
            "AggregateExec" | "WindowAggExec" | "BoundedWindowAggExec"
        )
    };
    require_steps(file, sql, plan, &allowed)
}

/// Every node of `plan` row-local or `allowed`.
fn require_steps(
    file: &str,
    sql: &str,
    plan: &Arc<dyn ExecutionPlan>,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<(), Diagnostic> {
    let name = plan.name();
    let row_local = match name {
        n if allowed(n) => true,
        "ProjectionExec"
        | "FilterExec"
        | "CoalesceBatchesExec"
        | "StreamingTableExec"
        | "UnnestExec"
        | "UnionExec"
        | "InterleaveExec"
        | "CooperativeExec"
        | "RepartitionExec"
        | "CoalescePartitionsExec"
        | "async_func" => true,
        // Each event row joined with the table as it is now (see
        // `crate::table`).
        "LookupJoinExec" | "LookupTableExec" => true,
        // Orders the rows of each emission; a stream has no global order.
        "SortExec" => plan
            .downcast_ref::<SortExec>()
            .is_some_and(|sort| sort.fetch().is_none()),
        _ => false,
    };
    if !row_local {
        let (refusal, keyword) = match name {
            n if n.contains("Join") && plan.children().iter().any(|c| scans_lookup_only(c)) => {
                (&LOOKUP_JOIN, "JOIN")
            }
            n if n.contains("Join") => (&JOIN, "JOIN"),
            "AggregateExec" if locate_keyword(sql, "GROUP").is_some() => (&GROUP_BY, "GROUP"),
            "AggregateExec" => (&AGGREGATE, "SELECT"),
            "GlobalLimitExec" | "LocalLimitExec" | "SortExec" | "SortExec(TopK)" => {
                (&LIMIT, "LIMIT")
            }
            "WindowAggExec" | "BoundedWindowAggExec" => (&WINDOW_FUNCTION, "OVER"),
            "ScalarSubqueryExec" => (&SUBQUERY, "SELECT"),
            _ => {
                return Err(Diagnostic::new(
                    file,
                    Some(1),
                    format!("the plan step `{name}` cannot run incrementally on a stream"),
                )
                .at_column(Some(1))
                .with_fix(
                    "keep to filters, projections and scalar functions, or aggregate in windows \
                     (streamsql explain shows the plan)",
                ));
            }
        };
        let (line, column) = locate_keyword(sql, keyword).unwrap_or((1, 1));
        return Err(Diagnostic::new(file, Some(line), refusal.message)
            .at_column(Some(column))
            .with_fix(refusal.fix));
    }
    for child in plan.children() {
        require_steps(file, sql, child, allowed)?;
    }
    Ok(())
}
