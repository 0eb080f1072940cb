//! The HTTP client as the engine's registry: [`RepositoryClient`] implements [`index::Registry`] for
//! one repository, mapping the client's errors to the engine's kinds.

use bytes::Bytes;
use futures_util::StreamExt;
use index::oci::Descriptor;
use index::{BlobStream, FetchedManifest, PushedManifest, SourceError, SourceErrorKind};

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
        registry::Error::DigestMismatch { .. } | registry::Error::SizeMismatch { .. } => {
            SourceErrorKind::Corrupt
        }
        _ => SourceErrorKind::Other,
    };
    let retryable = error.is_retryable();
    SourceError::new(kind, retryable, error)
}

impl index::Registry for RepositoryClient {
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
        let Some(bytes) = self
            .client
            .referrers(&self.repository, digest, Some(artifact_type))
            .await
            .map_err(source_error)?
        else {
            return Ok(None);
        };
        let index: index::oci::Index = serde_json::from_slice(&bytes)
            .map_err(|e| SourceError::new(SourceErrorKind::Other, false, format!("referrers answer: {e}")))?;
        // The registry may ignore the filter: filter again.
        Ok(Some(index.manifests().iter().filter(|d| d.artifact_type == artifact_type).cloned().collect()))
    }

    async fn delete_manifest(&self, digest: &str) -> Result<bool, SourceError> {
        self.client.delete_manifest(&self.repository, digest).await.map_err(source_error)
    }
}
