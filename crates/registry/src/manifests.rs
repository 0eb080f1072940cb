//! Manifest operations: get (exact bytes, digest-verified), `HEAD`, put and delete, and working out
//! the media type of what the registry served.

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tracing::{debug, warn};
use url::Url;

use crate::digest::{check_digest, is_digest, sha256_digest, validate_digest, validate_manifest_reference};
use crate::error::Resource;
use crate::pace::WriteKind;
use crate::response::read_body;
use crate::transport::{Access, Request};
use crate::{media_type, Client, Error, Repository};

/// Manifests and indexes larger than this are refused (distribution itself refuses above 4 MiB).
const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCI_SUBJECT: &str = "oci-subject";

/// A manifest or index as the registry serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// One of the four media types in [`media_type::MANIFEST_TYPES`].
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
    /// The exact bytes (the digest covers them; never re-serialise).
    pub bytes: Bytes,
}

/// What a `HEAD` of a manifest tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The `Content-Type` the registry reports.
    pub media_type: String,
    /// The manifest digest.
    pub digest: String,
    /// The manifest size in bytes.
    pub size: u64,
}

/// The outcome of [`Client::put_manifest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutManifest {
    /// `sha256:` of the pushed bytes.
    pub digest: String,
    /// The `OCI-Subject` response header: set when the registry indexed the manifest's `subject` for
    /// the referrers API, so no tag-schema fallback is needed.
    pub oci_subject: Option<String>,
}

/// What a manifest DELETE did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The registry deleted it.
    Deleted,
    /// The registry does not have it (404): deleted already, by someone else or an earlier run.
    AlreadyGone,
    /// The registry does not allow deleting manifests (405, e.g. distribution without
    /// `storage.delete`).
    Refused,
}

enum HeadManifest {
    Found(ManifestInfo),
    Missing,
    Incomplete,
}

impl Client {
    /// Fetches a manifest or index by tag or digest, keeping its exact bytes. Fetched by digest, the
    /// bytes are verified; by tag, the digest is computed from them.
    pub async fn get_manifest(&self, repo: &Repository, reference: &str) -> Result<Manifest, Error> {
        validate_manifest_reference(reference)?;
        self.with_retries(Error::is_retryable, |_| self.get_manifest_once(repo, reference)).await
    }

    async fn get_manifest_once(&self, repo: &Repository, reference: &str) -> Result<Manifest, Error> {
        let url = self.manifest_url(repo, reference)?;
        let sent = self.send(&self.request(repo, Access::Pull, Method::GET, url).accept_manifests()).await?;
        if sent.status() != StatusCode::OK {
            return Err(sent.into_error(repo, Resource::Manifest, reference).await);
        }
        let content_type = sent.header(CONTENT_TYPE.as_str()).map(strip_media_type_params);
        let header_digest = sent.header(DOCKER_CONTENT_DIGEST).map(str::to_owned);
        let url = sent.url.clone();
        let bytes = read_body(sent.response, MAX_MANIFEST_SIZE, &url).await?;
        let media_type = resolve_manifest_media_type(content_type.as_deref(), &bytes)?;
        let digest = sha256_digest(&bytes);
        if is_digest(reference) {
            check_digest(reference, &digest)?;
        } else if let Some(header_digest) = header_digest.filter(|h| *h != digest) {
            warn!(
                repository = %repo,
                tag = reference,
                header = %header_digest,
                computed = %digest,
                "Docker-Content-Digest differs from the sha256 of the manifest bytes; using the sha256"
            );
        }
        Ok(Manifest { media_type, digest, bytes })
    }

