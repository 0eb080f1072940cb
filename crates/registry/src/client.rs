//! The [`Client`] and its configuration: the shared state that the operations in `manifests`,
//! `blobs` and `referrers` use through the request machinery in `transport`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthCache, CredentialSource};
use crate::pace::{Pacer, ThrottleEvent, ThrottleObserver, WriteKind};
use crate::{BlobStream, Error, Repository, RetryPolicy};

/// The default of [`ClientConfig::max_connections`]: four large layers in four ranges each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

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
    /// Time allowed between two reads of a response: a backstop for dead connections, above
    /// `request_timeout` and `blob_stall_window`, which normally fire first.
    pub read_timeout: Duration,
    /// Time allowed for one request, from sending it to the end of its answer, token requests and
    /// redirects included: manifests, referrers, uploads (plus time for their body at the minimum
    /// blob throughput) and the headers of blob downloads (their bodies have a minimum throughput).
    pub request_timeout: Duration,
    /// The least a blob body must move per `blob_stall_window` of waiting (0: no minimum). Blobs
    /// have no total deadline: a multi-gigabyte layer may take minutes, but must not stall.
    pub blob_min_bytes: u64,
    /// The window of `blob_min_bytes`.
    pub blob_stall_window: Duration,
    /// Attempts of one operation whose attempts time out (deadline, minimum throughput or read
    /// timeout), the first included, within `retry.max_attempts`: a registry that never answers
    /// fails an operation after about `timeout_attempts × request_timeout` plus backoff.
    pub timeout_attempts: u32,
    /// Blob downloads at once, across every clone of the client: a whole-blob stream holds one
    /// permit while its body downloads, a range from before its request until its bytes are read, so
    /// the budget bounds connections and the ranges read ahead (at most `max_connections ×
    /// range_size` bytes) alike. Other requests (manifests, tokens, uploads) are short and not
    /// counted, so a blob request never waits for itself.
    pub max_connections: usize,
    /// How large blobs are downloaded: `Some`, in parallel ranges (see [`RangedReads`]); `None`, as
    /// one stream each.
    pub ranged_reads: Option<RangedReads>,
    /// Manifest `PUT`s a second to one registry host, at most, for a [`Client::for_background`]
    /// clone (`sync`, the reconcile); `None`: background work is paced only by the registry's
    /// throttling, as foreground work is.
    pub max_background_write_rate: Option<f64>,
    /// Told of every throttled request before the client waits.
    pub on_throttle: Option<ThrottleObserver>,
}

/// Parallel ranged reads of one large blob: `ranges_in_flight` `Range` GETs of `range_size` bytes at
/// a time, reassembled in order into the same verified [`BlobStream`], so a blob arrives as fast as
/// several connections allow when each one alone is capped (S3 serves a connection at a fraction of
/// what the zTOC builder reads). At most `ranges_in_flight × range_size` bytes of a blob are held,
/// and `max_connections × range_size` for the whole client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangedReads {
    /// Blobs of at least this many bytes (as their descriptor says) are read in ranges.
    pub min_blob_size: u64,
    /// Bytes per range.
    pub range_size: u64,
    /// Ranges of one blob downloading or waiting to be read at once (1 reads the ranges one after
    /// the other).
    pub ranges_in_flight: usize,
}

impl Default for RangedReads {
    fn default() -> RangedReads {
        // 4 × 4 MiB: enough connections to keep up with the builder when each gets 1/2.5 of its
        // pace, 16 MiB read ahead per blob, 64 MiB at most under the default connection budget.
        RangedReads { min_blob_size: 64 << 20, range_size: 4 << 20, ranges_in_flight: 4 }
    }
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            plain_http: false,
            retry: RetryPolicy::default(),
            user_agent: concat!("soci-indexer/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(90),
            // Manifests, indexes and referrers pages are kilobytes: a minute is generous.
            request_timeout: Duration::from_secs(60),
            // About 17 KiB/s: below any usable link, so only stalls and trickles fail.
            blob_min_bytes: 512 * 1024,
            blob_stall_window: Duration::from_secs(30),
            // 3 × 60 s plus under a second of backoff: about three minutes.
            timeout_attempts: 3,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ranged_reads: Some(RangedReads::default()),
            max_background_write_rate: None,
            on_throttle: None,
        }
    }
}

