//! The hyper plumbing every proxy shares: a loopback HTTP/1 server that logs what it answers, and
//! a client side that forwards requests to the upstream and relays its answers.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{RequestLog, RequestRecord};

/// Any error a body or the upstream connection can fail with.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response a proxy sends.
pub(super) type Body = BoxBody<Bytes, BoxError>;

/// A hyper HTTP/1 server on a loopback listener; dropping it stops accepting and aborts every open
/// connection.
#[derive(Debug)]
pub(super) struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server run by `task` (a proxy with an accept loop of its own).
    pub(super) fn from_task(task: tokio::task::JoinHandle<()>) -> Server {
        Server { task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on a free `127.0.0.1` port, and that port.
pub(super) async fn bind() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Answers every request on `listener` with `handler`, recording each answer in `log`.
pub(super) fn serve<F, Fut>(listener: TcpListener, log: RequestLog, handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let task = tokio::spawn(accept_each(listener, move |stream| {
        let (handler, log) = (handler.clone(), log.clone());
        async move {
            let service = hyper::service::service_fn(move |request| {
                let record = RequestRecord::of(&request);
                let (response, log) = (handler(request), log.clone());
                async move {
                    let response = response.await;
                    log.finish(record, response.status());
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }));
    Server { task }
}

/// Accepts connections on `listener` forever, each served by `serve` in a task of its own. The tasks
/// belong to this future: dropping or aborting it aborts every connection.
pub(super) async fn accept_each<F, Fut>(listener: TcpListener, mut serve: F)
where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(serve(stream));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Sends `request` as it is to `upstream` over a fresh connection.
pub(super) async fn send_upstream(
    upstream: SocketAddr,
    request: Request<Body>,
) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender.send_request(request).await?)
}

/// The two ends a proxy relays between: the upstream registry and the proxy's own address.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    /// Where requests are forwarded.
    pub upstream: SocketAddr,
    /// Where clients reach the proxy.
    pub proxy: SocketAddr,
}

impl Link {
    /// Sends a request received by the proxy to the upstream: origin-form URI, upstream `Host`,
    /// hop-by-hop headers removed.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        parts.uri = Uri::try_from(path_and_query).unwrap_or_else(|_| Uri::from_static("/"));
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, HeaderValue::from_str(&self.upstream.to_string()).unwrap());
        send_upstream(self.upstream, Request::from_parts(parts, body)).await
    }

    /// Turns an upstream response into one for the client: hop-by-hop headers removed, a `Location`
    /// on the upstream rewritten to point at the proxy.
    pub fn relay(&self, response: Response<Incoming>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(location) = parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            let upstream_origin = format!("http://{}", self.upstream);
            if let Some(rest) = location.strip_prefix(&upstream_origin) {
                if rest.is_empty() || rest.starts_with(['/', '?']) {
                    let rewritten = format!("http://{}{rest}", self.proxy);
                    if let Ok(value) = HeaderValue::from_str(&rewritten) {
                        parts.headers.insert(header::LOCATION, value);
                    }
                }
            }
        }
        Response::from_parts(parts, boxed(body))
    }

    /// Forwards `request` to the upstream and relays the answer (502 if the upstream cannot be
    /// reached).
    pub async fn forward<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        match self.send(request.map(boxed)).await {
            Ok(response) => self.relay(response),
            Err(error) => bad_gateway(format!("upstream {}: {error}", self.upstream)),
        }
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `body` as a proxy response body.
pub(super) fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// An empty body.
pub(super) fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

/// A body of `bytes`.
pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}

/// A response with `body` of `content_type` and its length.
pub(super) fn simple_response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .unwrap()
}

/// `502 Bad Gateway` with `message` as plain text.
pub(super) fn bad_gateway(message: impl Into<Bytes>) -> Response<Body> {
    simple_response(StatusCode::BAD_GATEWAY, "text/plain", message)
}
