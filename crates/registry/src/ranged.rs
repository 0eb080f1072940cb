//! Parallel ranged reads of one large blob ([`RangedReads`]): a window of ranges from the reader's
//! position on, each fetched by a task of its own (so they move while the reader computes), resumed
//! on its own when its body breaks, and passed on in order through the same verified [`BlobStream`].
//!
//! Each range holds one permit of the client's connection budget from before its request until the
//! reader is done with its bytes: the budget bounds connections and the memory of ranges read ahead
//! alike (`max_connections × range_size` for the whole client), and a range's bytes are copied into
//! one buffer of its size, so that the network's buffers are not kept alive by what waits. The ranges
//! of one blob take their permits in order, so the one the reader waits for always has its permit
//! whenever a later one does: the budget cannot deadlock, however many blobs share it.
//!
//! A redirect (ECR → S3) is resolved once, by the first range, and its target used for every range
//! without the registry's credentials; a target that answers 403 or 400 has expired (presigned URLs
//! do) and is resolved again through the registry. A server that ignores `Range` (200 with the whole
//! blob) makes the download one stream, as without ranges; when that 200 answers a later range (a
//! redirect target that does not do ranges, say), the range that got it reads on to the end of the
//! blob and no further range starts: the prefix is skipped once, not once per range.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use bytes::BytesMut;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use tracing::debug;
use url::Url;

use crate::digest::{check_digest, DigestCounter};
use crate::error::Resource;
use crate::error::{redact_url, transport_error};
use crate::opened::{parse_content_range, range_header, skip_prefix, OpenedBlob};
use crate::response::error_excerpt;
use crate::resume::Resumes;
use crate::transport::Access;
use crate::{BlobStream, Client, ClientConfig, Error, RangedReads, Repository};

/// A blob to read in ranges: its size, as its descriptor says, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    size: u64,
    reads: RangedReads,
}

/// The plan for a blob of `expected_size`, if it is to be read in ranges: the client's ranged reads
/// are on and the size is known (the engine always knows it), not empty and large enough.
pub(crate) fn plan(config: &ClientConfig, expected_size: Option<u64>) -> Option<Plan> {
    let reads = config.ranged_reads?;
    let size = expected_size?;
    let usable = reads.range_size > 0 && reads.ranges_in_flight > 0;
    (usable && size > 0 && size >= reads.min_blob_size).then_some(Plan { size, reads })
}

/// How a ranged download began.
pub(crate) enum Started {
    /// In ranges.
    Ranged(BlobStream),
    /// The server ignored `Range` and sent the whole blob: this response, to read as one stream.
    Whole(OpenedBlob),
}

/// Opens the first range (errors such as 404 or 401 come from here) and, unless the server ignored
/// `Range`, starts the ranged stream.
pub(crate) async fn start(
    client: &Client,
    repo: &Repository,
    digest: &str,
    plan: Plan,
) -> Result<Started, Error> {
    let source = Arc::new(Source {
        client: client.clone(),
        repo: repo.clone(),
        digest: digest.to_owned(),
        size: plan.size,
        target: Mutex::new(None),
        whole_from: Mutex::new(None),
    });
    let first_end = plan.reads.range_size.min(plan.size);
    let permit = client.connection_permit().await;
    let first = client.with_retries(Error::is_retryable, |_| source.open(0, first_end)).await?;
    if !first.partial {
        debug!(repository = %repo, digest, "the server ignored Range: one stream");
        let total_size = first.response.content_length();
        return Ok(Started::Whole(OpenedBlob { response: first.response, skip: 0, total_size, permit }));
    }
    let mut blob = RangedBlob {
        source,
        reads: plan.reads,
        next_start: 0,
        ranges: VecDeque::new(),
        counter: DigestCounter::default(),
        pending_error: None,
        previous_acquired: None,
        done: false,
    };
    // A total that differs from the descriptor's size: fail before reading what cannot verify.
    if let Some(total) = first.total.filter(|&total| total != plan.size) {
        let (digest, expected) = (digest.to_owned(), plan.size);
        blob.pending_error = Some(Error::SizeMismatch { digest, expected, actual: total });
    } else {
        blob.spawn_range(Some((first, permit)));
    }
    let stream = futures_util::stream::unfold(blob, |mut blob| async move {
        let item = blob.next_item().await?;
        Some((item, blob))
    });
    Ok(Started::Ranged(BlobStream::new(stream, Some(plan.size))))
}

