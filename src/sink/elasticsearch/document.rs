//! Rows as Elasticsearch documents: the index each goes to, its `_id` and its
//! JSON source.

use std::sync::Arc;

use chrono::DateTime;
use chrono::format::{Item, StrftimeItems};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::ElasticsearchSinkConfig;
use crate::error::Result;

/// One row, ready for a bulk request.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub index: String,
    pub id: String,
    /// The row as a JSON object.
    pub source: String,
}

/// A problem with the sink's settings against the query's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The YAML key at fault (`index` or `id_columns`).
    pub key: &'static str,
    pub message: String,
    pub fix: String,
}

/// `name` or `name-{column:format}`: literal text around at most one date
/// taken from a timestamp column and formatted with a strftime pattern.
#[derive(Debug, Clone)]
pub struct IndexName {
    prefix: String,
    /// The column and its date format.
    date: Option<(usize, String)>,
    suffix: String,
}

/// Characters Elasticsearch refuses in index names.
const FORBIDDEN_IN_INDEX: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

impl IndexName {
    pub fn parse(pattern: &str, schema: &Schema) -> Result<Self, SettingProblem> {
        let problem = |message: String, fix: &str| SettingProblem {
            key: "index",
            message,
            fix: fix.to_string(),
        };
        let (prefix, date, suffix) = match pattern.split_once('{') {
            None => (pattern, None, ""),
            Some((prefix, rest)) => {
                let (inner, suffix) = rest.split_once('}').ok_or_else(|| {
                    problem(
                        format!("index `{pattern}` opens `{{` without closing it"),
                        "write the date part as `{window_start:%Y.%m.%d}`",
                    )
                })?;
                let (column, format) = inner.split_once(':').unwrap_or((inner, "%Y.%m.%d"));
                let index = schema.index_of(column).map_err(|_| {
                    problem(
                        format!("index `{pattern}` names column `{column}`, which the query does not output"),
                        "name a timestamp column of the query, e.g. `{window_start:%Y.%m.%d}`",
                    )
                })?;
                if !matches!(schema.field(index).data_type(), DataType::Timestamp(_, _)) {
                    return Err(problem(
                        format!("index `{pattern}`: column `{column}` is not a timestamp"),
                        "name a timestamp column of the query, e.g. `{window_start:%Y.%m.%d}`",
                    ));
                }
                if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
                    return Err(problem(
                        format!("index `{pattern}`: `{format}` is not a date format"),
                        "use strftime fields such as %Y, %m, %d: `{window_start:%Y.%m.%d}`",
                    ));
                }
                (prefix, Some((index, format.to_string())), suffix)
            }
        };
        let literal = format!("{prefix}{suffix}");
        if prefix.is_empty()
            || literal.contains(['{', '}'])
            || literal.contains(FORBIDDEN_IN_INDEX)
            || literal.chars().any(|c| c.is_uppercase())
            || prefix.starts_with(['-', '_', '+', '.'])
        {
            return Err(problem(
                format!("`{pattern}` is not a valid index name"),
                "index names are lowercase, start with a letter or digit, have at most one `{column:format}` part and no spaces or \\ / * ? \" < > | , # :",
            ));
        }
        Ok(Self {
            prefix: prefix.to_string(),
            date,
            suffix: suffix.to_string(),
        })
    }

    /// The `index_patterns` entry an index template needs to cover every
    /// index this name produces.
    pub fn template_pattern(&self) -> String {
        match self.date {
            Some(_) => format!("{}*{}", self.prefix, self.suffix),
            None => self.prefix.clone(),
        }
    }

    /// The index of every row of `batch`.
    fn of_rows(&self, batch: &RecordBatch) -> Result<Vec<String>> {
        let Some((column, format)) = &self.date else {
            return Ok(vec![self.prefix.clone(); batch.num_rows()]);
        };
        let millis = cast(
            batch.column(*column),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let millis = millis.as_primitive::<TimestampMillisecondType>();
        let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
        Ok((0..batch.num_rows())
            .map(|row| {
                let date = DateTime::from_timestamp_millis(millis.value(row))
                    .unwrap_or_default()
                    .format_with_items(items.iter());
                format!("{}{date}{}", self.prefix, self.suffix)
            })
            .collect())
    }
}

/// Turns emitted rows into documents.
#[derive(Debug)]
pub struct DocumentEncoder {
    index: IndexName,
    id_columns: Vec<usize>,
    options: EncoderOptions,
}

