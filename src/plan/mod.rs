//! From `pipelines.yaml` and `.sql` files to the operator graph that runs.
//!
//! A pipeline's tables are its sources, each source's late rows
//! (`<source>_late`) and its queries' results; a query reading another's
//! results is an edge of the graph. DataFusion plans each query once; the
//! plan is then split into row-local sub-plans and one stateful operator
//! (see [`crate::operator`]; a join's two sides each get their own), or
//! refused by the batch-invariance rule
//! ([`incremental`]) when it has no incremental form.

use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::error::{Diagnostic, Diagnostics, Result, StreamSqlError};
use crate::table::TableRows;

mod incremental;
mod join;
mod over;
mod params;
mod query;
mod slot;
mod window_sql;

pub(crate) use over::HistorySpec;
pub use query::{QueryPlan, TableDef, TableRole, TimeColumn};
pub(crate) use slot::BatchSlot;
pub(crate) use window_sql::WATERMARK_COLUMN;

/// A pipeline planned: every table and the query that produces each result.
pub struct PipelinePlan {
    /// The streams: per source its rows and its late rows, then per query
    /// its results.
    pub tables: Vec<TableDef>,
    /// The lookup tables, whose rows the runtime loads and keeps current.
    pub lookups: Vec<TableDef>,
    /// In declaration order, which is an order of the graph: a query reads
    /// only sources and earlier queries.
    pub queries: Vec<QueryPlan>,
}

/// Plans every query of pipeline `name`, reporting all problems at once;
/// each query's operator `workers` times, once per worker (see
/// [`crate::runtime`]).
pub async fn plan_pipeline(
    loaded: &LoadedConfig,
    name: &str,
    workers: usize,
) -> Result<PipelinePlan> {
    let pipeline = loaded.pipeline(name)?;
    let mut tables = Vec::new();
    for source in &pipeline.sources {
        let schema = source.schema();
        tables.push(TableDef {
            name: source.name.clone(),
            schema: Arc::clone(&schema),
            role: TableRole::Source {
                event_time: source.event_time.column.clone(),
                unit: source.event_time.unit,
            },
            lookup: None,
        });
        tables.push(TableDef {
            name: format!("{}_late", source.name),
            schema,
            role: TableRole::Late,
            lookup: None,
        });
    }
    let lookups: Vec<TableDef> = (pipeline.tables.iter())
        .map(|table| {
            let schema = crate::table::schema_of(table);
            TableDef {
                name: table.name.clone(),
                schema: Arc::clone(&schema),
                role: TableRole::Lookup,
                lookup: Some(TableRows::new(schema)),
            }
        })
        .collect();
    let mut queries = Vec::new();
    let mut problems = Vec::new();
    for query in &pipeline.queries {
        let (path, sql) = loaded.sql_of(name, &query.name);
        let visible: Vec<TableDef> = tables.iter().chain(&lookups).cloned().collect();
        let build = || {
            QueryPlan::build(
                &query.name,
                path,
                sql,
                query.emit,
                &visible,
                &pipeline.params,
            )
        };
        match build().await {
            Ok(mut plan) => {
                // Each worker's instance has sub-plans of its own.
                for _ in 1..workers {
                    plan.operators.extend(build().await?.operators);
                }
                problems.extend(crate::sink::check_settings(loaded, name, query, &plan));
                tables.push(TableDef {
                    name: query.name.clone(),
                    schema: Arc::clone(&plan.output_schema),
                    role: output_role(&plan, &tables),
                    lookup: None,
                });
                queries.push(plan);
            }
            Err(StreamSqlError::Invalid(Diagnostics(found))) => problems.extend(found),
            Err(other) => return Err(other),
        }
    }
    if !problems.is_empty() {
        return Err(StreamSqlError::Invalid(Diagnostics(problems)));
    }
    Ok(PipelinePlan {
        tables,
        lookups,
        queries,
    })
}

/// What a query's rows are: what the query says (window results, a join's
/// rows), or else what its input's rows are; a query reading another's rows
/// may compute its time columns anew, so none are passed on.
fn output_role(plan: &QueryPlan, tables: &[TableDef]) -> TableRole {
    if let Some(role) = &plan.output {
        return role.clone();
    }
    let read = |input: &String| tables.iter().find(|t| t.name == *input).map(|t| &t.role);
    let (windows, updates) = match plan.inputs.as_slice() {
        [input] => match read(input) {
            Some(TableRole::Query {
                windows, updates, ..
            }) => (*windows, *updates),
            _ => (false, false),
        },
        _ => (false, false),
    };
    TableRole::Query {
        windows,
        updates,
        times: Vec::new(),
    }
}

/// A diagnostic of `file` at the first whole-word `word` of its `sql` (at
/// the start of the file when the word is not there).
pub(crate) fn diagnostic_at(
    file: &str,
    sql: &str,
    word: &str,
    message: impl Into<String>,
) -> Diagnostic {
    let (line, column) = locate_word(sql, word).unwrap_or((1, 1));
    Diagnostic::new(file, Some(line), message).at_column(Some(column))
}

/// 1-based line and column of the first whole-word `word` in `text`.
pub(crate) fn locate_word(text: &str, word: &str) -> Option<(usize, usize)> {
    locate(text, word, |a, b| a == b)
}

/// Like [`locate_word`], ignoring ASCII case (for SQL keywords).
pub(crate) fn locate_keyword(text: &str, keyword: &str) -> Option<(usize, usize)> {
    locate(text, keyword, |a, b| a.eq_ignore_ascii_case(b))
}

fn locate(text: &str, word: &str, same: impl Fn(&str, &str) -> bool) -> Option<(usize, usize)> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    for (l, line) in text.lines().enumerate() {
        let code = line.split("--").next().unwrap_or(line);
        for (c, _) in code.char_indices() {
            let Some(candidate) = code.get(c..c + word.len()) else {
                continue;
            };
            if !same(candidate, word) {
                continue;
            }
            let before = code[..c].chars().next_back();
            let after = code[c + word.len()..].chars().next();
            if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
                return Some((l + 1, code[..c].chars().count() + 1));
            }
        }
    }
    None
}