/// A client for OCI registries. Cheap to clone: clones share connections, tokens, configuration and
/// the pacing of writes per registry host.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// When the run using this handle must be done: throttled requests wait no longer.
    deadline: Option<tokio::time::Instant>,
    /// Background work: writes held under [`ClientConfig::max_background_write_rate`].
    background: bool,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    credentials: Arc<dyn CredentialSource>,
    auth: Mutex<AuthCache>,
    /// One permit per blob body in flight ([`ClientConfig::max_connections`]).
    connections: Arc<Semaphore>,
    /// Requests the registry throttled, over the client's life.
    throttled: AtomicU64,
    /// One limiter per registry host, kind of write, and foreground or background.
    pacers: Mutex<HashMap<(String, WriteKind, bool), Arc<Pacer>>>,
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
        let connections = Arc::new(Semaphore::new(config.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        let inner = Inner {
            http,
            config,
            credentials,
            auth: Mutex::default(),
            connections,
            throttled: AtomicU64::new(0),
            pacers: Mutex::default(),
        };
        Ok(Client { inner: Arc::new(inner), deadline: None, background: false })
    }

    /// This client (sharing everything) for a run that must be done by `deadline`: a throttled request
    /// is retried until then, and no longer (without a deadline, for `retry.throttle_budget`).
    pub fn with_deadline(&self, deadline: std::time::Instant) -> Client {
        Client { deadline: Some(tokio::time::Instant::from_std(deadline)), ..self.clone() }
    }

    /// This client (sharing everything) for background work: its manifest `PUT`s are held under
    /// [`ClientConfig::max_background_write_rate`] per registry host, across every background clone.
    pub fn for_background(&self) -> Client {
        Client { background: true, ..self.clone() }
    }

    /// Requests the registry throttled (429, 503 `SlowDown`) since the client was made, all clones
    /// together.
    pub fn throttled_requests(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// The deadline of this handle, if it has one.
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// Counts a throttled answer and tells the observer what the client does about it.
    pub(crate) fn note_throttled(&self, event: &ThrottleEvent) {
        self.inner.throttled.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.inner.config.on_throttle {
            (observer.0)(event);
        }
    }

    /// Runs the write `op` in its turn of the `kind` limiter of the repository's host, and tells the
    /// limiter how it went.
    pub(crate) async fn paced<T>(
        &self,
        repo: &Repository,
        kind: WriteKind,
        op: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let pacer = self.pacer(repo.registry(), kind);
        pacer.wait_turn(self.deadline).await;
        let result = op.await;
        match &result {
            Ok(_) => pacer.succeeded(),
            Err(e) if e.is_throttled_answer() => pacer.throttled(),
            Err(_) => {}
        }
        result
    }

    /// The limiter of `kind` writes to `registry` for this handle.
    pub(crate) fn pacer(&self, registry: &str, kind: WriteKind) -> Arc<Pacer> {
        let ceiling = match kind {
            WriteKind::Manifest if self.background => self.inner.config.max_background_write_rate,
            _ => None,
        };
        let mut pacers = self.inner.pacers.lock().unwrap_or_else(|e| e.into_inner());
        pacers
            .entry((registry.to_owned(), kind, self.background))
            .or_insert_with(|| Arc::new(Pacer::new(ceiling)))
            .clone()
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.config.retry
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn credential_source(&self) -> &dyn CredentialSource {
        self.inner.credentials.as_ref()
    }

    /// Waits for one of the [`ClientConfig::max_connections`] blob downloads; dropping the permit
    /// lets the next one start.
    pub(crate) async fn connection_permit(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.inner
            .connections
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }

    pub(crate) fn auth_cache(&self) -> MutexGuard<'_, AuthCache> {
        // The cache stays consistent even if a holder panicked: every update is a single insert/remove.
        self.inner.auth.lock().unwrap_or_else(|e| e.into_inner())
    }
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
