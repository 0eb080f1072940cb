//! The completion event: after each ECR event it handled, the function puts one `SOCI Index Action`
//! event on an EventBridge bus (`SOCI_COMPLETION_EVENT_BUS`) saying what came of it, so that a
//! deployment can start when its image's index is there instead of polling for it.
//!
//! The handler only sees [`CompletionEvents`]: [`EventBridge`] in the function, a recorder in tests.
//! A failure to put the event is the caller's to log and count: it never changes the outcome.

use std::future::Future;

use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;

use crate::outcome::{Outcome, Report};

/// The event's `source`.
pub const SOURCE: &str = "soci-indexer";

/// The event's `detail-type`.
pub const DETAIL_TYPE: &str = "SOCI Index Action";

/// The event's `detail`: what came of one ECR push or delete event. Texts are the report's, bounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Detail {
    /// The repository, from the ECR event.
    pub repository_name: String,
    /// The pushed digest, from the ECR event (`null` when it had none).
    pub image_digest: Option<String>,
    /// The pushed tag, from the ECR event (`null` for a push by digest).
    pub image_tag: Option<String>,
    /// `indexed`, `skipped`, `failed` or `pruned` (a deletion's SOCI output removed).
    pub outcome: Outcome,
    /// Why it was skipped or failed (or a note on an indexed image).
    pub reason: Option<String>,
    /// v2: the tag the SOCI-enabled image index was pushed as (`<tag><suffix>`), the one to deploy.
    pub soci_tag: Option<String>,
    /// v2: that image index's digest; v1 and events that pushed nothing: `null`.
    pub image_index_digest: Option<String>,
    /// The SOCI index manifests, one per platform (v1: the referrers of the image).
    pub soci_index_digests: Vec<String>,
    /// Layers that got a zTOC built.
    pub layers_indexed: u64,
    /// Layers whose zTOC was reused from the zTOC cache.
    pub layers_reused: u64,
    /// `v2` or `v1`.
    pub index_version: String,
    /// Whether the invocation failed so that Lambda retries it: another event follows.
    pub retry: bool,
}

impl Detail {
    /// The detail of `report` (bounded by the caller), made with `index_version`.
    pub fn from_report(report: &Report, index_version: index::IndexVersion) -> Detail {
        let image_index_digest = match index_version {
            index::IndexVersion::V2 => report.index_digest.clone(),
            index::IndexVersion::V1 => None,
        };
        Detail {
            repository_name: report.repository.clone(),
            image_digest: report.digest.clone(),
            image_tag: report.tag.clone(),
            outcome: report.outcome,
            reason: report.reason.clone(),
            soci_tag: report.pushed_tag.clone(),
            image_index_digest,
            soci_index_digests: report.soci_indexes.clone(),
            layers_indexed: report.layers_indexed,
            layers_reused: report.layers_reused,
            index_version: index_version.to_string(),
            retry: report.retry,
        }
    }
}

/// The completion event could not be put on the bus.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// The request failed (network, credentials, permissions, unknown bus, throttling after retries).
    #[error("PutEvents on event bus {bus}: {message}")]
    Request {
        /// The bus.
        bus: String,
        /// The SDK's error with its causes.
        message: String,
    },
    /// EventBridge answered but did not take the entry.
    #[error("PutEvents on event bus {bus}: the event was rejected: {code}: {message}")]
    Rejected {
        /// The bus.
        bus: String,
        /// EventBridge's error code.
        code: String,
        /// EventBridge's error message.
        message: String,
    },
    /// No answer in the time allowed.
    #[error("PutEvents on event bus {bus}: no answer within {millis} ms")]
    TimedOut {
        /// The bus.
        bus: String,
        /// The time allowed.
        millis: u128,
    },
}

/// Where completion events go.
pub trait CompletionEvents: Send + Sync {
    /// Puts one `SOCI Index Action` event with `detail` on `bus`.
    fn put(&self, bus: &str, detail: &Detail) -> impl Future<Output = Result<(), CompletionError>> + Send;
}

/// Completion events through the EventBridge `PutEvents` API.
#[derive(Clone, Debug)]
pub struct EventBridge {
    client: aws_sdk_eventbridge::Client,
}

impl EventBridge {
    /// Puts events with `client`.
    pub fn new(client: aws_sdk_eventbridge::Client) -> EventBridge {
        EventBridge { client }
    }
}

impl CompletionEvents for EventBridge {
    async fn put(&self, bus: &str, detail: &Detail) -> Result<(), CompletionError> {
        let request = |message: String| CompletionError::Request { bus: bus.to_owned(), message };
        let detail = serde_json::to_string(detail).map_err(|e| request(e.to_string()))?;
        let entry = PutEventsRequestEntry::builder()
            .source(SOURCE)
            .detail_type(DETAIL_TYPE)
            .detail(detail)
            .event_bus_name(bus)
            .build();
        let output = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| request(DisplayErrorContext(&e).to_string()))?;
        if output.failed_entry_count() == 0 {
            return Ok(());
        }
        let failed = output.entries().iter().find(|e| e.error_code().is_some());
        Err(CompletionError::Rejected {
            bus: bus.to_owned(),
            code: failed.and_then(|e| e.error_code()).unwrap_or("unknown").to_owned(),
            message: failed.and_then(|e| e.error_message()).unwrap_or_default().to_owned(),
        })
    }
}
