//! Why an event is skipped before any network call. [`SkipReason`]'s `Display` is the `reason` of the
//! function's log line, so each rule's wording lives here once and code and tests match on variants.

use std::fmt;

/// Why the plan (`plan.rs`) skips an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Not an ECR image, replication or pull through cache action.
    NotEcr {
        /// The event's `source`.
        source: String,
        /// The event's `detail-type`.
        detail_type: String,
    },
    /// The action did not succeed: `what` is e.g. `push result`, `result` what the event says instead.
    NotSuccess {
        /// The field, named for the log (`push result`, `pull through cache sync-status`).
        what: String,
        /// Its value.
        result: String,
    },
    /// A replication event for something other than `REPLICATE`.
    NotReplicate {
        /// The event's `action-type`.
        action_type: String,
    },
    /// An `ECR Image Action` that is not a push, delete or storage class change.
    UnknownAction {
        /// The event's `action-type`.
        action_type: String,
    },
    /// A storage class change to neither `ARCHIVE` nor `STANDARD`.
    UnknownStorageClass {
        /// The event's `target-storage-class` (empty when absent).
        class: String,
    },
    /// An image was archived: it cannot be pulled, and its SOCI index stays for the restore.
    Archived,
    /// The event names no repository (`repository-name`).
    NoRepositoryName,
    /// A lifecycle policy expiry names no repository (`repositoryName`).
    NoLifecycleRepositoryName,
    /// The event has neither a digest nor a tag.
    NoImage,
    /// The pushed manifest is a SOCI index: soci-indexer's own output.
    SociIndexArtifact {
        /// Its artifact type.
        artifact: String,
    },
    /// The manifest is neither an image manifest nor an image index.
    NotImageManifest {
        /// Its media type.
        media_type: String,
    },
    /// An image manifest whose config is not an image config: an artifact (a Helm chart, a signature).
    NotImageArtifact {
        /// Its artifact type.
        artifact: String,
    },
    /// The tag is longer than the grammar allows (named by its length only).
    TagTooLong {
        /// Its length in characters.
        length: usize,
    },
    /// The tag is off the tag grammar.
    InvalidTag {
        /// The tag.
        tag: String,
    },
    /// The tag ends with the SOCI tag suffix: soci-indexer's own output.
    OwnSuffix {
        /// The tag.
        tag: String,
        /// The suffix.
        suffix: String,
    },
    /// The tag is a referrers tag (`sha256-<hex>`): soci-indexer's own output.
    OwnReferrersTag {
        /// The tag.
        tag: String,
    },
    /// The filters select no tag of the repository (a delete or restore without a tag).
    RepositoryNotSelected {
        /// The repository.
        name: String,
    },
    /// The filters do not select `repository:tag`: their explanation.
    NotSelected(String),
    /// A v2 push without a tag: its index would have no name.
    Untagged,
    /// A restore event without a digest.
    RestoreWithoutDigest,
    /// The digest is not a sha256 digest.
    InvalidDigest {
        /// The digest.
        digest: String,
    },
    /// No registry host follows from the event's account and region: why.
    NoRegistry(String),
    /// The repository name is invalid.
    InvalidRepository {
        /// The name.
        name: String,
        /// Why.
        error: String,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotEcr { source, detail_type } => write!(
                f,
                "not an ECR image action, replication or pull through cache action (source {source:?}, \
                 detail-type {detail_type:?})"
            ),
            SkipReason::NotSuccess { what, result } => write!(f, "{what} {result:?}, not SUCCESS"),
            SkipReason::NotReplicate { action_type } => {
                write!(f, "replication action-type {action_type:?}, not REPLICATE")
            }
            SkipReason::UnknownAction { action_type } => {
                write!(f, "action-type {action_type:?}, not PUSH or DELETE")
            }
            SkipReason::UnknownStorageClass { class } => write!(
                f,
                "action-type \"UPDATE_STORAGE_CLASS\" with target-storage-class {class:?}, neither \
                 ARCHIVE nor STANDARD: not PUSH or DELETE either"
            ),
            SkipReason::Archived => f.write_str(
                "archived (target-storage-class ARCHIVE): ECR keeps the image but answers 404 to its pull \
                 until it is restored; nothing to index and nothing written (its SOCI index stays, for when \
                 it is restored)",
            ),
            SkipReason::NoRepositoryName => f.write_str("the event has no repository-name"),
            SkipReason::NoLifecycleRepositoryName => {
                f.write_str("the lifecycle policy event has no repositoryName")
            }
            SkipReason::NoImage => f.write_str("the event has neither image-digest nor image-tag"),
            SkipReason::SociIndexArtifact { artifact } => {
                write!(f, "a SOCI index manifest (artifact type {artifact}), not an image to index")
            }
            SkipReason::NotImageManifest { media_type } => {
                write!(f, "not an image: manifest media type {media_type}")
            }
            SkipReason::NotImageArtifact { artifact } => {
                write!(f, "not an image: an artifact of type {artifact}")
            }
            SkipReason::TagTooLong { length } => {
                write!(f, "image-tag is {length} characters long: {}", registry::TAG_RULE)
            }
            SkipReason::InvalidTag { tag } => {
                write!(f, "image-tag {tag:?} is not a valid tag: {}", registry::TAG_RULE)
            }
            SkipReason::OwnSuffix { tag, suffix } => {
                write!(f, "tag {tag:?} ends with the SOCI tag suffix {suffix:?}: soci-indexer's own output")
            }
            SkipReason::OwnReferrersTag { tag } => write!(
                f,
                "tag {tag:?} is a referrers tag-schema index (how v1 SOCI indexes are listed without a \
                 referrers API): soci-indexer's own output"
            ),
            SkipReason::RepositoryNotSelected { name } => {
                write!(f, "repository {name} matches no filter of SOCI_FILTERS")
            }
            SkipReason::NotSelected(why) | SkipReason::NoRegistry(why) => f.write_str(why),
            SkipReason::Untagged => f.write_str(
                "pushed without a tag: a v2 SOCI index is pushed as <tag><suffix>, so it needs a tag \
                 (SOCI_INDEX_VERSION=v1 indexes by digest)",
            ),
            SkipReason::RestoreWithoutDigest => {
                f.write_str("the restore event has no image-digest: its tags cannot be found")
            }
            SkipReason::InvalidDigest { digest } => {
                write!(f, "image-digest {digest:?} is not a sha256 digest")
            }
            SkipReason::InvalidRepository { name, error } => write!(f, "repository-name {name:?}: {error}"),
        }
    }
}

impl From<SkipReason> for String {
    fn from(reason: SkipReason) -> String {
        reason.to_string()
    }
}
