//! From a `.sql` file to what runs: DataFusion plans each query once, and a
//! windowed query's physical plan is split at its aggregate into the part run
//! on each micro-batch, our stateful window operator, and the part run on the
//! rows the operator emits.

use crate::error::Diagnostic;

mod over;
mod query;
mod slot;
mod window_sql;

pub use over::{HistorySpec, OverPlan};
pub use query::{QueryPlan, QueryShape, TableDef, TableRole, WindowedPlan, with_window_columns};
pub use slot::BatchSlot;
pub use window_sql::WindowCall;

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
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    for (l, line) in text.lines().enumerate() {
        for (c, _) in line.match_indices(word) {
            let before = line[..c].chars().next_back();
            let after = line[c + word.len()..].chars().next();
            if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
                return Some((l + 1, line[..c].chars().count() + 1));
            }
        }
    }
    None
}
