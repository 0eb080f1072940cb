//! The engine's errors. Each level says what it was doing; the cause is its `source()`, so a chain
//! printer (anyhow's `{:#}`, or [`chain`]) shows every level once.

use crate::registry::SourceError;

/// Why an index could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry operation failed.
    #[error("{action}")]
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
    /// An image index whose entries are image indexes themselves.
    #[error(
        "{reference} is an image index that nests another index ({nested}) and lists no image manifest: \
         nested indexes are not supported; index the inner index by its digest"
    )]
    NestedIndex {
        /// The tag or digest.
        reference: String,
        /// The first nested index.
        nested: String,
    },
    /// An image index that lists no image manifest at all.
    #[error("{reference} is an image index that lists no image manifest (only attestations, or nothing)")]
    NoImageManifest {
        /// The tag or digest.
        reference: String,
    },
    /// A manifest cannot be parsed.
    #[error("manifest {digest} is not valid JSON for its type")]
    BadManifest {
        /// Its digest.
        digest: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest declares a size that cannot be right.
    #[error("manifest {digest} declares an impossible {what} size ({size} bytes)")]
    BadSize {
        /// The manifest's digest.
        digest: String,
        /// What the size is of.
        what: &'static str,
        /// The size declared.
        size: i64,
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
    /// `<tag><suffix>` would be longer than a tag may be.
    #[error(
        "the v2 SOCI index tag {tag}{suffix} would be longer than 128 characters: use a shorter tag or \
         --tag-suffix (or --index-version v1)"
    )]
    SociTagTooLong {
        /// The image's tag.
        tag: String,
        /// The suffix.
        suffix: String,
    },
    /// A layer could not be indexed for a reason other than its content being unsupported.
    #[error("layer {digest}")]
    Layer {
        /// The layer digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: LayerError,
    },
    /// The registry does not allow deleting manifests.
    #[error(
        "the registry refused to delete {digest} ({tag}): deletion is disabled or unsupported there \
         ({removed} manifest(s) of it removed before; enable deletes, e.g. distribution's storage.delete)"
    )]
    DeletionRefused {
        /// The orphan's tag.
        tag: String,
        /// The manifest refused.
        digest: String,
        /// How many of the orphan's manifests were deleted before.
        removed: usize,
    },
    /// `<tag><suffix>` holds something that is not SOCI output (a user's own tag): never moved.
    #[error(
        "{tag} holds {digest}, which is not a SOCI index made by soci-indexer (a tag of its own): it is \
         not moved; choose another suffix for the SOCI tag (--tag-suffix, SOCI_TAG_SUFFIX), or retag that image"
    )]
    SociTagTaken {
        /// The tag.
        tag: String,
        /// What it holds.
        digest: String,
    },
    /// Other writers kept replacing the v1 fallback tag.
    #[error("referrers tag {tag}: other writers replaced it {attempts} times in a row; try again")]
    FallbackContended {
        /// The `sha256-<hex>` tag.
        tag: String,
        /// Attempts made.
        attempts: usize,
    },
}

/// What went wrong with one layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The blob could not be read whole, or did not match its digest.
    #[error("downloading the layer")]
    Download(#[source] SourceError),
    /// The layer's bytes are not a valid gzip or tar stream.
    #[error("building its zTOC")]
    Build(#[source] ztoc::Error),
    /// The zTOC could not be pushed.
    #[error("pushing its zTOC {digest}")]
    Push {
        /// The zTOC digest.
        digest: String,
        /// The registry's error.
        #[source]
        source: SourceError,
    },
    /// The build task died (a bug): reported, never propagated as a panic.
    #[error("the zTOC build crashed: {0}")]
    Crashed(String),
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
                | Error::SociTagTooLong { .. }
                | Error::SociTagTaken { .. }
                | Error::ImageNotFound { .. }
                | Error::NestedIndex { .. }
                | Error::NoImageManifest { .. }
        )
    }

    /// Whether trying again later may succeed (a registry or network hiccup, not bad input).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Registry { source, .. }
            | Error::Layer {
                source: LayerError::Download(source) | LayerError::Push { source, .. }, ..
            } => source.retryable,
            Error::FallbackContended { .. } => true,
            _ => false,
        }
    }

    /// The registry failure behind this error, if it is one.
    pub fn registry_source(&self) -> Option<&SourceError> {
        match self {
            Error::Registry { source, .. }
            | Error::Layer {
                source: LayerError::Download(source) | LayerError::Push { source, .. }, ..
            } => Some(source),
            _ => None,
        }
    }
}

/// Wraps a registry failure with what was being done.
pub(crate) fn registry_error(action: impl Into<String>) -> impl FnOnce(SourceError) -> Error {
    move |source| Error::Registry { action: action.into(), source }
}

/// An error and its causes on one line, `outer: inner: innermost`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = vec![error];
    while let Some(cause) = causes.last().and_then(|e| e.source()) {
        causes.push(cause);
    }
    chain_of(&causes)
}

/// Messages joined with `: `, each once: many errors repeat their cause's message in their own (a
/// client error that names its request, then the transport error it wraps), and a cause already said
/// is not said again.
pub fn chain_of(causes: &[&(dyn std::error::Error + 'static)]) -> String {
    let mut text = String::new();
    for cause in causes {
        let message = cause.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
