//! What to make: the options of a run and the binding they imply.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::cache::ZtocCache;
use crate::error::Error;
use crate::oci::Platform;
use crate::soci::IndexVersion;

/// soci's default minimum compressed layer size: smaller layers are pulled whole.
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 << 20;
/// The default suffix of the v2 tag.
pub const DEFAULT_TAG_SUFFIX: &str = "-soci";
/// The largest zTOC built by default: a layer whose zTOC would be larger (a gzip bomb, millions of tiny
/// files) is left out. Two layers at once, each briefly held twice while encoded, fit a 1024 MB Lambda.
pub const DEFAULT_MAX_ZTOC_SIZE: u64 = 128 << 20;
/// The longest tag the distribution spec allows.
pub const MAX_TAG_LENGTH: usize = 128;
/// The most layers built at once that any caller may ask for.
pub const MAX_CONCURRENCY: usize = 256;

/// What to make.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// v2 (default) or v1.
    pub index_version: IndexVersion,
    /// Layers with a smaller compressed size are left out.
    pub min_layer_size: u64,
    /// zTOC span size.
    pub span_size: u64,
    /// Platforms to index; empty means every platform of the image (attestations excluded).
    pub platforms: Vec<Platform>,
    /// v2: the index is tagged `<tag><tag_suffix>`.
    pub tag_suffix: String,
    /// Written into zTOCs and SOCI indexes.
    pub build_tool_identifier: String,
    /// Layers built at once.
    pub concurrency: usize,
    /// Build slots shared with other runs (`sync` gives all its images one set, so that indexing several
    /// images at once overlaps their registry round trips, not their builds). `None`: `concurrency` slots
    /// of this run's own.
    pub build_slots: Option<BuildSlots>,
    /// Rebuild even if the image is already indexed.
    pub force: bool,
    /// A layer whose zTOC would grow past this many bytes is left out (unsupported), the rest indexed.
    pub max_ztoc_size: u64,
    /// Where zTOCs were pushed before, to reuse them (`None`: always build).
    pub ztoc_cache: Option<Arc<dyn ZtocCache>>,
}

impl CreateOptions {
    /// soci's defaults, one layer per core.
    pub fn new(build_tool_identifier: impl Into<String>) -> CreateOptions {
        CreateOptions {
            index_version: IndexVersion::V2,
            min_layer_size: DEFAULT_MIN_LAYER_SIZE,
            span_size: ztoc::DEFAULT_SPAN_SIZE,
            platforms: Vec::new(),
            tag_suffix: DEFAULT_TAG_SUFFIX.into(),
            build_tool_identifier: build_tool_identifier.into(),
            concurrency: default_concurrency(),
            build_slots: None,
            force: false,
            max_ztoc_size: DEFAULT_MAX_ZTOC_SIZE,
            ztoc_cache: None,
        }
    }

    /// The build slots this run takes from: the shared ones, else `concurrency` of its own.
    pub fn slots(&self) -> BuildSlots {
        self.build_slots.clone().unwrap_or_else(|| BuildSlots::new(self.concurrency))
    }

    /// How the index is bound to the image, given the image's tag (if it was named by one).
    pub fn binding(&self, tag: Option<&str>) -> Result<Binding, Error> {
        match (self.index_version, tag) {
            (IndexVersion::V2, Some(tag)) => {
                let soci_tag = format!("{tag}{}", self.tag_suffix);
                if soci_tag.len() > MAX_TAG_LENGTH {
                    return Err(Error::SociTagTooLong { tag: tag.into(), suffix: self.tag_suffix.clone() });
                }
                Ok(Binding::V2 { soci_tag, image_tag: tag.into() })
            }
            (IndexVersion::V2, None) => Err(Error::NeedsTag),
            (IndexVersion::V1, _) => Ok(Binding::V1),
        }
    }
}

/// Slots for layer builds: a run takes one per layer it builds, and every run holding a clone of the
/// same slots shares them.
#[derive(Clone, Debug)]
pub struct BuildSlots(Arc<Semaphore>);

impl BuildSlots {
    /// `slots` layers at once (at least one).
    pub fn new(slots: usize) -> BuildSlots {
        BuildSlots(Arc::new(Semaphore::new(slots.clamp(1, MAX_CONCURRENCY))))
    }

    /// The semaphore the build scheduler takes permits from.
    pub(crate) fn semaphore(&self) -> Arc<Semaphore> {
        self.0.clone()
    }
}

/// One layer per core: the builder is CPU-bound once the network keeps up.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).min(MAX_CONCURRENCY)
}

/// How a SOCI index is bound to its image, with what each way needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A new image index tagged `soci_tag` whose manifests carry their SOCI index (what Fargate reads).
    V2 {
        /// `<tag><suffix>`.
        soci_tag: String,
        /// `<tag>`: checked right before `soci_tag` moves, to still point at the indexed image.
        image_tag: String,
    },
    /// One SOCI index manifest per platform with `subject`, found through the referrers API or its
    /// fallback tag.
    V1,
}
