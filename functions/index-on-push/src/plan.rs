//! What to do with an event, decided before any network call: skip it (and say why) or index an image.

use index::{media, IndexVersion};
use registry::Repository;

use crate::config::Config;
use crate::ecr;
use crate::event::{self, EcrEvent};
use crate::skip::SkipReason;

/// The decision for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do; the reason goes into the log line.
    Skip {
        /// Why.
        reason: SkipReason,
    },
    /// Index this image.
    Index(Target),
    /// A tag was deleted (v2): remove `<tag><suffix>` and what it alone references.
    PruneTag(Target),
    /// An image was deleted by digest, or under v1, or expired: remove every SOCI output of the
    /// repository whose image is gone.
    PruneRepository(Repository),
    /// An archived image was restored (v2; ECR's restore event names the digest only): index the tags
    /// that name `reference` (the digest) now, those the filters select ([`restored_tags`]).
    IndexRestored(Target),
}

/// The image to index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The registry host and repository name.
    pub repository: Repository,
    /// What to fetch: v2 the tag (the index is pushed as `<tag><suffix>` and must describe what the tag
    /// points to now, even if events arrive out of order); v1 the pushed digest.
    pub reference: String,
    /// The tag, if the push had one.
    pub tag: Option<String>,
}

/// Whether `tag` is a referrers tag-schema tag (`sha256-<64 hex>`): the index through which v1 SOCI
/// indexes are listed on registries without the referrers API. It is soci-indexer's own output too.
fn is_referrers_tag(tag: &str) -> bool {
    index::prune::fallback_subject(tag).is_some()
}

/// `Err(why)` unless `tag` follows [`registry::TAG_RULE`] (an over-long tag is named by its length only).
fn check_tag(tag: &str) -> Result<(), SkipReason> {
    let length = tag.chars().count();
    if length > 128 {
        return Err(SkipReason::TagTooLong { length });
    }
    if registry::is_valid_tag(tag) {
        Ok(())
    } else {
        Err(SkipReason::InvalidTag { tag: tag.to_owned() })
    }
}

/// Decides what to do with `event` under `config`, in this order: not a successful ECR push or delete →
/// skip; a SOCI index or a non-image artifact by the event's media types → skip; a tag off the tag
/// grammar when the image is fetched by tag → skip; soci-indexer's own tag (ending in the suffix, or a
/// referrers tag) → skip (for a delete too: no loop); no filter selects `repository:tag` → skip; v2
/// push without a tag → skip (v1 indexes by digest); then the registry (the override, or the event
/// account's ECR). A delete of a tag prunes its `<tag><suffix>` (v2); any other delete prunes the
/// repository.
pub fn plan(event: &EcrEvent, config: &Config) -> Plan {
    match decide(event, config) {
        Ok(plan) => plan,
        Err(reason) => Plan::Skip { reason },
    }
}

/// What a lifecycle policy expiry asks: prune the repository, if the filters may select it.
pub fn plan_lifecycle(expiry: &event::LifecycleExpiry, config: &Config) -> Plan {
    let name = expiry.repository_name.trim();
    if name.is_empty() {
        return Plan::Skip { reason: SkipReason::NoLifecycleRepositoryName };
    }
    if !config.filters.may_select_repository(name) {
        return Plan::Skip { reason: SkipReason::RepositoryNotSelected { name: name.to_owned() } };
    }
    match repository(expiry.account.as_deref(), expiry.region.as_deref(), name, config) {
        Ok(repository) => Plan::PruneRepository(repository),
        Err(reason) => Plan::Skip { reason },
    }
}

/// What the event is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// A push, a replication into this registry, or a pull through cache action: an image arrived.
    Push,
    Delete,
    /// An archived image was restored (`UPDATE_STORAGE_CLASS` to `STANDARD`).
    Restore,
}

/// The tags of a restored image to index: those `candidates` (the tags naming its digest now) that
/// follow the tag grammar, are not soci-indexer's own output and that the filters select.
pub fn restored_tags(repository: &str, candidates: &[String], config: &Config) -> Vec<String> {
    candidates
        .iter()
        .filter(|tag| check_tag(tag).is_ok() && check_not_own_output(tag, config).is_ok())
        .filter(|tag| config.filters.check(repository, tag).is_ok())
        .cloned()
        .collect()
}

