//! Reading `pipelines.yaml` and the SQL files it names, and every check that
//! can be made before anything starts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{PipelineConfig, PipelinesFile};
use crate::error::{Diagnostic, Diagnostics, Result, StreamSqlError};
use crate::source::{ColumnType, Format, MAX_RECORD_BYTES, SourceConfig};
use crate::table::{TableConfig, TableFormat, TableInput};

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

    /// Where pipeline `pipeline` checkpoints: `checkpoint.location` (a URL,
    /// or a directory relative to pipelines.yaml), or `<output_dir>/_checkpoints`.
    pub fn checkpoint_location(&self, pipeline: &PipelineConfig, output_dir: &Path) -> String {
        match &pipeline.checkpoint.location {
            Some(location) if location.contains("://") => location.clone(),
            Some(dir) => self.resolve(Path::new(dir)).display().to_string(),
            None => output_dir.join("_checkpoints").display().to_string(),
        }
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
    // `${VAR}` is substituted into values, never into the YAML text, so a
    // variable's value cannot add keys or change the file's structure; the
    // text with values pasted in serves only to point at lines.
    let located = expand_env(&file_name, &text)?;
    let (parsed, variables) = with_placeholders(&text);
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&parsed).map_err(|e| yaml_diagnostic(&file_name, &parsed, &e))?;
    expand_values(&mut value, &variables);
    // Read back from text, as YAML types it: `topic: 2024` is a string to a
    // string field (a `Value` would insist on a number).
    let expanded = serde_yaml::to_string(&value)
        .map_err(|e| crate::internal_error!("pipelines.yaml as YAML again: {e}"))?;
    let file: PipelinesFile = serde_yaml::from_str(&expanded).map_err(|e| {
        // Positions in the text read back mean nothing to the user; the same
        // error from the text with the variables pasted in has them (when a
        // variable's value does not make it another error there).
        let message = without_position(&e.to_string());
        match serde_yaml::from_str::<PipelinesFile>(&located) {
            Err(at) if without_position(&at.to_string()) == message => {
                yaml_diagnostic(&file_name, &located, &at)
            }
            _ => Diagnostic::new(&file_name, None, message).with_fix("see docs/pipelines-yaml.md"),
        }
    })?;
    let text = located;
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
        for table in &pipeline.tables {
            if let TableInput::File(path) = &table.input
                && !base_dir.join(path).is_file()
            {
                problems.push(
                    Diagnostic::new(
                        &file_name,
                        at.line_of(&path.display().to_string()),
                        format!(
                            "table `{}`: {} is not a file",
                            table.name,
                            base_dir.join(path).display()
                        ),
                    )
                    .with_fix("the `file:` path is relative to pipelines.yaml; create the file or fix the path"),
                );
            }
        }
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
    let loaded = LoadedConfig {
        path: path.to_path_buf(),
        base_dir,
        file,
        sql,
        text,
    };
    check_locations(&loaded, &mut problems);
    if !problems.is_empty() {
        return Err(StreamSqlError::Invalid(Diagnostics(problems)));
    }
    Ok(loaded)
}

/// Two pipelines writing one output directory or checkpoint location would
/// overwrite each other's parts and retire each other's checkpoints.
fn check_locations(loaded: &LoadedConfig, problems: &mut Vec<Diagnostic>) {
    let mut owners: BTreeMap<String, &str> = BTreeMap::new();
    for (name, pipeline) in &loaded.file.pipelines {
        let output_dir = loaded.output_dir(name, pipeline);
        // `out`, `./out` and `out/` are one place.
        let normal = |location: String| match location.contains("://") {
            true => location.trim_end_matches('/').to_string(),
            false => Path::new(&location)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect::<PathBuf>()
                .display()
                .to_string(),
        };
        let locations = [
            ("output_dir", normal(output_dir.display().to_string())),
            (
                "checkpoint.location",
                normal(loaded.checkpoint_location(pipeline, &output_dir)),
            ),
        ];
        for (what, location) in locations {
            if let Some(other) = owners.insert(location.clone(), name) {
                problems.push(
                    Diagnostic::new(
                        loaded.path.display().to_string(),
                        loaded.line_of(name, "", what.split('.').next_back().unwrap_or(what)),
                        format!(
                            "pipelines `{other}` and `{name}` share the location {location} (`{what}`)"
                        ),
                    )
                    .with_fix(format!("give pipeline `{name}` an `{what}` of its own")),
                );
            }
        }
    }
}