impl DocumentEncoder {
    /// Checks `config` against the query's output `schema`, reporting every
    /// problem.
    pub fn new(
        config: &ElasticsearchSinkConfig,
        schema: &Schema,
    ) -> Result<Self, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        let index = IndexName::parse(&config.index, schema).map_err(|p| problems.push(p));
        if config.id_columns.is_empty() {
            problems.push(SettingProblem {
                key: "id_columns",
                message: "the Elasticsearch sink needs id_columns: without a deterministic _id a replay would duplicate documents".to_string(),
                fix: "list the columns that identify a row, e.g. `id_columns: [window_start, machine_id]`".to_string(),
            });
        }
        let mut id_columns = Vec::new();
        for name in &config.id_columns {
            match schema.index_of(name) {
                Ok(i) => id_columns.push(i),
                Err(_) => problems.push(SettingProblem {
                    key: "id_columns",
                    message: format!("id column `{name}` is not an output column of the query"),
                    fix: format!(
                        "use output columns: {}",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            }
        }
        match index {
            Ok(index) if problems.is_empty() => Ok(Self {
                index,
                id_columns,
                // ISO 8601 in UTC: what Elasticsearch's default `date` format
                // and Kibana read without configuration.
                options: EncoderOptions::default()
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.3fZ".to_string()),
            }),
            _ => Err(problems),
        }
    }

    pub fn index(&self) -> &IndexName {
        &self.index
    }

    /// Whether column `i` is part of the `_id`.
    pub fn is_id_column(&self, i: usize) -> bool {
        self.id_columns.contains(&i)
    }

    /// One document per row. NaN and infinite floats become `null` (JSON
    /// has no such numbers); nulls are left out of the source.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Document>> {
        let indices = self.index.of_rows(batch)?;
        let ids = self.ids(batch)?;
        let row: ArrayRef = Arc::new(StructArray::from(batch.clone()));
        let field = Arc::new(Field::new("row", row.data_type().clone(), false));
        let mut encoder = make_encoder(&field, row.as_ref(), &self.options)?;
        let mut documents = Vec::with_capacity(batch.num_rows());
        for (i, (index, id)) in indices.into_iter().zip(ids).enumerate() {
            let mut source = Vec::new();
            encoder.encode(i, &mut source);
            documents.push(Document {
                index,
                id,
                // The JSON encoder writes UTF-8 only.
                source: String::from_utf8(source).unwrap_or_default(),
            });
        }
        Ok(documents)
    }

    /// `_id`s: the id columns' values joined by `|` (a `|` or `\` inside a
    /// value is escaped with `\`, so distinct keys never share an `_id`).
    fn ids(&self, batch: &RecordBatch) -> Result<Vec<String>> {
        let options = FormatOptions::default().with_null("");
        let formatters = self
            .id_columns
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0..batch.num_rows())
            .map(|row| {
                let parts: Vec<String> = formatters
                    .iter()
                    .map(|f| {
                        f.value(row)
                            .to_string()
                            .replace('\\', "\\\\")
                            .replace('|', "\\|")
                    })
                    .collect();
                parts.join("|")
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("machine", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("rate", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![
                    1_304_208_120_000,
                    86_400_000,
                ])),
                Arc::new(StringArray::from(vec![Some("a|b"), None])),
                Arc::new(Int64Array::from(vec![3, 6_251_812_952])),
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(0.25)])),
            ],
        )
        .unwrap()
    }

    fn config(index: &str, ids: &[&str]) -> ElasticsearchSinkConfig {
        serde_yaml::from_str(&format!(
            "{{ url: 'http://127.0.0.1:9200', index: '{index}', id_columns: [{}] }}",
            ids.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn rows_become_documents_with_dated_index_and_escaped_id() {
        let batch = batch();
        let encoder = DocumentEncoder::new(
            &config("m-{window_start:%Y.%m}", &["window_start", "machine"]),
            &batch.schema(),
        )
        .unwrap();
        let docs = encoder.encode(&batch).unwrap();
        assert_eq!(docs[0].index, "m-2011.05");
        assert_eq!(docs[1].index, "m-1970.01");
        assert_eq!(docs[0].id, "2011-05-01T00:02:00|a\\|b");
        assert_eq!(docs[1].id, "1970-01-02T00:00:00|");
        assert_eq!(
            docs[0].source,
            r#"{"window_start":"2011-05-01T00:02:00.000Z","machine":"a|b","n":3,"rate":null}"#
        );
        assert_eq!(
            docs[1].source,
            r#"{"window_start":"1970-01-02T00:00:00.000Z","n":6251812952,"rate":0.25}"#
        );
        assert_eq!(encoder.index().template_pattern(), "m-*");
    }

    #[test]
    fn every_setting_problem_is_reported() {
        let schema = batch().schema();
        let problems =
            DocumentEncoder::new(&config("M-{n:%Y}", &["window_start", "machin"]), &schema)
                .unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("`n` is not a timestamp"),
            "{messages:?}"
        );
        assert!(messages[1].contains("`machin`"), "{messages:?}");
        for bad in [
            "Upper",
            "a b",
            "x-{window_start",
            "{window_start}",
            "x-{nope:%Y}",
            "x-{window_start:%Q}",
        ] {
            assert!(IndexName::parse(bad, &schema).is_err(), "{bad} accepted");
        }
        assert!(DocumentEncoder::new(&config("fixed", &[]), &schema).is_err());
        assert_eq!(
            IndexName::parse("fixed", &schema)
                .unwrap()
                .template_pattern(),
            "fixed"
        );
    }
}
