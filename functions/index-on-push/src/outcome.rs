//! What an event came to: one structured log line (through `tracing`) and one CloudWatch embedded
//! metric format (EMF) object on stdout, which CloudWatch Logs turns into metrics in the `SociIndexer`
//! namespace: `Indexed`, `Skipped`, `Failed`, `Reconciled` (0 or 1 each), `Pruned` (SOCI tags removed),
//! `LayersIndexed`, `LayersReused`, `BytesIndexed`, `TagsIndexed` and `RepositoriesListed` (reconcile),
//! `DurationMs` and `CompletionEventsFailed` (0 or 1).

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The CloudWatch namespace of the metrics.
pub const NAMESPACE: &str = "SociIndexer";

/// The most characters of an identifier echoed in the report (request id, repository, registry, digests,
/// tags): they come from the event, and CloudWatch drops a log event over 256 KB, metrics and all.
pub const MAX_FIELD_CHARS: usize = 1024;

/// The most characters of the reason, which may quote the event and a chain of errors.
pub const MAX_REASON_CHARS: usize = 4096;

/// `text` if it has at most `max` characters; else its start and its end around a marker that gives
/// its length, `max` characters in all (so shortening again changes nothing).
pub fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    let length = text.chars().count();
    if length <= max {
        return Cow::Borrowed(text);
    }
    let marker = format!(" … [{length} characters, shortened] … ");
    let kept = max.saturating_sub(marker.chars().count());
    let (head, tail) = (kept - kept / 2, kept / 2);
    let byte_at = |chars: usize| text.char_indices().nth(chars).map_or(text.len(), |(at, _)| at);
    Cow::Owned(format!("{}{marker}{}", &text[..byte_at(head)], &text[byte_at(length - tail)..]))
}

fn shorten_in_place(text: &mut String, max: usize) {
    if let Cow::Owned(short) = shorten(text, max) {
        *text = short;
    }
}

/// How an event ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A SOCI index was built and pushed.
    Indexed,
    /// Nothing to do (filtered out, soci's own output, already indexed, not an image, ...).
    Skipped,
    /// Something went wrong; `retry` tells whether Lambda is asked to try again.
    Failed,
    /// SOCI output whose image was deleted was removed.
    Pruned,
    /// A reconcile step ran: repositories listed and queued, or one repository synced and pruned.
    Reconciled,
}

impl Outcome {
    /// `indexed`, `skipped`, `failed`, `pruned` or `reconciled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Indexed => "indexed",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Pruned => "pruned",
            Outcome::Reconciled => "reconciled",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Everything the log line and the metrics say about one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The Lambda request id.
    pub request_id: String,
    /// The repository name, from the event.
    pub repository: String,
    /// The registry host, once one was chosen (the event account's ECR, or `SOCI_REGISTRY_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The pushed digest, from the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The pushed tag, from the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// indexed, skipped or failed.
    pub outcome: Outcome,
    /// Why it was skipped or failed (or a note on an indexed image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// v2: the digest of the image index pushed as `<tag><suffix>`; v1: the SOCI index manifest's
    /// (the first platform's, when there are several: all are in `soci_indexes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// v2: the tag pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_tag: Option<String>,
    /// The SOCI index manifests pushed, one per platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub soci_indexes: Vec<String>,
    /// Layers that got a zTOC built.
    pub layers_indexed: u64,
    /// Layers whose zTOC was reused from the cache (no download).
    pub layers_reused: u64,
    /// Layers left out (too small, zstd, unsupported content).
    pub layers_skipped: u64,
    /// Compressed bytes of the layers indexed.
    pub bytes: u64,
    /// SOCI tags (`<tag><suffix>`, v1 referrers tags) removed because their image is gone.
    #[serde(skip_serializing_if = "is_zero")]
    pub pruned: u64,
    /// Reconcile of a repository: untagged SOCI output removed (what cut-off or superseded runs left).
    #[serde(skip_serializing_if = "is_zero")]
    pub untagged_removed: u64,
    /// Reconcile request: repositories listed and queued.
    #[serde(skip_serializing_if = "is_zero")]
    pub repositories_listed: u64,
    /// Reconcile of a repository: tags indexed.
    #[serde(skip_serializing_if = "is_zero")]
    pub tags_indexed: u64,
    /// Reconcile of a repository: time ran short, and the rest was queued again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requeued: bool,
    /// Registry requests throttled (429, 503 SlowDown) while handling it: each waited and went on.
    pub throttled: u64,
    /// Milliseconds from the event's arrival to this report.
    pub duration_ms: u64,
    /// Whether the invocation fails so that Lambda retries it (throttling, 5xx, network, deadline).
    pub retry: bool,
    /// Whether the completion event could not be put on its bus (the outcome stands).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub completion_event_failed: bool,
}

