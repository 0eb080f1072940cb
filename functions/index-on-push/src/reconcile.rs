//! The scheduled reconcile: what guarantees that every image the filters select is indexed and that no
//! SOCI output outlives its image, whatever events were lost (or came before the function existed).
//!
//! A reconcile request (`{"reconcile": {}}`, from the schedule or by hand) lists the repositories the
//! filters may select (ECR `DescribeRepositories`) and sends one [`WorkItem`] per repository to an SQS
//! work queue (`SOCI_RECONCILE_QUEUE_URL`). The function consumes that queue one message at a time: it
//! prunes the repository (`index::prune::prune`) and indexes every selected tag that needs it
//! (`index::sync::sync`) before its deadline. What is left when time runs short is sent again, with a
//! delay: work already done is not redone (sync skips indexed tags), so a repository too big for one
//! invocation makes progress and is not lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use app::Registries;
use aws_sdk_ecr::error::DisplayErrorContext;
use index::sync::{SyncAction, SyncOptions};
use index::Registry as _;
use registry::Repository;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::handler::{before_deadline, failure_reason, Invocation, Services};
use crate::outcome::{Outcome, Report};

/// A boxed future, for the object-safe traits here.
use index::cache::BoxFuture;

/// How long a repository sent again waits before it is delivered (SQS allows up to 15 minutes).
pub const REQUEUE_DELAY: Duration = Duration::from_secs(30);

/// How many times one repository is sent again before it is given up on (its message then fails and
/// ends in the queue's dead-letter queue).
pub const MAX_ATTEMPTS: u32 = 50;

/// Images indexed at once when a repository is reconciled.
pub const IMAGES_AT_ONCE: usize = 2;

/// One repository to reconcile: the body of a work queue message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The registry host (the account's ECR registry, or `SOCI_REGISTRY_URL`'s).
    pub registry: String,
    /// The repository name.
    pub repository: String,
    /// How many times it was sent again because time ran short.
    #[serde(default)]
    pub attempt: u32,
}

/// A repository as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its registry host.
    pub registry: String,
    /// Its name.
    pub name: String,
}

/// A reconcile step that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The repositories could not be listed.
    #[error("DescribeRepositories: {0}")]
    List(String),
    /// A work item could not be sent.
    #[error("SendMessage to the work queue: {0}")]
    Send(String),
    /// No work queue is configured.
    #[error("SOCI_RECONCILE_QUEUE_URL is not set: a reconcile request needs the work queue")]
    NoQueue,
}

/// Where repositories are listed: ECR's control plane, or a fake in tests.
pub trait RepositoryList: Send + Sync {
    /// Every repository of the registry.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Listed>, ReconcileError>>;
}

/// Where work items go: the SQS work queue, or a recorder in tests.
pub trait WorkQueue: Send + Sync {
    /// Sends `item`, delivered after `delay`.
    fn send(&self, item: &WorkItem, delay: Duration) -> BoxFuture<'_, Result<(), ReconcileError>>;
}

/// What the reconcile works with, built once per execution environment.
pub struct Lifecycle<'a> {
    /// Where repositories are listed.
    pub repositories: &'a dyn RepositoryList,
    /// The work queue, when `SOCI_RECONCILE_QUEUE_URL` names one.
    pub queue: Option<&'a dyn WorkQueue>,
}

/// Whether `payload` is a reconcile request (`{"reconcile": {...}}`).
pub fn is_request(payload: &serde_json::Value) -> bool {
    payload.get("reconcile").is_some_and(serde_json::Value::is_object)
}

/// The SQS messages of `payload`, as (message id, body), if it is an SQS event.
pub fn sqs_messages(payload: &serde_json::Value) -> Option<Vec<(String, String)>> {
    let records = payload.get("Records")?.as_array()?;
    let is_sqs = |r: &serde_json::Value| r.get("eventSource").and_then(|s| s.as_str()) == Some("aws:sqs");
    if records.is_empty() || !records.iter().all(is_sqs) {
        return None;
    }
    let text =
        |r: &serde_json::Value, key: &str| r.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    Some(records.iter().map(|r| (text(r, "messageId"), text(r, "body"))).collect())
}

/// `DescribeRepositories` through the AWS SDK, every page.
#[derive(Clone, Debug)]
pub struct EcrRepositories {
    client: aws_sdk_ecr::Client,
}

impl EcrRepositories {
    /// Lists with `client`.
    pub fn new(client: aws_sdk_ecr::Client) -> EcrRepositories {
        EcrRepositories { client }
    }
}

