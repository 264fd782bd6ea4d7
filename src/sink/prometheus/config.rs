//! The Prometheus sink's settings:
//! `prometheus: { values: [...], labels: [...], push: { url, job } }`.

use serde::Deserialize;

/// Each emitted row of a windowed query sets one gauge per `values` column,
/// named `<query>_<column>` and labelled by the `labels` columns, served on
/// the runner's `/metrics` (and pushed to a Pushgateway when `push` is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSinkConfig {
    /// Numeric output columns, one gauge each.
    pub values: Vec<String>,
    /// Output columns whose values label the series: the query's keys.
    #[serde(default)]
    pub labels: Vec<String>,
    /// A series not set again for this many window lengths (of event time,
    /// behind the newest window seen) is dropped: keys that went away do not
    /// stay on the dashboards, nor in memory.
    #[serde(default = "default_expire_after_windows")]
    pub expire_after_windows: u32,
    /// At most this many series per query; rows of further keys are
    /// dropped and counted (`streamsql_prometheus_series_dropped_total`).
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Also push every series to a Pushgateway at each commit.
    pub push: Option<PushConfig>,
}

/// `push: { url: http://pushgateway:9091, job: resource_usage }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    pub url: String,
    /// The Pushgateway's `job` grouping key; default `<pipeline>_<query>`.
    pub job: Option<String>,
}

impl PrometheusSinkConfig {
    /// One line for `explain`.
    pub fn describe(&self, query: &str) -> String {
        let push = match &self.push {
            Some(push) => format!(", pushed to {}", push.url),
            None => String::new(),
        };
        format!(
            "prometheus gauges {query}_{{{}}} by [{}] (at most {} series, expiring after {} windows{push})",
            self.values.join(","),
            self.labels.join(", "),
            self.max_series,
            self.expire_after_windows
        )
    }
}

fn default_expire_after_windows() -> u32 {
    10
}

fn default_max_series() -> usize {
    10_000
}
