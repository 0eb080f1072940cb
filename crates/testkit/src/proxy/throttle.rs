//! [`ThrottleProxy`]: a forwarding proxy whose every connection sends at most a given number of bytes
//! per second, like an object store that serves each connection at a fraction of what a client could
//! read; it counts connections, and the most open or busy at once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use super::relay::{bind, Body, Link, Server};
use super::{RequestLog, RequestRecord};

/// Counters shared by the proxy's connections.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// A `+1` on `now` for as long as it lives, raising `max` when it rises above it.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn up(now: &'a AtomicUsize, max: &AtomicUsize) -> Gauge<'a> {
        let value = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(value, Ordering::SeqCst);
        Gauge(now)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct ThrottleState {
    link: Link,
    bytes_per_second: u64,
    ignore_range: AtomicBool,
    counters: Counters,
    log: RequestLog,
}

/// A proxy in front of `upstream` whose connections each send at most `bytes_per_second` to the
/// client (a token bucket on the socket, so headers and bodies alike, any request and any number of
/// requests on a connection). Requests, `Range` headers included, are forwarded as they are and
/// answers relayed as they are, redirects to other origins included (a `Location` on the upstream
/// is rewritten to the proxy).
#[derive(Debug)]
pub struct ThrottleProxy {
    state: Arc<ThrottleState>,
    _server: Server,
}

impl ThrottleProxy {
    /// Starts the proxy in front of `upstream`, capping each connection at `bytes_per_second`
    /// (at least 1).
    pub async fn start(upstream: SocketAddr, bytes_per_second: u64) -> io::Result<ThrottleProxy> {
        let (listener, addr) = bind().await?;
        let state = Arc::new(ThrottleState {
            link: Link { upstream, proxy: addr },
            bytes_per_second: bytes_per_second.max(1),
            ignore_range: AtomicBool::new(false),
            counters: Counters::default(),
            log: RequestLog::default(),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(ThrottleProxy { state, _server: Server::from_task(task) })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.state.link.proxy
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// The cap of each connection, in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.state.bytes_per_second
    }

    /// From now on, drops the `Range` header of every request before forwarding it, like a server
    /// that does not support ranges (it answers 200 with the whole blob).
    pub fn ignore_range(&self, ignore: bool) {
        self.state.ignore_range.store(ignore, Ordering::SeqCst);
    }

    /// How many connections clients opened so far.
    pub fn connections(&self) -> usize {
        self.state.counters.connections.load(Ordering::SeqCst)
    }

    /// The most connections open at once (busy or idle in a client's pool).
    pub fn max_open_connections(&self) -> usize {
        self.state.counters.max_open.load(Ordering::SeqCst)
    }

    /// The most requests being answered at once (from their headers to the end of the answer's
    /// body): the connections busy at once.
    pub fn max_busy_connections(&self) -> usize {
        self.state.counters.max_active.load(Ordering::SeqCst)
    }

    /// The requests the proxy answered, in order of completion.
    pub fn requests_log(&self) -> Vec<RequestRecord> {
        self.state.log.snapshot()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ThrottleState>) {
    super::relay::accept_each(listener, move |stream| serve_connection(stream, state.clone())).await
}

async fn serve_connection(stream: TcpStream, state: Arc<ThrottleState>) {
    let counters = &state.counters;
    counters.connections.fetch_add(1, Ordering::SeqCst);
    let _open = Gauge::up(&counters.open, &counters.max_open);
    let _ = stream.set_nodelay(true);
    let throttled = Throttled::new(stream, state.bytes_per_second);
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        let state = service_state.clone();
        async move {
            let record = RequestRecord::of(&request);
            if state.ignore_range.load(Ordering::SeqCst) {
                request.headers_mut().remove(http::header::RANGE);
            }
            let active = Active::start(state.clone());
            let response = state.link.forward(request).await;
            state.log.finish(record, response.status());
            // Busy until the body is sent: the count comes down when the body is dropped.
            Ok::<_, Infallible>(response.map(|body| ActiveBody::wrap(body, active)))
        }
    });
    let _ =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(throttled), service).await;
}

/// One request being answered, counted from its headers until its answer's body is dropped.
struct Active(Arc<ThrottleState>);

impl Active {
    fn start(state: Arc<ThrottleState>) -> Active {
        let counters = &state.counters;
        let value = counters.active.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_active.fetch_max(value, Ordering::SeqCst);
        Active(state)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as active.
struct ActiveBody {
    inner: Body,
    _active: Active,
}

impl ActiveBody {
    fn wrap(inner: Body, active: Active) -> Body {
        use http_body_util::BodyExt as _;
        ActiveBody { inner, _active: active }.boxed()
    }
}

impl hyper::body::Body for ActiveBody {
    type Data = bytes::Bytes;
    type Error = super::relay::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes follow a token bucket of `rate` bytes per second (bursts of 20 ms).
struct Throttled {
    inner: TcpStream,
    rate: u64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Throttled {
    fn new(inner: TcpStream, rate: u64) -> Throttled {
        let burst = (rate as f64 / 50.0).max(16.0 * 1024.0);
        Throttled { inner, rate, burst, tokens: 0.0, refilled: Instant::now(), sleep: None }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate as f64;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
    }
}

impl AsyncRead for Throttled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Throttled {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            this.refill();
            // Wait for a useful amount: a whole buffer if small, else a slice of the burst.
            let wanted = (buf.len() as f64).min(this.burst / 4.0).max(1.0);
            if this.tokens >= wanted {
                break;
            }
            let wait = (wanted - this.tokens) / this.rate as f64;
            this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
        }
        let allowed = (this.tokens as usize).clamp(1, buf.len());
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]))?;
        this.tokens -= written as f64;
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
