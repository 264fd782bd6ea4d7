//! The Elasticsearch sink's settings: `elasticsearch: { url, index, id_columns, ... }`.

use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;

/// Each emitted row becomes a document whose `_id` is made of `id_columns`,
/// so a replayed or updated window overwrites its own document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Base URL of the cluster, e.g. `http://127.0.0.1:9200`.
    pub url: String,
    /// The index, or a pattern naming a timestamp column and a date format,
    /// e.g. `task-failures-{window_start:%Y.%m.%d}` (one index per day).
    pub index: String,
    /// The columns whose values make the document `_id`: for a window
    /// query, `window_start` and the GROUP BY keys.
    pub id_columns: Vec<String>,
    /// Credentials, read from environment variables (never from this file).
    pub auth: Option<ElasticsearchAuth>,
    /// A bulk request is sent when this many rows are buffered...
    #[serde(default = "default_bulk_rows")]
    pub bulk_rows: usize,
    /// ... or when the buffered request reaches this many bytes...
    #[serde(default = "default_bulk_bytes")]
    pub bulk_bytes: usize,
    /// ... or when the oldest buffered row is this old (and at every commit).
    #[serde(default = "default_flush_interval", with = "duration::positive")]
    pub flush_interval: Duration,
    /// Retries of a bulk request answered 429/502/503/504 or not answered,
    /// and of items answered 429 or 5xx, before the pipeline stops with an error.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry's delay; each further retry doubles it (at most 30 s).
    #[serde(default = "default_retry_backoff", with = "duration::positive")]
    pub retry_backoff: Duration,
    /// How long one request may take.
    #[serde(default = "default_request_timeout", with = "duration::positive")]
    pub request_timeout: Duration,
}

impl ElasticsearchSinkConfig {
    /// `url` without the user and password it may carry (`https://u:p@host`,
    /// as hosted clusters hand out), and those credentials apart: the URL
    /// goes into messages, logs, metrics labels and dead letters, the
    /// credentials only into the HTTP client.
    pub fn endpoint(&self) -> Result<(url::Url, Option<(String, String)>), String> {
        let mut url = url::Url::parse(&self.url)
            .map_err(|e| format!("`{}` is not a URL ({e})", self.redacted_url()))?;
        let user = percent_decode(url.username());
        let password = url.password().map(percent_decode);
        let credentials = match (user.is_empty(), password) {
            (true, None) => None,
            (_, password) => Some((user, password.unwrap_or_default())),
        };
        // Setting them to empty cannot fail on an http(s) URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok((url, credentials))
    }

    /// `url` with any credentials in it replaced by `***`.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                let _ = url.set_username("***");
                let _ = url.set_password(None);
                url.to_string()
            }
            Ok(_) => self.url.clone(),
            // Not a URL: show only what comes after a possible `user:pass@`.
            Err(_) => match self.url.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => self.url.clone(),
            },
        }
    }

    /// One line for `explain`.
    pub fn describe(&self) -> String {
        format!(
            "elasticsearch {} index {} _id [{}] (bulk {} rows / {} bytes / {:?})",
            self.redacted_url(),
            self.index,
            self.id_columns.join(", "),
            self.bulk_rows,
            self.bulk_bytes,
            self.flush_interval
        )
    }
}

/// Where the Elasticsearch sink finds its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ElasticsearchAuth {
    /// `basic: { username_env: ES_USERNAME, password_env: ES_PASSWORD }`
    Basic {
        username_env: String,
        password_env: String,
    },
    /// `api_key_env: ES_API_KEY`: the base64 `id:key` an API key's
    /// `encoded` field shows.
    ApiKeyEnv(String),
}

/// `%40` as `@` and so on: URL user info is percent-encoded.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn default_bulk_rows() -> usize {
    5_000
}

fn default_bulk_bytes() -> usize {
    5 * 1024 * 1024
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_retries() -> u32 {
    8
}

fn default_retry_backoff() -> Duration {
    Duration::from_millis(200)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
