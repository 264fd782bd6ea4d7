//! The Prometheus sink: a windowed query's results as gauges, for Grafana.
//!
//! - Each row sets, per `values` column, the gauge `<query>_<column>` of its
//!   `labels` values (plus `pipeline`); a key's newest window wins. The
//!   gauges are served on the runner's `/metrics` next to its own metrics,
//!   each sample stamped with its window's end when Prometheus can take it
//!   (within the last hour: older samples fall outside Prometheus' head
//!   block and are refused, so a replay of old data is stamped at scrape
//!   time instead).
//! - Bounded: a series not set for `expire_after_windows` window lengths of
//!   event time (behind the newest window seen) is dropped, and there are at
//!   most `max_series`; rows of further keys are counted and dropped.
//! - With `push`, every commit replaces the query's group in a Pushgateway
//!   (HTTP PUT, without timestamps, which the Pushgateway refuses), so
//!   expired series leave it too. Gauges are a snapshot, not a log: a push
//!   that fails is retried at the next commit and nothing is lost.

mod config;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

pub use config::{PrometheusSinkConfig, PushConfig};

use super::{DeadLetterSink, SettingsAt, Sink};
use crate::config::is_identifier;
use crate::error::{Diagnostic, Result};
use crate::metrics::Metrics;

/// How old a sample's timestamp may be for Prometheus to accept it.
const TIMESTAMP_HORIZON_MS: i64 = 3_600_000;

/// One series: its values (one per `values` column) and the window they
/// come from.
struct Series {
    values: Vec<f64>,
    window_end: i64,
    window_length: i64,
}

/// A query's gauges, shared with the metrics endpoint, which encodes them
/// when scraped.
pub struct QueryGauges {
    pipeline: String,
    query: String,
    values: Vec<String>,
    labels: Vec<String>,
    series: BTreeMap<Vec<String>, Series>,
    /// Rows of keys beyond `max_series`.
    pub dropped: u64,
}

