//! The registry of one ECR repository: the registry API client for everything, plus ECR's own API for
//! what the registry API cannot do well. `DescribeImages` tells every tag, its digest and media type in
//! a page of up to 1,000 images (instead of a `HEAD` per tag), and which images are archived (ECR's
//! archive storage class: kept and described, but a pull answers 404), which `sync` skips.
//! `BatchDeleteImage` by `imageTag` removes one tag and leaves its manifest and other tags (the registry
//! API's only `DELETE` is by digest, which removes every tag). Deletions use them to remove
//! soci-indexer's own tag when a user's tag shares the index (see `index`'s ownership rules).
//!
//! With `SOCI_REGISTRY_URL` (a local stand-in), the registry is not ECR: the registry API alone is used.

use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ecr::types::{
    DescribeImagesFilter, ImageDetail, ImageIdentifier, ImageStatus, ImageStatusFilter, TagStatus,
};
use bytes::Bytes;
use index::oci::Descriptor;
use index::{BlobStream, Deletion, FetchedManifest, Location, PushedManifest, SourceError, SourceErrorKind};
use index::{Registry, TagTarget};

use app::{HttpRegistries, Registries, RepositoryClient};
use registry::Repository;

/// Images per `DescribeImages` page (ECR's maximum).
const PAGE_SIZE: i32 = 1000;

/// The registries of the function: ECR's API beside the registry client when `ecr` is set.
#[derive(Clone, Debug)]
pub struct EcrRegistries {
    http: HttpRegistries,
    ecr: Option<aws_sdk_ecr::Client>,
}

impl EcrRegistries {
    /// `ecr`: `None` when the registry is not ECR (a local stand-in).
    pub fn new(http: HttpRegistries, ecr: Option<aws_sdk_ecr::Client>) -> EcrRegistries {
        EcrRegistries { http, ecr }
    }
}

impl Registries for EcrRegistries {
    type Registry = EcrRepository;

    fn open(&self, repository: &Repository) -> EcrRepository {
        EcrRepository::new(self.http.open(repository), self.ecr.clone())
    }

    fn open_for(&self, repository: &Repository, run: app::Run) -> EcrRepository {
        EcrRepository::new(self.http.open_for(repository, run), self.ecr.clone())
    }

    fn throttled_requests(&self) -> u64 {
        self.http.throttled_requests()
    }
}

/// One repository: the registry client, and ECR's API when it is ECR.
#[derive(Clone, Debug)]
pub struct EcrRepository {
    http: RepositoryClient,
    ecr: Option<aws_sdk_ecr::Client>,
}

impl EcrRepository {
    /// Wraps the registry client of one repository.
    pub fn new(http: RepositoryClient, ecr: Option<aws_sdk_ecr::Client>) -> EcrRepository {
        EcrRepository { http, ecr }
    }

    /// The account that owns the repository: the first label of `<account>.dkr.ecr.<region>.amazonaws.com`.
    fn registry_id(&self) -> Option<String> {
        let host = self.http.repository().registry();
        let account = host.split('.').next()?;
        (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
    }

    fn name(&self) -> &str {
        self.http.repository().name()
    }

    /// Every tagged image, archived ones included: `DescribeImages` lists only `ACTIVE` images unless
    /// asked for `ANY`, and an archived image still holds its tags (its SOCI index must not look
    /// orphaned to a prune).
    async fn describe_tagged(&self, ecr: &aws_sdk_ecr::Client) -> Result<Vec<ImageDetail>, SourceError> {
        self.describe(ecr, TagStatus::Tagged).await
    }

    /// Every image with `tag_status`, whatever its storage class.
    async fn describe(
        &self,
        ecr: &aws_sdk_ecr::Client,
        tag_status: TagStatus,
    ) -> Result<Vec<ImageDetail>, SourceError> {
        let filter = DescribeImagesFilter::builder()
            .tag_status(tag_status)
            .image_status(ImageStatusFilter::Any)
            .build();
        let mut pages = ecr
            .describe_images()
            .set_registry_id(self.registry_id())
            .repository_name(self.name())
            .filter(filter)
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut images = Vec::new();
        while let Some(page) = pages.next().await {
            images.extend(page.map_err(sdk_error)?.image_details().iter().cloned());
        }
        Ok(images)
    }
}

/// Every tag of `images` and the digest it names.
fn targets(images: &[ImageDetail]) -> Vec<TagTarget> {
    let mut targets = Vec::new();
    for image in images {
        let Some(digest) = image.image_digest() else { continue };
        for tag in image.image_tags() {
            targets.push(TagTarget {
                tag: tag.clone(),
                digest: digest.to_owned(),
                media_type: image.image_manifest_media_type().map(str::to_owned),
            });
        }
    }
    targets
}

/// The digests of the untagged `images` pushed before `cutoff` (seconds since the epoch). (The listing
/// asks for untagged images only; the tags are checked again, as stand-ins may ignore the filter.)
pub fn pushed_before(images: &[ImageDetail], cutoff: i64) -> Vec<String> {
    images
        .iter()
        .filter(|image| image.image_tags().is_empty())
        .filter(|image| image.image_pushed_at().is_some_and(|at| at.secs() < cutoff))
        .filter_map(|image| image.image_digest().map(str::to_owned))
        .collect()
}

/// The tags of images ECR does not serve: `ARCHIVED`, or `ACTIVATING` (being restored). An image
/// without a status (older APIs, stand-ins) is active.
pub fn archived_tags(images: &[ImageDetail]) -> Vec<String> {
    images
        .iter()
        .filter(|image| image.image_status().is_some_and(|status| *status != ImageStatus::Active))
        .flat_map(|image| image.image_tags().iter().cloned())
        .collect()
}

/// An ECR API error as the engine's registry error.
fn sdk_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    error: aws_sdk_ecr::error::SdkError<E>,
) -> SourceError {
    let code = error.code().unwrap_or_default().to_owned();
    let (kind, retryable) = match code.as_str() {
        "RepositoryNotFoundException" | "ImageNotFoundException" => (SourceErrorKind::NotFound, false),
        "AccessDeniedException" => (SourceErrorKind::Denied, false),
        "ThrottlingException" | "ServerException" => (SourceErrorKind::Other, true),
        _ => (SourceErrorKind::Other, matches!(error, aws_sdk_ecr::error::SdkError::DispatchFailure(_))),
    };
    SourceError::new(kind, retryable, DisplayErrorContext(error).to_string())
}

