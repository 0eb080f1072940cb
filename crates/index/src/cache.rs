//! zTOC reuse: a zTOC is a pure function of (layer bytes, span size, build-tool identifier, format), so a
//! layer indexed once never needs building again. The cache remembers where each zTOC was pushed; the
//! build phase asks it before streaming a layer. A cache can make indexing faster, never wrong and never
//! failed: any miss, stale entry or cache error falls back to building.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A boxed future, so caches can be trait objects (futures' own alias: the one every crate here uses).
pub use futures_util::future::BoxFuture;

/// The major version of this tool: zTOCs built by another major version are not reused.
pub const TOOL_MAJOR_VERSION: &str = env!("CARGO_PKG_VERSION_MAJOR");

/// What a zTOC is a function of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    /// The layer's digest (its bytes).
    pub layer_digest: String,
    /// The span size.
    pub span_size: u64,
    /// The build-tool identifier written into the zTOC.
    pub build_tool_identifier: String,
}

impl CacheKey {
    /// One string for the whole key, safe as a file name part or a database key: the format version and
    /// this tool's major version are part of it, the identifier is hashed.
    pub fn id(&self) -> String {
        format!(
            "ztoc/v{TOOL_MAJOR_VERSION}/{}/{}/{}/{}",
            ztoc::ZTOC_VERSION,
            self.span_size,
            ztoc::sha256_digest(self.build_tool_identifier.as_bytes()).trim_start_matches("sha256:"),
            self.layer_digest
        )
    }
}

/// Where a zTOC was pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedZtoc {
    /// The zTOC blob's digest.
    pub ztoc_digest: String,
    /// Its size in bytes.
    pub ztoc_size: u64,
    /// The registry host it was pushed to.
    pub registry: String,
    /// The repository it was pushed to.
    pub repository: String,
}

/// A cache backend failed (it is logged and ignored).
#[derive(Debug)]
pub struct CacheError(pub Box<dyn std::error::Error + Send + Sync>);

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zTOC cache: {}", self.0)
    }
}

impl std::error::Error for CacheError {}

/// Where zTOCs were pushed, by [`CacheKey::id`]: a directory for the CLI, a table for the Lambda.
pub trait ZtocCache: fmt::Debug + Send + Sync {
    /// The entry for `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedZtoc>, CacheError>>;
    /// Records (or overwrites) the entry for `key`.
    fn put<'a>(&'a self, key: &'a str, value: &'a CachedZtoc) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// How a reused zTOC came to be in the target repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReuseKind {
    /// It was there already.
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Copied from another repository (the registry does not mount).
    Copied,
}

impl fmt::Display for ReuseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReuseKind::Present => "present",
            ReuseKind::Mounted => "mounted",
            ReuseKind::Copied => "copied",
        })
    }
}
