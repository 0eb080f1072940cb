//! How long requests may take: a total [`Deadline`] for each request and the (small) body of its
//! answer, and a minimum [`Throughput`] for blob bodies, which may legitimately take minutes but must
//! not stall or trickle.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use tokio::time::Instant;
use url::Url;

use crate::error::{redact_url, transport_error};
use crate::{Client, Error};

/// The instant a request must be complete by, and the limit it came from (for the error).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now.
    pub(crate) fn after(limit: Duration) -> Deadline {
        let now = Instant::now();
        // A limit too large to add is no limit: a century is as good as forever here.
        let at = now.checked_add(limit).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        Deadline { at, limit }
    }

    /// Runs `future` until the deadline; past it, the error names the request (`method`, `url`).
    pub(crate) async fn run<T>(
        self,
        method: &Method,
        url: &Url,
        future: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout_at(self.at, future).await {
            Ok(result) => result,
            Err(_) => Err(Error::DeadlineExceeded {
                method: method.to_string(),
                url: redact_url(url),
                limit: self.limit,
            }),
        }
    }

    /// Attaches the deadline to a response, for whoever reads its body (`read_body`,
    /// `error_excerpt`).
    pub(crate) fn attach(self, response: &mut reqwest::Response) {
        response.extensions_mut().insert(self);
    }

    /// The deadline attached to a response by `send`, if any.
    pub(crate) fn of(response: &reqwest::Response) -> Option<Deadline> {
        response.extensions().get::<Deadline>().copied()
    }

    /// The instant itself.
    pub(crate) fn at(self) -> Instant {
        self.at
    }
}

/// The minimum throughput of a blob body: at least `min_bytes` per `window` spent waiting for them.
///
/// Only time spent waiting for the network counts: a consumer that takes its time between chunks
/// (the data waits in socket buffers meanwhile) does not make the registry look slow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Throughput {
    min_bytes: u64,
    window: Duration,
    /// Waiting time in the current window.
    waited: Duration,
    /// Bytes received in the current window.
    moved: u64,
}

impl Throughput {
    /// A fresh window, for a new response.
    pub(crate) fn new(min_bytes: u64, window: Duration) -> Throughput {
        Throughput { min_bytes, window, waited: Duration::ZERO, moved: 0 }
    }

    /// The next chunk of `response`'s body, or [`Error::TooSlow`] when the current window passes
    /// with fewer than `min_bytes` received.
    pub(crate) async fn chunk(&mut self, response: &mut reqwest::Response) -> Result<Option<Bytes>, Error> {
        if self.min_bytes == 0 {
            return response.chunk().await.map_err(|e| transport_error(&Method::GET, response.url(), e));
        }
        let started = Instant::now();
        let remaining = self.window.saturating_sub(self.waited);
        let chunk = match tokio::time::timeout(remaining, response.chunk()).await {
            Ok(chunk) => chunk.map_err(|e| transport_error(&Method::GET, response.url(), e))?,
            Err(_) => {
                return Err(Error::TooSlow {
                    method: Method::GET.to_string(),
                    url: redact_url(response.url()),
                    min_bytes: self.min_bytes,
                    window: self.window,
                })
            }
        };
        self.waited += started.elapsed();
        self.moved += chunk.as_ref().map_or(0, |c| c.len() as u64);
        if self.moved >= self.min_bytes {
            *self = Throughput::new(self.min_bytes, self.window);
        }
        Ok(chunk)
    }
}

impl Client {
    /// The deadline of a request sending `body_len` bytes: the request timeout, plus the time the
    /// minimum blob throughput allows for the body (uploads of large blobs take longer).
    pub(crate) fn deadline_for(&self, body_len: u64) -> Deadline {
        let config = self.config();
        let windows = body_len.div_ceil(config.blob_min_bytes.max(1));
        let body_time = config.blob_stall_window.saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
        Deadline::after(config.request_timeout.saturating_add(body_time))
    }

    /// A throughput window of the configured minimum, for a new blob response.
    pub(crate) fn blob_throughput(&self) -> Throughput {
        Throughput::new(self.config().blob_min_bytes, self.config().blob_stall_window)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Anonymous, ClientConfig};

    fn client_with_minimum(blob_min_bytes: u64) -> Client {
        let config = ClientConfig { blob_min_bytes, ..ClientConfig::default() };
        Client::new(config, Arc::new(Anonymous)).unwrap()
    }

    #[test]
    fn uploads_get_time_for_their_body_at_the_minimum_throughput() {
        let client = client_with_minimum(512 * 1024);
        assert_eq!(client.deadline_for(0).limit, Duration::from_secs(60));
        assert_eq!(client.deadline_for(1).limit, Duration::from_secs(90));
        // 10 MiB: 20 windows of 512 KiB.
        assert_eq!(client.deadline_for(10 << 20).limit, Duration::from_secs(60 + 20 * 30));
        // No minimum throughput: no bound on the body (centuries), and no overflow either.
        let century = Duration::from_secs(100 * 365 * 86_400);
        assert!(client_with_minimum(0).deadline_for(u64::MAX).limit > century);
        assert!(client_with_minimum(0).deadline_for(5).limit > Duration::from_secs(150));
    }
}
