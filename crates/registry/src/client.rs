//! The registry client: requests with authentication, redirects and retries, and the operations on
//! manifests, blobs, uploads and referrers built on them.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tracing::{debug, warn, Instrument as _};
use url::Url;

use crate::auth::{
    parse_www_authenticate, AuthCache, Authorization, Challenge, CredentialSource, Credentials, TokenResponse,
};
use crate::blob::{BlobDownload, BlobStream};
use crate::digest::{is_digest, sha256_digest, validate_digest, validate_manifest_reference};
use crate::error::{is_retryable_status, Resource};
use crate::retry::{parse_retry_after, RetryPolicy};
use crate::{media_type, Error, Repository};

/// Redirects followed in a row before giving up.
pub(crate) const MAX_REDIRECTS: u32 = 5;
/// How many times one request re-authenticates after a 401 (fresh token, then fresh credentials).
const MAX_AUTH_ROUNDS: u32 = 2;
/// Manifests and indexes larger than this are refused (distribution itself refuses above 4 MiB).
pub(crate) const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// Referrers pages and token responses are small JSON documents too.
const MAX_JSON_SIZE: usize = 8 * 1024 * 1024;
/// Referrers pages followed through `Link: <...>; rel="next"`.
const MAX_REFERRERS_PAGES: usize = 64;
/// How much of an error body ends up in an error message.
const ERROR_BODY_EXCERPT: usize = 300;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCI_SUBJECT: &str = "oci-subject";

/// How the client connects and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Talk `http://` instead of `https://` to every registry (local test registries).
    pub plain_http: bool,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Time allowed to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed between two reads of a response; bodies may take longer as a whole, blobs are big.
    pub read_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            plain_http: false,
            retry: RetryPolicy::default(),
            user_agent: concat!("soci-indexer/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

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

/// The outcome of [`Client::push_blob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushedBlob {
    /// The blob was uploaded.
    Uploaded,
    /// The repository already had it; nothing was sent.
    AlreadyExisted,
}

/// The access a request needs, which decides the token scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
}

impl Access {
    fn scope(self, repository: &str) -> String {
        match self {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
        }
    }
}

/// One logical request, replayable (for authentication rounds, redirects and retries).
pub(crate) struct Request<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) access: Access,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// Off for blob HEADs: a redirect already says the blob exists, and following it would HEAD a
    /// presigned GET URL, which S3 refuses.
    pub(crate) follow_redirects: bool,
}

/// A response, with where it finally came from.
pub(crate) struct Sent {
    pub(crate) response: reqwest::Response,
    /// The URL that answered, after redirects.
    pub(crate) url: Url,
    pub(crate) method: Method,
    /// Whether credentials (or a token obtained with them) were offered to the registry.
    pub(crate) credentials_sent: bool,
    /// Whether `url` is the registry itself (not a redirect target such as S3).
    pub(crate) from_registry: bool,
}

impl Sent {
    pub(crate) fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }
}