impl RepositoryList for EcrRepositories {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Listed>, ReconcileError>> {
        Box::pin(async move {
            let mut pages = self.client.describe_repositories().into_paginator().send();
            let mut listed = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| ReconcileError::List(DisplayErrorContext(&e).to_string()))?;
                for repository in page.repositories() {
                    let (Some(name), Some(uri)) = (repository.repository_name(), repository.repository_uri())
                    else {
                        continue;
                    };
                    // repositoryUri is <registry host>/<name>.
                    let registry = uri.strip_suffix(name).and_then(|r| r.strip_suffix('/')).unwrap_or(uri);
                    listed.push(Listed { registry: registry.to_owned(), name: name.to_owned() });
                }
            }
            Ok(listed)
        })
    }
}

/// The SQS work queue through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// The queue at `url`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue { client, url: url.into() }
    }
}

impl WorkQueue for SqsQueue {
    fn send(&self, item: &WorkItem, delay: Duration) -> BoxFuture<'_, Result<(), ReconcileError>> {
        let body = serde_json::to_string(item);
        Box::pin(async move {
            let body = body.map_err(|e| ReconcileError::Send(e.to_string()))?;
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .delay_seconds(delay.as_secs().min(900) as i32)
                .send()
                .await
                .map_err(|e| ReconcileError::Send(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
            Ok(())
        })
    }
}

/// The registry host a work item may name: `SOCI_REGISTRY_URL`'s when set, else an ECR registry
/// (`<account>.dkr.ecr.<region>.amazonaws.com[.cn]`), so that a message cannot send the function's
/// ECR credentials anywhere else.
pub fn check_registry(host: &str, registry_override: Option<&str>) -> Result<(), String> {
    if let Some(expected) = registry_override {
        return if host == expected {
            Ok(())
        } else {
            Err(format!("registry {host:?} is not SOCI_REGISTRY_URL's {expected:?}"))
        };
    }
    let mut parts = host.splitn(4, '.');
    let (account, region) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(account), Some("dkr"), Some("ecr"), Some(rest)) => {
            (account, rest.split('.').next().unwrap_or(""))
        }
        _ => return Err(format!("registry {host:?} is not an ECR registry")),
    };
    match crate::ecr::registry_host(account, region) {
        Ok(expected) if expected == host => Ok(()),
        _ => Err(format!("registry {host:?} is not an ECR registry")),
    }
}

/// Answers a reconcile request: one work item per repository the filters may select.
pub async fn start(invocation: &Invocation, config: &Config, lifecycle: &Lifecycle<'_>) -> Report {
    let report = Report::new(invocation.request_id.clone(), "*");
    let Some(queue) = lifecycle.queue else {
        return report.failed(ReconcileError::NoQueue.to_string(), false);
    };
    let listed = match lifecycle.repositories.list().await {
        Ok(listed) => listed,
        Err(e) => return report.failed(e.to_string(), true),
    };
    let override_host = config.registry_override.as_ref().map(|r| r.host.clone());
    let mut report = report;
    let mut left_out = 0;
    for repository in listed {
        if !config.filters.may_select_repository(&repository.name) {
            left_out += 1;
            continue;
        }
        let registry = override_host.clone().unwrap_or(repository.registry);
        let item = WorkItem { registry, repository: repository.name, attempt: 0 };
        if let Err(e) = queue.send(&item, Duration::ZERO).await {
            let sent = report.repositories_listed;
            return report.failed(format!("{e} ({sent} repositories queued before)"), true);
        }
        report.repositories_listed += 1;
    }
    report.outcome = Outcome::Reconciled;
    report.reason = Some(format!(
        "{} repositories queued for reconcile, {left_out} matched no filter",
        report.repositories_listed
    ));
    report
}

/// What came of one work queue message.
#[derive(Debug)]
pub struct Consumed {
    /// The report of the repository.
    pub report: Report,
    /// Whether the message failed (SQS delivers it again, then parks it in the dead-letter queue).
    pub failed: bool,
}