fn decide(event: &EcrEvent, config: &Config) -> Result<Plan, SkipReason> {
    let action = check_action(event)?;
    let detail = &event.detail;
    let name = detail.repository_name.trim();
    if name.is_empty() {
        return Err(SkipReason::NoRepositoryName);
    }
    let (tag, digest) = (detail.tag(), detail.digest());
    if tag.is_none() && digest.is_none() {
        return Err(SkipReason::NoImage);
    }
    check_media_types(detail.manifest_media_type(), detail.artifact_media_type())?;
    if let Some(tag) = tag {
        // v2 fetches by tag and v1 does without a digest: a tag off the grammar can never be fetched.
        if config.index_version == IndexVersion::V2 || digest.is_none() {
            check_tag(tag)?;
        }
        check_not_own_output(tag, config)?;
    }
    match (action, tag) {
        (Action::Delete | Action::Restore, None) => {
            if !config.filters.may_select_repository(name) {
                return Err(SkipReason::RepositoryNotSelected { name: name.to_owned() });
            }
        }
        _ => config.filters.check(name, tag.unwrap_or("")).map_err(SkipReason::NotSelected)?,
    }
    // A v2 restore is indexed by the tags naming its digest now (ECR's restore event has no tag).
    let restore_by_tags = action == Action::Restore && config.index_version == IndexVersion::V2;
    let reference = match action {
        Action::Push => Some(reference(config.index_version, tag, digest)?),
        Action::Restore if restore_by_tags => Some(digest.ok_or(SkipReason::RestoreWithoutDigest)?),
        Action::Restore => Some(reference(config.index_version, tag, digest)?),
        Action::Delete => None,
    };
    let repository = repository(event.account.as_deref(), event.region.as_deref(), name, config)?;
    if let Some(digest) = digest.filter(|d| registry::validate_digest(d).is_err()) {
        return Err(SkipReason::InvalidDigest { digest: digest.to_owned() });
    }
    Ok(match (action, reference, tag) {
        (Action::Restore, Some(reference), _) if restore_by_tags => {
            Plan::IndexRestored(Target { repository, reference: reference.to_owned(), tag: None })
        }
        (Action::Push | Action::Restore, Some(reference), _) => {
            Plan::Index(Target { repository, reference: reference.to_owned(), tag: tag.map(str::to_owned) })
        }
        // v2 output is named after the tag; v1 output (and a delete by digest) is found by listing.
        (Action::Delete, _, Some(tag)) if config.index_version == IndexVersion::V2 => {
            Plan::PruneTag(Target { repository, reference: tag.to_owned(), tag: Some(tag.to_owned()) })
        }
        _ => Plan::PruneRepository(repository),
    })
}

/// What a successful ECR event asks, else why it is skipped: an `ECR Image Action` `PUSH`, `DELETE` or
/// `UPDATE_STORAGE_CLASS` to `STANDARD` (a restore; `ARCHIVE` is skipped: an archived image cannot be
/// pulled), an `ECR Replication Action` `REPLICATE` (indexed as a push), an `ECR Pull Through Cache
/// Action` (indexed as a push: a cached repository is an ordinary repository).
fn check_action(event: &EcrEvent) -> Result<Action, SkipReason> {
    let detail = &event.detail;
    if event.source != event::SOURCE {
        return Err(not_ecr(event));
    }
    let success = |what: &str, result: &str| {
        if result == "SUCCESS" {
            Ok(())
        } else {
            Err(SkipReason::NotSuccess { what: what.to_owned(), result: result.to_owned() })
        }
    };
    match event.detail_type.as_str() {
        event::DETAIL_TYPE => {}
        event::REPLICATION_DETAIL_TYPE => {
            if detail.action_type != "REPLICATE" {
                return Err(SkipReason::NotReplicate { action_type: detail.action_type.clone() });
            }
            success("replication result", &detail.result)?;
            return Ok(Action::Push);
        }
        event::PULL_THROUGH_CACHE_DETAIL_TYPE => {
            success("pull through cache sync-status", detail.sync_status.as_deref().unwrap_or_default())?;
            return Ok(Action::Push);
        }
        _ => return Err(not_ecr(event)),
    }
    let action = match detail.action_type.as_str() {
        "PUSH" => Action::Push,
        "DELETE" => Action::Delete,
        "UPDATE_STORAGE_CLASS" => match detail.target_storage_class() {
            Some("STANDARD") => Action::Restore,
            Some("ARCHIVE") => {
                success("archive result", &detail.result)?;
                return Err(SkipReason::Archived);
            }
            other => {
                return Err(SkipReason::UnknownStorageClass { class: other.unwrap_or_default().to_owned() })
            }
        },
        other => return Err(SkipReason::UnknownAction { action_type: other.to_owned() }),
    };
    let what = match action {
        Action::Push => "push",
        Action::Delete => "delete",
        Action::Restore => "restore",
    };
    success(&format!("{what} result"), &detail.result)?;
    Ok(action)
}

