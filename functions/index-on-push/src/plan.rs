//! What to do with an event, decided before any network call: skip it (and say why) or index an image.

use index::{media, IndexVersion};
use registry::Repository;

use crate::config::Config;
use crate::ecr;
use crate::event::{self, EcrEvent};

/// The decision for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do; the reason goes into the log line.
    Skip {
        /// Why.
        reason: String,
    },
    /// Index this image.
    Index(Target),
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

fn skip(reason: impl Into<String>) -> Plan {
    Plan::Skip { reason: reason.into() }
}

/// Whether `tag` is a referrers tag-schema tag (`sha256-<64 hex>`): the index through which v1 SOCI
/// indexes are listed on registries without the referrers API. It is soci-indexer's own output too.
fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What the distribution spec allows a tag to be, `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub const TAG_RULE: &str = "a tag is 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'";

/// `Err(why)` unless `tag` follows [`TAG_RULE`] (an over-long tag is named by its length only).
fn check_tag(tag: &str) -> Result<(), String> {
    let length = tag.chars().count();
    if length > 128 {
        return Err(format!("image-tag is {length} characters long: {TAG_RULE}"));
    }
    let mut bytes = tag.bytes();
    let first = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if first && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        Ok(())
    } else {
        Err(format!("image-tag {tag:?} is not a valid tag: {TAG_RULE}"))
    }
}

/// Decides what to do with `event` under `config`, in this order: not a successful ECR push → skip; a
/// SOCI index or a non-image artifact by the event's media types → skip; a tag off the tag grammar when
/// the image is fetched by tag → skip; soci-indexer's own tag (ending in the suffix, or a referrers tag)
/// → skip; no filter selects `repository:tag` → skip; v2 without a
/// tag → skip (v1 indexes by digest); then the registry (the override, or the event account's ECR).
pub fn plan(event: &EcrEvent, config: &Config) -> Plan {
    if event.source != event::SOURCE || event.detail_type != event::DETAIL_TYPE {
        return skip(format!(
            "not an ECR image action (source {:?}, detail-type {:?})",
            event.source, event.detail_type
        ));
    }
    let detail = &event.detail;
    if detail.action_type != "PUSH" {
        return skip(format!("action-type {:?}, not PUSH", detail.action_type));
    }
    if detail.result != "SUCCESS" {
        return skip(format!("push result {:?}, not SUCCESS", detail.result));
    }
    let name = detail.repository_name.trim();
    if name.is_empty() {
        return skip("the event has no repository-name");
    }
    let tag = detail.tag();
    let digest = detail.digest();
    if tag.is_none() && digest.is_none() {
        return skip("the event has neither image-digest nor image-tag");
    }

    // The loop guard by media type, when the event tells it.
    let manifest_type = detail.manifest_media_type();
    let artifact_type = detail.artifact_media_type();
    if let Some(artifact) = artifact_type {
        if artifact == media::SOCI_INDEX_V1 || artifact == media::SOCI_INDEX_V2 {
            return skip(format!("a SOCI index manifest (artifact type {artifact}), not an image to index"));
        }
    }
    if let Some(manifest) = manifest_type {
        let is_manifest = media::is_image_manifest(manifest);
        if !is_manifest && !media::is_image_index(manifest) {
            return skip(format!("not an image: manifest media type {manifest}"));
        }
        if let Some(artifact) = artifact_type {
            if is_manifest && artifact != media::OCI_CONFIG && artifact != media::DOCKER_CONFIG {
                return skip(format!("not an image: an artifact of type {artifact}"));
            }
        }
    }

    if let Some(tag) = tag {
        // v2 fetches by tag and v1 does without a digest: a tag off the grammar can never be fetched.
        if config.index_version == IndexVersion::V2 || digest.is_none() {
            if let Err(reason) = check_tag(tag) {
                return skip(reason);
            }
        }
        if tag.ends_with(config.tag_suffix.as_str()) {
            return skip(format!(
                "tag {tag:?} ends with the SOCI tag suffix {:?}: soci-indexer's own output",
                config.tag_suffix
            ));
        }
        if is_referrers_tag(tag) {
            return skip(format!(
                "tag {tag:?} is a referrers tag-schema index (how v1 SOCI indexes are listed without a \
                 referrers API): soci-indexer's own output"
            ));
        }
    }
    if let Err(reason) = config.filters.check(name, tag.unwrap_or("")) {
        return skip(reason);
    }
    let reference = match (config.index_version, tag, digest) {
        (IndexVersion::V2, None, _) => {
            return skip(
                "pushed without a tag: a v2 SOCI index is pushed as <tag><suffix>, so it needs a tag \
                 (SOCI_INDEX_VERSION=v1 indexes by digest)",
            )
        }
        (IndexVersion::V2, Some(tag), _) | (IndexVersion::V1, Some(tag), None) => tag,
        (IndexVersion::V1, _, Some(digest)) => digest,
        (IndexVersion::V1, None, None) => return skip("the event has neither image-digest nor image-tag"),
    };

    let host = match &config.registry_override {
        Some(registry) => registry.host.clone(),
        None => match ecr::registry_host(
            event.account.as_deref().unwrap_or_default(),
            event.region.as_deref().unwrap_or_default(),
        ) {
            Ok(host) => host,
            Err(reason) => return skip(reason),
        },
    };
    let repository = match Repository::new(host, name) {
        Ok(repository) => repository,
        Err(e) => return skip(format!("repository-name {name:?}: {e}")),
    };
    if digest.is_some_and(|d| registry::validate_digest(d).is_err()) {
        return skip(format!("image-digest {:?} is not a sha256 digest", digest.unwrap_or_default()));
    }
    Plan::Index(Target { repository, reference: reference.to_owned(), tag: tag.map(str::to_owned) })
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
            Plan::Skip { reason } => reason,
            Plan::Index(target) => panic!("expected a skip, got {target:?}"),
        }
    }

    fn target(plan: Plan) -> Target {
        match plan {
            Plan::Index(target) => target,
            Plan::Skip { reason } => panic!("expected an index, got a skip: {reason}"),
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
        let cases: Vec<(EcrEvent, &str)> = vec![
            (push(json!({"action-type": "DELETE"})), "action-type \"DELETE\", not PUSH"),
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
            assert!(why.ends_with(TAG_RULE), "{tag}: {why}");
        }
        // Checked before the own-output rules, which quote the tag.
        let own = push(json!({"image-tag": format!("{}-soci", "t".repeat(200))}));
        assert_eq!(reason(plan(&own, &v2)), format!("image-tag is 205 characters long: {TAG_RULE}"));
        // v1 fetches by digest when it has one.
        let v1 = config(&[("SOCI_INDEX_VERSION", "v1")]);
        assert!(matches!(plan(&push(json!({"image-tag": "-bad"})), &v1), Plan::Index(_)));
        let tag_only = push(json!({"image-tag": "-bad", "image-digest": null}));
        assert!(reason(plan(&tag_only, &v1)).starts_with("image-tag \"-bad\" is not a valid tag"));
    }
}