/// Reconciles the repository of one work queue message: prune, then sync, before the deadline; what is
/// left when time runs short is sent again.
pub async fn consume<R: Registries, E>(
    body: &str,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
    lifecycle: &Lifecycle<'_>,
) -> Consumed {
    let item: WorkItem = match serde_json::from_str(body) {
        Ok(item) => item,
        Err(e) => {
            let report = Report::new(invocation.request_id.clone(), "");
            // A message no retry can fix: dropped with a reason, not redelivered.
            return Consumed {
                report: report.skipped(format!("not a reconcile work item: {e}")),
                failed: false,
            };
        }
    };
    let mut report = Report::new(invocation.request_id.clone(), item.repository.clone());
    report.registry = Some(item.registry.clone());
    let override_host = config.registry_override.as_ref().map(|r| r.host.as_str());
    let repository = match check_registry(&item.registry, override_host)
        .and_then(|()| Repository::new(item.registry.clone(), &item.repository).map_err(|e| e.to_string()))
    {
        Ok(repository) => repository,
        Err(why) => return Consumed { report: report.skipped(why), failed: false },
    };
    let progress = Arc::new(Progress::default());
    let run = invocation.run(true);
    let work = reconcile_repository(report.clone(), repository, config, services, (progress.clone(), run));
    match before_deadline(invocation, work).await {
        Ok(report) => {
            let failed = report.retry;
            Consumed { report, failed }
        }
        Err(_) => {
            // What was done before the cut-off is in the registry; the report says so too.
            progress.counts().apply(&mut report);
            requeue(report, item, lifecycle).await
        }
    }
}

/// What a reconcile has done so far, kept outside its future so that an invocation cut off by its
/// deadline still reports the tags it indexed. Also logs each layer, as [`crate::handler::LayerLog`].
#[derive(Default)]
struct Progress(std::sync::Mutex<Counts>);

/// The counts of [`Progress`].
#[derive(Clone, Copy, Default)]
struct Counts {
    pruned: u64,
    untagged_removed: u64,
    tags_indexed: u64,
    layers_indexed: u64,
    layers_reused: u64,
}

impl Progress {
    fn counts(&self) -> Counts {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
}

impl index::Observer for Progress {
    fn layer_finished(&self, report: &index::LayerReport) {
        crate::handler::LayerLog.layer_finished(report);
    }

