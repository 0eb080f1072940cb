//! The input: Amazon ECR's events as EventBridge delivers them (shapes from ECR's "Amazon ECR events and
//! EventBridge" documentation). Three detail-types share one `detail` shape here, each with its own
//! fields:
//!
//! ```json
//! {"version": "0", "id": "...", "detail-type": "ECR Image Action", "source": "aws.ecr",
//!  "account": "123456789012", "region": "us-east-1", "time": "...", "resources": [],
//!  "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": "team/app",
//!             "image-digest": "sha256:...", "image-tag": "1.0",
//!             "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
//!             "artifact-media-type": "application/vnd.oci.image.config.v1+json"}}
//! ```
//!
//! - `ECR Image Action`: `action-type` `PUSH`, `DELETE` or `UPDATE_STORAGE_CLASS` (with
//!   `target-storage-class` `ARCHIVE` or `STANDARD`, and `last-activated-at` on a restore; no tag);
//! - `ECR Replication Action`: `action-type` `REPLICATE`, `result`, `source-account`, `source-region`,
//!   sent in the destination registry when an image replicated into it;
//! - `ECR Pull Through Cache Action`: `sync-status`, `ecr-repository-prefix`, `upstream-registry-url`,
//!   sent when ECR cached (or tried to cache) an upstream image.
//!
//! `image-tag` is absent or `""` for a push by digest (the platform manifests of a multi-platform
//! push, soci's own index manifests); `manifest-media-type` and `artifact-media-type` are only in newer
//! events. Real-shaped samples are in `fixtures/`.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};

/// The `source` of ECR's events.
pub const SOURCE: &str = "aws.ecr";
/// The `detail-type` of pushes (and deletes, and storage class changes).
pub const DETAIL_TYPE: &str = "ECR Image Action";
/// The `detail-type` of an image replicated into this registry (cross-region or cross-account).
pub const REPLICATION_DETAIL_TYPE: &str = "ECR Replication Action";
/// The `detail-type` of an image cached by a pull through cache rule.
pub const PULL_THROUGH_CACHE_DETAIL_TYPE: &str = "ECR Pull Through Cache Action";

/// An ECR image, replication or pull through cache action as delivered by EventBridge.
pub type EcrEvent = EventBridgeEvent<ImageAction>;

/// The `detail` of an `ECR Image Action`, `ECR Replication Action` or `ECR Pull Through Cache Action`.
/// Missing fields read as empty, so that an odd event is skipped with a reason rather than rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageAction {
    /// `PUSH`, `DELETE`, `UPDATE_STORAGE_CLASS`, ...
    #[serde(default)]
    pub action_type: String,
    /// `SUCCESS` or `FAILURE`.
    #[serde(default)]
    pub result: String,
    /// The repository, e.g. `team/app`.
    #[serde(default)]
    pub repository_name: String,
    /// The pushed manifest's digest.
    #[serde(default)]
    pub image_digest: Option<String>,
    /// The tag pushed, if any (ECR sends `""` or nothing for a push by digest).
    #[serde(default)]
    pub image_tag: Option<String>,
    /// The pushed manifest's media type (newer events only).
    #[serde(default)]
    pub manifest_media_type: Option<String>,
    /// The artifact type: the config media type of a manifest (newer events only).
    #[serde(default)]
    pub artifact_media_type: Option<String>,
    /// `UPDATE_STORAGE_CLASS`: `ARCHIVE` (archived) or `STANDARD` (restored).
    #[serde(default)]
    pub target_storage_class: Option<String>,
    /// A restore: when the image was last restored.
    #[serde(default)]
    pub last_activated_at: Option<String>,
    /// A replication: the account the image came from.
    #[serde(default)]
    pub source_account: Option<String>,
    /// A replication: the region the image came from.
    #[serde(default)]
    pub source_region: Option<String>,
    /// A pull through cache action: `SUCCESS` or not.
    #[serde(default)]
    pub sync_status: Option<String>,
    /// A pull through cache action: the upstream registry, e.g. `public.ecr.aws`.
    #[serde(default)]
    pub upstream_registry_url: Option<String>,
}

impl ImageAction {
    /// The tag, `None` for a push without one.
    pub fn tag(&self) -> Option<&str> {
        non_empty(&self.image_tag)
    }

    /// The digest, if the event has one.
    pub fn digest(&self) -> Option<&str> {
        non_empty(&self.image_digest)
    }

