//! The SOCI engine: what SOCI indexes are, and the pipeline that makes them, over a [`Registry`] trait
//! (it knows nothing of HTTP).
//!
//! The pipeline, [`create()`], runs named phases (private modules; this list is their map):
//! 1. `resolve`: fetch the image (manifest or index), refuse non-images and SOCI output, read the
//!    manifests of the platforms to index;
//! 2. `status`: stop if the image already has the index a run would make (also [`status()`]);
//! 3. `select`: which layers get a zTOC (typed [`SkipReason`]s for the others);
//! 4. `build`: reuse a layer's zTOC when the [`cache`] knows one and the registry confirms it
//!    (`reuse`), else stream the layer through the zTOC builder, largest first, and push its zTOC;
//! 5. `publish`: the SOCI index manifests, then the [`Binding`] (v2 `<tag><suffix>`, or v1 referrers,
//!    `fallback`).
//!
//! Lifecycle verbs sit beside `create`: [`status()`] (readiness), [`sync`] (index every tag of a
//! repository that needs it) and [`prune`] (remove SOCI output whose image is gone). What any of them
//! may delete is decided in one place, `ownership` (see `docs/deletion.md`).
//!
//! The formats: [`oci`] and `json` (OCI/Docker manifests written byte for byte as Go writes them),
//! `soci` (the SOCI index manifest), `convert` (the v2 image index, as `soci convert` makes it).
//!
//! Module dependencies point one way: `reasons` (why something was not done: every such text, typed),
//! `report`, `cache`, `media`, `oci` and `registry` at the bottom,
//! then `resolve`, `select`, `fallback`, `ownership`; `build`, `status`, `publish`; `create`; `sync` and
//! `prune` on top.

mod build;
pub mod cache;
mod convert;
mod create;
mod error;
mod fallback;
mod json;
pub mod media;
pub mod oci;
mod options;
mod ownership;
pub mod prune;
mod publish;
mod reasons;
mod registry;
mod report;
mod resolve;
mod reuse;
mod select;
mod soci;
mod status;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;

pub use cache::{CacheKey, CachedZtoc, ReuseKind, ZtocCache};
pub use create::create;
pub use error::{chain, chain_of, Error, LayerError};
pub use options::{
    default_concurrency, Binding, BuildSlots, CreateOptions, DEFAULT_MAX_ZTOC_SIZE, DEFAULT_MIN_LAYER_SIZE,
    DEFAULT_TAG_SUFFIX, MAX_CONCURRENCY,
};
pub use reasons::{KeepReason, SkipReason, TagSkipReason, UnsupportedReason};
pub use registry::{
    tag_targets_by_head, BlobStream, Deletion, FetchedManifest, Location, PushedManifest, Registry,
    SourceError, SourceErrorKind, TagTarget,
};
pub use report::{CreateReport, LayerReport, LayerResult, Observer, Outcome, PlatformReport, Silent};
pub use soci::{IndexVersion, UnknownIndexVersion};
pub use status::{status, PlatformStatus, State, StatusReport};
