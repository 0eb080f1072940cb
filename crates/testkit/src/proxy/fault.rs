//! [`FaultProxy`]: a forwarding proxy that injects 500/429 answers and cuts blob bodies mid-way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};

use super::path::{endpoint, Endpoint};
use super::relay::{bind, serve, simple_response, Body, BoxError, Link, Server};
use super::{RequestLog, RequestRecord};

/// The answer a [`FaultProxy`] gives instead of forwarding a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `500 Internal Server Error`.
    ServerError,
    /// `429 Too Many Requests` with `Retry-After: <seconds>`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds (keep it 0 or 1 in tests).
        retry_after_secs: u64,
    },
    /// `429 Too Many Requests` with `TOOMANYREQUESTS: Rate exceeded` and no `Retry-After`: what ECR
    /// answers over an account's API quota, most of the time.
    RateExceeded,
    /// `400 Bad Request` with `DIGEST_INVALID`, as distribution answers one of two clients uploading the
    /// same blob at once.
    DigestInvalid,
    /// `405 Method Not Allowed` with `UNSUPPORTED`, as distribution answers a DELETE when deletion is
    /// disabled in its configuration.
    Unsupported,
    /// `400 Bad Request` with `TAG_INVALID`, as ECR answers a manifest PUT to an existing tag of a
    /// repository whose tags are IMMUTABLE.
    ImmutableTag,
}

/// Which requests a [`FaultPlan`]'s failures apply to.
#[derive(Clone, Copy, Debug)]
pub enum RequestFilter {
    /// Every request.
    Any,
    /// `GET /v2/<name>/blobs/<digest>`.
    BlobGets,
    /// `GET` or `HEAD /v2/<name>/manifests/<reference>`.
    ManifestGets,
    /// `PUT /v2/<name>/manifests/<reference>`.
    ManifestPuts,
    /// Any request under `/v2/<name>/blobs/uploads/` (POST, PATCH, PUT, ...).
    Uploads,
    /// Any `PUT`, `POST`, `PATCH` or `DELETE`.
    Writes,
    /// Requests for which the function of method and path returns true.
    Custom(fn(&Method, &str) -> bool),
}

impl RequestFilter {
    /// Whether a request with `method` and `path` matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        match self {
            RequestFilter::Any => true,
            RequestFilter::BlobGets => {
                method == Method::GET && matches!(endpoint(path), Endpoint::Blob { .. })
            }
            RequestFilter::ManifestGets => {
                (method == Method::GET || method == Method::HEAD)
                    && matches!(endpoint(path), Endpoint::Manifest { .. })
            }
            RequestFilter::ManifestPuts => {
                method == Method::PUT && matches!(endpoint(path), Endpoint::Manifest { .. })
            }
            RequestFilter::Uploads => endpoint(path) == Endpoint::Upload,
            RequestFilter::Writes => {
                matches!(*method, Method::PUT | Method::POST | Method::PATCH | Method::DELETE)
            }
            RequestFilter::Custom(f) => f(method, path),
        }
    }
}

/// What a [`FaultProxy`] does wrong, and to which requests.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// How many matching requests to fail (the first ones).
    pub fail_first: usize,
    /// How to fail them.
    pub fault: Fault,
    /// Which requests count for `fail_first`.
    pub only: RequestFilter,
    /// How many blob GET responses (2xx, the first ones) to cut.
    pub cut_first: usize,
    /// After how many body bytes to cut them.
    pub cut_after: usize,
}

impl Default for FaultPlan {
    fn default() -> FaultPlan {
        FaultPlan {
            fail_first: 0,
            fault: Fault::ServerError,
            only: RequestFilter::Any,
            cut_first: 0,
            cut_after: 0,
        }
    }
}

impl FaultPlan {
    /// A plan that injects nothing (a plain forwarding proxy with a request log).
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Fails the first `n` matching requests with `fault`.
    pub fn fail_first(mut self, n: usize, fault: Fault) -> FaultPlan {
        self.fail_first = n;
        self.fault = fault;
        self
    }

    /// Restricts the failures to requests matching `filter`.
    pub fn only(mut self, filter: RequestFilter) -> FaultPlan {
        self.only = filter;
        self
    }

    /// Cuts the bodies of the first `n` successful blob GET responses after `after_bytes` bytes.
    pub fn cut_blob_gets(mut self, n: usize, after_bytes: usize) -> FaultPlan {
        self.cut_first = n;
        self.cut_after = after_bytes;
        self
    }
}