fn not_ecr(event: &EcrEvent) -> SkipReason {
    SkipReason::NotEcr { source: event.source.clone(), detail_type: event.detail_type.clone() }
}

/// The loop guard by media type, when the event tells it.
fn check_media_types(manifest_type: Option<&str>, artifact_type: Option<&str>) -> Result<(), SkipReason> {
    if let Some(artifact) = artifact_type {
        if artifact == media::SOCI_INDEX_V1 || artifact == media::SOCI_INDEX_V2 {
            return Err(SkipReason::SociIndexArtifact { artifact: artifact.to_owned() });
        }
    }
    if let Some(manifest) = manifest_type {
        let is_manifest = media::is_image_manifest(manifest);
        if !is_manifest && !media::is_image_index(manifest) {
            return Err(SkipReason::NotImageManifest { media_type: manifest.to_owned() });
        }
        if let Some(artifact) = artifact_type {
            if is_manifest && artifact != media::OCI_CONFIG && artifact != media::DOCKER_CONFIG {
                return Err(SkipReason::NotImageArtifact { artifact: artifact.to_owned() });
            }
        }
    }
    Ok(())
}

/// `Err` for soci-indexer's own tags: `<tag><suffix>` and referrers tags.
fn check_not_own_output(tag: &str, config: &Config) -> Result<(), SkipReason> {
    if tag.ends_with(config.tag_suffix.as_str()) {
        return Err(SkipReason::OwnSuffix { tag: tag.to_owned(), suffix: config.tag_suffix.clone() });
    }
    if is_referrers_tag(tag) {
        return Err(SkipReason::OwnReferrersTag { tag: tag.to_owned() });
    }
    Ok(())
}

/// What a push is indexed by: v2 the tag, v1 the digest (the tag when there is none).
fn reference<'a>(
    version: IndexVersion,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
) -> Result<&'a str, SkipReason> {
    match (version, tag, digest) {
        (IndexVersion::V2, None, _) => Err(SkipReason::Untagged),
        (IndexVersion::V2, Some(tag), _) | (IndexVersion::V1, Some(tag), None) => Ok(tag),
        (IndexVersion::V1, _, Some(digest)) => Ok(digest),
        (IndexVersion::V1, None, None) => Err(SkipReason::NoImage),
    }
}