    fn tag_finished(&self, entry: &index::sync::SyncEntry) {
        if let SyncAction::Indexed { layers_indexed, layers_reused, .. } = &entry.action {
            self.update(|counts| {
                counts.tags_indexed += 1;
                counts.layers_indexed += *layers_indexed as u64;
                counts.layers_reused += *layers_reused as u64;
            });
        }
    }
}

impl Counts {
    fn apply(self, report: &mut Report) {
        report.pruned = self.pruned;
        report.untagged_removed = self.untagged_removed;
        report.tags_indexed = self.tags_indexed;
        report.layers_indexed = self.layers_indexed;
        report.layers_reused = self.layers_reused;
    }
}

/// Removes the repository's untagged SOCI output older than `SOCI_UNTAGGED_OLDER_THAN` that nothing
/// uses (what runs cut off or superseded left). Best effort: a failure is logged, the reconcile goes on.
async fn remove_untagged_output<G: index::Registry>(registry: &G, config: &Config, progress: &Progress) {
    match index::prune::prune_untagged(registry, config.untagged_older_than, false).await {
        Ok(Some(untagged)) => {
            progress.update(|counts| counts.untagged_removed = untagged.removed.len() as u64)
        }
        Ok(None) => {} // the registry cannot list untagged manifests (not ECR)
        Err(e) => tracing::warn!(error = %failure_reason(&e), "untagged SOCI output not removed"),
    }
}

/// Time ran short: sends the item again (with a delay), or gives up after [`MAX_ATTEMPTS`].
async fn requeue(mut report: Report, item: WorkItem, lifecycle: &Lifecycle<'_>) -> Consumed {
    if item.attempt + 1 >= MAX_ATTEMPTS {
        let why = format!("the repository did not finish in {MAX_ATTEMPTS} invocations: given up");
        return Consumed { report: report.failed(why, false), failed: true };
    }
    let again = WorkItem { attempt: item.attempt + 1, ..item };
    let sent = match lifecycle.queue {
        Some(queue) => queue.send(&again, REQUEUE_DELAY).await,
        None => Err(ReconcileError::NoQueue),
    };
    match sent {
        Ok(()) => {
            report.outcome = Outcome::Reconciled;
            report.requeued = true;
            report.reason = Some(format!(
                "time ran short after {} tag(s) indexed: the rest was queued again (attempt {} of \
                 {MAX_ATTEMPTS})",
                report.tags_indexed,
                again.attempt + 1
            ));
            Consumed { report, failed: false }
        }
        // The message fails instead: SQS delivers it again after its visibility timeout.
        Err(e) => Consumed { report: report.failed(format!("time ran short and {e}"), true), failed: true },
    }
}

async fn reconcile_repository<R: Registries, E>(
    mut report: Report,
    repository: Repository,
    config: &Config,
    services: &Services<'_, R, E>,
    (progress, run): (Arc<Progress>, app::Run),
) -> Report {
    // Background work: its writes are held under SOCI_MAX_WRITE_RATE.
    let registry = Arc::new(services.registries.open_for(&repository, run));
    // Deleted since it was listed: an ordinary race, not a failure.
    if let Err(e) = registry.list_tags().await {
        if e.kind == index::SourceErrorKind::NotFound {
            return report.skipped(format!(
                "repository {repository} no longer exists (deleted since it was listed): nothing to reconcile"
            ));
        }
    }
    match index::prune::prune(registry.as_ref(), &config.tag_suffix, false).await {
        Ok(pruned) => progress.update(|counts| counts.pruned = pruned.orphans.len() as u64),
        Err(e) => {
            let retry = e.is_retryable();
            return report.failed(failure_reason(&e), retry);
        }
    }
    remove_untagged_output(registry.as_ref(), config, &progress).await;
    let mut options = config.create_options();
    options.ztoc_cache = services.ztoc_cache.clone();
    let filters = config.filters.clone();
    let name = repository.name().to_owned();
    let select = SyncOptions {
        select: Box::new(move |tag| filters.selects(&name, tag)),
        concurrency: IMAGES_AT_ONCE,
        dry_run: false,
    };
    let started = Instant::now();
    let synced = match index::sync::sync(registry, &options, &select, progress.clone()).await {
        Ok(synced) => synced,
        Err(e) => {
            let retry = e.is_retryable();
            progress.counts().apply(&mut report);
            return report.failed(failure_reason(&e), retry);
        }
    };
    progress.counts().apply(&mut report);
    let failures: Vec<String> = synced
        .tags
        .iter()
        .filter_map(|entry| match &entry.action {
            SyncAction::Failed { error } => Some(format!("{}: {error}", entry.tag)),
            _ => None,
        })
        .collect();
    tracing::debug!(repository = %repository, tags = synced.tags.len(), ms = started.elapsed().as_millis() as u64, "synced");
    // Archived images (ECR's archive storage class) cannot be pulled: skipped by name, not failed.
    let archived = synced
        .count(|action| matches!(action, SyncAction::Skipped { reason: index::TagSkipReason::Archived }));
    let mut summary = format!(
        "{} tag(s) indexed, {} SOCI tag(s) pruned, {} tag(s) seen",
        report.tags_indexed,
        report.pruned,
        synced.tags.len()
    );
    if archived > 0 {
        summary.push_str(&format!(
            ", {archived} archived tag(s) skipped (not served until restored; a restore indexes them)"
        ));
    }
    if failures.is_empty() {
        report.outcome = Outcome::Reconciled;
        report.reason = Some(summary);
        report
    } else {
        // Not retried here: the next reconcile tries those tags again.
        report.failed(format!("{summary}; {} failed: {}", failures.len(), failures.join("; ")), false)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_and_sqs_events_are_told_apart() {
        assert!(is_request(&json!({"reconcile": {}})));
        assert!(!is_request(&json!({"reconcile": true})));
        assert!(!is_request(&json!({"source": "aws.ecr"})));
        let event = json!({"Records": [{"messageId": "m1", "body": "{}", "eventSource": "aws:sqs"}]});
        assert_eq!(sqs_messages(&event), Some(vec![("m1".into(), "{}".into())]));
        assert_eq!(sqs_messages(&json!({"Records": [{"eventSource": "aws:s3"}]})), None);
        assert_eq!(sqs_messages(&json!({"Records": []})), None);
        assert_eq!(sqs_messages(&json!({"reconcile": {}})), None);
    }

    #[test]
    fn work_items_name_only_ecr_or_the_override() {
        assert_eq!(check_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com", None), Ok(()));
        assert_eq!(check_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", None), Ok(()));
        for bad in
            ["evil.example", "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil", "1.dkr.ecr.x.amazonaws.com"]
        {
            assert!(check_registry(bad, None).is_err(), "{bad}");
        }
        assert_eq!(check_registry("127.0.0.1:5000", Some("127.0.0.1:5000")), Ok(()));
        assert!(
            check_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com", Some("127.0.0.1:5000")).is_err()
        );
        let item: WorkItem = serde_json::from_str(r#"{"registry": "r", "repository": "a"}"#).unwrap();
        assert_eq!(item.attempt, 0);
    }
}
