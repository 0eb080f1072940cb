//! One event: parse, plan, index, report, announce. A plain async function over its dependencies
//! ([`Services`]), so tests call it with hand-built events, whatever registry they like and a recorder
//! of completion events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use app::Registries;
use index::{CreateReport, LayerReport, LayerResult, Observer, Outcome as CreateOutcome, ZtocCache};

use crate::completion::{CompletionError, CompletionEvents, Detail};
use crate::config::Config;
use crate::event;
use crate::outcome::{Outcome, Report};
use crate::plan::{self, Plan, Target};

/// The most time a completion event may take (the SDK's own retries included).
pub const COMPLETION_EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handler works with, built once per execution environment.
pub struct Services<'a, R, E> {
    /// The registries images are indexed in.
    pub registries: &'a R,
    /// Where completion events go (when `SOCI_COMPLETION_EVENT_BUS` names a bus).
    pub completion: &'a E,
    /// The zTOC cache (`SOCI_ZTOC_CACHE_TABLE`), if any.
    pub ztoc_cache: Option<Arc<dyn ZtocCache>>,
}

/// The invocation an event came with.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The Lambda request id.
    pub request_id: String,
    /// When Lambda stops the invocation (`None`: no limit, e.g. in tests).
    pub deadline: Option<Instant>,
}

impl Invocation {
    /// From the runtime's context: its deadline is wall-clock milliseconds.
    pub fn from_context(context: &lambda_runtime::Context) -> Invocation {
        let deadline = (context.deadline > 0).then(|| {
            // Lambda sends an absolute time (epoch ms); `cargo lambda watch` sends the time allowed
            // (e.g. 600000). A value before 2001 can only be the latter.
            let remaining = if context.deadline < 1_000_000_000_000 {
                Duration::from_millis(context.deadline)
            } else {
                context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default()
            };
            // Lambda allows 15 minutes at most; a day bounds whatever the header says.
            Instant::now() + remaining.min(Duration::from_secs(24 * 3600))
        });
        Invocation { request_id: context.request_id.clone(), deadline }
    }

    /// When work is abandoned: the deadline less the [`safety_margin`].
    pub fn stop_at(&self) -> Option<Instant> {
        let deadline = self.deadline?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        Some(Instant::now() + remaining.saturating_sub(safety_margin(remaining)))
    }

    /// How registry handles for this invocation are opened: throttled requests wait until
    /// [`Invocation::stop_at`], no longer; `background` work is held under `SOCI_MAX_WRITE_RATE`.
    pub fn run(&self, background: bool) -> app::Run {
        app::Run { deadline: self.stop_at(), background }
    }
}