/// The repository in the override registry, or in the event account's ECR registry.
fn repository(
    account: Option<&str>,
    region: Option<&str>,
    name: &str,
    config: &Config,
) -> Result<Repository, SkipReason> {
    let host = match &config.registry_override {
        Some(registry) => registry.host.clone(),
        None => ecr::registry_host(account.unwrap_or_default(), region.unwrap_or_default())
            .map_err(SkipReason::NoRegistry)?,
    };
    Repository::new(host, name)
        .map_err(|e| SkipReason::InvalidRepository { name: name.to_owned(), error: e.to_string() })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd12345678";

    fn config(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned()).unwrap()
    }

    /// A push event; `detail` entries replace or (with null) remove the default detail fields.
    fn push(detail: serde_json::Value) -> EcrEvent {
        let mut event = json!({
            "version": "0", "id": "e", "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "123456789012", "region": "us-east-1", "time": "2025-06-11T06:43:44Z", "resources": [],
            "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": "team/app",
                       "image-digest": DIGEST, "image-tag": "1.0"}
        });
        for (key, value) in detail.as_object().unwrap() {
            if value.is_null() {
                event["detail"].as_object_mut().unwrap().remove(key);
            } else {
                event["detail"][key] = value.clone();
            }
        }
        event::parse(&event).unwrap()
    }

    fn reason(plan: Plan) -> String {
        match plan {
            Plan::Skip { reason } => reason.to_string(),
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    fn target(plan: Plan) -> Target {
        match plan {
            Plan::Index(target) => target,
            other => panic!("expected an index, got {other:?}"),
        }
    }

    #[test]
    fn a_push_is_indexed_in_the_accounts_registry() {
        let target = target(plan(&push(json!({})), &config(&[])));
        assert_eq!(target.repository.registry(), "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(target.repository.name(), "team/app");
        assert_eq!(target.reference, "1.0");
        assert_eq!(target.tag.as_deref(), Some("1.0"));

        let mut china = push(json!({}));
        china.region = Some("cn-north-1".into());
        let target = target_of(&china, &config(&[]));
        assert_eq!(target.repository.registry(), "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn");
    }

    fn target_of(event: &EcrEvent, config: &Config) -> Target {
        target(plan(event, config))
    }

    #[test]
    fn v1_indexes_by_digest_and_tagless() {
        let v1 = config(&[("SOCI_INDEX_VERSION", "v1")]);
        let target = target(plan(&push(json!({})), &v1));
        assert_eq!((target.reference.as_str(), target.tag.as_deref()), (DIGEST, Some("1.0")));
        let target = target_of(&push(json!({"image-tag": ""})), &v1);
        assert_eq!((target.reference.as_str(), target.tag), (DIGEST, None));
        let target = target_of(&push(json!({"image-tag": null})), &v1);
        assert_eq!(target.reference, DIGEST);
        // A tag without a digest (not sent by ECR, but harmless).
        let target = target_of(&push(json!({"image-digest": null})), &v1);
        assert_eq!(target.reference, "1.0");
    }

    #[test]
    fn the_override_moves_only_the_registry() {
        let local = config(&[("SOCI_REGISTRY_URL", "http://127.0.0.1:5000")]);
        let target = target(plan(&push(json!({})), &local));
        assert_eq!(target.repository.registry(), "127.0.0.1:5000");
        assert_eq!(target.repository.name(), "team/app");
        // The account and region no longer matter.
        let mut event = push(json!({}));
        event.account = None;
        assert!(matches!(plan(&event, &local), Plan::Index(_)));
        assert!(reason(plan(&event, &config(&[]))).contains("12-digit"));
    }

    #[test]
    fn every_skip_rule() {
        let v2 = config(&[]);
        let archived = SkipReason::Archived.to_string();
        let cases: Vec<(EcrEvent, &str)> = vec![
            (
                push(json!({"action-type": "UPDATE_STORAGE_CLASS"})),
                "action-type \"UPDATE_STORAGE_CLASS\" with target-storage-class \"\", neither ARCHIVE",
            ),
            (
                push(json!({"action-type": "UPDATE_STORAGE_CLASS", "target-storage-class": "ARCHIVE"})),
                archived.as_str(),
            ),
            (
                push(json!({"action-type": "UPDATE_STORAGE_CLASS", "target-storage-class": "STANDARD",
                            "result": "FAILURE"})),
                "restore result \"FAILURE\", not SUCCESS",
            ),
            (push(json!({"action-type": null})), "action-type \"\", not PUSH"),
            (push(json!({"result": "FAILURE"})), "push result \"FAILURE\", not SUCCESS"),
            (push(json!({"repository-name": ""})), "no repository-name"),
            (push(json!({"image-digest": null, "image-tag": null})), "neither image-digest nor image-tag"),
            (
                push(json!({"artifact-media-type": media::SOCI_INDEX_V2})),
                "a SOCI index manifest (artifact type application/vnd.amazon.soci.index.v2+json)",
            ),
            (push(json!({"artifact-media-type": media::SOCI_INDEX_V1})), "a SOCI index manifest"),
            (
                push(json!({"manifest-media-type": "application/vnd.oci.artifact.manifest.v1+json"})),
                "not an image: manifest media type application/vnd.oci.artifact.manifest.v1+json",
            ),
            (
                push(json!({"manifest-media-type": media::OCI_MANIFEST,
                            "artifact-media-type": "application/vnd.cncf.helm.config.v1+json"})),
                "not an image: an artifact of type application/vnd.cncf.helm.config.v1+json",
            ),
            (push(json!({"image-tag": "1.0-soci"})), "ends with the SOCI tag suffix \"-soci\""),
            (push(json!({"image-tag": format!("sha256-{}", "ab".repeat(32))})), "referrers tag-schema index"),
            (push(json!({"image-tag": ""})), "pushed without a tag: a v2 SOCI index"),
            (push(json!({"image-tag": null})), "pushed without a tag"),
            (push(json!({"repository-name": "Team/App"})), "repository-name \"Team/App\""),
            (push(json!({"image-digest": "md5:abc"})), "not a sha256 digest"),
        ];
        for (event, expected) in cases {
            let reason = reason(plan(&event, &v2));
            assert!(reason.contains(expected), "expected {expected:?} in {reason:?}");
        }

        let mut other = push(json!({}));
        other.detail_type = "ECR Image Scan".into();
        assert!(reason(plan(&other, &v2)).starts_with("not an ECR image action"));
        let mut other = push(json!({}));
        other.source = "aws.s3".into();
        assert!(reason(plan(&other, &v2)).contains("aws.s3"));
        let mut region = push(json!({}));
        region.region = None;
        assert!(reason(plan(&region, &v2)).contains("region"));
    }

    /// An event of `detail_type` with `detail` over the push defaults (null removes a field).
    fn other(detail_type: &str, detail: serde_json::Value) -> EcrEvent {
        let mut event = push(detail);
        event.detail_type = detail_type.into();
        event
    }

    #[test]
    fn replicated_and_cached_images_are_indexed_like_pushes() {
        let v2 = config(&[]);
        let replicated = other(
            event::REPLICATION_DETAIL_TYPE,
            json!({"action-type": "REPLICATE", "source-account": "210987654321", "source-region": "us-west-2"}),
        );
        let target = target(plan(&replicated, &v2));
        assert_eq!((target.repository.name(), target.reference.as_str()), ("team/app", "1.0"));
        // A replicated <tag>-soci is soci-indexer's own output, made in the source registry.
        let soci = other(
            event::REPLICATION_DETAIL_TYPE,
            json!({"action-type": "REPLICATE", "image-tag": "1.0-soci"}),
        );
        assert!(reason(plan(&soci, &v2)).contains("soci-indexer's own output"));
        let failed =
            other(event::REPLICATION_DETAIL_TYPE, json!({"action-type": "REPLICATE", "result": "FAILED"}));
        assert_eq!(reason(plan(&failed, &v2)), "replication result \"FAILED\", not SUCCESS");
        let odd = other(event::REPLICATION_DETAIL_TYPE, json!({"action-type": "PUSH"}));
        assert!(reason(plan(&odd, &v2)).contains("not REPLICATE"));

        let cached = other(
            event::PULL_THROUGH_CACHE_DETAIL_TYPE,
            json!({"action-type": null, "result": null, "sync-status": "SUCCESS",
                   "repository-name": "ecr-public/docker/library/alpine", "image-tag": "3.17.2"}),
        );
        let target = target_of(&cached, &v2);
        assert_eq!(
            (target.repository.name(), target.reference.as_str()),
            ("ecr-public/docker/library/alpine", "3.17.2")
        );
        let mut failed = cached.clone();
        failed.detail.sync_status = Some("FAILED".into());
        assert_eq!(reason(plan(&failed, &v2)), "pull through cache sync-status \"FAILED\", not SUCCESS");
        let only_team = config(&[("SOCI_FILTERS", "team/*")]);
        assert!(reason(plan(&cached, &only_team)).contains("filter"));
    }

    #[test]
    fn archives_are_skipped_and_restores_indexed_by_the_tags_of_the_digest() {
        let v2 = config(&[]);
        let storage = |class: &str| {
            push(
                json!({"action-type": "UPDATE_STORAGE_CLASS", "target-storage-class": class, "image-tag": null}),
            )
        };
        assert!(matches!(plan(&storage("ARCHIVE"), &v2), Plan::Skip { reason: SkipReason::Archived }));
        let Plan::IndexRestored(target) = plan(&storage("STANDARD"), &v2) else {
            panic!("a restore is indexed")
        };
        assert_eq!((target.reference.as_str(), target.tag), (DIGEST, None));
        // v1 indexes the digest itself.
        let v1 = config(&[("SOCI_INDEX_VERSION", "v1")]);
        assert_eq!(target_of(&storage("STANDARD"), &v1).reference, DIGEST);
        // Filters: the repository must be selectable; the tags are chosen once found.
        assert!(
            reason(plan(&storage("STANDARD"), &config(&[("SOCI_FILTERS", "prod/*:*")]))).contains("filter")
        );
        let only_release = config(&[("SOCI_FILTERS", "team/app:release-*")]);
        let found: Vec<String> = ["release-1", "latest", "release-1-soci", "sha256-x", "-bad"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(restored_tags("team/app", &found, &only_release), ["release-1"]);
        assert_eq!(restored_tags("team/app", &found, &v2), ["release-1", "latest", "sha256-x"]);
    }

    #[test]
    fn deletions_prune_what_was_made_for_the_image() {
        let v2 = config(&[]);
        let delete = |detail: serde_json::Value| {
            let mut detail = detail;
            detail["action-type"] = json!("DELETE");
            push(detail)
        };
        let Plan::PruneTag(target) = plan(&delete(json!({})), &v2) else {
            panic!("a tag's deletion prunes it")
        };
        assert_eq!((target.repository.name(), target.tag.as_deref()), ("team/app", Some("1.0")));
        // Without a tag, or under v1 (whose output is found by the image's digest): the repository.
        assert!(matches!(plan(&delete(json!({"image-tag": null})), &v2), Plan::PruneRepository(_)));
        let v1 = config(&[("SOCI_INDEX_VERSION", "v1")]);
        assert!(matches!(plan(&delete(json!({})), &v1), Plan::PruneRepository(_)));
        // Deletions of soci-indexer's own output are no work (no loop), and filters apply.
        for (detail, expected) in [
            (json!({"image-tag": "1.0-soci"}), "soci-indexer's own output"),
            (json!({"image-tag": format!("sha256-{}", "ab".repeat(32))}), "referrers tag-schema index"),
            (json!({"artifact-media-type": media::SOCI_INDEX_V2}), "a SOCI index manifest"),
            (json!({"result": "FAILURE"}), "delete result \"FAILURE\", not SUCCESS"),
        ] {
            let why = reason(plan(&delete(detail), &v2));
            assert!(why.contains(expected), "{expected}: {why}");
        }
        let only_prod = config(&[("SOCI_FILTERS", "prod/*:*")]);
        assert!(reason(plan(&delete(json!({})), &only_prod)).contains("matches no filter"));
        assert!(reason(plan(&delete(json!({"image-tag": null})), &only_prod)).contains("matches no filter"));
    }

    #[test]
    fn lifecycle_expiries_prune_the_repository_the_filters_may_select() {
        let expiry = event::LifecycleExpiry {
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository_name: "team/app".into(),
            tags: vec!["1.0".into()],
        };
        let Plan::PruneRepository(repository) = plan_lifecycle(&expiry, &config(&[])) else { panic!() };
        assert_eq!(repository.to_string(), "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app");
        assert!(
            reason(plan_lifecycle(&expiry, &config(&[("SOCI_FILTERS", "prod/*:*")]))).contains("no filter")
        );
        let nameless = event::LifecycleExpiry { repository_name: String::new(), ..expiry };
        assert!(reason(plan_lifecycle(&nameless, &config(&[]))).contains("no repositoryName"));
    }

    #[test]
    fn media_types_of_images_pass() {
        let v2 = config(&[]);
        for (manifest, artifact) in [
            (Some(media::OCI_MANIFEST), Some(media::OCI_CONFIG)),
            (Some(media::DOCKER_MANIFEST), Some(media::DOCKER_CONFIG)),
            (Some(media::OCI_INDEX), None),
            (Some(media::DOCKER_MANIFEST_LIST), None),
            // What an index's artifact type may be is not documented: only SOCI types rule it out.
            (Some(media::OCI_INDEX), Some("application/vnd.example.unknown")),
            (None, Some(media::OCI_CONFIG)),
            (None, None),
        ] {
            let event = push(json!({"manifest-media-type": manifest, "artifact-media-type": artifact}));
            assert!(matches!(plan(&event, &v2), Plan::Index(_)), "{manifest:?} {artifact:?}");
        }
    }

    #[test]
    fn own_output_follows_the_configured_suffix() {
        let custom = config(&[("SOCI_TAG_SUFFIX", ".lazy")]);
        assert!(reason(plan(&push(json!({"image-tag": "1.0.lazy"})), &custom)).contains("\".lazy\""));
        assert!(matches!(plan(&push(json!({"image-tag": "1.0-soci"})), &custom), Plan::Index(_)));
    }

    /// The filter table: (SOCI_FILTERS, repository, tag or "" for none, indexed under v1).
    #[test]
    fn filters_select_repository_tag_pairs() {
        let table: &[(&str, &str, &str, bool)] = &[
            ("", "team/app", "1.0", true),
            ("*:*", "a/b/c", "x", true),
            ("*:*", "app", "", true),
            ("team/*", "team/app", "1.0", true),
            ("team/*", "team/sub/app", "1.0", true),
            ("team/*", "other/app", "1.0", false),
            ("*/app:*", "team/app", "1.0", true),
            ("*/app:*", "app", "1.0", false),
            ("prod*:latest", "prod-api", "latest", true),
            ("prod*:latest", "prod-api", "1.0", false),
            ("prod*:latest,dev:*", "dev", "anything", true),
            ("app:release-*", "app", "release-2", true),
            ("app:release-*", "app", "", false),
            ("app:*", "app", "", true),
            ("*:*,!scratch/*", "scratch/tmp", "1", false),
            ("*:*,!scratch/*", "team/app", "1", true),
            ("!*:*-debug", "team/app", "1-debug", false),
            ("!*:*-debug", "team/app", "1", true),
            ("team/*,!team/legacy:*", "team/legacy", "1", false),
            ("team/*,!team/legacy:*", "team/legacy-2", "1", true),
            ("app:v[0-9]*", "app", "v2.1", true),
            ("app:v[0-9]*", "app", "vx", false),
        ];
        for (filters, repository, tag, expected) in table {
            let v1 = config(&[("SOCI_FILTERS", filters), ("SOCI_INDEX_VERSION", "v1")]);
            let event = push(json!({"repository-name": repository, "image-tag": tag}));
            let planned = plan(&event, &v1);
            assert_eq!(
                matches!(planned, Plan::Index(_)),
                *expected,
                "SOCI_FILTERS={filters:?} {repository}:{tag}: {planned:?}"
            );
            if !expected {
                let reason = reason(planned);
                assert!(reason.contains("filter"), "{reason}");
            }
        }
    }

    #[test]
    fn tags_follow_the_distribution_grammar_when_fetched() {
        let v2 = config(&[]);
        for tag in ["1.0", "_x", "A.b-c_D", "latest", &"t".repeat(128)] {
            assert_eq!(check_tag(tag), Ok(()), "{tag}");
            assert!(matches!(plan(&push(json!({"image-tag": tag})), &v2), Plan::Index(_)), "{tag}");
        }
        for tag in ["-bad", ".x", "a/b", "../../x", "a b", "x:1", "\u{e9}t\u{e9}", &"t".repeat(129)] {
            let why = reason(plan(&push(json!({"image-tag": tag})), &v2));
            assert!(why.ends_with(registry::TAG_RULE), "{tag}: {why}");
        }
        // Checked before the own-output rules, which quote the tag.
        let own = push(json!({"image-tag": format!("{}-soci", "t".repeat(200))}));
        assert_eq!(
            reason(plan(&own, &v2)),
            format!("image-tag is 205 characters long: {}", registry::TAG_RULE)
        );
        // v1 fetches by digest when it has one.
        let v1 = config(&[("SOCI_INDEX_VERSION", "v1")]);
        assert!(matches!(plan(&push(json!({"image-tag": "-bad"})), &v1), Plan::Index(_)));
        let tag_only = push(json!({"image-tag": "-bad", "image-digest": null}));
        assert!(reason(plan(&tag_only, &v1)).starts_with("image-tag \"-bad\" is not a valid tag"));
    }
}
