//! Blob operations: existence checks, streamed downloads (see `download` for the stream), ranges,
//! and uploads (`POST` then `PUT`).

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use tracing::debug;
use url::Url;

use crate::digest::{check_digest, sha256_digest, validate_digest};
use crate::download::BlobDownload;
use crate::error::Resource;
use crate::opened::{parse_content_range, range_header, skip_prefix, OpenedBlob};

use crate::error::redact_url;
use crate::limits::Throughput;
use crate::pace::WriteKind;
use crate::response::Sent;
use crate::transport::{resolve_location, Access, Request, ThrottleWait};
use crate::{BlobStream, Client, Error, Repository};

/// The outcome of [`Client::push_blob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushedBlob {
    /// The blob was uploaded.
    Uploaded,
    /// The repository already had it; nothing was sent.
    AlreadyExisted,
}

impl Client {
    /// Whether the repository has the blob (`HEAD`).
    pub async fn blob_exists(&self, repo: &Repository, digest: &str) -> Result<bool, Error> {
        validate_digest(digest)?;
        self.with_retries(Error::is_retryable, |_| self.blob_exists_once(repo, digest, Access::Pull)).await
    }

    async fn blob_exists_once(&self, repo: &Repository, digest: &str, access: Access) -> Result<bool, Error> {
        let url = self.blob_url(repo, digest)?;
        let mut request = self.request(repo, access, Method::HEAD, url);
        request.follow_redirects = false;
        let sent = self.send(&request).await?;
        match sent.status() {
            s if s.is_success() || s.is_redirection() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(sent.into_error(repo, Resource::Blob, digest).await),
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
        let permit = self.connection_permit().await;
        let (response, skip, total_size) =
            self.with_retries(Error::is_retryable, |_| self.open_blob_once(repo, digest, offset)).await?;
        Ok(OpenedBlob { response, skip, total_size, permit })
    }

    /// The response, the bytes to skip and the blob's size, if told.
    async fn open_blob_once(
        &self,
        repo: &Repository,
        digest: &str,
        offset: u64,
    ) -> Result<(reqwest::Response, u64, Option<u64>), Error> {
        let url = self.blob_url(repo, digest)?;
        let mut request = self.request(repo, Access::Pull, Method::GET, url);
        if offset > 0 {
            request.headers.insert(RANGE, range_header(offset, None));
        }
        let sent = self.send(&request).await?;
        match sent.status() {
            StatusCode::OK => {
                let total_size = sent.response.content_length();
                Ok((sent.response, offset, total_size))
            }
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let range = sent.header(CONTENT_RANGE.as_str()).and_then(parse_content_range);
                match range {
                    Some((start, _, total_size)) if start == offset => Ok((sent.response, 0, total_size)),
                    _ => Err(Error::InvalidResponse {
                        url: redact_url(&sent.url),
                        reason: format!(
                            "asked for bytes {offset}- but got Content-Range {:?}",
                            sent.header(CONTENT_RANGE.as_str()).unwrap_or("")
                        ),
                    }),
                }
            }
            _ => Err(sent.into_error(repo, Resource::Blob, digest).await),
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
        let range = Range { digest, start, end_exclusive };
        let _permit = self.connection_permit().await;
        self.with_retries(Error::is_retryable, |_| self.get_blob_range_once(repo, range)).await
    }

    async fn get_blob_range_once(&self, repo: &Repository, range: Range<'_>) -> Result<Bytes, Error> {
        let url = self.blob_url(repo, range.digest)?;
        let mut request = self.request(repo, Access::Pull, Method::GET, url);
        request.headers.insert(RANGE, range_header(range.start, Some(range.end_exclusive - 1)));
        let sent = self.send(&request).await?;
        let skip = match sent.status() {
            StatusCode::PARTIAL_CONTENT => {
                range.check_content_range(&sent)?;
                0
            }
            // The server ignored Range: read the prefix of the whole blob and drop the rest.
            StatusCode::OK => range.start,
            _ => return Err(sent.into_error(repo, Resource::Blob, range.digest).await),
        };
        range.read(sent, skip, self.blob_throughput()).await
    }

    /// Uploads a blob unless the repository already has it. The bytes are checked against `digest`
    /// first. The upload is a `POST` then a monolithic `PUT` (distribution 2.8 silently drops
    /// single-request `POST ?digest=` uploads). A throttled `PUT` is sent again to the same session
    /// (no new session left open); another failed upload is retried whole, from a new `POST`. A `PUT`
    /// refused because another client uploaded the same blob at that moment (distribution answers one
    /// of them `400 DIGEST_INVALID`) succeeds if the blob is there now.
    pub async fn push_blob(
        &self,
        repo: &Repository,
        digest: &str,
        bytes: Bytes,
    ) -> Result<PushedBlob, Error> {
        validate_digest(digest)?;
        check_digest(digest, &sha256_digest(&bytes))?;
        let exists = self
            .with_retries(Error::is_retryable, |_| self.blob_exists_once(repo, digest, Access::Push))
            .await?;
        if exists {
            debug!(repository = %repo, digest, "blob already present, not uploading");
            return Ok(PushedBlob::AlreadyExisted);
        }
        // An upload session that vanished between POST and PUT (404 BLOB_UPLOAD_UNKNOWN) is worth a
        // fresh start too.
        let restartable = |e: &Error| {
            e.is_retryable()
                || e.is_concurrent_upload_clash()
                || matches!(e, Error::NotFound { what: Resource::Upload, .. })
        };
        self.with_retries(restartable, |_| self.upload_once(repo, digest, bytes.clone())).await?;
        Ok(PushedBlob::Uploaded)
    }

    async fn upload_once(&self, repo: &Repository, digest: &str, bytes: Bytes) -> Result<(), Error> {
        let url = self.api_url(repo, "blobs/uploads/")?;
        let mut start = self.request(repo, Access::Push, Method::POST, url);
        start.body = Some(Bytes::new());
        let sent = self.paced(repo, WriteKind::UploadStart, self.started_upload(repo, &start)).await?;
        let location = sent.header(LOCATION.as_str()).ok_or_else(|| Error::InvalidResponse {
            url: redact_url(&sent.url),
            reason: "upload started (202) without a Location header".into(),
        })?;
        let mut put_url = resolve_location(&sent.url, location)?;
        put_url.query_pairs_mut().append_pair("digest", digest);

        let mut put = self.request(repo, Access::Push, Method::PUT, put_url);
        put.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        put.body = Some(bytes);
        let mut throttle = ThrottleWait::new(self);
        loop {
            let sent = self.send(&put).await?;
            if sent.status() == StatusCode::CREATED || sent.status().is_success() {
                return Ok(());
            }
            let error = sent.into_error(repo, Resource::Upload, digest).await;
            if error.is_throttled_answer() {
                // Rejected before it was taken in: the same session takes the same bytes again.
                throttle.wait(error).await?;
                continue;
            }
            if error.is_concurrent_upload_clash() && self.blob_exists_once(repo, digest, Access::Push).await?
            {
                debug!(repository = %repo, digest, "another client uploaded the same blob at once; it is there");
                return Ok(());
            }
            return Err(error);
        }
    }

    /// Sends the `POST` that starts an upload; anything but `202 Accepted` is an error.
    async fn started_upload(&self, repo: &Repository, start: &Request<'_>) -> Result<Sent, Error> {
        let sent = self.send(start).await?;
        if sent.status() != StatusCode::ACCEPTED {
            return Err(sent.into_error(repo, Resource::Repository, "").await);
        }
        Ok(sent)
    }

    /// `.../blobs/<digest>` of the repository.
    pub(crate) fn blob_url(&self, repo: &Repository, digest: &str) -> Result<Url, Error> {
        self.api_url(repo, &format!("blobs/{digest}"))
    }
}

/// Bytes `start..end_exclusive` (not empty) of the blob `digest`.
#[derive(Clone, Copy)]
struct Range<'a> {
    digest: &'a str,
    start: u64,
    end_exclusive: u64,
}

