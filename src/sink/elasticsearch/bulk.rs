//! One `_bulk` request and what its answer means for each document.
//!
//! Elasticsearch answers HTTP 200 even when items fail, so the answer is read
//! item by item (`items[i].<action>.status`, in request order).

use std::collections::HashMap;

use bytes::Bytes;
use elasticsearch::{BulkParts, Elasticsearch};
use serde::Deserialize;
use serde_json::Value;

use super::document::Document;

/// What became of a bulk request.
#[derive(Debug)]
pub enum Answer {
    /// The status of every document, in request order.
    Items(Vec<ItemStatus>),
    /// Worth sending again: no answer, or 429, 502, 503, 504.
    Transient(String),
    /// Will fail the same way again (a 4xx other than 429, or a malformed answer).
    Permanent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemStatus {
    pub status: u16,
    /// `type: reason` of a failed item.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct BulkResponse {
    items: Vec<HashMap<String, ItemBody>>,
}

#[derive(Deserialize)]
struct ItemBody {
    status: u16,
    error: Option<Value>,
}

/// The NDJSON body: an `index` action (create or replace by `_id`: an
/// idempotent upsert) and the source, per document.
pub fn body(documents: &[Document]) -> Bytes {
    let mut body = Vec::new();
    for doc in documents {
        let action = serde_json::json!({ "index": { "_index": doc.index, "_id": doc.id } });
        // Serializing a `Value` to a Vec cannot fail.
        serde_json::to_writer(&mut body, &action).unwrap_or_default();
        body.push(b'\n');
        body.extend_from_slice(doc.source.as_bytes());
        body.push(b'\n');
    }
    Bytes::from(body)
}

/// Whether an HTTP status says "try again later": throttled (429) or the
/// cluster, or a proxy in front of it, unavailable for now (502, 503, 504).
pub fn is_transient(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Sends `documents` in one bulk request (the client's transport carries
/// the sink's `request_timeout`).
pub async fn send(client: &Elasticsearch, documents: &[Document]) -> Answer {
    let response = client
        .bulk(BulkParts::None)
        .body(vec![body(documents)])
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(e) => return Answer::Transient(format!("no answer ({e})")),
    };
    let status = response.status_code();
    if is_transient(status.as_u16()) {
        return Answer::Transient(format!("answered {status}"));
    }
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => return Answer::Transient(format!("answer cut short ({e})")),
    };
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => " (check the sink's `auth` and its environment variables)",
            413 => " (lower the sink's `bulk_bytes`)",
            _ => "",
        };
        return Answer::Permanent(format!("answered {status}{hint}: {}", clip(&text)));
    }
    items(&text, documents.len())
}

/// Reads the per-item statuses of a bulk answer for `sent` documents.
fn items(text: &str, sent: usize) -> Answer {
    let parsed: BulkResponse = match serde_json::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Answer::Permanent(format!("unreadable bulk answer ({e}): {}", clip(text)));
        }
    };
    if parsed.items.len() != sent {
        return Answer::Permanent(format!(
            "the bulk answer has {} items for {sent} documents",
            parsed.items.len()
        ));
    }
    Answer::Items(
        parsed
            .items
            .into_iter()
            .map(|item| {
                let body = item.into_values().next();
                let status = body.as_ref().map_or(0, |b| b.status);
                let error = body.and_then(|b| b.error).map(|e| {
                    format!(
                        "{}: {}",
                        e["type"].as_str().unwrap_or("error"),
                        e["reason"].as_str().unwrap_or_default()
                    )
                });
                ItemStatus { status, error }
            })
            .collect(),
    )
}

/// The start of a long answer, for error messages.
fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(500).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_ndjson_with_an_index_action_per_document() {
        let doc = Document {
            index: "i".into(),
            id: "a\"|1".into(),
            source: r#"{"n":1}"#.into(),
        };
        assert_eq!(
            body(&[doc.clone(), doc]),
            Bytes::from(
                "{\"index\":{\"_id\":\"a\\\"|1\",\"_index\":\"i\"}}\n{\"n\":1}\n".repeat(2)
            )
        );
    }

    #[test]
    fn item_statuses_are_read_in_order() {
        let answer = r#"{"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_id":"c","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad n"}}}]}"#;
        let Answer::Items(items) = items(answer, 3) else {
            panic!("not read")
        };
        assert_eq!(
            items[0],
            ItemStatus {
                status: 201,
                error: None
            }
        );
        assert_eq!(items[1].status, 429);
        assert_eq!(
            items[2].error.as_deref(),
            Some("mapper_parsing_exception: bad n")
        );
        assert!(matches!(self::items(answer, 2), Answer::Permanent(_)));
        assert!(matches!(self::items("<html>", 2), Answer::Permanent(_)));
    }
}
