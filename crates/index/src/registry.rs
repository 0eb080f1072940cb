//! What the pipeline needs from a registry, as a trait: the CLI and the Lambda plug in the HTTP
//! client, tests can plug in anything. All operations are scoped to the image's repository.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::oci::Descriptor;

/// A blob's bytes as they arrive. The source verifies the digest: a mismatch is the stream's last item.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, SourceError>> + Send>>;

/// A manifest or index as fetched: its media type, digest and exact bytes.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// Media type (from the response, else from the body).
    pub media_type: String,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The exact bytes.
    pub bytes: Bytes,
}

/// The registry's answer to a manifest push.
#[derive(Clone, Debug, Default)]
pub struct PushedManifest {
    /// Digest of the pushed manifest.
    pub digest: String,
    /// The `OCI-Subject` header: set by registries that index referrers themselves.
    pub oci_subject: Option<String>,
}

/// Broad kinds of registry failures, for the pipeline's decisions and the caller's exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The manifest, blob or repository does not exist.
    NotFound,
    /// Authentication failed.
    Unauthorized,
    /// Authenticated but not allowed.
    Denied,
    /// Content did not match its digest or size.
    Corrupt,
    /// The tag exists and the repository does not let tags move (immutable tags).
    TagImmutable,
    /// Anything else (network, server errors after retries, protocol errors).
    Other,
}

/// A registry failure, with its cause kept for the error chain.
#[derive(Debug)]
pub struct SourceError {
    /// What kind of failure.
    pub kind: SourceErrorKind,
    /// Whether trying again later may succeed.
    pub retryable: bool,
    /// The underlying error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SourceError {
    /// Wraps an error.
    pub fn new(
        kind: SourceErrorKind,
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> SourceError {
        SourceError { kind, retryable, source: source.into() }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// What a manifest DELETE did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Deleted now.
    Deleted,
    /// Not there (404): deleted before, by another run or another deletion event. Not a failure.
    AlreadyGone,
    /// The registry does not allow deleting manifests.
    Refused,
}

/// What a tag points at now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagTarget {
    /// The tag.
    pub tag: String,
    /// The digest of the manifest or index it points at.
    pub digest: String,
    /// Its media type, when the registry says (an image index may be SOCI output; a manifest is not).
    pub media_type: Option<String>,
}

/// Tags looked up at once by the default [`Registry::tag_targets`].
const TAG_LOOKUPS_IN_FLIGHT: usize = 8;

/// Where a registry handle points.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The registry host (`host[:port]`).
    pub registry: String,
    /// The repository name.
    pub repository: String,
}

/// The registry operations the pipeline uses, on one repository.
pub trait Registry: Send + Sync + 'static {
    /// The registry and repository this handle works on.
    fn location(&self) -> Location;

    /// Every tag of the repository.
    fn list_tags(&self) -> impl Future<Output = Result<Vec<String>, SourceError>> + Send;

    /// Whether the repository has the blob `digest`.
    fn blob_exists(&self, digest: &str) -> impl Future<Output = Result<bool, SourceError>> + Send;

    /// Mounts the blob `digest` from `from_repository` of the same registry; `Ok(false)` when the
    /// registry does not mount (or does not have it there), so the caller copies instead.
    fn mount_blob(
        &self,
        digest: &str,
        from_repository: &str,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send;

    /// Streams a blob of another repository of the same registry, verified as [`Registry::get_blob`].
    fn get_blob_from(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> impl Future<Output = Result<BlobStream, SourceError>> + Send;

    /// Fetches a manifest or index by tag or digest; `Ok(None)` if it does not exist.
    fn get_manifest(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<FetchedManifest>, SourceError>> + Send;

    /// Streams a blob, verified against `descriptor.digest` and `size`.
    fn get_blob(
        &self,
        descriptor: &Descriptor,
    ) -> impl Future<Output = Result<BlobStream, SourceError>> + Send;

    /// Fetches a small blob whole (an image config).
    fn get_blob_bytes(
        &self,
        descriptor: &Descriptor,
    ) -> impl Future<Output = Result<Bytes, SourceError>> + Send;

    /// Uploads a blob unless it exists.
    fn push_blob(&self, digest: &str, bytes: Bytes) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Pushes a manifest by tag or digest.
    fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<PushedManifest, SourceError>> + Send;

    /// The referrers of `digest` with `artifact_type`, or `Ok(None)` if the registry has no referrers API.
    fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> impl Future<Output = Result<Option<Vec<Descriptor>>, SourceError>> + Send;

    /// Deletes a manifest by digest. This removes every tag that points at it (distribution and ECR
    /// alike): the caller must know those tags first ([`Registry::tag_targets`]).
    fn delete_manifest(&self, digest: &str) -> impl Future<Output = Result<Deletion, SourceError>> + Send;

    /// What `tag` points at now (a `HEAD`), or `None` if there is no such tag.
    fn resolve_tag(&self, tag: &str) -> impl Future<Output = Result<Option<TagTarget>, SourceError>> + Send;

    /// Whether [`Registry::untag`] can remove one tag and leave its manifest and other tags (ECR's
    /// `BatchDeleteImage` by tag can; the registry API cannot: its only DELETE is by digest).
    fn can_untag(&self) -> bool {
        false
    }

    /// Removes the tag only; `Ok(false)` when this registry cannot (see [`Registry::can_untag`]).
    fn untag(&self, tag: &str) -> impl Future<Output = Result<bool, SourceError>> + Send {
        let _ = tag;
        async { Ok(false) }
    }

    /// Every tag and what it points at now. By default [`tag_targets_by_head`]; a registry with a
    /// listing that tells both at once (ECR's `DescribeImages`) overrides it.
    fn tag_targets(&self) -> impl Future<Output = Result<Vec<TagTarget>, SourceError>> + Send {
        tag_targets_by_head(self)
    }

    /// Tags whose image the registry keeps but does not serve until it is restored (ECR's archive
    /// storage class: a pull answers 404, `DescribeImages` says `ARCHIVED` or `ACTIVATING`). None by
    /// default: the registry API has no such state.
    fn archived_tags(&self) -> impl Future<Output = Result<Vec<String>, SourceError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The digests of the manifests no tag points at that were pushed more than `older_than` ago, or
    /// `None` when the registry cannot list them (the registry API cannot; ECR's `DescribeImages` with
    /// `tagStatus` `UNTAGGED` can).
    fn untagged_manifests(
        &self,
        older_than: std::time::Duration,
    ) -> impl Future<Output = Result<Option<Vec<String>>, SourceError>> + Send {
        let _ = older_than;
        async { Ok(None) }
    }
}

/// Every tag and what it points at now, through the registry API: the tag list, then a `HEAD` of each
/// (a few at once). A tag deleted between the two is left out.
pub async fn tag_targets_by_head<R: Registry + ?Sized>(registry: &R) -> Result<Vec<TagTarget>, SourceError> {
    use futures_util::StreamExt;
    let tags = registry.list_tags().await?;
    let lookups = tags.into_iter().map(|tag| async move { registry.resolve_tag(&tag).await });
    let found: Vec<Result<Option<TagTarget>, SourceError>> =
        futures_util::stream::iter(lookups).buffered(TAG_LOOKUPS_IN_FLIGHT).collect().await;
    found.into_iter().filter_map(Result::transpose).collect()
}