impl QueryGauges {
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The series as exposition text: OpenMetrics for `/metrics` (with
    /// timestamps in seconds where Prometheus takes them), or the classic
    /// text format without timestamps for the Pushgateway.
    pub fn encode(&self, open_metrics: bool) -> String {
        let now = chrono::Utc::now().timestamp_millis();
        let mut text = String::new();
        for (v, column) in self.values.iter().enumerate() {
            let metric = format!("{}_{column}", self.query);
            let _ = writeln!(text, "# TYPE {metric} gauge");
            for (key, series) in &self.series {
                let _ = write!(text, "{metric}{{pipeline=\"{}\"", self.pipeline);
                for (name, value) in self.labels.iter().zip(key) {
                    let _ = write!(text, ",{name}=\"{}\"", escape(value));
                }
                let _ = write!(text, "}} {}", number(series.values[v]));
                if open_metrics && now - series.window_end <= TIMESTAMP_HORIZON_MS {
                    let _ = write!(text, " {:.3}", series.window_end as f64 / 1000.0);
                }
                text.push('\n');
            }
        }
        text
    }
}

pub struct PrometheusSink {
    name: String,
    settings: PrometheusSinkConfig,
    label_columns: Vec<usize>,
    value_columns: Vec<usize>,
    window_start: usize,
    window_end: usize,
    gauges: Arc<Mutex<QueryGauges>>,
    newest_window_end: i64,
    push: Option<(reqwest::Client, String)>,
    failed_pushes: u64,
}

impl PrometheusSink {
    /// `settings` were checked against `schema` by [`check`].
    pub fn start(
        settings: &PrometheusSinkConfig,
        pipeline: &str,
        query: &str,
        schema: &SchemaRef,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let index = |column: &str| {
            schema.index_of(column).map_err(|_| {
                crate::internal_error!("prometheus sink column `{column}` passed checks")
            })
        };
        let push = match &settings.push {
            None => None,
            Some(push) => {
                let job = push
                    .job
                    .clone()
                    .unwrap_or_else(|| format!("{pipeline}_{query}"));
                let url = format!("{}/metrics/job/{job}", push.url.trim_end_matches('/'));
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .map_err(|e| crate::internal_error!("HTTP client: {e}"))?;
                Some((client, url))
            }
        };
        let gauges = Arc::new(Mutex::new(QueryGauges {
            pipeline: pipeline.to_string(),
            query: query.to_string(),
            values: settings.values.clone(),
            labels: settings.labels.clone(),
            series: BTreeMap::new(),
            dropped: 0,
        }));
        metrics.add_results(Arc::clone(&gauges));
        Ok(Self {
            name: format!("{query} → prometheus"),
            label_columns: settings
                .labels
                .iter()
                .map(|c| index(c))
                .collect::<Result<_>>()?,
            value_columns: settings
                .values
                .iter()
                .map(|c| index(c))
                .collect::<Result<_>>()?,
            window_start: index("window_start")?,
            window_end: index("window_end")?,
            settings: settings.clone(),
            gauges,
            newest_window_end: i64::MIN,
            push,
            failed_pushes: 0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueryGauges> {
        self.gauges.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&mut self, batch: &RecordBatch) -> Result<()> {
        let millis = |i: usize| -> Result<Vec<Option<i64>>> {
            let as_time = cast(
                batch.column(i),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?;
            let as_int = cast(&as_time, &DataType::Int64)?;
            Ok(as_int.as_primitive::<Int64Type>().iter().collect())
        };
        let (starts, ends) = (millis(self.window_start)?, millis(self.window_end)?);
        let values = self
            .value_columns
            .iter()
            .map(|i| Ok(cast(batch.column(*i), &DataType::Float64)?))
            .collect::<Result<Vec<_>>>()?;
        let options = FormatOptions::default().with_null("");
        let labels = self
            .label_columns
            .iter()
            .map(|i| ArrayFormatter::try_new(batch.column(*i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let max_series = self.settings.max_series;
        let mut newest = self.newest_window_end;
        let mut gauges = self.lock();
        for row in 0..batch.num_rows() {
            let (Some(start), Some(end)) = (starts[row], ends[row]) else {
                continue;
            };
            let key: Vec<String> = labels.iter().map(|f| f.value(row).to_string()).collect();
            let row_values = values
                .iter()
                .map(|v| {
                    let v = v.as_primitive::<Float64Type>();
                    if v.is_null(row) {
                        f64::NAN
                    } else {
                        v.value(row)
                    }
                })
                .collect();
            let series = Series {
                values: row_values,
                window_end: end,
                window_length: (end - start).max(1),
            };
            if let Some(old) = gauges.series.get_mut(&key) {
                if old.window_end <= end {
                    *old = series;
                }
            } else if gauges.series.len() >= max_series {
                gauges.dropped += 1;
            } else {
                gauges.series.insert(key, series);
            }
            newest = newest.max(end);
        }
        let windows = i64::from(self.settings.expire_after_windows);
        gauges.series.retain(|_, s| {
            s.window_end >= newest.saturating_sub(windows.saturating_mul(s.window_length))
        });
        drop(gauges);
        self.newest_window_end = newest;
        Ok(())
    }

    async fn push(&mut self) {
        let Some((client, url)) = &self.push else {
            return;
        };
        let body = self.lock().encode(false);
        let answer = client
            .put(url.as_str())
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body)
            .send()
            .await;
        let failure = match answer {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        tracing::warn!(sink = %self.name, "push to {url}: {failure}; pushing again at the next commit");
        self.failed_pushes += 1;
    }
}

#[async_trait]
impl Sink for PrometheusSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &RecordBatch, _: &mut DeadLetterSink) -> Result<()> {
        self.set(batch)
    }

    async fn commit(&mut self, _: u64, _: &mut DeadLetterSink) -> Result<()> {
        self.push().await;
        Ok(())
    }

    fn retries(&self) -> u64 {
        self.failed_pushes
    }

    fn summary(&self) -> Option<String> {
        let gauges = self.lock();
        Some(format!(
            "{}: {} series{}",
            self.name,
            gauges.series.len(),
            match gauges.dropped {
                0 => String::new(),
                n => format!(", {n} rows of keys beyond max_series dropped"),
            }
        ))
    }
}

/// A label value as the exposition formats quote it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as the exposition formats write it.
fn number(value: f64) -> String {
    match value {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

/// Checks the sink's settings against the query's output columns, each
/// problem at its line of pipelines.yaml.
pub(crate) fn check(
    settings: &PrometheusSinkConfig,
    schema: &SchemaRef,
    at: &SettingsAt<'_>,
) -> Vec<Diagnostic> {
    let query = at.query;
    let mut problems = Vec::new();
    let mut report = |key: &str, message: String, fix: String| {
        problems.push(at.problem(key, message, fix));
    };
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for bound in ["window_start", "window_end"] {
        if !columns.contains(&bound) {
            report(
                "prometheus",
                format!("the query has no `{bound}` column: gauges are set per window"),
                "use it on a windowed query that selects window_start and window_end".into(),
            );
        }
    }
    if settings.values.is_empty() {
        report(
            "values",
            "no value columns".into(),
            format!(
                "list the numeric columns to expose, of: {}",
                columns.join(", ")
            ),
        );
    }
    for column in &settings.values {
        match schema.field_with_name(column) {
            Err(_) => report(
                "values",
                format!("`{column}` is not an output column"),
                format!("use one of: {}", columns.join(", ")),
            ),
            Ok(field) if !field.data_type().is_numeric() => report(
                "values",
                format!("`{column}` is {}, not a number", field.data_type()),
                "expose numeric columns; put text columns in `labels`".into(),
            ),
            Ok(_) if !is_identifier(&format!("{query}_{column}")) => report(
                "values",
                format!("`{query}_{column}` is not a valid Prometheus metric name"),
                "alias the column in the SQL (`AS total_cpu`): letters, digits and `_`".into(),
            ),
            Ok(_) => {}
        }
    }
    for column in &settings.labels {
        if !columns.contains(&column.as_str()) {
            report(
                "labels",
                format!("`{column}` is not an output column"),
                format!("use one of: {}", columns.join(", ")),
            );
        } else if !is_identifier(column) || column.starts_with("__") || column == "pipeline" {
            report(
                "labels",
                format!("`{column}` cannot be a Prometheus label name"),
                "alias the column in the SQL: letters, digits and `_`, not `pipeline` or `__...`"
                    .into(),
            );
        }
    }
    if settings.max_series == 0 || settings.expire_after_windows == 0 {
        report(
            "prometheus",
            "max_series and expire_after_windows must be at least 1".into(),
            "leave them out for the defaults (10000 series, 10 windows)".into(),
        );
    }
    if let Some(push) = &settings.push
        && url::Url::parse(&push.url).is_err()
    {
        report(
            "url",
            format!("`{}` is not a URL", push.url),
            "write the Pushgateway's base URL, e.g. `http://127.0.0.1:9091`".into(),
        );
    }
    problems
}