/// A serde_yaml message without its trailing ` at line N column M`.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A serde_yaml error as a diagnostic at its line and column of `text`.
fn yaml_diagnostic(file_name: &str, text: &str, e: &serde_yaml::Error) -> Diagnostic {
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
        && let Some((n, at)) = text
            .lines()
            .enumerate()
            .skip(line.unwrap_or(1).saturating_sub(1))
            .find_map(|(n, l)| Some((n, value_at(l, value)?)))
    {
        line = Some(n + 1);
        column = Some(at + 1);
    }
    Diagnostic::new(file_name, line, e.to_string())
        .at_column(column)
        .with_fix("see docs/pipelines-yaml.md")
}

/// Where `value` stands as a whole value of a key in `line` (`key: value`
/// at the end of the line, or before `,` or `}` in a flow mapping).
fn value_at(line: &str, value: &str) -> Option<usize> {
    let needle = format!(": {value}");
    line.match_indices(&needle).find_map(|(i, _)| {
        let after = line[i + needle.len()..].trim_start();
        (after.is_empty() || after.starts_with([',', '}', '#'])).then_some(i + 2)
    })
}

/// The next `${NAME}` or `${NAME:-default}` in `text` (on one line): its
/// byte range, the name and the default.
fn next_variable(text: &str) -> Option<(std::ops::Range<usize>, &str, Option<&str>)> {
    let mut from = 0;
    loop {
        let start = from + text[from..].find("${")?;
        match text[start..].find(['}', '\n']) {
            Some(len) if text[start + len..].starts_with('}') => {
                let inner = &text[start + 2..start + len];
                let (name, default) = match inner.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (inner, None),
                };
                return Some((start..start + len + 1, name, default));
            }
            Some(_) => from = start + 2,
            None => return None,
        }
    }
}

/// `text` with each variable replaced by a placeholder that YAML reads as
/// a plain word wherever it stands (also inside `{ ... }`), and the
/// variables, in order: they are substituted after parsing.
fn with_placeholders(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut variables = Vec::new();
    let mut rest = text;
    while let Some((range, _, _)) = next_variable(rest) {
        out.push_str(&rest[..range.start]);
        out.push_str(&placeholder(variables.len()));
        variables.push(rest[range.clone()].to_string());
        rest = &rest[range.end..];
    }
    out.push_str(rest);
    (out, variables)
}

fn placeholder(variable: usize) -> String {
    format!("__streamsql_variable_{variable}__")
}

