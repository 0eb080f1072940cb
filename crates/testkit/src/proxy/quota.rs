//! [`QuotaProxy`]: a forwarding proxy with ECR's per-account API quotas, shared by every client:
//! manifest `PUT`s (`PutImage`, 10 a second by default) and upload requests (`InitiateLayerUpload`,
//! `UploadLayerPart`, `CompleteLayerUpload`) each drain a token bucket; a request that finds its bucket
//! empty is answered `429 TOOMANYREQUESTS: Rate exceeded`, without `Retry-After` unless asked, as ECR
//! answers. It counts what it forwarded and throttled, and the upload sessions left open.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::path::{endpoint, Endpoint};
use super::relay::{bind, serve, simple_response, Body, Link, Server};
use super::RequestLog;

/// The quotas a [`QuotaProxy`] enforces, per second, for all its clients together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quotas {
    /// Manifest `PUT`s a second (ECR's `PutImage` default: 10).
    pub manifest_puts: f64,
    /// Upload requests a second (`POST`, `PATCH`, `PUT` under `/blobs/uploads/`).
    pub uploads: f64,
    /// Send `Retry-After: <seconds>` with each 429 (ECR mostly sends none).
    pub retry_after_secs: Option<u64>,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas { manifest_puts: 10.0, uploads: 20.0, retry_after_secs: None }
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` (one second's worth) saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
    forwarded: AtomicUsize,
    throttled: AtomicUsize,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
            forwarded: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let (tokens, since) = *state;
        let tokens = (tokens + now.duration_since(since).as_secs_f64() * self.rate).min(self.rate);
        let taken = tokens >= 1.0;
        *state = (if taken { tokens - 1.0 } else { tokens }, now);
        let counter = if taken { &self.forwarded } else { &self.throttled };
        counter.fetch_add(1, Ordering::SeqCst);
        taken
    }
}

#[derive(Debug)]
struct QuotaState {
    link: Link,
    quotas: Quotas,
    manifests: Bucket,
    uploads: Bucket,
    open_sessions: AtomicI64,
    log: RequestLog,
}

/// Counts of what a [`QuotaProxy`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaCounts {
    /// Manifest `PUT`s forwarded.
    pub manifest_puts: usize,
    /// Manifest `PUT`s answered 429.
    pub manifest_puts_throttled: usize,
    /// Upload requests forwarded.
    pub uploads: usize,
    /// Upload requests answered 429.
    pub uploads_throttled: usize,
    /// Upload sessions started (202 to a `POST`) and never completed (201 to their `PUT`).
    pub open_sessions: i64,
}

/// A forwarding proxy that enforces [`Quotas`] across all its clients.
#[derive(Debug)]
pub struct QuotaProxy {
    state: Arc<QuotaState>,
    _server: Server,
}

impl QuotaProxy {
    /// Starts the proxy in front of `upstream`.
    pub async fn start(upstream: SocketAddr, quotas: Quotas) -> io::Result<QuotaProxy> {
        let (listener, addr) = bind().await?;
        let state = Arc::new(QuotaState {
            link: Link { upstream, proxy: addr },
            quotas,
            manifests: Bucket::new(quotas.manifest_puts),
            uploads: Bucket::new(quotas.uploads),
            open_sessions: AtomicI64::new(0),
            log: RequestLog::default(),
        });
        let handler_state = state.clone();
        let server =
            serve(listener, state.log.clone(), move |request| handle(handler_state.clone(), request));
        Ok(QuotaProxy { state, _server: server })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.state.link.proxy.to_string()
    }

    /// What it forwarded and throttled so far.
    pub fn counts(&self) -> QuotaCounts {
        let s = &self.state;
        QuotaCounts {
            manifest_puts: s.manifests.forwarded.load(Ordering::SeqCst),
            manifest_puts_throttled: s.manifests.throttled.load(Ordering::SeqCst),
            uploads: s.uploads.forwarded.load(Ordering::SeqCst),
            uploads_throttled: s.uploads.throttled.load(Ordering::SeqCst),
            open_sessions: s.open_sessions.load(Ordering::SeqCst),
        }
    }

    /// The least time the forwarded requests need under the quotas: the larger of manifest `PUT`s
    /// and uploads, each divided by its rate.
    pub fn bound(&self) -> Duration {
        let counts = self.counts();
        let puts = counts.manifest_puts as f64 / self.state.quotas.manifest_puts;
        let uploads = counts.uploads as f64 / self.state.quotas.uploads;
        Duration::from_secs_f64(puts.max(uploads))
    }
}

async fn handle(state: Arc<QuotaState>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let bucket = match endpoint(request.uri().path()) {
        Endpoint::Manifest { .. } if method == Method::PUT => Some(&state.manifests),
        Endpoint::Upload if method != Method::GET && method != Method::HEAD => Some(&state.uploads),
        _ => None,
    };
    if let Some(bucket) = bucket {
        if !bucket.take() {
            // Read the request body first, so the client sees the answer rather than a broken pipe.
            let _ = request.into_body().collect().await;
            return rate_exceeded(state.quotas.retry_after_secs);
        }
    }
    let is_upload = matches!(endpoint(request.uri().path()), Endpoint::Upload);
    let response = state.link.forward(request).await;
    if is_upload {
        match (&method, response.status()) {
            (&Method::POST, StatusCode::ACCEPTED) => state.open_sessions.fetch_add(1, Ordering::SeqCst),
            (&Method::PUT, StatusCode::CREATED) => state.open_sessions.fetch_sub(1, Ordering::SeqCst),
            _ => 0,
        };
    }
    response
}

fn rate_exceeded(retry_after_secs: Option<u64>) -> Response<Body> {
    let body = serde_json::json!({ "errors": [{ "code": "TOOMANYREQUESTS", "message": "Rate exceeded" }] });
    let mut response =
        simple_response(StatusCode::TOO_MANY_REQUESTS, "application/json; charset=utf-8", body.to_string());
    if let Some(secs) = retry_after_secs {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