#[derive(Debug)]
struct FaultState {
    link: Link,
    plan: FaultPlan,
    requests: AtomicUsize,
    failed: AtomicUsize,
    cut_started: AtomicUsize,
    faults: Arc<AtomicUsize>,
    log: RequestLog,
}

/// A forwarding proxy that fails requests and cuts blob bodies according to a [`FaultPlan`].
///
/// A cut response sends its status, headers (including the full `Content-Length`) and the first
/// `cut_after` body bytes, then the connection is closed, so the client sees an incomplete body.
#[derive(Debug)]
pub struct FaultProxy {
    state: Arc<FaultState>,
    _server: Server,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream`.
    pub async fn start(upstream: SocketAddr, plan: FaultPlan) -> io::Result<FaultProxy> {
        let (listener, addr) = bind().await?;
        let state = Arc::new(FaultState {
            link: Link { upstream, proxy: addr },
            plan,
            requests: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            cut_started: AtomicUsize::new(0),
            faults: Arc::new(AtomicUsize::new(0)),
            log: RequestLog::default(),
        });
        let handler_state = state.clone();
        let server =
            serve(listener, state.log.clone(), move |request| handle(handler_state.clone(), request));
        Ok(FaultProxy { state, _server: server })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.state.link.proxy
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// How many faults were injected so far: failed requests plus bodies actually cut.
    pub fn faults_injected(&self) -> usize {
        self.state.faults.load(Ordering::SeqCst)
    }

    /// How many requests the proxy received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The requests the proxy answered, in order of completion.
    pub fn requests_log(&self) -> Vec<RequestRecord> {
        self.state.log.snapshot()
    }
}

/// Takes one of `limit` slots from `counter`; false once they are used up.
fn take_slot(counter: &AtomicUsize, limit: usize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1)).is_ok()
}

async fn handle(state: Arc<FaultState>, request: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let plan = &state.plan;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if plan.only.matches(&method, &path) && take_slot(&state.failed, plan.fail_first) {
        state.faults.fetch_add(1, Ordering::SeqCst);
        // Read the request body first, so the client sees the answer rather than a broken pipe.
        let _ = request.into_body().collect().await;
        return fault_response(plan.fault);
    }
    let response = state.link.forward(request).await;
    if method == Method::GET
        && RequestFilter::BlobGets.matches(&method, &path)
        && response.status().is_success()
        && take_slot(&state.cut_started, plan.cut_first)
    {
        response.map(|body| {
            CutBody {
                inner: body,
                remaining: plan.cut_after,
                state: CutState::Passing,
                faults: state.faults.clone(),
            }
            .boxed()
        })
    } else {
        response
    }
}

/// The answer that stands for `fault`, with a registry error body.
fn fault_response(fault: Fault) -> Response<Body> {
    match fault {
        Fault::ServerError => {
            registry_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "injected by FaultProxy")
        }
        Fault::TooManyRequests { retry_after_secs } => {
            let mut response =
                registry_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "injected by FaultProxy");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Fault::RateExceeded => registry_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "Rate exceeded"),
        Fault::DigestInvalid => {
            registry_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "provided digest did not match uploaded content")
        }
        Fault::Unsupported => {
            registry_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "The operation is unsupported.")
        }
        Fault::ImmutableTag => registry_error(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            "The image tag already exists in the repository and cannot be overwritten because the repository \
             is immutable.",
        ),
    }
}

/// A response with the registry's JSON error body.
fn registry_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    simple_response(status, "application/json; charset=utf-8", body)
}

enum CutState {
    Passing,
    Cutting(Pin<Box<tokio::time::Sleep>>),
    Done,
}

/// A body that passes `remaining` bytes of `inner` and then fails, which makes hyper abort the
/// connection mid-body.
struct CutBody {
    inner: Body,
    remaining: usize,
    state: CutState,
    faults: Arc<AtomicUsize>,
}

impl hyper::body::Body for CutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                CutState::Passing => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    None => {
                        this.state = CutState::Done;
                        return Poll::Ready(None);
                    }
                    Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) if data.len() > this.remaining => {
                            data.truncate(this.remaining);
                            this.remaining = 0;
                            this.faults.fetch_add(1, Ordering::SeqCst);
                            // Give hyper time to flush what was sent before the connection dies.
                            this.state =
                                CutState::Cutting(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                            if !data.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                        }
                        Ok(data) => {
                            this.remaining -= data.len();
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                },
                CutState::Cutting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = CutState::Done;
                    return Poll::Ready(Some(Err("body cut by FaultProxy".into())));
                }
                CutState::Done => return Poll::Ready(None),
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown: hyper then relies on the Content-Length header, which announces the full body.
        SizeHint::default()
    }
}