/// `text` with every variable replaced by its value (or default); `Err`
/// names the first one that is unset and has no default.
fn substitute(text: &str) -> std::result::Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((range, name, default)) = next_variable(rest) {
        out.push_str(&rest[..range.start]);
        match (std::env::var(name), default) {
            (Ok(value), _) => out.push_str(&value),
            (Err(_), Some(default)) => out.push_str(default),
            (Err(_), None) => return Err((text.len() - rest.len() + range.start, name.into())),
        }
        rest = &rest[range.end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Substitutes the `variables` (`${NAME}` or `${NAME:-default}`, see
/// [`with_placeholders`]) in every string value, as docker compose does, so
/// one file serves a laptop and a container network (`brokers:
/// ${KAFKA_BROKERS:-127.0.0.1:9092}`); secrets stay out of the file this way
/// too. A value that is one variable alone takes the type its text has
/// (`batch_rows: ${ROWS}` is a number), but only a scalar: whatever a
/// variable holds, it never becomes keys or lists.
fn expand_values(value: &mut serde_yaml::Value, variables: &[String]) {
    use serde_yaml::Value;
    match value {
        Value::String(text) if text.contains("__streamsql_variable_") => {
            let mut expanded = text.clone();
            let mut alone = false;
            for (i, variable) in variables.iter().enumerate() {
                let name = placeholder(i);
                if expanded.contains(&name) {
                    alone = *text == name;
                    // Unset variables were reported by `expand_env` already.
                    let value = substitute(variable).unwrap_or_default();
                    expanded = expanded.replace(&name, &value);
                }
            }
            // Typed only when the type keeps the text: `8192` and `true`,
            // but `007` or `1e5` (a password, say) stay strings.
            *value = match serde_yaml::from_str::<Value>(&expanded) {
                Ok(Value::Number(n)) if alone && n.to_string() == expanded => Value::Number(n),
                Ok(Value::Bool(b)) if alone && b.to_string() == expanded => Value::Bool(b),
                _ => Value::String(expanded),
            };
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| expand_values(v, variables)),
        Value::Mapping(entries) => entries
            .values_mut()
            .for_each(|v| expand_values(v, variables)),
        Value::Tagged(tagged) => expand_values(&mut tagged.value, variables),
        _ => {}
    }
}

/// The file's text with every variable pasted in (to point at lines), or
/// every unset variable without a default, each at its line and column.
fn expand_env(file: &str, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line.to_string();
        loop {
            match substitute(&rest) {
                Ok(expanded) => {
                    out.push_str(&expanded);
                    break;
                }
                Err((at, name)) => {
                    let column = line.len() - rest.len() + at + 1;
                    problems.push(
                        Diagnostic::new(
                            file,
                            Some(n + 1),
                            format!("environment variable `{name}` is not set"),
                        )
                        .at_column(Some(column))
                        .with_fix(format!(
                            "export {name}=..., or give a default: ${{{name}:-value}}"
                        )),
                    );
                    // Report the others on this line too: skip past this one.
                    let end = rest[at..].find('}').map_or(rest.len(), |e| at + e + 1);
                    out.push_str(&rest[..end]);
                    rest = rest[end..].to_string();
                }
            }
        }
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
    if let Some(n) = pipeline.parallelism
        && !(1..=super::MAX_PARALLELISM).contains(&n)
    {
        report(
            "parallelism:",
            format!(
                "parallelism must be between 1 and {}, not {n}",
                super::MAX_PARALLELISM
            ),
            "leave it out to use the machine's cores, or set e.g. `parallelism: 4`",
        );
    }
    if pipeline.checkpoint.retain == 0 {
        report(
            "retain:",
            "checkpoint.retain must be at least 1".into(),
            "keep at least the newest checkpoint, e.g. `retain: 3`",
        );
    }
    if !is_identifier(name) {
        report(
            &format!("{name}:"),
            format!("`{name}` is not a valid pipeline name"),
            IDENTIFIER_FIX,
        );
    }
    let names = pipeline.sources.iter().map(|s| (&s.name, "source"));
    for (table, kind) in names.chain(pipeline.queries.iter().map(|q| (&q.name, "query"))) {
        if !is_identifier(table) {
            report(
                &format!("name: {table}"),
                format!("`{table}` is not a valid {kind} name"),
                IDENTIFIER_FIX,
            );
        }
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
        if !(1..=MAX_BATCH_ROWS).contains(&source.batch_rows()) {
            report(
                "batch_rows:",
                format!(
                    "batch_rows must be between 1 and {MAX_BATCH_ROWS}, not {}",
                    source.batch_rows()
                ),
                "use for example `batch_rows: 8192`",
            );
        }
        if !(1..=MAX_RECORD_BYTES).contains(&source.max_record_bytes) {
            report(
                "max_record_bytes:",
                format!(
                    "max_record_bytes must be between 1 and {MAX_RECORD_BYTES}, not {}",
                    source.max_record_bytes
                ),
                "the default, 1048576 (1 MiB), suits most sources",
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
    for table in &pipeline.tables {
        check_table(table, &mut tables, &mut report);
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

/// A lookup table: a unique identifier, distinct columns, a key among
/// them, and what its connector can read.
fn check_table(
    table: &TableConfig,
    names: &mut HashSet<String>,
    report: &mut impl FnMut(&str, String, &str),
) {
    let name = &table.name;
    let at = format!("name: {name}");
    if !is_identifier(name) {
        report(
            &at,
            format!("`{name}` is not a valid table name"),
            IDENTIFIER_FIX,
        );
    }
    if !names.insert(name.clone()) {
        report(
            &at,
            format!("table name `{name}` is declared twice"),
            "give every source, table and query a unique name",
        );
    }
    if table.columns.is_empty() {
        report(
            &at,
            format!("table `{name}` declares no columns"),
            "list its columns: `columns: [ { name: id, type: bigint }, ... ]`",
        );
    }
    let mut columns = HashSet::new();
    for column in &table.columns {
        if !columns.insert(column.name.as_str()) {
            report(
                &format!("name: {}", column.name),
                format!("table `{name}`: column `{}` is declared twice", column.name),
                "rename one of them",
            );
        }
    }
    for key in &table.key {
        if !columns.contains(key.as_str()) {
            report(
                "key:",
                format!("table `{name}`: key column `{key}` is not a declared column"),
                &format!(
                    "use some of: {}",
                    (table.columns.iter())
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    if let TableInput::Kafka(_) = &table.input {
        if table.format == TableFormat::Parquet {
            report(
                &at,
                format!("table `{name}`: a Kafka table's values are CSV or JSON, not Parquet"),
                "use `format: json` or `format: csv`",
            );
        }
        if !table.key.is_empty() {
            report(
                "key:",
                format!("table `{name}`: a Kafka table is keyed by the message key"),
                "remove `key:`; the latest value per message key is the table, as \
                 compaction keeps it",
            );
        }
    }
}

/// Rows a micro-batch may hold: beyond this one batch's buffers alone would
/// take gigabytes, and nothing gets faster.
const MAX_BATCH_ROWS: usize = 1 << 20;

const IDENTIFIER_FIX: &str = "names are SQL table names and folder names: \
     letters, digits and `_`, not starting with a digit (e.g. `task_events`)";

/// Pipeline, source and query names become SQL table names and folders under
/// the output directory, so `../x` or `a/b` must never get that far.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    use super::{expand_env, expand_values, with_placeholders};

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

    #[test]
    fn a_variable_becomes_one_value_never_structure() {
        // SAFETY: no other test reads or writes these variables.
        unsafe {
            std::env::set_var("STREAMSQL_TEST_ROWS", "97");
            std::env::set_var("STREAMSQL_TEST_EVIL", "x\n  other: y\n- z");
        }
        let (text, variables) = with_placeholders(
            "rows: ${STREAMSQL_TEST_ROWS}\nname: ${STREAMSQL_TEST_EVIL}\nin: { url: http://${STREAMSQL_TEST_ROWS}:1 }\n",
        );
        let mut value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        expand_values(&mut value, &variables);
        // SAFETY: as above.
        unsafe { std::env::set_var("STREAMSQL_TEST_SECRET", "1e5") };
        let (text, variables) = with_placeholders("secret: ${STREAMSQL_TEST_SECRET}\n");
        let mut secret: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        expand_values(&mut secret, &variables);
        assert_eq!(secret["secret"], serde_yaml::Value::from("1e5"));
        assert_eq!(value["rows"], serde_yaml::Value::from(97));
        assert_eq!(value["name"], serde_yaml::Value::from("x\n  other: y\n- z"));
        assert_eq!(value["in"]["url"], serde_yaml::Value::from("http://97:1"));
        assert_eq!(value.as_mapping().unwrap().len(), 3);
    }
}