/// Where the ranges of one blob come from.
struct Source {
    client: Client,
    repo: Repository,
    digest: String,
    /// The blob's size, as its descriptor says.
    size: u64,
    /// Where the registry redirected the blob (another origin, such as a presigned S3 URL): `None`
    /// until a redirect is seen, and again once the target has expired.
    target: Mutex<Option<Url>>,
    /// The start of the earliest range answered with the whole blob (200): that range reads on to the
    /// end, and none after it is needed.
    whole_from: Mutex<Option<u64>>,
}

/// The answer to one range request.
struct RangeAnswer {
    response: reqwest::Response,
    /// Bytes before the first one asked for (a server that ignored `Range` starts at 0).
    skip: u64,
    /// A 206 (not a 200 with the whole blob).
    partial: bool,
    /// The blob's size, if the answer tells it.
    total: Option<u64>,
}

impl Source {
    /// The range starting at `start` got the whole blob: it becomes the rest of the download unless an
    /// earlier range already did (then it is not needed).
    fn claim_whole(&self, start: u64) -> bool {
        let mut whole_from = self.whole_from.lock().unwrap_or_else(|e| e.into_inner());
        if whole_from.is_some_and(|earlier| earlier < start) {
            return false;
        }
        *whole_from = Some(start);
        true
    }

    /// Whether some range reads on to the end of the blob.
    fn whole(&self) -> bool {
        self.whole_from.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn target(&self) -> MutexGuard<'_, Option<Url>> {
        // A plain value: consistent even if a holder panicked.
        self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes `start..end` (or from `start` on, if the server ignores the end), from the redirect
    /// target if there is one and it has not expired, else from the registry.
    async fn open(&self, start: u64, end: u64) -> Result<RangeAnswer, Error> {
        let target = self.target().clone();
        if let Some(url) = target {
            if let Some(answer) = self.open_at_target(&url, start, end).await? {
                return Ok(answer);
            }
            debug!(repository = %self.repo, digest = %self.digest, url = %redact_url(&url), "redirect target expired");
            let mut current = self.target();
            if current.as_ref() == Some(&url) {
                *current = None;
            }
        }
        self.open_at_registry(start, end).await
    }

    /// Asks the registry (credentials, redirects and all), remembering where it redirected.
    async fn open_at_registry(&self, start: u64, end: u64) -> Result<RangeAnswer, Error> {
        let url = self.client.blob_url(&self.repo, &self.digest)?;
        let mut request = self.client.request(&self.repo, Access::Pull, Method::GET, url);
        request.headers.insert(RANGE, range_header(start, Some(end - 1)));
        let sent = self.client.send(&request).await?;
        match sent.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                if !sent.from_registry {
                    *self.target() = Some(sent.url.clone());
                }
                self.answer(sent.response, &sent.url, start)
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Err(self.shorter_than(start)),
            _ => Err(sent.into_error(&self.repo, Resource::Blob, &self.digest).await),
        }
    }

    /// Asks the redirect target directly, without the registry's credentials. `None`: it has
    /// expired (403 or 400, as S3 answers a presigned URL past its time).
    async fn open_at_target(&self, url: &Url, start: u64, end: u64) -> Result<Option<RangeAnswer>, Error> {
        let deadline = self.client.deadline_for(0);
        let builder = self.client.http().get(url.clone()).header(RANGE, range_header(start, Some(end - 1)));
        let sending = async { builder.send().await.map_err(|e| transport_error(&Method::GET, url, e)) };
        let mut response = deadline.run(&Method::GET, url, sending).await?;
        deadline.attach(&mut response);
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => self.answer(response, url, start).map(Some),
            StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => Ok(None),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(self.shorter_than(start)),
            status => {
                let retry_after = crate::response::retry_after_of(&response);
                let body = error_excerpt(response, false).await;
                Err(Error::Http {
                    method: "GET".into(),
                    url: redact_url(url),
                    status: status.as_u16(),
                    body,
                    retry_after: retry_after.filter(|_| crate::error::is_retryable_status(status.as_u16())),
                })
            }
        }
    }

    /// A 200 or 206 as a [`RangeAnswer`]: a 206 must start where asked.
    fn answer(&self, response: reqwest::Response, url: &Url, start: u64) -> Result<RangeAnswer, Error> {
        if response.status() == StatusCode::OK {
            let total = response.content_length();
            return Ok(RangeAnswer { response, skip: start, partial: false, total });
        }
        let header = response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
        match header.map(parse_content_range) {
            // A registry that leaves out Content-Range is believed, as for single ranges.
            None => Ok(RangeAnswer { response, skip: 0, partial: true, total: None }),
            Some(Some((first, _, total))) if first == start => {
                Ok(RangeAnswer { response, skip: 0, partial: true, total })
            }
            _ => Err(Error::InvalidResponse {
                url: redact_url(url),
                reason: format!(
                    "asked for bytes from {start} of {} but got Content-Range {header:?}",
                    self.digest
                ),
            }),
        }
    }

    /// The error for nothing at `offset` (416): the blob is shorter than its descriptor says.
    fn shorter_than(&self, offset: u64) -> Error {
        Error::SizeMismatch { digest: self.digest.clone(), expected: self.size, actual: offset }
    }
}