    /// `HEAD` of a manifest: its media type, digest and size, or `None` if the registry does not have
    /// it.
    pub async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestInfo>, Error> {
        validate_manifest_reference(reference)?;
        let head =
            self.with_retries(Error::is_retryable, |_| self.head_manifest_once(repo, reference)).await?;
        match head {
            HeadManifest::Missing => Ok(None),
            HeadManifest::Found(info) => Ok(Some(info)),
            // A registry that leaves out the digest or size: a GET tells both.
            HeadManifest::Incomplete => match self.get_manifest(repo, reference).await {
                Ok(m) => Ok(Some(ManifestInfo {
                    media_type: m.media_type,
                    digest: m.digest,
                    size: m.bytes.len() as u64,
                })),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    async fn head_manifest_once(&self, repo: &Repository, reference: &str) -> Result<HeadManifest, Error> {
        let url = self.manifest_url(repo, reference)?;
        let sent = self.send(&self.request(repo, Access::Pull, Method::HEAD, url).accept_manifests()).await?;
        match sent.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND if sent.from_registry => return Ok(HeadManifest::Missing),
            _ => return Err(sent.into_error(repo, Resource::Manifest, reference).await),
        }
        let media_type = sent.header(CONTENT_TYPE.as_str()).map(strip_media_type_params).unwrap_or_default();
        let digest = sent
            .header(DOCKER_CONTENT_DIGEST)
            .filter(|d| validate_digest(d).is_ok())
            .map(str::to_owned)
            .or_else(|| is_digest(reference).then(|| reference.to_owned()));
        let size = sent.header(reqwest::header::CONTENT_LENGTH.as_str()).and_then(|s| s.parse::<u64>().ok());
        match (digest, size) {
            (Some(digest), Some(size)) if !media_type.is_empty() => {
                check_reference_digest(reference, &digest)?;
                Ok(HeadManifest::Found(ManifestInfo { media_type, digest, size }))
            }
            _ => Ok(HeadManifest::Incomplete),
        }
    }

    /// Pushes a manifest under a tag or its digest, with `media_type` as its `Content-Type`.
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifest, Error> {
        validate_manifest_reference(reference)?;
        let digest = sha256_digest(&bytes);
        check_reference_digest(reference, &digest)?;
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| Error::UnsupportedMediaType { media_type: media_type.to_owned() })?;
        // A manifest naming a blob another client is still committing (MANIFEST_BLOB_UNKNOWN) is
        // worth a few more tries, as a transient failure is.
        let retry = |e: &Error| e.is_retryable() || e.is_concurrent_upload_clash();
        self.with_retries(retry, |_| {
            let put = self.put_manifest_once(repo, reference, content_type.clone(), &digest, bytes.clone());
            self.paced(repo, WriteKind::Manifest, put)
        })
        .await
    }

    async fn put_manifest_once(
        &self,
        repo: &Repository,
        reference: &str,
        content_type: HeaderValue,
        digest: &str,
        bytes: Bytes,
    ) -> Result<PutManifest, Error> {
        let url = self.manifest_url(repo, reference)?;
        let mut request = self.request(repo, Access::Push, Method::PUT, url);
        request.headers.insert(CONTENT_TYPE, content_type);
        request.body = Some(bytes);
        let sent = self.send(&request).await?;
        if !sent.status().is_success() {
            return Err(sent.into_error(repo, Resource::Manifest, reference).await);
        }
        if let Some(header_digest) = sent.header(DOCKER_CONTENT_DIGEST).filter(|h| *h != digest) {
            warn!(repository = %repo, header = header_digest, computed = digest, "registry reports another digest for the pushed manifest");
        }
        let oci_subject = sent.header(OCI_SUBJECT).filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(PutManifest { digest: digest.to_owned(), oci_subject })
    }

    /// Deletes a manifest by digest. A manifest DELETE by digest removes every tag that points at it
    /// (in distribution and in ECR): callers check the tags first. A 404 means someone else deleted it
    /// already ([`Deletion::AlreadyGone`]); a 405 that the registry does not allow deletion.
    pub async fn delete_manifest(&self, repo: &Repository, digest: &str) -> Result<Deletion, Error> {
        validate_digest(digest)?;
        self.with_retries(Error::is_retryable, |_| async move {
            let url = self.manifest_url(repo, digest)?;
            let sent = self.send(&self.request(repo, Access::Push, Method::DELETE, url)).await?;
            match sent.status() {
                s if s.is_success() => Ok(Deletion::Deleted),
                StatusCode::NOT_FOUND if sent.from_registry => Ok(Deletion::AlreadyGone),
                _ if sent.is_missing_or_not_allowed() => {
                    debug!(repository = %repo, digest, status = sent.status().as_u16(), "manifest not deleted");
                    Ok(Deletion::Refused)
                }
                _ => Err(sent.into_error(repo, Resource::Manifest, digest).await),
            }
        })
        .await
    }

    fn manifest_url(&self, repo: &Repository, reference: &str) -> Result<Url, Error> {
        self.api_url(repo, &format!("manifests/{reference}"))
    }
}

impl Request<'_> {
    fn accept_manifests(mut self) -> Self {
        self.headers.insert(ACCEPT, HeaderValue::from_static(media_type::MANIFEST_ACCEPT));
        self
    }
}

/// A manifest addressed by digest must hash to it; one addressed by tag may hash to anything.
fn check_reference_digest(reference: &str, digest: &str) -> Result<(), Error> {
    if is_digest(reference) {
        check_digest(reference, digest)
    } else {
        Ok(())
    }
}

pub(crate) fn strip_media_type_params(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// The media type of a fetched manifest: the `Content-Type` if it is a supported one, else the
/// document's own `mediaType`; anything else (Docker schema 1, artifacts served as JSON) is refused.
fn resolve_manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> Result<String, Error> {
    if let Some(ct) = content_type.filter(|ct| media_type::MANIFEST_TYPES.contains(ct)) {
        return Ok(ct.to_owned());
    }
    let declared = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned));
    match declared {
        Some(mt) if media_type::MANIFEST_TYPES.contains(&mt.as_str()) => Ok(mt),
        other => Err(Error::UnsupportedMediaType {
            media_type: other.or(content_type.map(str::to_owned)).unwrap_or_else(|| "(none)".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_media_type_resolution() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert_eq!(
            resolve_manifest_media_type(Some(media_type::DOCKER_MANIFEST), oci).unwrap(),
            media_type::DOCKER_MANIFEST
        );
        assert_eq!(
            resolve_manifest_media_type(Some("application/json"), oci).unwrap(),
            media_type::OCI_MANIFEST
        );
        assert_eq!(resolve_manifest_media_type(None, oci).unwrap(), media_type::OCI_MANIFEST);
        let schema1 = br#"{"schemaVersion":1,"name":"x"}"#;
        match resolve_manifest_media_type(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            schema1,
        ) {
            Err(Error::UnsupportedMediaType { media_type }) => {
                assert_eq!(media_type, "application/vnd.docker.distribution.manifest.v1+prettyjws")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(strip_media_type_params("Application/JSON; charset=utf-8"), "application/json");
    }
}
