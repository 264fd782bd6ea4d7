//! The Elasticsearch sink: emitted rows become documents with deterministic
//! `_id`s, written by bulk requests with the official client.
//!
//! - Idempotent: an `index` action replaces the document with the same `_id`,
//!   so a replay after a restart, or the next `update` of a window, overwrites
//!   instead of duplicating.
//! - Durable before the checkpoint: `commit` returns only when every buffered
//!   document is acknowledged (or dead-lettered), so a checkpoint never covers
//!   a row Elasticsearch does not have.
//! - Back-pressure: the micro-batch loop waits for each bulk request; the
//!   buffer is bounded by `bulk_rows`/`bulk_bytes`, never by memory.
//! - Retries: whole requests answered 429/502/503/504 or unanswered, and
//!   items answered 429 or 5xx, are sent again with exponential back-off, at most
//!   `max_retries` times; then the run stops with an error (nothing is lost:
//!   the next run resumes from the last checkpoint). Items refused for good
//!   (a mapping conflict, say) go to the dead letters with the reason.

mod bulk;
mod config;
mod document;
mod template;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesPutIndexTemplateParts;

pub use config::{ElasticsearchAuth, ElasticsearchSinkConfig};
pub use document::{DocumentEncoder, SettingProblem};

use self::bulk::Answer;
use self::document::Document;
use super::{DeadLetter, DeadLetterKind, DeadLetterSink, SettingsAt, Sink};
use crate::config::LoadedConfig;
use crate::error::{Diagnostic, Result, StreamSqlError};

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the sink did, for the run summary and metrics.
#[derive(Debug, Clone, Copy, Default)]
struct ElasticsearchStats {
    /// Documents acknowledged.
    pub documents: u64,
    pub requests: u64,
    pub retries: u64,
    /// Documents refused for good (in the dead letters).
    pub rejected: u64,
}

pub struct ElasticsearchSink {
    /// `<query> → elasticsearch <url>`, for messages and dead letters.
    name: String,
    client: Elasticsearch,
    encoder: DocumentEncoder,
    settings: ElasticsearchSinkConfig,
    pending: Vec<Document>,
    pending_bytes: usize,
    /// When the oldest pending document arrived.
    oldest: Option<Instant>,
    stats: ElasticsearchStats,
}