/// A client for OCI registries. Cheap to clone: clones share connections, tokens and configuration.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    credentials: Arc<dyn CredentialSource>,
    auth: Mutex<AuthCache>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `config`, authenticating with what `credentials` provides.
    pub fn new(config: ClientConfig, credentials: Arc<dyn CredentialSource>) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            // Redirects are followed by hand, to drop Authorization on the way to another origin.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(Error::ClientBuild)?;
        Ok(Client { inner: Arc::new(Inner { http, config, credentials, auth: Mutex::default() }) })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Fetches a manifest or index by tag or digest, keeping its exact bytes. Fetched by digest, the
    /// bytes are verified; by tag, the digest is computed from them.
    pub async fn get_manifest(&self, repo: &Repository, reference: &str) -> Result<Manifest, Error> {
        validate_manifest_reference(reference)?;
        self.with_retries(Error::is_retryable, |_| self.get_manifest_once(repo, reference)).await
    }

    async fn get_manifest_once(&self, repo: &Repository, reference: &str) -> Result<Manifest, Error> {
        let url = self.api_url(repo, &format!("manifests/{reference}"))?;
        let sent = self.send(&self.request(repo, Access::Pull, Method::GET, url).accept_manifests()).await?;
        if sent.status() != StatusCode::OK {
            return Err(self.error_from(sent, repo, Resource::Manifest, reference).await);
        }
        let content_type = sent.header(CONTENT_TYPE.as_str()).map(strip_media_type_params);
        let header_digest = sent.header(DOCKER_CONTENT_DIGEST).map(str::to_owned);
        let url = sent.url.clone();
        let bytes = read_body(sent.response, MAX_MANIFEST_SIZE, &url).await?;
        let media_type = resolve_manifest_media_type(content_type.as_deref(), &bytes)?;
        let digest = sha256_digest(&bytes);
        if is_digest(reference) {
            if digest != reference {
                return Err(Error::DigestMismatch { expected: reference.to_owned(), actual: digest });
            }
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
        let url = self.api_url(repo, &format!("manifests/{reference}"))?;
        let sent = self.send(&self.request(repo, Access::Pull, Method::HEAD, url).accept_manifests()).await?;
        match sent.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND if sent.from_registry => return Ok(HeadManifest::Missing),
            _ => return Err(self.error_from(sent, repo, Resource::Manifest, reference).await),
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
                if is_digest(reference) && digest != reference {
                    return Err(Error::DigestMismatch { expected: reference.to_owned(), actual: digest });
                }
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
        if is_digest(reference) && digest != reference {
            return Err(Error::DigestMismatch { expected: reference.to_owned(), actual: digest });
        }
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| Error::UnsupportedMediaType { media_type: media_type.to_owned() })?;
        self.with_retries(Error::is_retryable, |_| {
            self.put_manifest_once(repo, reference, content_type.clone(), &digest, bytes.clone())
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
        let url = self.api_url(repo, &format!("manifests/{reference}"))?;
        let mut request = self.request(repo, Access::Push, Method::PUT, url);
        request.headers.insert(CONTENT_TYPE, content_type);
        request.body = Some(bytes);
        let sent = self.send(&request).await?;
        if !sent.status().is_success() {
            return Err(self.error_from(sent, repo, Resource::Manifest, reference).await);
        }
        if let Some(header_digest) = sent.header(DOCKER_CONTENT_DIGEST).filter(|h| *h != digest) {
            warn!(repository = %repo, header = header_digest, computed = digest, "registry reports another digest for the pushed manifest");
        }
        let oci_subject = sent.header(OCI_SUBJECT).filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(PutManifest { digest: digest.to_owned(), oci_subject })
    }

    /// Deletes a manifest by digest. `Ok(false)` when the registry does not have it (404) or does not
    /// allow deletion (405): callers use this for best-effort clean-up.
    pub async fn delete_manifest(&self, repo: &Repository, digest: &str) -> Result<bool, Error> {
        validate_digest(digest)?;
        self.with_retries(Error::is_retryable, |_| async move {
            let url = self.api_url(repo, &format!("manifests/{digest}"))?;
            let sent = self.send(&self.request(repo, Access::Push, Method::DELETE, url)).await?;
            match sent.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if sent.from_registry => {
                    debug!(repository = %repo, digest, status = s_u16(&sent), "manifest not deleted");
                    Ok(false)
                }
                _ => Err(self.error_from(sent, repo, Resource::Manifest, digest).await),
            }
        })
        .await
    }

    /// Whether the repository has the blob (`HEAD`).
    pub async fn blob_exists(&self, repo: &Repository, digest: &str) -> Result<bool, Error> {
        validate_digest(digest)?;
        self.with_retries(Error::is_retryable, |_| self.blob_exists_once(repo, digest, Access::Pull)).await
    }

    async fn blob_exists_once(&self, repo: &Repository, digest: &str, access: Access) -> Result<bool, Error> {
        let url = self.api_url(repo, &format!("blobs/{digest}"))?;
        let mut request = self.request(repo, access, Method::HEAD, url);
        request.follow_redirects = false;
        let sent = self.send(&request).await?;
        match sent.status() {
            s if s.is_success() || s.is_redirection() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(sent, repo, Resource::Blob, digest).await),
        }
    }

    /// Streams a blob, verifying its sha256 (and size, when known) as it goes; see [`BlobStream`].
    /// Errors opening it (404, 401) come here; later ones come through the stream.
    pub async fn get_blob(
        &self,
        repo: &Repository,
        digest: &str,
        expected_size: Option<u64>,
    ) -> Result<BlobStream, Error> {
        validate_digest(digest)?;
        BlobDownload::start(self.clone(), repo.clone(), digest.to_owned(), expected_size).await
    }

    /// Opens a blob for reading from `offset` on (with `Range` when `offset > 0`).
    pub(crate) async fn open_blob(
        &self,
        repo: &Repository,
        digest: &str,
        offset: u64,
    ) -> Result<OpenedBlob, Error> {
        self.with_retries(Error::is_retryable, |_| self.open_blob_once(repo, digest, offset)).await
    }

    async fn open_blob_once(
        &self,
        repo: &Repository,
        digest: &str,
        offset: u64,
    ) -> Result<OpenedBlob, Error> {
        let url = self.api_url(repo, &format!("blobs/{digest}"))?;
        let mut request = self.request(repo, Access::Pull, Method::GET, url);
        if offset > 0 {
            request.headers.insert(reqwest::header::RANGE, range_header(offset, None));
        }
        let sent = self.send(&request).await?;
        match sent.status() {
            StatusCode::OK => {
                let total_size = sent.response.content_length();
                Ok(OpenedBlob { response: sent.response, skip: offset, total_size })
            }
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let range =
                    sent.header(reqwest::header::CONTENT_RANGE.as_str()).and_then(parse_content_range);
                match range {
                    Some((start, _, total_size)) if start == offset => {
                        Ok(OpenedBlob { response: sent.response, skip: 0, total_size })
                    }
                    _ => Err(Error::InvalidResponse {
                        url: redact_url(&sent.url),
                        reason: format!(
                            "asked for bytes {offset}- but got Content-Range {:?}",
                            sent.header(reqwest::header::CONTENT_RANGE.as_str()).unwrap_or("")
                        ),
                    }),
                }
            }
            _ => Err(self.error_from(sent, repo, Resource::Blob, digest).await),
        }
    }

    /// Reads bytes `start..end_exclusive` of a blob (HTTP `Range`), for random access. The length is
    /// checked; the content cannot be (only whole blobs have a digest).
    pub async fn get_blob_range(
        &self,
        repo: &Repository,
        digest: &str,
        start: u64,
        end_exclusive: u64,
    ) -> Result<Bytes, Error> {
        validate_digest(digest)?;
        if end_exclusive < start {
            return Err(Error::InvalidReference {
                input: format!("{digest} bytes {start}..{end_exclusive}"),
                reason: "range end before its start".into(),
            });
        }
        if end_exclusive == start {
            return Ok(Bytes::new());
        }
        self.with_retries(Error::is_retryable, |_| {
            self.get_blob_range_once(repo, digest, start, end_exclusive)
        })
        .await
    }

    async fn get_blob_range_once(
        &self,
        repo: &Repository,
        digest: &str,
        start: u64,
        end_exclusive: u64,
    ) -> Result<Bytes, Error> {
        let len = end_exclusive - start;
        let url = self.api_url(repo, &format!("blobs/{digest}"))?;
        let mut request = self.request(repo, Access::Pull, Method::GET, url);
        request.headers.insert(reqwest::header::RANGE, range_header(start, Some(end_exclusive - 1)));
        let sent = self.send(&request).await?;
        let skip = match sent.status() {
            StatusCode::PARTIAL_CONTENT => {
                let content_range = sent.header(reqwest::header::CONTENT_RANGE.as_str());
                match content_range.map(parse_content_range) {
                    None => {}
                    Some(Some((s, e, _))) if s == start && e == end_exclusive - 1 => {}
                    Some(_) => {
                        return Err(Error::InvalidResponse {
                            url: redact_url(&sent.url),
                            reason: format!(
                                "asked for bytes {start}-{} of {digest} but got Content-Range {:?} (range \
                                 beyond the end of the blob?)",
                                end_exclusive - 1,
                                content_range.unwrap_or("")
                            ),
                        })
                    }
                }
                0
            }
            // The server ignored Range: read the prefix of the whole blob and drop the rest.
            StatusCode::OK => start,
            _ => return Err(self.error_from(sent, repo, Resource::Blob, digest).await),
        };
        let url = sent.url;
        let mut response = sent.response;
        let mut skip = skip;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(64 * 1024 * 1024));
        while (buf.len() as u64) < len {
            let Some(mut chunk) =
                response.chunk().await.map_err(|e| transport_error(&Method::GET, &url, e))?
            else {
                break;
            };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64) as usize;
                chunk = chunk.slice(n..);
                skip -= n as u64;
            }
            let want = (len - buf.len() as u64).min(chunk.len() as u64) as usize;
            buf.extend_from_slice(&chunk[..want]);
        }
        if buf.len() as u64 != len {
            return Err(Error::InvalidResponse {
                url: redact_url(&url),
                reason: format!(
                    "asked for {len} bytes at offset {start} of {digest} but got {} (range beyond the end \
                     of the blob?)",
                    buf.len()
                ),
            });
        }
        Ok(Bytes::from(buf))
    }

    /// Uploads a blob unless the repository already has it. The bytes are checked against `digest`
    /// first. The upload is a `POST` then a monolithic `PUT` (distribution 2.8 silently drops
    /// single-request `POST ?digest=` uploads); a failed upload is retried whole, from a new `POST`.
    pub async fn push_blob(
        &self,
        repo: &Repository,
        digest: &str,
        bytes: Bytes,
    ) -> Result<PushedBlob, Error> {
        validate_digest(digest)?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch { expected: digest.to_owned(), actual });
        }
        let exists = self
            .with_retries(Error::is_retryable, |_| self.blob_exists_once(repo, digest, Access::Push))
            .await?;
        if exists {
            debug!(repository = %repo, digest, "blob already present, not uploading");
            return Ok(PushedBlob::AlreadyExisted);
        }
        // An upload session that vanished between POST and PUT (404 BLOB_UPLOAD_UNKNOWN) is worth a
        // fresh start too.
        let restartable =
            |e: &Error| e.is_retryable() || matches!(e, Error::NotFound { what: Resource::Upload, .. });
        self.with_retries(restartable, |_| self.upload_once(repo, digest, bytes.clone())).await?;
        Ok(PushedBlob::Uploaded)
    }

    async fn upload_once(&self, repo: &Repository, digest: &str, bytes: Bytes) -> Result<(), Error> {
        let url = self.api_url(repo, "blobs/uploads/")?;
        let mut start = self.request(repo, Access::Push, Method::POST, url);
        start.body = Some(Bytes::new());
        let sent = self.send(&start).await?;
        if sent.status() != StatusCode::ACCEPTED {
            return Err(self.error_from(sent, repo, Resource::Repository, "").await);
        }
        let location = sent.header(LOCATION.as_str()).ok_or_else(|| Error::InvalidResponse {
            url: redact_url(&sent.url),
            reason: "upload started (202) without a Location header".into(),
        })?;
        let mut put_url = resolve_location(&sent.url, location)?;
        put_url.query_pairs_mut().append_pair("digest", digest);

        let mut put = self.request(repo, Access::Push, Method::PUT, put_url);
        put.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        put.body = Some(bytes);
        let sent = self.send(&put).await?;
        if sent.status() != StatusCode::CREATED && !sent.status().is_success() {
            return Err(self.error_from(sent, repo, Resource::Upload, digest).await);
        }
        Ok(())
    }

    /// The referrers of `digest` (an OCI image index), optionally filtered by artifact type, or `None`
    /// when the registry has no referrers API (404, 405, or an answer that is not an index): the caller
    /// then falls back to the `sha256-<hex>` tag schema. Paginated answers are merged into one index.
    /// The filter may or may not be applied by the registry: callers should filter again.
    pub async fn referrers(
        &self,
        repo: &Repository,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<Bytes>, Error> {
        validate_digest(digest)?;
        let mut url = self.api_url(repo, &format!("referrers/{digest}"))?;
        if let Some(artifact_type) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", artifact_type);
        }
        let first_url = redact_url(&url);
        let mut pages = Vec::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            if pages.len() == MAX_REFERRERS_PAGES {
                return Err(Error::InvalidResponse {
                    url: redact_url(&url),
                    reason: format!("more than {MAX_REFERRERS_PAGES} pages of referrers"),
                });
            }
            let page =
                self.with_retries(Error::is_retryable, |_| self.referrers_page(repo, digest, &url)).await?;
            let Some((bytes, link)) = page else { return Ok(None) };
            pages.push(bytes);
            next = link;
        }
        if pages.len() == 1 {
            return Ok(pages.pop());
        }
        merge_index_pages(&pages)
            .map(Some)
            .map_err(|reason| Error::InvalidResponse { url: first_url, reason })
    }

    /// One page of referrers and the URL of the next one, or `None` if the API is not supported.
    async fn referrers_page(
        &self,
        repo: &Repository,
        digest: &str,
        url: &Url,
    ) -> Result<Option<(Bytes, Option<Url>)>, Error> {
        let mut request = self.request(repo, Access::Pull, Method::GET, url.clone());
        request.headers.insert(ACCEPT, HeaderValue::from_static(media_type::OCI_INDEX));
        let sent = self.send(&request).await?;
        match sent.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if sent.from_registry => {
                debug!(repository = %repo, digest, status = s_u16(&sent), "no referrers API");
                return Ok(None);
            }
            _ => return Err(self.error_from(sent, repo, Resource::Manifest, digest).await),
        }
        let content_type = sent.header(CONTENT_TYPE.as_str()).map(strip_media_type_params);
        let next = sent.header(reqwest::header::LINK.as_str()).and_then(parse_next_link).and_then(|link| {
            let next = resolve_location(&sent.url, &link).ok()?;
            // Only follow pagination on the registry itself: the link comes from the registry.
            (next.origin() == sent.url.origin()).then_some(next)
        });
        let page_url = sent.url.clone();
        let bytes = read_body(sent.response, MAX_JSON_SIZE, &page_url).await?;
        let is_index = content_type.as_deref() == Some(media_type::OCI_INDEX)
            || serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
                v.get("mediaType").and_then(|m| m.as_str()) == Some(media_type::OCI_INDEX)
                    && v.get("manifests").is_some_and(|m| m.is_array())
            });
        if !is_index {
            debug!(repository = %repo, digest, content_type = ?content_type, "referrers answer is not an index");
            return Ok(None);
        }
        Ok(Some((bytes, next)))
    }

    // ---- the request machinery ----

    /// `http(s)://<api host>/v2/<name>/<suffix>`.
    pub(crate) fn api_url(&self, repo: &Repository, suffix: &str) -> Result<Url, Error> {
        let url = format!("{}/v2/{}/{suffix}", self.registry_base(repo), repo.name());
        Url::parse(&url)
            .map_err(|e| Error::InvalidReference { input: repo.to_string(), reason: e.to_string() })
    }

    fn registry_base(&self, repo: &Repository) -> String {
        let scheme = if self.inner.config.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", repo.api_host())
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.config.retry
    }

    pub(crate) fn request<'a>(
        &self,
        repo: &'a Repository,
        access: Access,
        method: Method,
        url: Url,
    ) -> Request<'a> {
        Request { repo, access, method, url, headers: HeaderMap::new(), body: None, follow_redirects: true }
    }

    /// Runs `op` until it succeeds, fails with an error `should_retry` rejects, or the policy's attempts
    /// are spent, sleeping with backoff (or as told by `Retry-After`) in between.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        should_retry: fn(&Error) -> bool,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.retry_policy();
        let max_attempts = policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            // The span puts the attempt number on every request event of this attempt.
            match op(attempt).instrument(tracing::debug_span!("attempt", attempt)).await {
                Ok(value) => return Ok(value),
                Err(error) if should_retry(&error) && attempt < max_attempts => {
                    let delay = policy.delay(attempt, error.retry_after());
                    debug!(attempt, ?delay, error = %error, "transient failure, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) if attempt > 1 && should_retry(&error) => {
                    return Err(Error::RetriesExhausted { attempts: attempt, last: Box::new(error) })
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends a request, authenticating on 401 challenges from the registry (bearer token or basic)
    /// and following redirects. Returns whatever status the registry finally answers.
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<Sent, Error> {
        let registry = request.repo.registry();
        let scope = request.access.scope(request.repo.name());
        let mut round = 0;
        loop {
            let authorization = self.auth_cache().authorization(registry, &scope);
            let sent = self.send_following_redirects(request, authorization.as_ref()).await?;
            if sent.status() != StatusCode::UNAUTHORIZED || !sent.from_registry || round == MAX_AUTH_ROUNDS {
                return Ok(sent);
            }
            round += 1;
            if authorization.is_some() {
                // What we sent was rejected: an expired token, or credentials that changed.
                self.auth_cache().invalidate(registry, &scope);
                self.inner.credentials.invalidate(registry);
            }
            let challenges: Vec<Challenge> = sent
                .response
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_www_authenticate)
                .collect();
            if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                let credentials = self.credentials(registry).await?;
                let (token, expires_in) =
                    self.fetch_token(registry, bearer, &scope, credentials.as_ref()).await?;
                self.auth_cache().set_bearer(registry, &scope, &token, expires_in, credentials.is_some());
            } else if challenges.iter().any(|c| c.scheme == "basic") {
                let Some(credentials) = self.credentials(registry).await? else {
                    let credentials_sent = sent.credentials_sent;
                    return Err(Error::Unauthorized { registry: registry.to_owned(), credentials_sent });
                };
                self.auth_cache().set_basic(registry, credentials.basic_header());
            } else {
                // No challenge we can answer: let the caller report the 401.
                return Ok(sent);
            }
        }
    }

    fn auth_cache(&self) -> std::sync::MutexGuard<'_, AuthCache> {
        // The cache stays consistent even if a holder panicked: every update is a single insert/remove.
        self.inner.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        self.inner.credentials.credentials(registry).await
    }

    /// Gets a bearer token from the challenge's realm, for `scope` (and the challenge's own scope, if
    /// it names another), with basic credentials when there are some.
    async fn fetch_token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(crate::Secret, Option<u64>), Error> {
        let realm = challenge.param("realm").unwrap_or_default();
        let mut url =
            Url::parse(realm).ok().filter(|u| matches!(u.scheme(), "http" | "https")).ok_or_else(|| {
                Error::InvalidResponse {
                    url: registry.to_owned(),
                    reason: format!("bearer challenge with an unusable realm {realm:?}"),
                }
            })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
            if let Some(other) = challenge.param("scope").filter(|s| *s != scope) {
                query.append_pair("scope", other);
            }
        }
        let mut builder = self.inner.http.get(url.clone());
        if let Some(credentials) = credentials {
            builder = builder.header(AUTHORIZATION, credentials.basic_header());
        }
        let response = builder.send().await.map_err(|e| transport_error(&Method::GET, &url, e))?;
        let status = response.status();
        debug!(method = "GET", url = %redact_url(&url), status = status.as_u16(), "token request");
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Error::Unauthorized {
                    registry: registry.to_owned(),
                    credentials_sent: credentials.is_some(),
                })
            }
            _ => {
                let retry_after = retry_after_of(&response);
                let body = error_excerpt(response, true).await;
                return Err(Error::Http {
                    method: "GET".into(),
                    url: redact_url(&url),
                    status: status.as_u16(),
                    body,
                    retry_after,
                });
            }
        }
        let bytes = read_body(response, MAX_JSON_SIZE, &url).await?;
        let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
            url: redact_url(&url),
            reason: format!("token response is not JSON: {e}"),
        })?;
        let expires_in = parsed.expires_in;
        let token = parsed.into_token().ok_or_else(|| Error::InvalidResponse {
            url: redact_url(&url),
            reason: "token response has neither `token` nor `access_token`".into(),
        })?;
        Ok((token, expires_in))
    }

    /// One request, following redirects by hand: Authorization goes only to the registry's own
    /// origin (a presigned S3 URL must not get it), other headers (Range, Accept) go everywhere.
    async fn send_following_redirects(
        &self,
        request: &Request<'_>,
        authorization: Option<&Authorization>,
    ) -> Result<Sent, Error> {
        let registry_origin = request.url.origin();
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut body = request.body.clone();
        for hop in 0..=MAX_REDIRECTS {
            let from_registry = url.origin() == registry_origin;
            let mut builder =
                self.inner.http.request(method.clone(), url.clone()).headers(request.headers.clone());
            let authorized = from_registry && authorization.is_some();
            if let (true, Some(authorization)) = (authorized, authorization) {
                builder = builder.header(AUTHORIZATION, authorization.header.clone());
            }
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|e| transport_error(&method, &url, e))?;
            let status = response.status();
            debug!(
                method = %method,
                url = %redact_url(&url),
                status = status.as_u16(),
                hop,
                authorized,
                "registry request"
            );
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            if let (true, true, Some(location)) = (request.follow_redirects, is_redirect(status), location) {
                let next = resolve_location(&url, location)?;
                if status == StatusCode::SEE_OTHER
                    || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                        && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                }
                url = next;
                continue;
            }
            let credentials_sent = authorized && authorization.is_some_and(|a| a.with_credentials);
            return Ok(Sent { response, url, method, credentials_sent, from_registry });
        }
        Err(Error::TooManyRedirects { url: redact_url(&url), max: MAX_REDIRECTS })
    }

    /// The error for an unexpected answer, with what the registry said about it.
    pub(crate) async fn error_from(
        &self,
        sent: Sent,
        repo: &Repository,
        what: Resource,
        reference: &str,
    ) -> Error {
        let status = sent.status().as_u16();
        let url = redact_url(&sent.url);
        let method = sent.method.to_string();
        let retry_after = retry_after_of(&sent.response);
        let registry = repo.registry().to_owned();
        if status == 401 && sent.from_registry {
            // A token that authenticated but does not grant the scope: a permission problem.
            let insufficient_scope = sent
                .response
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_www_authenticate)
                .any(|c| c.param("error") == Some("insufficient_scope"));
            if insufficient_scope && sent.credentials_sent {
                let detail = "insufficient_scope".to_owned();
                return Error::Denied { registry, repository: repo.name().to_owned(), detail };
            }
            return Error::Unauthorized { registry, credentials_sent: sent.credentials_sent };
        }
        let from_registry = sent.from_registry;
        let body = error_excerpt(sent.response, from_registry).await;
        match status {
            403 if from_registry => {
                Error::Denied { registry, repository: repo.name().to_owned(), detail: body }
            }
            404 if from_registry => {
                let what = if body.contains("NAME_UNKNOWN") {
                    Resource::Repository
                } else if body.contains("BLOB_UPLOAD_UNKNOWN") {
                    Resource::Upload
                } else {
                    what
                };
                let reference = match (what, reference) {
                    (Resource::Repository, _) | (_, "") => repo.to_string(),
                    (_, r) if is_digest(r) => format!("{repo}@{r}"),
                    (_, r) => format!("{repo}:{r}"),
                };
                Error::NotFound { what, reference }
            }
            _ => Error::Http {
                method,
                url,
                status,
                body,
                retry_after: retry_after.filter(|_| is_retryable_status(status)),
            },
        }
    }
}