/// One range of the window: what its task has sent and not yet been read, and the task.
struct Pending {
    receiver: mpsc::UnboundedReceiver<Message>,
    /// The range's permit, once its task has it: dropped with the entry, when the range is read.
    permit: Option<OwnedSemaphorePermit>,
    /// Bytes of the range not yet read.
    remaining: u64,
    task: AbortHandle,
}

/// What a range task sends to the reader.
enum Message {
    /// The task's permit of the connection budget, for the reader to hold until the range is read.
    Permit(OwnedSemaphorePermit),
    /// The next bytes of the range.
    Bytes(Bytes),
    /// The range got the whole blob (200) and reads on to its end: this many more bytes than its own.
    Extended(u64),
    /// The range failed for good.
    Failed(Error),
}

/// The reader's side: ranges in order, hashed as they are read.
struct RangedBlob {
    source: Arc<Source>,
    reads: RangedReads,
    /// Where the next range to start begins.
    next_start: u64,
    /// The window: started ranges, in blob order.
    ranges: VecDeque<Pending>,
    counter: DigestCounter,
    /// An error to report before anything else.
    pending_error: Option<Error>,
    /// Fires when the last range started has its permit (the next one waits for it).
    previous_acquired: Option<oneshot::Receiver<()>>,
    done: bool,
}

impl Drop for RangedBlob {
    fn drop(&mut self) {
        // A reader that stops early (an error, a dropped stream) stops the downloads too.
        for range in &self.ranges {
            range.task.abort();
        }
    }
}

impl RangedBlob {
    /// Starts the next range, with its first answer if it is already open.
    fn spawn_range(&mut self, opened: Option<(RangeAnswer, OwnedSemaphorePermit)>) {
        let start = self.next_start;
        let end = (start + self.reads.range_size).min(self.source.size);
        self.next_start = end;
        let (sender, receiver) = mpsc::unbounded_channel();
        let (acquired, next_waits) = oneshot::channel();
        let turn = Turn { after: self.previous_acquired.replace(next_waits), acquired };
        let task = tokio::spawn(fetch_range(self.source.clone(), start..end, turn, opened, sender));
        let pending = Pending { receiver, permit: None, remaining: end - start, task: task.abort_handle() };
        self.ranges.push_back(pending);
    }

    async fn next_item(&mut self) -> Option<Result<Bytes, Error>> {
        if let Some(error) = self.pending_error.take() {
            return self.fail(error);
        }
        while !self.done {
            while self.ranges.len() < self.reads.ranges_in_flight
                && self.next_start < self.source.size
                && !self.source.whole()
            {
                self.spawn_range(None);
            }
            let Some(front) = self.ranges.front_mut() else {
                self.done = true;
                return self.verify().err().map(Err);
            };
            match front.receiver.recv().await {
                Some(Message::Permit(permit)) => front.permit = Some(permit),
                Some(Message::Bytes(chunk)) => {
                    front.remaining -= chunk.len() as u64;
                    self.counter.update(&chunk);
                    return Some(Ok(chunk));
                }
                Some(Message::Extended(more)) => {
                    front.remaining += more;
                    // It brings the rest of the blob: the ranges after it are not needed.
                    for later in self.ranges.drain(1..) {
                        later.task.abort();
                    }
                    self.next_start = self.source.size;
                }
                Some(Message::Failed(error)) => return self.fail(error),
                None if front.remaining == 0 => {
                    self.ranges.pop_front();
                }
                None => {
                    let url = self.source.client.blob_url(&self.source.repo, &self.source.digest);
                    let reason = format!("a range download stopped {} bytes short", front.remaining);
                    let url = url.map(|u| redact_url(&u)).unwrap_or_default();
                    return self.fail(Error::InvalidResponse { url, reason });
                }
            }
        }
        None
    }

    fn fail(&mut self, error: Error) -> Option<Result<Bytes, Error>> {
        self.done = true;
        for range in self.ranges.drain(..) {
            range.task.abort();
        }
        Some(Err(error))
    }

