//! Streamed blob downloads that resume after broken connections and verify the digest.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::digest::{check_digest, DigestCounter};
use crate::error::redact_url;
use crate::limits::Throughput;
use crate::opened::{skip_prefix, OpenedBlob};
use crate::ranged::{self, Started};
use crate::resume::Resumes;
use crate::{Client, Error, Repository};

/// The bytes of a blob, chunk by chunk, as they arrive; never buffered whole.
///
/// A blob of at least [`crate::RangedReads::min_blob_size`] is fetched as several ranges at once and
/// reassembled here in order (unless the client's `ranged_reads` is off, or the server ignores
/// `Range`); a smaller one, as one response. Either way, when a connection breaks, a body ends early
/// or it moves slower than the client's minimum throughput, the download resumes with `Range: bytes=<received>-`, within the client's retry
/// budget (which restarts whenever a response moves at least that minimum). Everything is hashed:
/// if the content does not match the digest, or the size differs from the expected one, the last
/// item is [`Error::DigestMismatch`] or [`Error::SizeMismatch`] instead of a clean end, so a
/// consumer that reads to the end never accepts corrupted data. After an error item, the stream
/// ends.
pub struct BlobStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>,
    size: Option<u64>,
}

impl BlobStream {
    pub(crate) fn new(
        inner: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
        size: Option<u64>,
    ) -> BlobStream {
        BlobStream { inner: Box::pin(inner), size }
    }

    /// The blob's size: the expected size if one was given, else what the registry announced.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream").field("size", &self.size).finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The state of one download.
pub(crate) struct BlobDownload {
    client: Client,
    repo: Repository,
    digest: String,
    /// The registry URL of the blob, for errors.
    url: url::Url,
    expected_size: Option<u64>,
    /// `expected_size`, or the total the registry announced.
    total_size: Option<u64>,
    counter: DigestCounter,
    response: Option<reqwest::Response>,
    /// The connection budget's permit of the current response.
    permit: Option<OwnedSemaphorePermit>,
    /// The minimum throughput of the current response.
    throughput: Throughput,
    /// Whether the current response has a `Content-Length`: then hyper reports a cut body as an
    /// error, and a clean end means the server sent everything it has.
    response_is_framed: bool,
    /// Bytes still to drop from the current response (a server that ignored `Range` resends the start).
    skip: u64,
    resumes: Resumes,
    done: bool,
}

impl BlobDownload {
    pub(crate) async fn start(
        client: Client,
        repo: Repository,
        digest: String,
        expected_size: Option<u64>,
    ) -> Result<BlobStream, Error> {
        let opened = match ranged::plan(client.config(), expected_size) {
            Some(plan) => match ranged::start(&client, &repo, &digest, plan).await? {
                Started::Ranged(stream) => return Ok(stream),
                Started::Whole(opened) => opened,
            },
            None => client.open_blob(&repo, &digest, 0).await?,
        };
        BlobDownload::from_opened(client, repo, digest, expected_size, opened)
    }

    /// The stream of a blob whose first response is `opened`.
    fn from_opened(
        client: Client,
        repo: Repository,
        digest: String,
        expected_size: Option<u64>,
        opened: OpenedBlob,
    ) -> Result<BlobStream, Error> {
        let total_size = expected_size.or(opened.total_size);
        let url = client.blob_url(&repo, &digest)?;
        let throughput = client.blob_throughput();
        let download = BlobDownload {
            client,
            repo,
            digest,
            url,
            expected_size,
            total_size,
            counter: DigestCounter::default(),
            throughput,
            response_is_framed: opened.response.content_length().is_some(),
            response: Some(opened.response),
            permit: Some(opened.permit),
            skip: opened.skip,
            resumes: Resumes::default(),
            done: false,
        };
        let stream = futures_util::stream::unfold(download, |mut download| async move {
            let item = download.next_item().await?;
            Some((item, download))
        });
        Ok(BlobStream::new(stream, total_size))
    }

    async fn next_item(&mut self) -> Option<Result<Bytes, Error>> {
        while !self.done {
            let Some(response) = self.response.as_mut() else {
                if let Err(error) = self.resume().await {
                    return self.fail(error);
                }
                continue;
            };
            match self.throughput.chunk(response).await {
                Ok(Some(mut chunk)) => {
                    if self.skip > 0 {
                        chunk = skip_prefix(chunk, &mut self.skip);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    let received = self.counter.len() + chunk.len() as u64;
                    if let Some(total) = self.total_size.filter(|&total| received > total) {
                        // More than announced: stop now rather than download an unbounded body.
                        return self.fail(Error::SizeMismatch {
                            digest: self.digest.clone(),
                            expected: total,
                            actual: received,
                        });
                    }
                    self.counter.update(&chunk);
                    return Some(Ok(chunk));
                }
                Ok(None) => {
                    self.response = None;
                    self.permit = None;
                    let received = self.counter.len();
                    let short = self.total_size.filter(|&total| received < total);
                    if let (Some(total), false) = (short, self.response_is_framed) {
                        // Without Content-Length a closed connection looks like a clean end.
                        let error = Error::InvalidResponse {
                            url: redact_url(&self.url),
                            reason: format!("body ended after {received} of {total} bytes"),
                        };
                        if let Err(error) = self.after_failure(error).await {
                            return self.fail(error);
                        }
                        continue;
                    }
                    self.done = true;
                    return self.verify().err().map(Err);
                }
                Err(error) => {
                    self.response = None;
                    self.permit = None;
                    if let Err(error) = self.after_failure(error).await {
                        return self.fail(error);
                    }
                }
            }
        }
        None
    }

    /// Opens the blob again at the first byte not received yet.
    async fn resume(&mut self) -> Result<(), Error> {
        let offset = self.counter.len();
        debug!(repository = %self.repo, digest = %self.digest, offset, "resuming blob download");
        match self.client.open_blob(&self.repo, &self.digest, offset).await {
            Ok(opened) => {
                self.response_is_framed = opened.response.content_length().is_some();
                self.response = Some(opened.response);
                self.permit = Some(opened.permit);
                self.throughput = self.client.blob_throughput();
                self.skip = opened.skip;
                self.total_size = self.total_size.or(opened.total_size);
                Ok(())
            }
            // 416: there is nothing at `offset`, the blob is shorter than announced.
            Err(Error::Http { status: 416, .. }) if self.total_size.is_some() => {
                let expected = self.total_size.unwrap_or_default();
                Err(Error::SizeMismatch { digest: self.digest.clone(), expected, actual: offset })
            }
            Err(error) => Err(error),
        }
    }

    fn fail(&mut self, error: Error) -> Option<Result<Bytes, Error>> {
        self.done = true;
        self.response = None;
        self.permit = None;
        Some(Err(error))
    }

    /// Counts a broken body and waits before resuming, or gives up when the budget is spent.
    async fn after_failure(&mut self, error: Error) -> Result<(), Error> {
        let received = self.counter.len();
        let message = error.to_string();
        let delay = self.resumes.after_failure(&self.client, received, error)?;
        debug!(
            repository = %self.repo,
            digest = %self.digest,
            received,
            attempt = self.resumes.failures(),
            ?delay,
            error = %message,
            "blob body broke, will resume"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn verify(&mut self) -> Result<(), Error> {
        let counter = std::mem::take(&mut self.counter);
        let received = counter.len();
        if let Some(expected) = self.expected_size.filter(|&expected| expected != received) {
            return Err(Error::SizeMismatch { digest: self.digest.clone(), expected, actual: received });
        }
        check_digest(&self.digest, &counter.finish())
    }
}