impl Registry for EcrRepository {
    fn location(&self) -> Location {
        self.http.location()
    }

    async fn list_tags(&self) -> Result<Vec<String>, SourceError> {
        self.http.list_tags().await
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, SourceError> {
        self.http.blob_exists(digest).await
    }

    async fn mount_blob(&self, digest: &str, from_repository: &str) -> Result<bool, SourceError> {
        self.http.mount_blob(digest, from_repository).await
    }

    async fn get_blob_from(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<BlobStream, SourceError> {
        self.http.get_blob_from(repository, descriptor).await
    }

    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        self.http.get_manifest(reference).await
    }

    async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, SourceError> {
        self.http.get_blob(descriptor).await
    }

    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        self.http.get_blob_bytes(descriptor).await
    }

    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        self.http.push_blob(digest, bytes).await
    }

    async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest, SourceError> {
        self.http.push_manifest(reference, media_type, bytes).await
    }

    async fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Vec<Descriptor>>, SourceError> {
        self.http.referrers(digest, artifact_type).await
    }

    async fn delete_manifest(&self, digest: &str) -> Result<Deletion, SourceError> {
        self.http.delete_manifest(digest).await
    }

    async fn resolve_tag(&self, tag: &str) -> Result<Option<TagTarget>, SourceError> {
        self.http.resolve_tag(tag).await
    }

    fn can_untag(&self) -> bool {
        self.ecr.is_some()
    }

    async fn untag(&self, tag: &str) -> Result<bool, SourceError> {
        let Some(ecr) = &self.ecr else { return Ok(false) };
        let id = ImageIdentifier::builder().image_tag(tag).build();
        let answer = ecr
            .batch_delete_image()
            .set_registry_id(self.registry_id())
            .repository_name(self.name())
            .image_ids(id)
            .send()
            .await
            .map_err(sdk_error)?;
        match answer.failures().first() {
            None => Ok(true),
            // Gone already: what the caller wanted.
            Some(failure) if failure.failure_code().is_some_and(|c| c.as_str() == "ImageNotFound") => {
                Ok(true)
            }
            Some(failure) => Err(SourceError::new(
                SourceErrorKind::Other,
                false,
                format!(
                    "BatchDeleteImage {tag}: {} ({})",
                    failure.failure_reason().unwrap_or("no reason given"),
                    failure.failure_code().map(|c| c.as_str()).unwrap_or("no code")
                ),
            )),
        }
    }

    async fn tag_targets(&self) -> Result<Vec<TagTarget>, SourceError> {
        match &self.ecr {
            Some(ecr) => Ok(targets(&self.describe_tagged(ecr).await?)),
            None => index::tag_targets_by_head(self).await,
        }
    }

    async fn archived_tags(&self) -> Result<Vec<String>, SourceError> {
        match &self.ecr {
            Some(ecr) => Ok(archived_tags(&self.describe_tagged(ecr).await?)),
            None => Ok(Vec::new()),
        }
    }

    async fn untagged_manifests(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Option<Vec<String>>, SourceError> {
        let Some(ecr) = &self.ecr else { return Ok(None) };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let cutoff = now.saturating_sub(older_than).as_secs() as i64;
        Ok(Some(pushed_before(&self.describe(ecr, TagStatus::Untagged).await?, cutoff)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &str, tags: &[&str], status: Option<ImageStatus>) -> ImageDetail {
        let mut builder = ImageDetail::builder().image_digest(digest).set_image_status(status);
        for tag in tags {
            builder = builder.image_tags(*tag);
        }
        builder.build()
    }

    #[test]
    fn archived_and_activating_images_are_not_served_but_keep_their_tags() {
        let images = [
            image("sha256:a", &["1.0", "1.0-soci"], Some(ImageStatus::Active)),
            image("sha256:b", &["0.9"], Some(ImageStatus::Archived)),
            image("sha256:c", &["0.8"], Some(ImageStatus::Activating)),
            image("sha256:d", &["0.7"], None),
        ];
        assert_eq!(archived_tags(&images), ["0.9", "0.8"]);
        let tags: Vec<String> = targets(&images).into_iter().map(|t| t.tag).collect();
        assert_eq!(tags, ["1.0", "1.0-soci", "0.9", "0.8", "0.7"], "archived images still hold their tags");
    }
}
