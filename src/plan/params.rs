//! `$name` placeholders in SQL, bound to the pipeline's `params:`.

use std::collections::BTreeMap;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;

use super::diagnostic_at;
use crate::error::{Diagnostic, Result, StreamSqlError};

/// Replaces the `$name` placeholders of the SQL with the pipeline's
/// `params`, converted to the type the SQL expects where it implies one.
pub fn bind_params(
    file: &str,
    sql: &str,
    plan: LogicalPlan,
    params: &BTreeMap<String, serde_yaml::Value>,
) -> Result<LogicalPlan> {
    let mut wanted: Vec<_> = plan.get_parameter_types()?.into_iter().collect();
    if wanted.is_empty() {
        return Ok(plan);
    }
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for (id, data_type) in &wanted {
        let name = id.trim_start_matches('$');
        let at = diagnostic_at(file, sql, id, String::new());
        let scalar = match params.get(name) {
            Some(serde_yaml::Value::Bool(b)) => ScalarValue::Boolean(Some(*b)),
            Some(serde_yaml::Value::Number(n)) if n.is_i64() => ScalarValue::Int64(n.as_i64()),
            Some(serde_yaml::Value::Number(n)) => ScalarValue::Float64(n.as_f64()),
            Some(serde_yaml::Value::String(s)) => ScalarValue::Utf8(Some(s.clone())),
            Some(other) => {
                problems.push(Diagnostic {
                    message: format!(
                        "parameter `{id}` is {other:?}, not a number, string or boolean"
                    ),
                    fix: format!(
                        "give `params: {{ {name}: ... }}` a single value in pipelines.yaml"
                    ),
                    ..at
                });
                continue;
            }
            None => {
                let known: Vec<&str> = params.keys().map(String::as_str).collect();
                problems.push(Diagnostic {
                    message: format!("parameter `{id}` has no value"),
                    fix: format!(
                        "declare it under the pipeline's `params:` in pipelines.yaml (declared: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                    ..at
                });
                continue;
            }
        };
        let scalar = match data_type {
            // Only a lossless conversion: 2.5 must not become 2.
            Some(t) => match scalar.cast_to(t) {
                Ok(cast) if cast.cast_to(&scalar.data_type()).ok().as_ref() == Some(&scalar) => {
                    cast
                }
                _ => {
                    problems.push(Diagnostic {
                        message: format!("parameter `{id}` = {scalar} does not fit the {t} the SQL compares it with"),
                        fix: format!("give `{name}` a value of type {t}"),
                        ..at
                    });
                    continue;
                }
            },
            None => scalar,
        };
        values.push((name.to_string(), scalar));
    }
    if !problems.is_empty() {
        return Err(StreamSqlError::Invalid(crate::error::Diagnostics(problems)));
    }
    Ok(plan.with_param_values(values)?)
}