    /// The manifest media type, if the event tells it.
    pub fn manifest_media_type(&self) -> Option<&str> {
        non_empty(&self.manifest_media_type)
    }

    /// The artifact media type, if the event tells it.
    pub fn artifact_media_type(&self) -> Option<&str> {
        non_empty(&self.artifact_media_type)
    }

    /// The target storage class of a storage class change, if the event tells it.
    pub fn target_storage_class(&self) -> Option<&str> {
        non_empty(&self.target_storage_class)
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The `detail-type` of CloudTrail's records of AWS service events, which CloudTrail puts on the
/// default bus: ECR's lifecycle policy runs among them.
pub const SERVICE_EVENT_DETAIL_TYPE: &str = "AWS Service Event via CloudTrail";

/// CloudTrail's `eventName` of an ECR lifecycle policy run that expired images.
pub const POLICY_EXECUTION_EVENT: &str = "PolicyExecutionEvent";

/// An ECR lifecycle policy expiry as CloudTrail records it (`eventName` `PolicyExecutionEvent`,
/// `serviceEventDetails.repositoryName`, `lifecycleEventImageActions[].lifecycleEventImage`), reduced
/// to what the function uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleExpiry {
    /// The account, from the event.
    pub account: Option<String>,
    /// The region, from the event.
    pub region: Option<String>,
    /// The repository whose images expired.
    pub repository_name: String,
    /// The tags the expired images had.
    pub tags: Vec<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    #[serde(default)]
    event_name: String,
    #[serde(default)]
    service_event_details: Option<ServiceEventDetails>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceEventDetails {
    #[serde(default)]
    repository_name: String,
    #[serde(default)]
    lifecycle_event_image_actions: Vec<ImageActionEntry>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageActionEntry {
    #[serde(default)]
    lifecycle_event_image: Option<LifecycleImage>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct LifecycleImage {
    #[serde(default)]
    tag_list: Vec<String>,
}

/// The lifecycle expiry in `payload`, if it is one (source `aws.ecr`, detail-type
/// [`SERVICE_EVENT_DETAIL_TYPE`], `eventName` [`POLICY_EXECUTION_EVENT`]).
pub fn parse_lifecycle(payload: &serde_json::Value) -> Option<LifecycleExpiry> {
    let event = EventBridgeEvent::<CloudTrailDetail>::deserialize(payload).ok()?;
    if event.source != SOURCE
        || event.detail_type != SERVICE_EVENT_DETAIL_TYPE
        || event.detail.event_name != POLICY_EXECUTION_EVENT
    {
        return None;
    }
    let details = event.detail.service_event_details?;
    let tags = details
        .lifecycle_event_image_actions
        .into_iter()
        .filter_map(|action| action.lifecycle_event_image)
        .flat_map(|image| image.tag_list)
        .collect();
    Some(LifecycleExpiry {
        account: event.account,
        region: event.region,
        repository_name: details.repository_name,
        tags,
    })
}

/// Reads an event from the invocation payload; the error says why it is not an ECR image action.
pub fn parse(payload: &serde_json::Value) -> Result<EcrEvent, String> {
    EcrEvent::deserialize(payload).map_err(|e| format!("not an EventBridge ECR Image Action event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> EcrEvent {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        parse(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    #[test]
    fn a_push_without_media_types() {
        let event = fixture("push-event.json");
        assert_eq!(event.source, SOURCE);
        assert_eq!(event.detail_type, DETAIL_TYPE);
        assert_eq!(event.account.as_deref(), Some("123456789012"));
        assert_eq!(event.region.as_deref(), Some("us-east-1"));
        assert_eq!(event.detail.action_type, "PUSH");
        assert_eq!(event.detail.result, "SUCCESS");
        assert_eq!(event.detail.repository_name, "soci-sample/app");
        assert_eq!(event.detail.tag(), Some("latest"));
        assert!(event.detail.digest().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71));
        assert_eq!(event.detail.manifest_media_type(), None);
        assert_eq!(event.detail.artifact_media_type(), None);
    }

    #[test]
    fn a_push_with_media_types() {
        let event = fixture("push-event-media-types.json");
        assert_eq!(event.detail.manifest_media_type(), Some("application/vnd.oci.image.manifest.v1+json"));
        assert_eq!(event.detail.artifact_media_type(), Some("application/vnd.oci.image.config.v1+json"));
        let index = fixture("push-event-image-index.json");
        assert_eq!(index.detail.manifest_media_type(), Some("application/vnd.oci.image.index.v1+json"));
        assert_eq!(index.detail.artifact_media_type(), None);
        let soci = fixture("push-event-soci-index.json");
        assert_eq!(soci.detail.artifact_media_type(), Some("application/vnd.amazon.soci.index.v2+json"));
    }

    #[test]
    fn an_empty_tag_is_no_tag() {
        let event = fixture("push-event-tagless.json");
        assert_eq!(event.detail.image_tag.as_deref(), Some(""));
        assert_eq!(event.detail.tag(), None);
    }

    #[test]
    fn other_actions_and_other_events_parse_for_the_planner_to_skip() {
        assert_eq!(fixture("delete-event.json").detail.action_type, "DELETE");
        let scan = fixture("scan-event.json");
        assert_eq!(scan.detail_type, "ECR Image Scan");
        assert_eq!(scan.detail.action_type, "");
    }

    #[test]
    fn replication_archive_restore_and_pull_through_cache_in_ecrs_documented_shapes() {
        let replicated = fixture("replication-event.json");
        assert_eq!(replicated.detail_type, REPLICATION_DETAIL_TYPE);
        assert_eq!(
            (replicated.detail.action_type.as_str(), replicated.detail.result.as_str()),
            ("REPLICATE", "SUCCESS")
        );
        assert_eq!(replicated.detail.source_region.as_deref(), Some("us-west-2"));
        assert_eq!(replicated.detail.tag(), Some("latest"));
        assert_eq!(fixture("replication-failed-event.json").detail.result, "FAILED");

        let archived = fixture("archive-event.json");
        assert_eq!(archived.detail.action_type, "UPDATE_STORAGE_CLASS");
        assert_eq!(archived.detail.target_storage_class(), Some("ARCHIVE"));
        assert_eq!(archived.detail.tag(), None, "ECR's storage class events carry no tag");
        let restored = fixture("restore-event.json");
        assert_eq!(restored.detail.target_storage_class(), Some("STANDARD"));
        assert!(restored.detail.last_activated_at.is_some());

        let cached = fixture("pull-through-cache-event.json");
        assert_eq!(cached.detail_type, PULL_THROUGH_CACHE_DETAIL_TYPE);
        assert_eq!(cached.detail.sync_status.as_deref(), Some("SUCCESS"));
        assert_eq!(cached.detail.upstream_registry_url.as_deref(), Some("public.ecr.aws"));
        assert_eq!(cached.detail.repository_name, "ecr-public/docker/library/alpine");
        assert_eq!(cached.detail.tag(), Some("3.17.2"));
        assert_eq!(cached.detail.action_type, "", "a pull through cache action has no action-type");
    }

    #[test]
    fn a_lifecycle_expiry_recorded_by_cloudtrail() {
        let payload: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/fixtures/lifecycle-expiry-event.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        let expiry = parse_lifecycle(&payload).unwrap();
        assert_eq!(expiry.repository_name, "soci-sample/app");
        assert_eq!(expiry.tags, ["1.0", "1.1"]);
        assert_eq!(
            (expiry.account.as_deref(), expiry.region.as_deref()),
            (Some("123456789012"), Some("us-east-1"))
        );
        // Image actions are not lifecycle expiries, and the other way round the planner skips them.
        assert_eq!(parse_lifecycle(&serde_json::to_value(fixture("delete-event.json")).unwrap()), None);
        let mut other = payload.clone();
        other["detail"]["eventName"] = "PutLifecyclePolicy".into();
        assert_eq!(parse_lifecycle(&other), None);
    }

    #[test]
    fn payloads_that_are_not_eventbridge_events_are_named() {
        for payload in [
            serde_json::json!({}),
            serde_json::json!("hello"),
            serde_json::json!({"detail-type": "ECR Image Action", "detail": {}}),
            serde_json::json!({"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": "x"}),
        ] {
            let error = parse(&payload).unwrap_err();
            assert!(error.starts_with("not an EventBridge ECR Image Action event: "), "{error}");
        }
        // Unknown fields (newer events) are ignored.
        let event = parse(&serde_json::json!({
            "source": "aws.ecr", "detail-type": "ECR Image Action",
            "detail": {"action-type": "PUSH", "result": "SUCCESS", "repository-name": "r", "new-field": 1}
        }))
        .unwrap();
        assert_eq!(event.detail.repository_name, "r");
    }
}
