//! Reading `pipelines.yaml` and the SQL files it names, and every check that
//! can be made before anything starts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{PipelineConfig, PipelinesFile};
use crate::error::{Diagnostic, Diagnostics, Result, StreamSqlError};
use crate::source::{ColumnType, Format, SourceConfig};

/// A parsed and checked configuration with the text of every SQL file.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub file: PipelinesFile,
    /// Query SQL by (pipeline, query name): the file's path and its text.
    pub sql: BTreeMap<(String, String), (PathBuf, String)>,
    /// The file's text (environment variables expanded), to point at lines.
    text: String,
}

impl LoadedConfig {
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.base_dir.join(relative)
    }

    pub fn pipeline(&self, name: &str) -> Result<&PipelineConfig> {
        self.file.pipelines.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.file.pipelines.keys().map(String::as_str).collect();
            Diagnostic::new(
                self.path.display().to_string(),
                None,
                format!("no pipeline named `{name}`"),
            )
            .with_fix(format!("use one of: {}", known.join(", ")))
            .into()
        })
    }

    /// Where pipeline `name` writes: its `output_dir`, or `output/<name>`.
    pub fn output_dir(&self, name: &str, pipeline: &PipelineConfig) -> PathBuf {
        let relative = pipeline
            .output_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("output").join(name));
        self.resolve(&relative)
    }

    /// The 1-based line of `needle` in pipeline `pipeline`'s block, at or
    /// after the first line containing `after` (such as `name: <query>`).
    pub fn line_of(&self, pipeline: &str, after: &str, needle: &str) -> Option<usize> {
        Locator::new(&self.text, pipeline).line_after(after, needle)
    }

    pub fn sql_of(&self, pipeline: &str, query: &str) -> &(PathBuf, String) {
        // Invariant: `load` read the SQL of every query of every pipeline.
        &self.sql[&(pipeline.to_string(), query.to_string())]
    }
}

/// Loads and checks `path`; every problem found is reported at once.
pub fn load(path: &Path) -> Result<LoadedConfig> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| StreamSqlError::io(format!("cannot read {file_name}"), e))?;
    let text = expand_env(&file_name, &text)?;
    let file: PipelinesFile = serde_yaml::from_str(&text).map_err(|e| {
        let (mut line, mut column) = (
            e.location().map(|l| l.line()),
            e.location().map(|l| l.column()),
        );
        // serde_yaml places errors raised while converting a value (such as a
        // bad duration) at the start of the enclosing mapping; point at the
        // value itself.
        if let Some(value) = e
            .to_string()
            .split("invalid duration `")
            .nth(1)
            .and_then(|r| r.split('`').next())
            && let Some(found) = text
                .lines()
                .enumerate()
                .skip(line.unwrap_or(1).saturating_sub(1))
                .find(|(_, l)| l.trim_end().ends_with(&format!(": {value}")))
        {
            line = Some(found.0 + 1);
            column = found.1.find(value).map(|c| c + 1);
        }
        Diagnostic::new(&file_name, line, e.to_string())
            .at_column(column)
            .with_fix("see the pipelines.yaml reference in README.md")
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut problems = Vec::new();
    let mut sql = BTreeMap::new();
    if file.pipelines.is_empty() {
        problems.push(
            Diagnostic::new(&file_name, Some(1), "no pipelines declared")
                .with_fix("add a pipeline under the `pipelines:` key"),
        );
    }
    for (name, pipeline) in &file.pipelines {
        let at = Locator::new(&text, name);
        check_pipeline(&file_name, name, pipeline, &at, &mut problems);
        for query in &pipeline.queries {
            let sql_path = base_dir.join(&query.sql);
            match std::fs::read_to_string(&sql_path) {
                Ok(body) => {
                    sql.insert((name.clone(), query.name.clone()), (sql_path, body));
                }
                Err(e) => problems.push(
                    Diagnostic::new(
                        &file_name,
                        at.line_of(&query.sql.display().to_string()),
                        format!("query `{}`: cannot read {}: {e}", query.name, sql_path.display()),
                    )
                    .with_fix("the `sql:` path is relative to pipelines.yaml; create the file or fix the path"),
                ),
            }
        }
    }
    if !problems.is_empty() {
        return Err(StreamSqlError::Invalid(Diagnostics(problems)));
    }
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        base_dir,
        file,
        sql,
        text,
    })
}