/// A blob response whose body, after dropping `skip` bytes, starts at the requested offset.
pub(crate) struct OpenedBlob {
    pub(crate) response: reqwest::Response,
    /// Non-zero when the server ignored `Range` and resent the blob from its start.
    pub(crate) skip: u64,
    /// The whole blob's size, if the response tells it.
    pub(crate) total_size: Option<u64>,
}

enum HeadManifest {
    Found(ManifestInfo),
    Missing,
    Incomplete,
}

impl Request<'_> {
    fn accept_manifests(mut self) -> Self {
        self.headers.insert(ACCEPT, HeaderValue::from_static(media_type::MANIFEST_ACCEPT));
        self
    }
}

fn s_u16(sent: &Sent) -> u16 {
    sent.status().as_u16()
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// A URL as it may appear in logs and errors: scheme, host, port and path, without user info, query
/// (S3 presigned URLs carry their signature there) or fragment.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut clean = url.clone();
    clean.set_query(None);
    clean.set_fragment(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

pub(crate) fn transport_error(method: &Method, url: &Url, error: reqwest::Error) -> Error {
    Error::Transport { method: method.to_string(), url: redact_url(url), source: error.without_url() }
}

/// Resolves a `Location` (absolute, or relative to the URL that sent it) keeping its query: upload
/// locations carry their state there.
pub(crate) fn resolve_location(base: &Url, location: &str) -> Result<Url, Error> {
    let url = base.join(location).map_err(|e| Error::InvalidResponse {
        url: redact_url(base),
        reason: format!("unusable Location header: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidResponse {
            url: redact_url(base),
            reason: format!("Location with unsupported scheme {:?}", url.scheme()),
        });
    }
    Ok(url)
}

fn range_header(start: u64, end_inclusive: Option<u64>) -> HeaderValue {
    let value = match end_inclusive {
        Some(end) => format!("bytes={start}-{end}"),
        None => format!("bytes={start}-"),
    };
    HeaderValue::from_str(&value).expect("digits and dashes are a valid header value")
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

/// The `rel="next"` target of a `Link` header.
fn parse_next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            })
            .then(|| target.to_owned())
    })
}