impl ElasticsearchSink {
    /// Reads the credentials, connects and installs the query's index
    /// template. `settings` were checked against `schema` by [`check`].
    pub async fn start(
        settings: &ElasticsearchSinkConfig,
        loaded: &LoadedConfig,
        pipeline: &str,
        query: &str,
        schema: SchemaRef,
    ) -> Result<Self> {
        let credentials = credentials(settings.auth.as_ref()).map_err(|variable| {
            let anchor = format!("name: {query}");
            Diagnostic::new(
                loaded.path.display().to_string(),
                loaded.line_of(pipeline, &anchor, &variable),
                format!(
                    "query `{query}`, elasticsearch sink: environment variable `{variable}` is not set"
                ),
            )
            .with_fix(format!("export {variable}=... before `streamsql run`"))
        })?;
        let name = format!("{query} → elasticsearch {}", settings.redacted_url());
        let fail = |message: String| StreamSqlError::Sink(format!("{name}: {message}"));
        let encoder = DocumentEncoder::new(settings, &schema).map_err(|problems| {
            fail(
                problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let (url, in_url) = settings.endpoint().map_err(fail)?;
        let url = url
            .as_str()
            .parse()
            .map_err(|e| fail(format!("`{}` is not a URL ({e})", settings.redacted_url())))?;
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(settings.request_timeout);
        let in_url = in_url.map(|(user, password)| Credentials::Basic(user, password));
        if let Some(credentials) = credentials.or(in_url) {
            transport = transport.auth(credentials);
        }
        let transport = transport
            .build()
            .map_err(|e| fail(format!("cannot build the HTTP client ({e})")))?;
        let sink = Self {
            name,
            client: Elasticsearch::new(transport),
            encoder,
            settings: settings.clone(),
            pending: Vec::new(),
            pending_bytes: 0,
            oldest: None,
            stats: ElasticsearchStats::default(),
        };
        sink.install_template(&schema, pipeline, query).await?;
        Ok(sink)
    }

    async fn install_template(
        &self,
        schema: &SchemaRef,
        pipeline: &str,
        query: &str,
    ) -> Result<()> {
        let name = template::template_name(pipeline, query);
        let body = template::index_template(schema, &self.encoder, pipeline, query);
        let mut backoff = Backoff::new(&self.settings);
        loop {
            let response = self
                .client
                .indices()
                .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
                .body(body.clone())
                .send()
                .await;
            let failure = match response {
                Ok(r) if r.status_code().is_success() => return Ok(()),
                Ok(r) if bulk::is_transient(r.status_code().as_u16()) => {
                    format!("answered {}", r.status_code())
                }
                Ok(r) => {
                    let status = r.status_code();
                    let text = r.text().await.unwrap_or_default();
                    return Err(self.error(format!(
                        "installing index template `{name}` was answered {status}: {text}"
                    )));
                }
                Err(e) => format!("no answer ({e}); is Elasticsearch running at that URL?"),
            };
            backoff.wait().await.map_err(|retries| {
                self.error(format!(
                    "installing index template `{name}`: {failure} (after {retries} retries)"
                ))
            })?;
        }
    }

    async fn flush(&mut self, dead_letters: &mut DeadLetterSink) -> Result<()> {
        let mut documents = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.oldest = None;
        let mut backoff = Backoff::new(&self.settings);
        while !documents.is_empty() {
            self.stats.requests += 1;
            let answer = bulk::send(&self.client, &documents).await;
            let failure = match answer {
                Answer::Items(statuses) => {
                    let mut again = Vec::new();
                    let mut refused = Vec::new();
                    for (doc, item) in documents.into_iter().zip(statuses) {
                        match item.status {
                            200..=299 => self.stats.documents += 1,
                            // Throttled, or a shard not yet there (a new
                            // daily index allocating): the same item will
                            // succeed later, as whole requests do.
                            status if bulk::is_transient(status) || status >= 500 => {
                                again.push(doc)
                            }
                            status => refused.push(DeadLetter {
                                source: self.name.clone(),
                                position: format!("{}/{}", doc.index, doc.id),
                                kind: DeadLetterKind::RejectedBy("elasticsearch"),
                                reason: format!(
                                    "rejected by elasticsearch ({status} {})",
                                    item.error.unwrap_or_default()
                                ),
                                raw: doc.source,
                            }),
                        }
                    }
                    self.stats.rejected += refused.len() as u64;
                    dead_letters.write(&refused)?;
                    documents = again;
                    if documents.is_empty() {
                        break;
                    }
                    format!(
                        "{} documents answered 429 (too many requests) or 5xx (unavailable)",
                        documents.len()
                    )
                }
                Answer::Transient(failure) => failure,
                Answer::Permanent(failure) => return Err(self.error(failure)),
            };
            let retries = backoff.retries;
            backoff.wait().await.map_err(|_| {
                self.error(format!(
                    "{failure}, still after {retries} retries; nothing after the last checkpoint is lost: run again once the cluster accepts writes"
                ))
            })?;
            self.stats.retries += 1;
            tracing::warn!(sink = %self.name, retry = backoff.retries, "bulk request: {failure}; retrying");
        }
        Ok(())
    }

    fn error(&self, message: String) -> StreamSqlError {
        StreamSqlError::Sink(format!("{}: {message}", self.name))
    }
}

#[async_trait]
impl Sink for ElasticsearchSink {
    /// `<query> → elasticsearch <url>`.
    fn name(&self) -> &str {
        &self.name
    }

    /// Buffers `batch`'s rows; sends a bulk request when the buffer is full.
    async fn write(
        &mut self,
        batch: &RecordBatch,
        dead_letters: &mut DeadLetterSink,
    ) -> Result<()> {
        for doc in self.encoder.encode(batch)? {
            self.pending_bytes += doc.source.len() + doc.id.len() + doc.index.len() + 32;
            self.pending.push(doc);
            self.oldest.get_or_insert_with(Instant::now);
            if self.pending.len() >= self.settings.bulk_rows
                || self.pending_bytes >= self.settings.bulk_bytes
            {
                self.flush(dead_letters).await?;
            }
        }
        Ok(())
    }

    /// Sends the buffer when its oldest row has waited `flush_interval`.
    async fn flush_if_due(&mut self, dead_letters: &mut DeadLetterSink) -> Result<()> {
        if self
            .oldest
            .is_some_and(|t| t.elapsed() >= self.settings.flush_interval)
        {
            self.flush(dead_letters).await?;
        }
        Ok(())
    }

    /// Sends everything buffered and waits until it is acknowledged.
    async fn commit(&mut self, _epoch: u64, dead_letters: &mut DeadLetterSink) -> Result<()> {
        self.flush(dead_letters).await
    }

    fn retries(&self) -> u64 {
        self.stats.retries
    }

    fn summary(&self) -> Option<String> {
        let s = &self.stats;
        Some(format!(
            "{}: {} documents in {} bulk requests, {} retries, {} rejected",
            self.name, s.documents, s.requests, s.retries, s.rejected
        ))
    }
}

/// Checks the sink's settings against the query's output columns, each
/// problem at its line of pipelines.yaml.
pub(crate) fn check(
    settings: &ElasticsearchSinkConfig,
    schema: &SchemaRef,
    at: &SettingsAt<'_>,
) -> Vec<Diagnostic> {
    let diagnostic = |key: &str, message: String, fix: String| at.problem(key, message, fix);
    let mut problems = Vec::new();
    if let Err(message) = settings.endpoint() {
        problems.push(diagnostic(
            "url",
            message,
            "write the cluster's base URL, e.g. `http://127.0.0.1:9200`".into(),
        ));
    }
    if let Err(found) = DocumentEncoder::new(settings, schema) {
        problems.extend(
            found
                .into_iter()
                .map(|p| diagnostic(p.key, p.message, p.fix)),
        );
    }
    problems
}

/// Exponential back-off: `retry_backoff`, doubled per retry, at most
/// [`MAX_BACKOFF`], for at most `max_retries` retries.
struct Backoff {
    next: Duration,
    retries: u32,
    max_retries: u32,
}

impl Backoff {
    fn new(settings: &ElasticsearchSinkConfig) -> Self {
        Self {
            next: settings.retry_backoff,
            retries: 0,
            max_retries: settings.max_retries,
        }
    }

    /// Sleeps before the next retry; `Err(retries)` once they are used up.
    async fn wait(&mut self) -> Result<(), u32> {
        if self.retries >= self.max_retries {
            return Err(self.retries);
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.retries += 1;
        Ok(())
    }
}

/// The credentials `auth` names, read from the environment; `Err` names the
/// variable that is not set.
fn credentials(auth: Option<&ElasticsearchAuth>) -> Result<Option<Credentials>, String> {
    let var = |name: &str| std::env::var(name).map_err(|_| name.to_string());
    Ok(match auth {
        None => None,
        Some(ElasticsearchAuth::Basic {
            username_env,
            password_env,
        }) => Some(Credentials::Basic(var(username_env)?, var(password_env)?)),
        Some(ElasticsearchAuth::ApiKeyEnv(name)) => Some(Credentials::EncodedApiKey(var(name)?)),
    })
}