impl Report {
    /// A report with nothing done yet.
    pub fn new(request_id: impl Into<String>, repository: impl Into<String>) -> Report {
        Report {
            request_id: request_id.into(),
            repository: repository.into(),
            registry: None,
            digest: None,
            tag: None,
            outcome: Outcome::Skipped,
            reason: None,
            index_digest: None,
            pushed_tag: None,
            soci_indexes: Vec::new(),
            layers_indexed: 0,
            layers_reused: 0,
            layers_skipped: 0,
            bytes: 0,
            pruned: 0,
            untagged_removed: 0,
            repositories_listed: 0,
            tags_indexed: 0,
            requeued: false,
            throttled: 0,
            duration_ms: 0,
            retry: false,
            completion_event_failed: false,
        }
    }

    /// Marks it skipped for `reason`.
    pub fn skipped(mut self, reason: impl Into<String>) -> Report {
        self.outcome = Outcome::Skipped;
        self.reason = Some(reason.into());
        self.retry = false;
        self
    }

    /// Marks it pruned: `count` SOCI tags removed.
    pub fn pruned(mut self, count: u64, reason: impl Into<String>) -> Report {
        self.outcome = Outcome::Pruned;
        self.pruned = count;
        self.reason = Some(reason.into());
        self.retry = false;
        self
    }

    /// Marks it failed for `reason`; `retry` asks Lambda to try again.
    pub fn failed(mut self, reason: impl Into<String>, retry: bool) -> Report {
        self.outcome = Outcome::Failed;
        self.reason = Some(reason.into());
        self.retry = retry;
        self
    }

