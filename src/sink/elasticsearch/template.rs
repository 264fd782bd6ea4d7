//! The index template installed for each Elasticsearch sink at start, with
//! explicit mappings: dynamic mapping would turn ids into analysed `text`
//! and leave Kibana without a time field.

use datafusion::arrow::datatypes::{DataType, Schema};
use serde_json::{Value, json};

use super::document::DocumentEncoder;

/// Templates outrank the built-in ones (priority 100-200 in Elasticsearch)
/// whose patterns, such as `metrics-*-*`, could match our indices.
const PRIORITY: u32 = 500;

/// The Elasticsearch type of a column: timestamps and dates are `date`, id
/// columns `keyword` (exact match, terms aggregations), integers `long`
/// (counts), floats `double` (rates), strings `keyword`. Other types are left
/// to dynamic mapping.
fn field_type(data_type: &DataType, is_id: bool) -> Option<&'static str> {
    Some(match data_type {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => "date",
        _ if is_id => "keyword",
        DataType::Boolean => "boolean",
        t if t.is_integer() => "long",
        t if t.is_floating()
            || matches!(t, DataType::Decimal128(_, _) | DataType::Decimal256(_, _)) =>
        {
            "double"
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "keyword",
        _ => return None,
    })
}

/// The body of `PUT _index_template/<name>` for a query's output.
pub fn index_template(
    schema: &Schema,
    encoder: &DocumentEncoder,
    pipeline: &str,
    query: &str,
) -> Value {
    let properties: serde_json::Map<String, Value> = schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(i, field)| {
            field_type(field.data_type(), encoder.is_id_column(i))
                .map(|t| (field.name().clone(), json!({ "type": t })))
        })
        .collect();
    json!({
        "index_patterns": [encoder.index().template_pattern()],
        "priority": PRIORITY,
        "template": { "mappings": { "properties": properties } },
        "_meta": { "managed_by": "streamsql", "pipeline": pipeline, "query": query },
    })
}

/// The template's name: one per pipeline and query.
pub fn template_name(pipeline: &str, query: &str) -> String {
    format!("streamsql-{pipeline}-{query}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, TimeUnit};

    use super::*;

    #[test]
    fn w1_columns_get_the_types_kibana_needs() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("machine_id", DataType::Int64, true),
            Field::new("failures", DataType::Int64, false),
            Field::new("fail_rate", DataType::Float64, true),
            Field::new("user", DataType::Utf8, true),
        ]));
        let config = serde_yaml::from_str(
            "{ url: 'http://x:9200', index: 'w1-{window_start:%Y.%m.%d}', id_columns: [window_start, machine_id] }",
        )
        .unwrap();
        let encoder = DocumentEncoder::new(&config, &schema).unwrap();
        let template = index_template(&schema, &encoder, "p", "q");
        assert_eq!(template["index_patterns"], json!(["w1-*"]));
        assert_eq!(
            template["template"]["mappings"]["properties"],
            json!({
                "window_start": { "type": "date" },
                "machine_id": { "type": "keyword" },
                "failures": { "type": "long" },
                "fail_rate": { "type": "double" },
                "user": { "type": "keyword" },
            })
        );
    }
}
