//! The Lambda entry point for every payload: it tells a reconcile request and a batch of work queue
//! messages ([`crate::reconcile`]) from an ECR event ([`crate::handler`]), runs it, and answers the
//! runtime. It sits above both, so that neither imports the other.

use std::time::Instant;

use app::Registries;

use crate::completion::CompletionEvents;
use crate::config::Config;
use crate::handler::{invoke, Invocation, RetryableFailure, Services};
use crate::outcome::Report;
use crate::reconcile::{self, Lifecycle};

/// The Lambda entry point for every payload: a reconcile request (`reconcile::start`), a batch of work
/// queue messages ([`reconcile::consume`], answered with the failed ones for `ReportBatchItemFailures`),
/// or an ECR event ([`invoke`](crate::handler::invoke)). Each writes its log lines and metrics.
pub async fn dispatch<R: Registries, E: CompletionEvents>(
    payload: &serde_json::Value,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
    lifecycle: &Lifecycle<'_>,
) -> Result<serde_json::Value, RetryableFailure> {
    let span = tracing::info_span!("event", request_id = %invocation.request_id);
    if reconcile::is_request(payload) {
        let started = Instant::now();
        let mut report =
            tracing::Instrument::instrument(reconcile::start(invocation, config, lifecycle), span.clone())
                .await;
        report.duration_ms = started.elapsed().as_millis() as u64;
        span.in_scope(|| report.emit());
        return answer(report);
    }
    if let Some(messages) = reconcile::sqs_messages(payload) {
        let mut failures = Vec::new();
        for (id, body) in messages {
            let started = Instant::now();
            let work = reconcile::consume(&body, invocation, config, services, lifecycle);
            let mut consumed = tracing::Instrument::instrument(work, span.clone()).await;
            consumed.report.duration_ms = started.elapsed().as_millis() as u64;
            span.in_scope(|| consumed.report.emit());
            if consumed.failed {
                failures.push(serde_json::json!({"itemIdentifier": id}));
            }
        }
        return Ok(serde_json::json!({"batchItemFailures": failures}));
    }
    answer(invoke(payload, invocation, config, services).await?)
}

fn answer(report: Report) -> Result<serde_json::Value, RetryableFailure> {
    if report.retry {
        return Err(RetryableFailure(report.reason.clone().unwrap_or_default()));
    }
    serde_json::to_value(&report).map_err(|e| RetryableFailure(e.to_string()))
}
