//! The HTTP client as the engine's registry: [`RepositoryClient`] implements [`index::Registry`] for
//! one repository, mapping the client's errors to the engine's kinds.

use bytes::Bytes;
use futures_util::StreamExt;
use index::oci::Descriptor;
use index::{
    BlobStream, Deletion, FetchedManifest, Location, PushedManifest, SourceError, SourceErrorKind, TagTarget,
};

use registry::{Client, Repository};

/// The registry client bound to one repository.
#[derive(Clone, Debug)]
pub struct RepositoryClient {
    client: Client,
    repository: Repository,
}

impl RepositoryClient {
    /// Binds `client` to `repository`.
    pub fn new(client: Client, repository: Repository) -> RepositoryClient {
        RepositoryClient { client, repository }
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Maps a registry error to the pipeline's error kinds.
pub fn source_error(error: registry::Error) -> SourceError {
    let kind = match &error {
        registry::Error::NotFound { .. } => SourceErrorKind::NotFound,
        registry::Error::Unauthorized { .. } => SourceErrorKind::Unauthorized,
        registry::Error::Denied { .. } => SourceErrorKind::Denied,
        registry::Error::TagImmutable { .. } => SourceErrorKind::TagImmutable,
        registry::Error::DigestMismatch { .. } | registry::Error::SizeMismatch { .. } => {
            SourceErrorKind::Corrupt
        }
        _ => SourceErrorKind::Other,
    };
    let retryable = error.is_retryable();
    SourceError::new(kind, retryable, error)
}

/// The engine's descriptor of a referrer.
fn referrer_descriptor(referrer: registry::Referrer) -> Result<Descriptor, SourceError> {
    let size = i64::try_from(referrer.size).map_err(|_| {
        let message = format!("referrer {} has an impossible size {}", referrer.digest, referrer.size);
        SourceError::new(SourceErrorKind::Other, false, message)
    })?;
    Ok(Descriptor {
        media_type: referrer.media_type,
        digest: referrer.digest,
        size,
        annotations: (!referrer.annotations.is_empty()).then_some(referrer.annotations),
        artifact_type: referrer.artifact_type.unwrap_or_default(),
        ..Descriptor::default()
    })
}

impl index::Registry for RepositoryClient {
    fn location(&self) -> Location {
        Location {
            registry: self.repository.registry().to_owned(),
            repository: self.repository.name().to_owned(),
        }
    }

    async fn list_tags(&self) -> Result<Vec<String>, SourceError> {
        self.client.list_tags(&self.repository).await.map_err(source_error)
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, SourceError> {
        self.client.blob_exists(&self.repository, digest).await.map_err(source_error)
    }

    async fn mount_blob(&self, digest: &str, from_repository: &str) -> Result<bool, SourceError> {
        self.client.mount_blob(&self.repository, digest, from_repository).await.map_err(source_error)
    }

    async fn get_blob_from(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<BlobStream, SourceError> {
        let other = Repository::new(self.repository.registry(), repository).map_err(source_error)?;
        RepositoryClient::new(self.client.clone(), other).get_blob(descriptor).await
    }

    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        match self.client.get_manifest(&self.repository, reference).await {
            Ok(m) => Ok(Some(FetchedManifest { media_type: m.media_type, digest: m.digest, bytes: m.bytes })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(source_error(e)),
        }
    }

    async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, SourceError> {
        let size = u64::try_from(descriptor.size).ok();
        let stream =
            self.client.get_blob(&self.repository, &descriptor.digest, size).await.map_err(source_error)?;
        Ok(Box::pin(stream.map(|item| item.map_err(source_error))))
    }

    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        let mut stream = self.get_blob(descriptor).await?;
        let mut bytes = Vec::with_capacity(descriptor.size.clamp(0, 1 << 20) as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(bytes))
    }

    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        self.client.push_blob(&self.repository, digest, bytes).await.map(|_| ()).map_err(source_error)
    }

    async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest, SourceError> {
        let pushed = self
            .client
            .put_manifest(&self.repository, reference, media_type, bytes)
            .await
            .map_err(source_error)?;
        Ok(PushedManifest { digest: pushed.digest, oci_subject: pushed.oci_subject })
    }

    async fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Vec<Descriptor>>, SourceError> {
        let Some(referrers) = self
            .client
            .referrers(&self.repository, digest, Some(artifact_type))
            .await
            .map_err(source_error)?
        else {
            return Ok(None);
        };
        // The registry may ignore the filter: filter again.
        let wanted = referrers.into_iter().filter(|r| r.artifact_type.as_deref() == Some(artifact_type));
        wanted.map(referrer_descriptor).collect::<Result<_, _>>().map(Some)
    }

    async fn delete_manifest(&self, digest: &str) -> Result<Deletion, SourceError> {
        let deletion = self.client.delete_manifest(&self.repository, digest).await.map_err(source_error)?;
        Ok(match deletion {
            registry::Deletion::Deleted => Deletion::Deleted,
            registry::Deletion::AlreadyGone => Deletion::AlreadyGone,
            registry::Deletion::Refused => Deletion::Refused,
        })
    }

    async fn resolve_tag(&self, tag: &str) -> Result<Option<TagTarget>, SourceError> {
        let head = self.client.head_manifest(&self.repository, tag).await.map_err(source_error)?;
        Ok(head.map(|info| TagTarget {
            tag: tag.to_owned(),
            digest: info.digest,
            media_type: (!info.media_type.is_empty()).then_some(info.media_type),
        }))
    }
}
