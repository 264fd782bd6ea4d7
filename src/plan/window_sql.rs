//! Windows in SQL: `TUMBLE`, `HOP` and `SESSION` in GROUP BY.
//!
//! ```sql
//! SELECT window_start, window_end, machine_id, count(*) AS events
//! FROM task_events
//! GROUP BY HOP(time, INTERVAL '30' SECOND, INTERVAL '2' MINUTE), machine_id
//! ```
//!
//! The window call is rewritten to `GROUP BY window_start, window_end,
//! __streamsql_watermark, ...` over a table whose `window_start`/`window_end`
//! columns the window operator fills with each row's pane and whose
//! watermark column holds the watermark each row met (see
//! [`crate::operator::window`]), so DataFusion plans the query as an ordinary
//! aggregate, carries both through the query's filters, and
//! `window_start`/`window_end` work anywhere after it.

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr as LogicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, SetExpr, Spanned,
    Statement,
};

use super::locate_word;
use crate::error::Diagnostic;
use crate::operator::window::WindowSpec;

/// The hidden column holding the watermark each row met.
pub const WATERMARK_COLUMN: &str = "__streamsql_watermark";

/// The window a query groups by, and the event-time column it names.
#[derive(Debug, Clone)]
pub struct WindowCall {
    pub spec: WindowSpec,
    pub time_column: String,
    /// 1-based line and column of the call in the SQL file.
    pub line: usize,
    pub column: usize,
}

/// Finds a window call in the top-level SELECT's GROUP BY and replaces it by
/// `window_start, window_end`. `file` names the SQL file in diagnostics.
pub fn rewrite_window(
    statement: &mut Statement,
    file: &str,
) -> Result<Option<WindowCall>, Diagnostic> {
    let Statement::Query(query) = statement else {
        return Ok(None);
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(None);
    };
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(None);
    };
    let mut found: Option<(usize, WindowCall)> = None;
    for (i, expr) in exprs.iter().enumerate() {
        let Expr::Function(function) = expr else {
            continue;
        };
        let name = function.name.to_string().to_ascii_lowercase();
        if !matches!(name.as_str(), "tumble" | "hop" | "session") {
            continue;
        }
        let span = expr.span();
        let (line, column) = (span.start.line as usize, span.start.column as usize);
        let at = |message: String, fix: &str| {
            Diagnostic::new(file, Some(line), message)
                .at_column(Some(column))
                .with_fix(fix)
        };
        if found.is_some() {
            return Err(at(
                "only one window per GROUP BY".into(),
                "chain a second query to window the results again",
            ));
        }
        let args: Vec<&Expr> = match &function.args {
            FunctionArguments::List(list) => list
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let usage = match name.as_str() {
            "tumble" => "TUMBLE(<event time column>, INTERVAL '1' MINUTE)",
            "hop" => {
                "HOP(<event time column>, <slide> INTERVAL '30' SECOND, <size> INTERVAL '2' MINUTE)"
            }
            _ => "SESSION(<event time column>, <gap> INTERVAL '5' MINUTE)",
        };
        let expected = if name == "hop" { 3 } else { 2 };
        if args.len() != expected {
            return Err(at(
                format!("{} takes {expected} arguments", name.to_uppercase()),
                &format!("write {usage}"),
            ));
        }
        let time_column = match args[0] {
            Expr::Identifier(Ident { value, .. }) => value.clone(),
            Expr::CompoundIdentifier(parts) => {
                parts.last().map(|p| p.value.clone()).unwrap_or_default()
            }
            other => {
                return Err(at(
                    format!(
                        "the first argument of {} must be the event-time column, not `{other}`",
                        name.to_uppercase()
                    ),
                    &format!("write {usage}"),
                ));
            }
        };
        let mut millis = Vec::new();
        for arg in &args[1..] {
            let ms = interval_millis(arg).map_err(|m| at(m, &format!("write {usage}")))?;
            millis.push(ms);
        }
        let spec = match name.as_str() {
            "tumble" => WindowSpec::Tumble { size: millis[0] },
            "hop" => {
                let (slide, size) = (millis[0], millis[1]);
                if size < slide {
                    return Err(at(
                        format!(
                            "HOP size ({size} ms) is smaller than its slide ({slide} ms): rows between windows would belong to none"
                        ),
                        "HOP takes the slide first, then the size: HOP(time, INTERVAL '30' SECOND, INTERVAL '2' MINUTE)",
                    ));
                }
                if size / slide > MAX_HOP_WINDOWS_PER_ROW {
                    return Err(at(
                        format!(
                            "HOP slide ({slide} ms) puts every row into {} windows of {size} ms (at most {MAX_HOP_WINDOWS_PER_ROW})",
                            size / slide
                        ),
                        "use a longer slide, or a TUMBLE of the slide's length whose results a second query sums over HOP's size",
                    ));
                }
                WindowSpec::Hop { slide, size }
            }
            _ => WindowSpec::Session { gap: millis[0] },
        };
        found = Some((
            i,
            WindowCall {
                spec,
                time_column,
                line,
                column,
            },
        ));
    }
    let Some((index, call)) = found else {
        return Ok(None);
    };
    // Before the aggregate these columns hold each row's pane, not its
    // windows: a WHERE on them would silently mean something else.
    if let Some(filter) = &select.selection {
        let text = filter.to_string();
        if let Some(name) = ["window_start", "window_end"]
            .into_iter()
            .find(|n| locate_word(&text, n).is_some())
        {
            let span = filter.span();
            return Err(Diagnostic::new(
                file,
                Some(span.start.line as usize),
                format!("`{name}` in WHERE: windows exist only after the aggregate"),
            )
            .at_column(Some(span.start.column as usize))
            .with_fix(format!(
                "filter on `{name}` in HAVING, or on the event-time column in WHERE"
            )));
        }
    }
    exprs.splice(
        index..=index,
        [
            Expr::Identifier(Ident::new("window_start")),
            Expr::Identifier(Ident::new("window_end")),
            Expr::Identifier(Ident::new(WATERMARK_COLUMN)),
        ],
    );
    Ok(Some(call))
}

/// A positive interval literal in milliseconds.
/// Each row belongs to `size / slide` HOP windows: the work and state per row
/// grow with it, so a slide far shorter than the size is refused.
const MAX_HOP_WINDOWS_PER_ROW: i64 = 1000;

/// Window lengths stay far from `i64` overflow when added to event times
/// (which are bounded to the years 0000-9999).
const MAX_WINDOW_INTERVAL_MS: i64 = 100 * 365 * 86_400_000;

fn interval_millis(expr: &Expr) -> Result<i64, String> {
    let ctx = SessionContext::new();
    let planned = ctx
        .parse_sql_expr(&expr.to_string(), &DFSchema::empty())
        .map_err(|e| format!("`{expr}` is not an interval: {e}"))?;
    let value = match planned {
        LogicalExpr::Literal(value, _) => value,
        _ => return Err(format!("`{expr}` is not a constant interval")),
    };
    let ms = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds)
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(Some(_)) => {
            return Err(format!("`{expr}`: months and years have no fixed length"));
        }
        other => {
            return Err(format!(
                "`{expr}` is a {}, not an interval",
                other.data_type()
            ));
        }
    };
    if ms <= 0 {
        return Err(format!("`{expr}` must be at least one millisecond"));
    }
    if ms > MAX_WINDOW_INTERVAL_MS {
        return Err(format!("`{expr}` is longer than 100 years"));
    }
    Ok(ms)
}