impl Range<'_> {
    fn len(self) -> u64 {
        self.end_exclusive - self.start
    }

    /// A 206 must carry the range asked for (a registry that leaves out `Content-Range` is believed);
    /// another range means the request reached beyond the end of the blob.
    fn check_content_range(self, sent: &Sent) -> Result<(), Error> {
        let Range { digest, start, end_exclusive } = self;
        let content_range = sent.header(CONTENT_RANGE.as_str());
        match content_range.map(parse_content_range) {
            None => Ok(()),
            Some(Some((s, e, _))) if s == start && e == end_exclusive - 1 => Ok(()),
            Some(_) => Err(Error::InvalidResponse {
                url: redact_url(&sent.url),
                reason: format!(
                    "asked for bytes {start}-{} of {digest} but got Content-Range {:?} (range beyond the \
                     end of the blob?)",
                    end_exclusive - 1,
                    content_range.unwrap_or("")
                ),
            }),
        }
    }

    /// Reads the range from a response whose body starts `skip` bytes before it, at the minimum
    /// blob throughput.
    async fn read(self, sent: Sent, mut skip: u64, mut throughput: Throughput) -> Result<Bytes, Error> {
        let len = self.len();
        let url = sent.url;
        let mut response = sent.response;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(64 * 1024 * 1024));
        while (buf.len() as u64) < len {
            let Some(mut chunk) = throughput.chunk(&mut response).await? else {
                break;
            };
            if skip > 0 {
                chunk = skip_prefix(chunk, &mut skip);
            }
            let want = (len - buf.len() as u64).min(chunk.len() as u64) as usize;
            buf.extend_from_slice(&chunk[..want]);
        }
        if buf.len() as u64 != len {
            return Err(Error::InvalidResponse {
                url: redact_url(&url),
                reason: format!(
                    "asked for {len} bytes at offset {} of {} but got {} (range beyond the end of the \
                     blob?)",
                    self.start,
                    self.digest,
                    buf.len()
                ),
            });
        }
        Ok(Bytes::from(buf))
    }
}
