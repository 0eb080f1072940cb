//! What a run reports: per layer, per platform and overall, plus hooks to watch it happen.

use serde::Serialize;

use crate::reasons::{KeepReason, SkipReason, TagSkipReason, UnsupportedReason};
use crate::soci::{IndexVersion, ZtocEntry};

/// Hooks for progress display (CLI) or logs (Lambda). All methods default to doing nothing.
pub trait Observer: Send + Sync {
    /// A layer starts streaming.
    fn layer_started(&self, _digest: &str, _size: u64) {}
    /// `done` compressed bytes of the layer were processed.
    fn layer_progress(&self, _digest: &str, _done: u64) {}
    /// A layer is done (indexed, or left out).
    fn layer_finished(&self, _report: &LayerReport) {}
    /// `sync`: a tag is done (indexed, skipped, failed...).
    fn tag_finished(&self, _entry: &SyncEntry) {}
}

/// An observer that observes nothing.
pub struct Silent;
impl Observer for Silent {}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A SOCI index was built and pushed.
    Created,
    /// The image already has a SOCI index of the requested version; nothing was rebuilt.
    AlreadyIndexed,
    /// No layer is eligible; nothing was pushed.
    NothingToIndex,
    /// The image's tag moved to another image (or was deleted) while this one was indexed: its SOCI
    /// tag was left to the run for the newer image, not overwritten.
    Superseded,
}

/// What happened to one layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Layer digest.
    pub digest: String,
    /// Layer media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Indexed, or why not.
    #[serde(flatten)]
    pub result: LayerResult,
}

/// The result for one layer.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum LayerResult {
    /// A zTOC was built and pushed.
    Indexed {
        /// zTOC digest.
        ztoc_digest: String,
        /// zTOC size.
        ztoc_size: u64,
        /// Tar entries.
        entries: usize,
        /// Spans.
        spans: usize,
        /// Milliseconds to stream and build.
        duration_ms: u64,
    },
    /// A zTOC built before (for this layer, span size and build tool) was reused: no download.
    Reused {
        /// zTOC digest.
        ztoc_digest: String,
        /// zTOC size.
        ztoc_size: u64,
        /// How it got into this repository.
        how: crate::cache::ReuseKind,
        /// The repository the cache said it was pushed to.
        from_repository: String,
        /// Milliseconds to place it.
        duration_ms: u64,
    },
    /// Left out on purpose (size, media type).
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// Its content cannot be represented in a zTOC (e.g. a PAX global header); left out with a warning.
    Unsupported {
        /// Why.
        reason: UnsupportedReason,
    },
}

/// One platform of the image.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformReport {
    /// The platform as written in the image.
    pub platform: String,
    /// The image manifest digest.
    pub manifest_digest: String,
    /// v2: the digest of the re-serialized manifest in the new index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_manifest_digest: Option<String>,
    /// The SOCI index manifest, if this platform got one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soci_index_digest: Option<String>,
    /// Layer digests in manifest order.
    pub layers: Vec<String>,
}

/// Everything a run did, for `--json` and for logs.
#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The image reference as given (tag or digest).
    pub reference: String,
    /// Digest of the image manifest or index.
    pub image_digest: String,
    /// v1 or v2.
    pub index_version: IndexVersion,
    /// Platforms considered.
    pub platforms: Vec<PlatformReport>,
    /// Each distinct layer once.
    pub layers: Vec<LayerReport>,
    /// v2: the tag of the SOCI-enabled image index (`<tag><suffix>`): pushed by this run, or found
    /// there when already indexed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_tag: Option<String>,
    /// v2: the digest of that image index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_index_digest: Option<String>,
    /// v2: manifests of the index this run replaced (a re-pointed tag), removed after the new tag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// v2: why the replaced index stayed (another tag still points at it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeepReason>,
    /// Outcome `superseded`: what the image's tag points at now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Total milliseconds.
    pub duration_ms: u64,
}

impl CreateReport {
    /// How many layers got a zTOC built.
    pub fn layers_indexed(&self) -> usize {
        self.layers.iter().filter(|l| matches!(l.result, LayerResult::Indexed { .. })).count()
    }

    /// How many layers had their zTOC reused.
    pub fn layers_reused(&self) -> usize {
        self.layers.iter().filter(|l| matches!(l.result, LayerResult::Reused { .. })).count()
    }
}

/// How lazy-loadable an image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Every platform with eligible layers has its SOCI index, bound to this image.
    Indexed,
    /// No SOCI index for this image.
    NotIndexed,
    /// v2: `<tag><suffix>` exists but binds another image (the tag was re-pointed since).
    Stale,
    /// Some platforms with eligible layers have no SOCI index.
    Partial,
    /// A SOCI index is there but cannot work: it, or a zTOC it names, is gone, or it covers none of
    /// its platform's eligible layers. `create` and `sync` rebuild it.
    Broken,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Indexed => "indexed",
            State::NotIndexed => "not-indexed",
            State::Stale => "stale",
            State::Partial => "partial",
            State::Broken => "broken",
        })
    }
}

/// What happened to one tag.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum SyncAction {
    /// Indexed now.
    Indexed {
        /// The state before.
        was: State,
        /// Layers built.
        layers_indexed: usize,
        /// Layers whose zTOC was reused.
        layers_reused: usize,
    },
    /// Dry run: would be indexed.
    WouldIndex {
        /// The state now.
        state: State,
    },
    /// Already indexed: nothing built.
    AlreadyIndexed,
    /// Not for indexing (SOCI output, no filter matches, not an image, nothing eligible).
    Skipped {
        /// Why.
        reason: TagSkipReason,
    },
    /// Indexing failed.
    Failed {
        /// The error, with its causes.
        error: String,
    },
}

/// One tag and what happened to it.
#[derive(Clone, Debug, Serialize)]
pub struct SyncEntry {
    /// The tag.
    pub tag: String,
    /// What happened.
    #[serde(flatten)]
    pub action: SyncAction,
}

/// One layer's result: its report, and its zTOC when one was pushed.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    /// What happened.
    pub report: LayerReport,
    /// The zTOC as the SOCI index lists it (`None`: left out).
    pub ztoc: Option<ZtocEntry>,
}
