//! The crate's error type.

use crate::registry::SourceError;

/// Why an index could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry operation failed.
    #[error("{action}: {source}")]
    Registry {
        /// What was being done, e.g. "fetching manifest sha256:...".
        action: String,
        /// The registry's error.
        #[source]
        source: SourceError,
    },
    /// The reference names nothing.
    #[error("image {reference} not found: check the repository and tag")]
    ImageNotFound {
        /// The tag or digest.
        reference: String,
    },
    /// The reference names something that is not an image.
    #[error("{reference} is a {media_type}, not an image manifest or index")]
    NotAnImage {
        /// The tag or digest.
        reference: String,
        /// What it is.
        media_type: String,
    },
    /// The reference is soci's own output (loop guard: never index an index).
    #[error("{reference} is {what}, not an image to index")]
    SociArtifact {
        /// The tag or digest.
        reference: String,
        /// What it is.
        what: &'static str,
    },
    /// A manifest cannot be parsed.
    #[error("manifest {digest} is not valid JSON for its type: {source}")]
    BadManifest {
        /// Its digest.
        digest: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `--platform` matched nothing.
    #[error("the image has no manifest for platform {platform} (it has: {available})")]
    PlatformNotFound {
        /// What was asked for.
        platform: String,
        /// What the image has.
        available: String,
    },
    /// v2 names its index with `<tag><suffix>`, so it needs a tag.
    #[error(
        "a v2 SOCI index is pushed as <tag><suffix>: give the image as NAME:TAG (or use --index-version v1)"
    )]
    NeedsTag,
    /// A layer could not be indexed for a reason other than its content being unsupported.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer digest.
        digest: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether the input itself rules out an index (not an image, soci's own output, no such platform,
    /// no tag for v2): retrying cannot help, and an event-driven caller should skip with this reason.
    pub fn is_unindexable_input(&self) -> bool {
        matches!(
            self,
            Error::NotAnImage { .. }
                | Error::SociArtifact { .. }
                | Error::PlatformNotFound { .. }
                | Error::NeedsTag
                | Error::ImageNotFound { .. }
        )
    }

    /// Whether trying again later may succeed (a registry or network hiccup, not bad input).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Registry { source, .. } => source.retryable,
            Error::Layer { source, .. } => source.downcast_ref::<SourceError>().is_some_and(|e| e.retryable),
            _ => false,
        }
    }
}