/// Replaces `${NAME}` and `${NAME:-default}` with the environment variable's
/// value (or the default), as docker compose does, so one file serves a
/// laptop and a container network (`brokers: ${KAFKA_BROKERS:-127.0.0.1:9092}`).
/// Secrets stay out of the file this way too.
fn expand_env(file: &str, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let inner = &rest[start + 2..start + len];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            match (std::env::var(name), default) {
                (Ok(value), _) => out.push_str(&value),
                (Err(_), Some(default)) => out.push_str(default),
                (Err(_), None) => problems.push(
                    Diagnostic::new(
                        file,
                        Some(n + 1),
                        format!("environment variable `{name}` is not set"),
                    )
                    .at_column(Some(line.len() - rest.len() + start + 1))
                    .with_fix(format!(
                        "export {name}=..., or give a default: ${{{name}:-value}}"
                    )),
                ),
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(StreamSqlError::Invalid(Diagnostics(problems)))
    }
}

fn check_pipeline(
    file: &str,
    name: &str,
    pipeline: &PipelineConfig,
    at: &Locator<'_>,
    problems: &mut Vec<Diagnostic>,
) {
    let mut report = |needle: &str, message: String, fix: &str| {
        problems.push(
            Diagnostic::new(
                file,
                at.line_of(needle),
                format!("pipeline `{name}`: {message}"),
            )
            .with_fix(fix),
        );
    };
    if pipeline.sources.is_empty() {
        report(
            "sources:",
            "no sources declared".into(),
            "declare at least one source",
        );
    }
    if pipeline.checkpoint.retain == 0 {
        report(
            "retain:",
            "checkpoint.retain must be at least 1".into(),
            "keep at least the newest checkpoint, e.g. `retain: 3`",
        );
    }
    let mut tables = HashSet::new();
    for source in &pipeline.sources {
        for table in [source.name.clone(), format!("{}_late", source.name)] {
            if !tables.insert(table.clone()) {
                report(
                    &format!("name: {}", source.name),
                    format!("table name `{table}` is declared twice"),
                    "give every source a unique name",
                );
            }
        }
        for name in source.added_columns() {
            if source.columns.iter().any(|c| &c.name == name) {
                report(
                    &format!(": {name}"),
                    format!("added column `{name}` is also a declared column"),
                    "give the timestamp or processing-time column a name of its own",
                );
            }
        }
        check_text_formats(source, &mut report);
        if source.batch_rows() == 0 {
            report(
                "batch_rows:",
                "batch_rows must be at least 1".into(),
                "use for example `batch_rows: 8192`",
            );
        }
        let mut columns = HashSet::new();
        for column in &source.columns {
            if !columns.insert(column.name.as_str()) {
                report(
                    &format!("name: {}", column.name),
                    format!("column `{}` is declared twice", column.name),
                    "rename one of them",
                );
            }
            if column.name == "window_start" || column.name == "window_end" {
                report(
                    &format!("name: {}", column.name),
                    format!("`{}` is reserved for window bounds", column.name),
                    "rename the column",
                );
            }
            if column.name.starts_with("__streamsql") {
                report(
                    &format!("name: {}", column.name),
                    format!(
                        "`{}`: names starting with `__streamsql` are the engine's",
                        column.name
                    ),
                    "rename the column",
                );
            }
        }
        match source
            .columns
            .iter()
            .find(|c| c.name == source.event_time.column)
        {
            None if source
                .added_columns()
                .any(|c| *c == source.event_time.column) => {}
            None => report(
                "event_time:",
                format!(
                    "event_time column `{}` is not among the columns of source `{}`",
                    source.event_time.column, source.name
                ),
                &format!(
                    "use one of: {}",
                    source
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(c)
                if !matches!(
                    c.column_type,
                    ColumnType::Int64 | ColumnType::Int32 | ColumnType::Timestamp
                ) =>
            {
                report(
                    "event_time:",
                    format!(
                        "event_time column `{}` has type {:?}",
                        c.name, c.column_type
                    ),
                    "event time must be an integer (with `unit: s|ms|us|ns`) or a timestamp column",
                )
            }
            Some(_) => {}
        }
    }
    for query in &pipeline.queries {
        if !tables.insert(query.name.clone()) {
            report(
                &format!("name: {}", query.name),
                format!("query name `{}` is already a table name", query.name),
                "give every query and source a unique name",
            );
        }
    }
}

/// `format: regex` needs a `regex` whose named groups are the columns; a
/// column `format` is a valid strftime pattern on a timestamp column.
fn check_text_formats(source: &SourceConfig, report: &mut impl FnMut(&str, String, &str)) {
    let name = &source.name;
    match (&source.format, &source.regex) {
        (Format::Regex, None) => report(
            "format: regex",
            format!("source `{name}` has `format: regex` but no `regex`"),
            "add `regex:` with a named group per column, e.g. `^(?P<ip>\\S+) ...`",
        ),
        (Format::Regex, Some(_)) => match source.regex_groups() {
            None => {}
            Some(Err(e)) => report(
                "regex:",
                format!("source `{name}`: invalid regex: {e}"),
                "fix the pattern (Rust regex syntax; single-quote it in YAML)",
            ),
            Some(Ok((regex, found))) => {
                let groups: Vec<&str> = regex.capture_names().flatten().collect();
                for (column, group) in source.columns.iter().zip(found) {
                    if group.is_none() {
                        report(
                            "regex:",
                            format!(
                                "source `{name}`: column `{}` has no named group in the regex",
                                column.name
                            ),
                            &format!(
                                "add `(?P<{}>...)` to the regex; its groups are: {}",
                                column.name,
                                groups.join(", ")
                            ),
                        );
                    }
                }
            }
        },
        (_, Some(_)) => report(
            "regex:",
            format!(
                "source `{name}` has a `regex` but `format: {}`",
                format!("{:?}", source.format).to_lowercase()
            ),
            "set `format: regex`, or remove `regex`",
        ),
        (_, None) => {}
    }
    for column in &source.columns {
        let Some(format) = &column.format else {
            continue;
        };
        let needle = format!("name: {}", column.name);
        if column.column_type != ColumnType::Timestamp {
            report(
                &needle,
                format!(
                    "column `{}` has a `format` but is not a timestamp",
                    column.name
                ),
                "declare it `type: timestamp`, or remove `format`",
            );
        }
        let items = chrono::format::StrftimeItems::new(format);
        if items
            .clone()
            .any(|i| matches!(i, chrono::format::Item::Error))
        {
            report(
                &needle,
                format!(
                    "column `{}`: `{format}` is not a valid strftime format",
                    column.name
                ),
                "use chrono's strftime specifiers, e.g. `%d/%b/%Y:%H:%M:%S %z` or `%H:%M:%S`",
            );
        }
    }
}

/// Finds the line of a value inside one pipeline's block of the YAML text.
///
/// serde_yaml reports positions only for syntax errors; for the checks above a
/// search inside the pipeline's block finds the line a user needs to look at.
struct Locator<'a> {
    lines: Vec<&'a str>,
    start: usize,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str, pipeline: &str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let header = format!("{pipeline}:");
        let start = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&header))
            .unwrap_or(0);
        Self { lines, start }
    }

    fn line_of(&self, needle: &str) -> Option<usize> {
        self.line_after("", needle)
    }

    /// Like `line_of`, searching from the first line containing `after`.
    fn line_after(&self, after: &str, needle: &str) -> Option<usize> {
        let from = self.lines[self.start..]
            .iter()
            .position(|l| l.contains(after))
            .map_or(self.start, |i| self.start + i);
        self.lines[from..]
            .iter()
            .position(|l| l.contains(needle))
            .map(|i| from + i + 1)
            .or(Some(from + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn environment_variables_and_defaults_are_expanded_on_their_line() {
        // SAFETY: no other test reads or writes these variables.
        unsafe { std::env::set_var("STREAMSQL_TEST_BROKERS", "kafka:9092") };
        let text = "a: ${STREAMSQL_TEST_BROKERS}\nb: ${STREAMSQL_TEST_UNSET:-x:1} ${ not closed\n";
        assert_eq!(
            expand_env("p.yaml", text).unwrap(),
            "a: kafka:9092\nb: x:1 ${ not closed\n"
        );
        let error = expand_env("p.yaml", "a: 1\nb: ${STREAMSQL_TEST_UNSET}\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("p.yaml:2:4: environment variable `STREAMSQL_TEST_UNSET` is not set"),
            "{error}"
        );
        assert!(error.contains("${STREAMSQL_TEST_UNSET:-value}"), "{error}");
    }
}