    /// The structured log line: `info` unless it failed (`error`).
    pub fn log(&self) {
        macro_rules! line {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    target: "index_on_push::outcome",
                    request_id = %self.request_id,
                    repository = %self.repository,
                    registry = self.registry.as_deref(),
                    digest = self.digest.as_deref(),
                    tag = self.tag.as_deref(),
                    outcome = self.outcome.as_str(),
                    reason = self.reason.as_deref(),
                    index_digest = self.index_digest.as_deref(),
                    pushed_tag = self.pushed_tag.as_deref(),
                    layers_indexed = self.layers_indexed,
                    layers_reused = self.layers_reused,
                    layers_skipped = self.layers_skipped,
                    bytes = self.bytes,
                    pruned = self.pruned,
                    untagged_removed = self.untagged_removed,
                    repositories_listed = self.repositories_listed,
                    tags_indexed = self.tags_indexed,
                    requeued = self.requeued,
                    throttled = self.throttled,
                    duration_ms = self.duration_ms,
                    retry = self.retry,
                    completion_event_failed = self.completion_event_failed,
                    $message
                )
            };
        }
        match self.outcome {
            Outcome::Indexed => line!(info, "image indexed"),
            Outcome::Skipped => line!(info, "event skipped"),
            Outcome::Failed => line!(error, "indexing failed"),
            Outcome::Pruned => line!(info, "SOCI output pruned"),
            Outcome::Reconciled => line!(info, "reconciled"),
        }
    }

    /// The EMF object for this report at `timestamp_ms`, with the `FunctionName` dimension (so that two
    /// stacks in one account have separate metrics and alarms).
    pub fn metrics(&self, timestamp_ms: u64, function_name: &str) -> serde_json::Value {
        let metric = |name: &str, unit: &str| serde_json::json!({"Name": name, "Unit": unit});
        serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": [
                        metric("Indexed", "Count"),
                        metric("Skipped", "Count"),
                        metric("Failed", "Count"),
                        metric("Pruned", "Count"),
                        metric("Reconciled", "Count"),
                        metric("RepositoriesListed", "Count"),
                        metric("TagsIndexed", "Count"),
                        metric("LayersIndexed", "Count"),
                        metric("LayersReused", "Count"),
                        metric("BytesIndexed", "Bytes"),
                        metric("DurationMs", "Milliseconds"),
                        metric("CompletionEventsFailed", "Count"),
                        metric("Throttled", "Count"),
                    ],
                }],
            },
            "FunctionName": function_name,
            "Indexed": u64::from(self.outcome == Outcome::Indexed),
            "Skipped": u64::from(self.outcome == Outcome::Skipped),
            "Failed": u64::from(self.outcome == Outcome::Failed),
            "Pruned": self.pruned,
            "Reconciled": u64::from(self.outcome == Outcome::Reconciled),
            "RepositoriesListed": self.repositories_listed,
            "TagsIndexed": self.tags_indexed,
            "LayersIndexed": self.layers_indexed,
            "LayersReused": self.layers_reused,
            "BytesIndexed": self.bytes,
            "DurationMs": self.duration_ms,
            "CompletionEventsFailed": u64::from(self.completion_event_failed),
            "Throttled": self.throttled,
            // Properties, not metrics: searchable in CloudWatch Logs Insights.
            "requestId": self.request_id,
            "repository": self.repository,
            "outcome": self.outcome.as_str(),
        })
    }

    /// The report with every echoed text shortened to `MAX_FIELD_CHARS` (`MAX_REASON_CHARS` for
    /// the reason).
    pub fn bounded(mut self) -> Report {
        let fields = [&mut self.request_id, &mut self.repository].into_iter().chain(
            [
                &mut self.registry,
                &mut self.digest,
                &mut self.tag,
                &mut self.index_digest,
                &mut self.pushed_tag,
            ]
            .into_iter()
            .flatten(),
        );
        for field in fields.chain(self.soci_indexes.iter_mut()) {
            shorten_in_place(field, MAX_FIELD_CHARS);
        }
        if let Some(reason) = &mut self.reason {
            shorten_in_place(reason, MAX_REASON_CHARS);
        }
        self
    }

    /// Writes the log line and the EMF line (stdout, which Lambda sends to CloudWatch Logs), both
    /// [bounded](Report::bounded). Write errors are ignored: reporting never fails the invocation.
    pub fn emit(&self) {
        let bounded = self.clone().bounded();
        let report = &bounded;
        report.log();
        let timestamp_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        let mut stdout = std::io::stdout().lock();
        let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
        let _ = writeln!(stdout, "{}", report.metrics(timestamp_ms, &function_name));
        let _ = stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_follows_the_specification() {
        let mut report = Report::new("req-1", "reg/app");
        report.outcome = Outcome::Indexed;
        report.layers_indexed = 2;
        report.bytes = 12345;
        report.duration_ms = 678;
        let emf = report.metrics(1_700_000_000_000, "soci-fn");
        let directive = &emf["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(emf["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(directive["Namespace"], "SociIndexer");
        assert_eq!(directive["Dimensions"], serde_json::json!([["FunctionName"]]));
        assert_eq!(emf["FunctionName"], "soci-fn");
        // Every declared metric is a number at the root, as EMF requires.
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(emf[name].is_u64(), "{name} is missing from the root");
        }
        assert_eq!(
            (&emf["Indexed"], &emf["Skipped"], &emf["Failed"]),
            (&serde_json::json!(1), &serde_json::json!(0), &serde_json::json!(0))
        );
        assert_eq!((emf["LayersIndexed"].as_u64(), emf["BytesIndexed"].as_u64()), (Some(2), Some(12345)));
        assert_eq!(emf["DurationMs"], 678);
        assert_eq!(emf["requestId"], "req-1");
        // One line.
        assert!(!emf.to_string().contains('\n'));
    }

    #[test]
    fn outcomes_count_once() {
        let failed = Report::new("r", "x").failed("boom", true).metrics(0, "soci-fn");
        assert_eq!(
            (failed["Indexed"].as_u64(), failed["Skipped"].as_u64(), failed["Failed"].as_u64()),
            (Some(0), Some(0), Some(1))
        );
        let skipped = Report::new("r", "x").skipped("why");
        assert_eq!(
            (skipped.outcome, skipped.reason.as_deref(), skipped.retry),
            (Outcome::Skipped, Some("why"), false)
        );
        let json = serde_json::to_value(&skipped).unwrap();
        assert_eq!(json["outcome"], "skipped");
        assert!(json.get("index_digest").is_none());
    }

    #[test]
    fn pruned_and_reconciled_have_their_metrics() {
        let pruned = Report::new("r", "x").pruned(1, "1.0-soci removed");
        let emf = pruned.metrics(0, "f");
        assert_eq!((emf["outcome"].as_str(), emf["Pruned"].as_u64()), (Some("pruned"), Some(1)));
        assert_eq!((emf["Skipped"].as_u64(), emf["Reconciled"].as_u64()), (Some(0), Some(0)));
        let mut reconciled = Report::new("r", "x");
        reconciled.outcome = Outcome::Reconciled;
        reconciled.repositories_listed = 3;
        reconciled.tags_indexed = 2;
        let emf = reconciled.metrics(0, "f");
        assert_eq!((emf["Reconciled"].as_u64(), emf["RepositoriesListed"].as_u64()), (Some(1), Some(3)));
        assert_eq!((emf["TagsIndexed"].as_u64(), emf["Pruned"].as_u64()), (Some(2), Some(0)));
        assert_eq!(serde_json::to_value(&reconciled).unwrap()["outcome"], "reconciled");
    }

    #[test]
    fn long_texts_keep_their_ends_and_say_their_length() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten(&"x".repeat(1024), 1024).len(), 1024);
        let text = format!("start{}end", "é".repeat(100_000));
        let short = shorten(&text, 1024);
        assert_eq!(short.chars().count(), 1024);
        assert!(short.starts_with("startéé") && short.ends_with("éééend"), "{short}");
        assert!(short.contains(" … [100008 characters, shortened] … "), "{short}");
        assert_eq!(shorten(&short, 1024), short, "shortening twice changes nothing");
    }

    #[test]
    fn a_bounded_report_fits_a_log_event() {
        let huge = "a".repeat(1 << 20);
        let mut report = Report::new(huge.clone(), huge.clone()).skipped(huge.clone());
        report.registry = Some(huge.clone());
        report.digest = Some(huge.clone());
        report.tag = Some(huge.clone());
        report.index_digest = Some(huge.clone());
        report.pushed_tag = Some(huge.clone());
        report.soci_indexes = vec![huge.clone(), "sha256:1".into()];
        let bounded = report.bounded();
        let line = serde_json::to_string(&bounded).unwrap();
        assert!(line.len() < 16 * 1024, "{} bytes", line.len());
        assert_eq!(bounded.reason.as_deref().map(|r| r.chars().count()), Some(MAX_REASON_CHARS));
        assert_eq!(bounded.tag.as_deref().map(|t| t.chars().count()), Some(MAX_FIELD_CHARS));
        assert_eq!(bounded.soci_indexes[1], "sha256:1");
        assert!(bounded.metrics(0, "f").to_string().len() < 4 * 1024);
    }
}