    fn verify(&mut self) -> Result<(), Error> {
        let counter = std::mem::take(&mut self.counter);
        let (digest, expected, received) = (&self.source.digest, self.source.size, counter.len());
        if received != expected {
            return Err(Error::SizeMismatch { digest: digest.clone(), expected, actual: received });
        }
        check_digest(digest, &counter.finish())
    }
}

/// When a range may take its permit: after the previous range of the blob took its own.
struct Turn {
    /// Fires when the previous range has its permit (or is gone); `None` for the first range.
    after: Option<oneshot::Receiver<()>>,
    /// Tells the next range that this one has its permit.
    acquired: oneshot::Sender<()>,
}

/// Downloads `range` of the blob into `sink`, resuming where a body broke, within the client's retry
/// budget, with one permit of the connection budget (passed to the reader, who drops it once it has
/// read the range).
async fn fetch_range(
    source: Arc<Source>,
    range: std::ops::Range<u64>,
    turn: Turn,
    opened: Option<(RangeAnswer, OwnedSemaphorePermit)>,
    sink: mpsc::UnboundedSender<Message>,
) {
    let client = &source.client;
    let (mut opened, permit) = match opened {
        Some((answer, permit)) => (Some(answer), permit),
        None => {
            if let Some(after) = turn.after {
                // An error means the previous range's task is gone: nothing to wait for.
                let _ = after.await;
            }
            (None, client.connection_permit().await)
        }
    };
    let _ = turn.acquired.send(());
    if sink.send(Message::Permit(permit)).is_err() {
        return;
    }
    let (start, mut end) = (range.start, range.end);
    let mut offset = start;
    let mut resumes = Resumes::default();
    let mut buffer = BytesMut::with_capacity(usize::try_from(end - start).unwrap_or(0));
    while offset < end {
        let mut answer = match opened.take() {
            Some(answer) => answer,
            None => match client.with_retries(Error::is_retryable, |_| source.open(offset, end)).await {
                Ok(answer) => answer,
                Err(error) => {
                    let _ = sink.send(Message::Failed(error));
                    return;
                }
            },
        };
        if !answer.partial && start > 0 && end < source.size {
            // The whole blob: read on from here to its end, once, instead of each later range
            // skipping the same prefix again.
            if !source.claim_whole(start) {
                return; // an earlier range reads on through this one
            }
            debug!(digest = %source.digest, start, "a range got the whole blob: one stream from here");
            if sink.send(Message::Extended(source.size - end)).is_err() {
                return;
            }
            end = source.size;
        }
        let read = read_range(client, &mut answer, &mut offset, end, &mut buffer, &sink).await;
        drop(answer);
        match read {
            Ok(true) => {}
            Ok(false) => return, // the reader is gone
            Err(error) => {
                let message = error.to_string();
                match resumes.after_failure(client, offset - start, error) {
                    Ok(delay) => {
                        debug!(digest = %source.digest, offset, ?delay, error = %message, "range broke, will resume");
                        tokio::time::sleep(delay).await;
                    }
                    Err(error) => {
                        let _ = sink.send(Message::Failed(error));
                        return;
                    }
                }
            }
        }
    }
}

/// Passes the answer's bytes up to `end` into `sink`, copied into `buffer` (the range's own memory),
/// advancing `offset`. `Ok(false)`: the reader is gone.
async fn read_range(
    client: &Client,
    answer: &mut RangeAnswer,
    offset: &mut u64,
    end: u64,
    buffer: &mut BytesMut,
    sink: &mpsc::UnboundedSender<Message>,
) -> Result<bool, Error> {
    let mut throughput = client.blob_throughput();
    while *offset < end {
        let Some(mut chunk) = throughput.chunk(&mut answer.response).await? else {
            return Err(Error::InvalidResponse {
                url: redact_url(answer.response.url()),
                reason: format!("range body ended at byte {offset}, before {end}"),
            });
        };
        if answer.skip > 0 {
            chunk = skip_prefix(chunk, &mut answer.skip);
        }
        chunk.truncate((end - *offset).min(chunk.len() as u64) as usize);
        if chunk.is_empty() {
            continue;
        }
        *offset += chunk.len() as u64;
        buffer.extend_from_slice(&chunk);
        if sink.send(Message::Bytes(buffer.split().freeze())).is_err() {
            return Ok(false);
        }
    }
    if answer.partial {
        // A 206 of exactly the range ends here: reading its end hands the connection back to the
        // pool for the next range (a 200 with the rest of the blob is dropped instead).
        let _ = throughput.chunk(&mut answer.response).await;
    }
    Ok(true)
}