/// How long before the deadline indexing is abandoned: a tenth of the time left, between 200 ms and
/// 5 s, which leaves room for the report and for an in-flight request to be dropped cleanly.
pub fn safety_margin(remaining: Duration) -> Duration {
    (remaining / 10).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// Logs layer results as they come.
pub struct LayerLog;

impl Observer for LayerLog {
    fn layer_finished(&self, report: &LayerReport) {
        match &report.result {
            LayerResult::Indexed { ztoc_digest, entries, spans, duration_ms, .. } => tracing::debug!(
                layer = %report.digest, size = report.size, ztoc = %ztoc_digest, entries, spans, duration_ms,
                "layer indexed"
            ),
            LayerResult::Reused { ztoc_digest, how, from_repository, .. } => tracing::debug!(
                layer = %report.digest, ztoc = %ztoc_digest, ?how, from = %from_repository, "zTOC reused"
            ),
            LayerResult::Skipped { reason } => {
                tracing::debug!(layer = %report.digest, size = report.size, %reason, "layer left out")
            }
            LayerResult::Unsupported { reason } => tracing::warn!(
                layer = %report.digest, size = report.size, %reason,
                "layer left out of the SOCI index: its content cannot be indexed"
            ),
        }
    }
}

/// Handles one invocation payload and says what came of it, then puts the completion event of an ECR
/// event on the configured bus (a payload that is no ECR event gets none). Never panics and never
/// fails: a failure is a report with `outcome: failed` (and `retry` when trying again may help); a
/// completion event that could not be put is logged and marked in the report, whatever the outcome.
pub async fn handle<R: Registries, E: CompletionEvents>(
    payload: &serde_json::Value,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
) -> Report {
    let started = Instant::now();
    let throttled_before = services.registries.throttled_requests();
    let request_id = invocation.request_id.clone();
    let (mut report, announce) = if let Some(expiry) = event::parse_lifecycle(payload) {
        let report = Report::new(request_id, expiry.repository_name.clone());
        let planned = plan::plan_lifecycle(&expiry, config);
        (carry_out(report, planned, invocation, config, services).await, true)
    } else {
        match event::parse(payload) {
            Ok(event) => {
                let mut report = Report::new(request_id, event.detail.repository_name.clone());
                report.digest = event.detail.digest().map(str::to_owned);
                report.tag = event.detail.tag().map(str::to_owned);
                let planned = plan::plan(&event, config);
                (carry_out(report, planned, invocation, config, services).await, true)
            }
            Err(reason) => (Report::new(request_id, "").skipped(reason), false),
        }
    };
    report.duration_ms = started.elapsed().as_millis() as u64;
    // Lambda runs one invocation at a time per execution environment: the difference is this one's.
    report.throttled = services.registries.throttled_requests().saturating_sub(throttled_before);
    // Everything echoed came from the event: bounded for the log line, the answer and the event.
    let mut report = report.bounded();
    if let Some(bus) = config.completion_event_bus.as_deref().filter(|_| announce) {
        let detail = Detail::from_report(&report, config.index_version);
        if let Err(e) = put_completion_event(services.completion, bus, &detail, invocation).await {
            tracing::warn!(
                bus, error = %e, repository = %report.repository, digest = report.digest.as_deref(),
                "the completion event could not be put on the event bus"
            );
            report.completion_event_failed = true;
        }
    }
    report
}

/// Puts the event within [`COMPLETION_EVENT_TIMEOUT`] and the invocation's time left.
async fn put_completion_event<E: CompletionEvents>(
    events: &E,
    bus: &str,
    detail: &Detail,
    invocation: &Invocation,
) -> Result<(), CompletionError> {
    let time_left = invocation.deadline.map(|deadline| {
        let remaining = deadline.saturating_duration_since(Instant::now());
        remaining.saturating_sub(Duration::from_millis(100))
    });
    let allowed = time_left.map_or(COMPLETION_EVENT_TIMEOUT, |left| left.min(COMPLETION_EVENT_TIMEOUT));
    match tokio::time::timeout(allowed, events.put(bus, detail)).await {
        Ok(result) => result,
        Err(_) => Err(CompletionError::TimedOut { bus: bus.to_owned(), millis: allowed.as_millis() }),
    }
}

/// Does what was planned.
async fn carry_out<R: Registries, E>(
    mut report: Report,
    planned: Plan,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
) -> Report {
    match planned {
        Plan::Skip { reason } => report.skipped(reason),
        Plan::Index(target) => {
            report.registry = Some(target.repository.registry().to_owned());
            index_image(report, &target, invocation, config, services).await
        }
        Plan::PruneTag(target) => {
            report.registry = Some(target.repository.registry().to_owned());
            let registry = services.registries.open_for(&target.repository, invocation.run(false));
            let work = prune_tag(report.clone(), registry, &target.reference, &config.tag_suffix);
            before_deadline(invocation, work).await.unwrap_or_else(|why| report.failed(why, true))
        }
        Plan::IndexRestored(target) => {
            report.registry = Some(target.repository.registry().to_owned());
            index_restored(report, &target, invocation, config, services).await
        }
        Plan::PruneRepository(repository) => {
            report.registry = Some(repository.registry().to_owned());
            let registry = services.registries.open_for(&repository, invocation.run(false));
            let work = prune_repository(report.clone(), registry, &config.tag_suffix);
            before_deadline(invocation, work).await.unwrap_or_else(|why| report.failed(why, true))
        }
    }
}

/// Runs `work` until shortly before the invocation's deadline ([`safety_margin`]); `Err` says it was
/// stopped.
pub async fn before_deadline<T>(
    invocation: &Invocation,
    work: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let Some(deadline) = invocation.deadline else { return Ok(work.await) };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let stop_at = Instant::now() + remaining.saturating_sub(safety_margin(remaining));
    tokio::time::timeout_at(tokio::time::Instant::from_std(stop_at), work).await.map_err(|_| {
        format!(
            "deadline: the work did not finish in time and was stopped {} ms before the Lambda timeout; \
             raise the function's timeout or memory",
            deadline.saturating_duration_since(Instant::now()).as_millis()
        )
    })
}

/// The deletion of `tag` (v2): removes `<tag><suffix>` and what it alone references.
async fn prune_tag<G: index::Registry>(report: Report, registry: G, tag: &str, suffix: &str) -> Report {
    match index::prune::prune_tag(&registry, tag, suffix, false).await {
        Ok(None) => report.skipped(format!(
            "nothing to prune: {tag} exists again, or there is no {tag}{suffix} (never indexed, or removed already)"
        )),
        Ok(Some(Ok(orphan))) => {
            let what = if orphan.untag {
                "the tag only: its image index is also tagged elsewhere".to_owned()
            } else {
                format!("{} manifest(s)", orphan.remove.len())
            };
            report.pruned(1, format!("{} removed ({what}): its image {tag} was deleted", orphan.tag))
        }
        Ok(Some(Err(why))) => report.skipped(format!("{tag}{suffix} kept: {why}")),
        Err(e) => {
            let retry = e.is_retryable();
            report.failed(failure_reason(&e), retry)
        }
    }
}

/// Removes every SOCI output of the repository whose image is gone.
pub async fn prune_repository<G: index::Registry>(report: Report, registry: G, suffix: &str) -> Report {
    match index::prune::prune(&registry, suffix, false).await {
        Ok(pruned) if pruned.orphans.is_empty() => report.skipped(format!(
            "nothing to prune: no SOCI output whose image is gone ({} kept)",
            pruned.kept.len()
        )),
        Ok(pruned) => {
            let tags: Vec<&str> = pruned.orphans.iter().map(|o| o.tag.as_str()).collect();
            let reason = format!("removed {}: their images are gone", tags.join(", "));
            report.pruned(tags.len() as u64, reason)
        }
        Err(e) => {
            let retry = e.is_retryable();
            report.failed(failure_reason(&e), retry)
        }
    }
}

async fn index_image<R: Registries, E>(
    report: Report,
    target: &Target,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
) -> Report {
    let registry = Arc::new(services.registries.open_for(&target.repository, invocation.run(false)));
    let mut options = config.create_options();
    options.ztoc_cache = services.ztoc_cache.clone();
    let work =
        index::create(registry, &target.reference, target.tag.as_deref(), &options, Arc::new(LayerLog));
    let result = match before_deadline(invocation, work).await {
        Ok(result) => result,
        Err(why) => return report.failed(why.replace("the work did not", "indexing did not"), true),
    };
    match result {
        Ok(created) => created_report(report, created),
        Err(e) if e.is_unindexable_input() => report.skipped(index::chain(&e)),
        Err(e) => {
            let retry = e.is_retryable();
            report.failed(failure_reason(&e), retry)
        }
    }
}

/// A restored image (v2): indexes each tag that names its digest now and that the filters select (what
/// a push of that tag would have done). A tag whose image ECR still lists as archived or being restored
/// fails the invocation for Lambda to retry (ECR answers its pull with 404 until it is active).
async fn index_restored<R: Registries, E>(
    report: Report,
    target: &Target,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
) -> Report {
    use index::Registry as _;
    let digest = target.reference.as_str();
    let registry = services.registries.open_for(&target.repository, invocation.run(false));
    let listed = before_deadline(invocation, async {
        let targets = registry.tag_targets().await?;
        Ok::<_, index::SourceError>((targets, registry.archived_tags().await?))
    })
    .await;
    let (targets, archived) = match listed {
        Ok(Ok(listed)) => listed,
        Ok(Err(e)) => {
            let retry = e.retryable;
            return report.failed(format!("listing the tags of the restored image {digest}: {e}"), retry);
        }
        Err(why) => return report.failed(why, true),
    };
    let named: Vec<String> = targets.into_iter().filter(|t| t.digest == digest).map(|t| t.tag).collect();
    let tags = plan::restored_tags(target.repository.name(), &named, config);
    if tags.is_empty() {
        let named = if named.is_empty() { "none".to_owned() } else { named.join(", ") };
        return report.skipped(format!(
            "restored image {digest}: no tag of it to index (its tags: {named}; own output, off the tag \
             grammar or matching no filter are left)"
        ));
    }
    if let Some(tag) = tags.iter().find(|tag| archived.contains(tag)) {
        return report.failed(
            format!("restored image {digest} ({tag}) is not served yet (ECR still lists it as archived or activating)"),
            true,
        );
    }
    let mut reports = Vec::new();
    for tag in &tags {
        let mut one = report.clone();
        one.tag = Some(tag.clone());
        let by_tag =
            Target { repository: target.repository.clone(), reference: tag.clone(), tag: Some(tag.clone()) };
        reports.push(index_image(one, &by_tag, invocation, config, services).await);
    }
    merge_restored(reports)
}

/// One report for the tags of a restored image: the first tag's when there is one; else failed if any
/// failed (retried if any asks), indexed if any was, and each tag's outcome in the reason.
fn merge_restored(mut reports: Vec<Report>) -> Report {
    if reports.len() == 1 {
        return reports.remove(0);
    }
    let mut merged = reports[0].clone();
    merged.tag = None;
    let outcome = |wanted: Outcome| reports.iter().any(|r| r.outcome == wanted);
    merged.outcome = if outcome(Outcome::Failed) {
        Outcome::Failed
    } else if outcome(Outcome::Indexed) {
        Outcome::Indexed
    } else {
        Outcome::Skipped
    };
    merged.retry = reports.iter().any(|r| r.retry);
    for other in &reports[1..] {
        merged.layers_indexed += other.layers_indexed;
        merged.layers_reused += other.layers_reused;
        merged.layers_skipped += other.layers_skipped;
        merged.bytes += other.bytes;
        merged.soci_indexes.extend(other.soci_indexes.iter().cloned());
        if other.outcome == Outcome::Indexed {
            merged.index_digest.clone_from(&other.index_digest);
            merged.pushed_tag.clone_from(&other.pushed_tag);
        }
    }
    let each: Vec<String> = reports
        .iter()
        .map(|r| {
            let why = r.reason.as_deref().map(|why| format!(" ({why})")).unwrap_or_default();
            format!("{}: {}{why}", r.tag.as_deref().unwrap_or_default(), r.outcome.as_str())
        })
        .collect();
    merged.reason = Some(format!("restored image, {} tags: {}", reports.len(), each.join("; ")));
    merged
}

fn created_report(mut report: Report, created: CreateReport) -> Report {
    let mut left_out: Vec<String> = Vec::new();
    for layer in &created.layers {
        match &layer.result {
            LayerResult::Indexed { .. } => {
                report.layers_indexed += 1;
                report.bytes += layer.size;
            }
            LayerResult::Reused { .. } => report.layers_reused += 1,
            LayerResult::Skipped { reason } => note_left_out(&mut report, &mut left_out, reason.to_string()),
            LayerResult::Unsupported { reason } => {
                note_left_out(&mut report, &mut left_out, reason.to_string())
            }
        }
    }
    report.soci_indexes = created.platforms.iter().filter_map(|p| p.soci_index_digest.clone()).collect();
    report.index_digest = created.image_index_digest.clone().or_else(|| report.soci_indexes.first().cloned());
    report.pushed_tag = created.pushed_tag.clone();
    let moved = report.digest.as_deref().filter(|d| *d != created.image_digest).map(|_| {
        format!(
            "the tag now points to {} (pushed since this event); that image was indexed",
            created.image_digest
        )
    });
    match created.outcome {
        CreateOutcome::Created => {
            report.outcome = Outcome::Indexed;
            report.reason = moved;
            report
        }
        CreateOutcome::AlreadyIndexed => report.skipped("already indexed"),
        CreateOutcome::Superseded => report.skipped(format!(
            "superseded: the tag moved to {} while this image was indexed (that push's event indexes it)",
            created.superseded_by.as_deref().unwrap_or("another image")
        )),
        CreateOutcome::NothingToIndex => {
            let reasons = if left_out.is_empty() { "no layers".to_owned() } else { left_out.join("; ") };
            let count = report.layers_skipped;
            report.skipped(format!("nothing to index: {count} layer(s) left out ({reasons})"))
        }
    }
}

fn note_left_out(report: &mut Report, reasons: &mut Vec<String>, reason: String) {
    report.layers_skipped += 1;
    if !reasons.contains(&reason) {
        reasons.push(reason);
    }
}

/// The failure with its causes, and what the operator can do when the function's setup is the cause.
pub fn failure_reason(error: &index::Error) -> String {
    let hint = match error.registry_source().map(|s| s.kind) {
        Some(index::SourceErrorKind::Unauthorized) => {
            " (check the function's ecr:GetAuthorizationToken permission and the registry it is pointed at)"
        }
        Some(index::SourceErrorKind::Denied) => {
            " (the function's role lacks an ECR permission on this repository: see the template's policy)"
        }
        Some(index::SourceErrorKind::TagImmutable) => {
            " (the repository's tags are IMMUTABLE: a stale <tag><suffix> cannot be replaced; the function \
             prunes it when its image is deleted; delete it by hand and push again. ECR's immutable tag \
             exclusion filters can keep the repository IMMUTABLE except for *-soci)"
        }
        _ => "",
    };
    format!("{}{hint}", index::chain(error))
}

/// The error Lambda gets when an event should be retried.
#[derive(Debug)]
pub struct RetryableFailure(pub String);

impl std::fmt::Display for RetryableFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "indexing failed and may succeed if retried: {}", self.0)
    }
}

impl std::error::Error for RetryableFailure {}

impl From<RetryableFailure> for lambda_runtime::Diagnostic {
    fn from(failure: RetryableFailure) -> lambda_runtime::Diagnostic {
        lambda_runtime::Diagnostic {
            error_type: "SociIndexer.Retryable".into(),
            error_message: failure.to_string(),
        }
    }
}

/// The Lambda entry point: handles the event, writes the log line and the metrics, and answers with the
/// report, or with an error when the event should be retried.
pub async fn invoke<R: Registries, E: CompletionEvents>(
    payload: &serde_json::Value,
    invocation: &Invocation,
    config: &Config,
    services: &Services<'_, R, E>,
) -> Result<Report, RetryableFailure> {
    let span = tracing::info_span!("event", request_id = %invocation.request_id);
    let report =
        tracing::Instrument::instrument(handle(payload, invocation, config, services), span.clone()).await;
    span.in_scope(|| report.emit());
    if report.retry {
        Err(RetryableFailure(report.reason.clone().unwrap_or_default()))
    } else {
        Ok(report)
    }
}