fn merge_index_pages(pages: &[Bytes]) -> Result<Bytes, String> {
    let mut merged: Option<serde_json::Value> = None;
    for page in pages {
        let value: serde_json::Value =
            serde_json::from_slice(page).map_err(|e| format!("referrers page: {e}"))?;
        let manifests = value.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
        match merged.as_mut().and_then(|m| m.get_mut("manifests")).and_then(|m| m.as_array_mut()) {
            Some(all) => all.extend(manifests),
            None => merged = Some(value),
        }
    }
    let merged = merged.unwrap_or_default();
    serde_json::to_vec(&merged).map(Bytes::from).map_err(|e| e.to_string())
}

fn strip_media_type_params(content_type: &str) -> String {
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

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    url: &Url,
) -> Result<Bytes, Error> {
    let too_big = || Error::InvalidResponse {
        url: redact_url(url),
        reason: format!("response larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(too_big());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&Method::GET, url, e))? {
        if buf.len() + chunk.len() > limit {
            return Err(too_big());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// A short, log-safe summary of an error body: the registry's error codes and messages, or the start
/// of its text. Bodies from other origins (S3) only give their `<Code>`: they may echo request details.
async fn error_excerpt(response: reqwest::Response, from_registry: bool) -> String {
    let mut response = response;
    let mut raw = Vec::new();
    while raw.len() < 16 * 1024 {
        match response.chunk().await {
            Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&raw);
    if !from_registry {
        return xml_element(&text, "Code").map(str::to_owned).unwrap_or_default();
    }
    #[derive(serde::Deserialize)]
    struct RegistryErrors {
        errors: Vec<RegistryError>,
    }
    #[derive(serde::Deserialize)]
    struct RegistryError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let summary = match serde_json::from_str::<RegistryErrors>(&text) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed
            .errors
            .iter()
            .map(|e| if e.message.is_empty() { e.code.clone() } else { format!("{}: {}", e.code, e.message) })
            .collect::<Vec<_>>()
            .join("; "),
        _ => text.trim().to_owned(),
    };
    let mut excerpt: String =
        summary.chars().map(|c| if c.is_control() { ' ' } else { c }).take(ERROR_BODY_EXCERPT).collect();
    if summary.chars().count() > ERROR_BODY_EXCERPT {
        excerpt.push('…');
    }
    excerpt
}

fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].trim())
}

/// Compile-time checks: the client is shareable and its futures and streams can be spawned.
#[allow(dead_code)]
fn assert_spawnable(client: &Client, repo: &Repository) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send_static<T: Send + 'static>(_: &T) {}
    fn send<T: Send>(_: T) {}
    send_sync(client);
    send(client.get_manifest(repo, "t"));
    send(client.head_manifest(repo, "t"));
    send(client.put_manifest(repo, "t", "", Bytes::new()));
    send(client.delete_manifest(repo, ""));
    send(client.blob_exists(repo, ""));
    send(client.get_blob(repo, "", None));
    send(client.get_blob_range(repo, "", 0, 1));
    send(client.push_blob(repo, "", Bytes::new()));
    send(client.referrers(repo, "", None));
    let _ = |stream: BlobStream| send_static(&stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution() {
        let base = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        let cases = [
            (
                "/v2/a/b/blobs/uploads/uuid?_state=xyz",
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid?_state=xyz",
            ),
            ("uuid", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid"),
            (
                "https://uploads.example.com/put/uuid?sig=1&x=2",
                "https://uploads.example.com/put/uuid?sig=1&x=2",
            ),
        ];
        for (location, expected) in cases {
            assert_eq!(resolve_location(&base, location).unwrap().as_str(), expected, "{location}");
        }
        let mut put = resolve_location(&base, "/v2/a/b/blobs/uploads/uuid?_state=xyz").unwrap();
        put.query_pairs_mut().append_pair("digest", "sha256:00");
        assert_eq!(
            put.as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid?_state=xyz&digest=sha256%3A00"
        );
        assert!(resolve_location(&base, "ftp://x/y").is_err());
    }

    #[test]
    fn urls_are_redacted() {
        let url = Url::parse("https://user:pw@bucket.s3.amazonaws.com/key/blob?X-Amz-Signature=secret#frag")
            .unwrap();
        assert_eq!(redact_url(&url), "https://bucket.s3.amazonaws.com/key/blob");
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19, Some(100))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn link_header() {
        assert_eq!(
            parse_next_link(r#"</v2/a/referrers/sha256:1?n=10&last=x>; rel="next""#).as_deref(),
            Some("/v2/a/referrers/sha256:1?n=10&last=x")
        );
        assert_eq!(
            parse_next_link(r#"<https://a/b>; rel="prev", <https://a/c>; rel=next"#).as_deref(),
            Some("https://a/c")
        );
        assert_eq!(parse_next_link("garbage"), None);
    }

    #[test]
    fn index_pages_merge() {
        let a = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"1"}]}"#);
        let b = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[{"digest":"2"},{"digest":"3"}]}"#);
        let merged: serde_json::Value = serde_json::from_slice(&merge_index_pages(&[a, b]).unwrap()).unwrap();
        let digests: Vec<&str> =
            merged["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
        assert_eq!(digests, ["1", "2", "3"]);
        assert_eq!(merged["mediaType"], media_type::OCI_INDEX);
    }

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

    #[test]
    fn xml_code() {
        let body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message><X-Amz-Signature>s</X-Amz-Signature></Error>";
        assert_eq!(xml_element(body, "Code"), Some("AccessDenied"));
        assert_eq!(xml_element("no xml", "Code"), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(Access::Pull.scope("a/b"), "repository:a/b:pull");
        assert_eq!(Access::Push.scope("a/b"), "repository:a/b:pull,push");
    }
}
