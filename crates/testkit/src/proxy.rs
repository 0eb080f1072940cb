//! HTTP fixtures that sit in front of a registry (usually a [`LocalRegistry`](crate::registry::LocalRegistry))
//! on loopback, to reproduce what real registries do and `docker-registry` does not:
//!
//! - [`RedirectProxy`]: blob GETs are redirected to a second origin (like ECR → S3 presigned URLs),
//!   which rejects requests that carry an `Authorization` header.
//! - [`ReferrersProxy`]: the OCI 1.1 referrers API and the `OCI-Subject` header.
//! - [`FaultProxy`]: injected 500/429 answers and blob bodies cut mid-way.
//!
//! Every fixture forwards everything else faithfully (method, path and query, headers including
//! `Authorization`, streamed bodies both ways), rewrites a `Location` that points at the upstream so
//! clients keep going through the proxy, keeps a log of the requests it saw, and stops serving when
//! its handle is dropped. Plain HTTP only, on `127.0.0.1`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use sha2::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// The message the redirect target answers (with 400) to a request that carries `Authorization`.
pub const AUTH_LEAK_MESSAGE: &str = "Authorization header sent to redirect target";

// ---------------------------------------------------------------------------------------------------
// Request log

/// One request a fixture answered, as recorded in its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any (without `?`).
    pub query: Option<String>,
    /// The `Range` header, if the request had one.
    pub range: Option<String>,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
    /// The status the fixture answered with.
    pub status: u16,
}

impl RequestRecord {
    /// Whether the request had a `Range` header.
    pub fn had_range(&self) -> bool {
        self.range.is_some()
    }

    /// Whether the request could change the registry (`PUT`, `POST`, `PATCH` or `DELETE`).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE")
    }

    /// The `(method, path, had_range_header)` triple, handy in assertions.
    pub fn triple(&self) -> (String, String, bool) {
        (self.method.clone(), self.path.clone(), self.had_range())
    }
}

#[derive(Clone, Debug, Default)]
struct RequestLog(Arc<Mutex<Vec<RequestRecord>>>);

impl RequestLog {
    fn start<B>(request: &Request<B>) -> RequestRecord {
        RequestRecord {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
            range: request.headers().get(header::RANGE).map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
            authorization: request.headers().contains_key(header::AUTHORIZATION),
            status: 0,
        }
    }

    fn finish(&self, mut record: RequestRecord, status: StatusCode) {
        record.status = status.as_u16();
        self.0.lock().unwrap().push(record);
    }

    fn snapshot(&self) -> Vec<RequestRecord> {
        self.0.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------------
// Server and upstream client plumbing

/// A hyper HTTP/1 server on a loopback listener; dropping it stops accepting and aborts every open
/// connection.
#[derive(Debug)]
struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

fn serve<F, Fut>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let task = tokio::spawn(async move {
        // Owned by this task: aborting the task drops the set, which aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let handler = handler.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let response = handler(request);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Server { task }
}

/// Sends `request` to `upstream` over a fresh connection.
async fn send_upstream(upstream: SocketAddr, request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender.send_request(request).await?)
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

fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}

fn simple_response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(full(body))
        .unwrap()
}

fn registry_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    simple_response(status, "application/json; charset=utf-8", body)
}

/// Turns a request received by a proxy into one for `upstream`: origin-form URI, upstream `Host`,
/// hop-by-hop headers removed.
fn to_upstream<B>(upstream: SocketAddr, request: Request<B>) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = Uri::try_from(path_and_query).unwrap_or_else(|_| Uri::from_static("/"));
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, HeaderValue::from_str(&upstream.to_string()).unwrap());
    Request::from_parts(parts, body)
}

/// Turns an upstream response into one for the client: hop-by-hop headers removed, a `Location` on
/// the upstream rewritten to point at the proxy.
fn from_upstream(upstream: SocketAddr, proxy: SocketAddr, response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(location) = parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        let upstream_origin = format!("http://{upstream}");
        if let Some(rest) = location.strip_prefix(&upstream_origin) {
            if rest.is_empty() || rest.starts_with(['/', '?']) {
                let rewritten = format!("http://{proxy}{rest}");
                if let Ok(value) = HeaderValue::from_str(&rewritten) {
                    parts.headers.insert(header::LOCATION, value);
                }
            }
        }
    }
    Response::from_parts(parts, boxed(body))
}

/// Forwards `request` to `upstream` and relays the answer (502 if the upstream cannot be reached).
async fn forward(upstream: SocketAddr, proxy: SocketAddr, request: Request<Body>) -> Response<Body> {
    match send_upstream(upstream, to_upstream(upstream, request)).await {
        Ok(response) => from_upstream(upstream, proxy, response),
        Err(error) => {
            simple_response(StatusCode::BAD_GATEWAY, "text/plain", format!("upstream {upstream}: {error}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Path matching

/// Registry API endpoints the fixtures care about, parsed from a request path.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    /// `/v2/<name>/blobs/uploads/...`
    Upload,
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    Other,
}

fn endpoint(path: &str) -> Endpoint<'_> {
    let Some(rest) = path.strip_prefix("/v2/") else { return Endpoint::Other };
    if let Some((name, tail)) = rest.split_once("/blobs/uploads") {
        if !name.is_empty() && (tail.is_empty() || tail.starts_with('/')) {
            return Endpoint::Upload;
        }
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        if !name.is_empty() && digest.contains(':') && !digest.contains('/') {
            return Endpoint::Blob { name, digest };
        }
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        if !name.is_empty() && !reference.is_empty() && !reference.contains('/') {
            return Endpoint::Manifest { name, reference };
        }
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        if !name.is_empty() && !digest.is_empty() && !digest.contains('/') {
            return Endpoint::Referrers { name, digest };
        }
    }
    Endpoint::Other
}

// ---------------------------------------------------------------------------------------------------
// RedirectProxy

/// What a presigned URL would embed: which blob, fetched with which credentials.
#[derive(Debug)]
struct Grant {
    name: String,
    digest: String,
    signature: String,
    authorization: Option<HeaderValue>,
}

#[derive(Debug)]
struct RedirectState {
    upstream: SocketAddr,
    addr: SocketAddr,
    storage_addr: SocketAddr,
    grants: Mutex<HashMap<String, Grant>>,
    next_grant: AtomicUsize,
    redirects: AtomicUsize,
    auth_leaks: AtomicUsize,
    log: RequestLog,
    storage_log: RequestLog,
}

/// A proxy that answers every blob `GET` with `307 Temporary Redirect` to a second listener (the
/// "storage host", another origin), like ECR redirecting to S3 presigned URLs.
///
/// Before redirecting it performs the GET upstream with the client's headers, so authentication
/// challenges and 404s reach the client unchanged. The storage host serves the blob (with `Range`
/// support) using the credentials the proxy saw, stored server-side under the opaque URL; a request
/// that sends it an `Authorization` header gets `400` with [`AUTH_LEAK_MESSAGE`] and is counted by
/// [`auth_leaks`](RedirectProxy::auth_leaks).
#[derive(Debug)]
pub struct RedirectProxy {
    state: Arc<RedirectState>,
    _server: Server,
    _storage: Server,
}

impl RedirectProxy {
    /// Starts the proxy and its storage host in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<RedirectProxy> {
        let (listener, addr) = bind().await?;
        let (storage_listener, storage_addr) = bind().await?;
        let state = Arc::new(RedirectState {
            upstream,
            addr,
            storage_addr,
            grants: Mutex::default(),
            next_grant: AtomicUsize::new(1),
            redirects: AtomicUsize::new(0),
            auth_leaks: AtomicUsize::new(0),
            log: RequestLog::default(),
            storage_log: RequestLog::default(),
        });
        let main_state = state.clone();
        let server = serve(listener, move |request| redirect_main(main_state.clone(), request));
        let storage_state = state.clone();
        let storage =
            serve(storage_listener, move |request| redirect_storage(storage_state.clone(), request));
        Ok(RedirectProxy { state, _server: server, _storage: storage })
    }

    /// The proxy's address (the registry clients talk to).
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.state.addr.to_string()
    }

    /// The storage host's address (where blob GETs are redirected).
    pub fn storage_addr(&self) -> SocketAddr {
        self.state.storage_addr
    }

    /// How many blob GETs were redirected.
    pub fn redirects(&self) -> usize {
        self.state.redirects.load(Ordering::SeqCst)
    }

    /// How many requests reached the storage host with an `Authorization` header.
    pub fn auth_leaks(&self) -> usize {
        self.state.auth_leaks.load(Ordering::SeqCst)
    }

    /// The requests the proxy (registry side) answered, in order of completion.
    pub fn requests_log(&self) -> Vec<RequestRecord> {
        self.state.log.snapshot()
    }

    /// The requests the storage host answered, in order of completion.
    pub fn storage_log(&self) -> Vec<RequestRecord> {
        self.state.storage_log.snapshot()
    }
}

async fn redirect_main(state: Arc<RedirectState>, request: Request<Incoming>) -> Response<Body> {
    let record = RequestLog::start(&request);
    let blob = match endpoint(request.uri().path()) {
        Endpoint::Blob { name, digest } if request.method() == Method::GET => {
            Some((name.to_owned(), digest.to_owned()))
        }
        _ => None,
    };
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let request = request.map(boxed);
    let response = match blob {
        None => forward(state.upstream, state.addr, request).await,
        Some((name, digest)) => {
            match send_upstream(state.upstream, to_upstream(state.upstream, request)).await {
                Err(error) => {
                    simple_response(StatusCode::BAD_GATEWAY, "text/plain", format!("upstream: {error}"))
                }
                Ok(response) if !response.status().is_success() => {
                    from_upstream(state.upstream, state.addr, response)
                }
                Ok(response) => {
                    // Only the status was wanted: dropping the response closes that connection.
                    drop(response);
                    let n = state.next_grant.fetch_add(1, Ordering::SeqCst);
                    let hash = hex::encode(sha2::Sha256::digest(format!("{n}{digest}")));
                    let (token, signature) = (&hash[..24], &hash[24..]);
                    state.grants.lock().unwrap().insert(
                        token.to_owned(),
                        Grant { name, digest, signature: signature.to_owned(), authorization },
                    );
                    state.redirects.fetch_add(1, Ordering::SeqCst);
                    let location = format!(
                        "http://{}/bucket/{token}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=testkit\
                     &X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}",
                        state.storage_addr
                    );
                    Response::builder()
                        .status(StatusCode::TEMPORARY_REDIRECT)
                        .header(header::LOCATION, location)
                        .header(header::CONTENT_LENGTH, 0)
                        .body(empty())
                        .unwrap()
                }
            }
        }
    };
    state.log.finish(record, response.status());
    response
}

async fn redirect_storage(state: Arc<RedirectState>, request: Request<Incoming>) -> Response<Body> {
    let record = RequestLog::start(&request);
    let response = storage_response(&state, request).await;
    state.storage_log.finish(record, response.status());
    response
}

async fn storage_response(state: &RedirectState, request: Request<Incoming>) -> Response<Body> {
    if request.headers().contains_key(header::AUTHORIZATION) {
        state.auth_leaks.fetch_add(1, Ordering::SeqCst);
        return simple_response(StatusCode::BAD_REQUEST, "text/plain", AUTH_LEAK_MESSAGE);
    }
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return s3_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    }
    let token = request.uri().path().strip_prefix("/bucket/").unwrap_or_default();
    let signature = query_param(request.uri().query().unwrap_or_default(), "X-Amz-Signature");
    let (name, digest, authorization) = {
        let grants = state.grants.lock().unwrap();
        match grants.get(token) {
            Some(grant) if signature.as_deref() == Some(grant.signature.as_str()) => {
                (grant.name.clone(), grant.digest.clone(), grant.authorization.clone())
            }
            Some(_) => return s3_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            None => return s3_error(StatusCode::FORBIDDEN, "AccessDenied"),
        }
    };
    let mut upstream_request = Request::builder()
        .method(method)
        .uri(format!("/v2/{name}/blobs/{digest}"))
        .header(header::HOST, state.upstream.to_string());
    if let Some(authorization) = authorization {
        upstream_request = upstream_request.header(header::AUTHORIZATION, authorization);
    }
    for name in [header::RANGE, header::IF_RANGE] {
        if let Some(value) = request.headers().get(&name) {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let response = match send_upstream(state.upstream, upstream_request.body(empty()).unwrap()).await {
        Ok(response) => response,
        Err(error) => return simple_response(StatusCode::BAD_GATEWAY, "text/plain", error.to_string()),
    };
    let status = response.status();
    if !status.is_success() && status != StatusCode::RANGE_NOT_SATISFIABLE {
        let code = if status == StatusCode::NOT_FOUND { "NoSuchKey" } else { "AccessDenied" };
        let status = if status == StatusCode::NOT_FOUND { status } else { StatusCode::FORBIDDEN };
        return s3_error(status, code);
    }
    let (parts, body) = response.into_parts();
    let mut builder = Response::builder().status(status);
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            builder = builder.header(name, value);
        }
    }
    builder.header(header::CONTENT_TYPE, "application/octet-stream").body(boxed(body)).unwrap()
}

fn s3_error(status: StatusCode, code: &str) -> Response<Body> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code></Error>");
    simple_response(status, "application/xml", body)
}

/// The percent-decoded value of `key` in a query string (`+` is kept as a literal plus).
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("0");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------------
// ReferrersProxy

/// The media type of an OCI image index, which the referrers API answers with.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// A manifest with a `subject` that was pushed through a [`ReferrersProxy`].
#[derive(Clone, Debug, PartialEq)]
pub struct PushedReferrer {
    /// The repository it was pushed to.
    pub repository: String,
    /// The digest of its subject.
    pub subject: String,
    /// Its descriptor as the referrers API lists it (mediaType, digest, size, artifactType,
    /// annotations).
    pub descriptor: serde_json::Value,
}

#[derive(Debug)]
struct ReferrersState {
    upstream: SocketAddr,
    addr: SocketAddr,
    referrers: Mutex<Vec<PushedReferrer>>,
    log: RequestLog,
}

/// A proxy that adds the OCI 1.1 referrers API to a registry that lacks it (distribution 2.8).
///
/// It remembers manifests with a `subject` pushed through it (and forgets them when they are deleted
/// through it), answers `GET /v2/<name>/referrers/<digest>[?artifactType=X]` from that memory, and
/// adds `OCI-Subject` to the answers of such pushes. Everything else is forwarded.
#[derive(Debug)]
pub struct ReferrersProxy {
    state: Arc<ReferrersState>,
    _server: Server,
}

impl ReferrersProxy {
    /// Starts the proxy in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<ReferrersProxy> {
        let (listener, addr) = bind().await?;
        let state = Arc::new(ReferrersState {
            upstream,
            addr,
            referrers: Mutex::default(),
            log: RequestLog::default(),
        });
        let handler_state = state.clone();
        let server = serve(listener, move |request| referrers_handle(handler_state.clone(), request));
        Ok(ReferrersProxy { state, _server: server })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.state.addr.to_string()
    }

    /// The manifests with a subject pushed through the proxy so far.
    pub fn referrers(&self) -> Vec<PushedReferrer> {
        self.state.referrers.lock().unwrap().clone()
    }

    /// The requests the proxy answered, in order of completion.
    pub fn requests_log(&self) -> Vec<RequestRecord> {
        self.state.log.snapshot()
    }
}

async fn referrers_handle(state: Arc<ReferrersState>, request: Request<Incoming>) -> Response<Body> {
    let record = RequestLog::start(&request);
    let response = referrers_response(&state, request).await;
    state.log.finish(record, response.status());
    response
}

async fn referrers_response(state: &ReferrersState, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method().clone(), endpoint(&path)) {
        (Method::GET, Endpoint::Referrers { name, digest }) => {
            // Answer only clients the registry would let in: check their credentials on /v2/.
            let mut check = Request::builder().uri("/v2/");
            if let Some(authorization) = request.headers().get(header::AUTHORIZATION) {
                check = check.header(header::AUTHORIZATION, authorization);
            }
            match send_upstream(state.upstream, to_upstream(state.upstream, check.body(empty()).unwrap()))
                .await
            {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => return from_upstream(state.upstream, state.addr, response),
                Err(error) => {
                    return simple_response(StatusCode::BAD_GATEWAY, "text/plain", error.to_string())
                }
            }
            let filter = request.uri().query().and_then(|q| query_param(q, "artifactType"));
            let manifests: Vec<serde_json::Value> = state
                .referrers
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.repository == name && r.subject == digest)
                .filter(|r| {
                    filter.as_deref().is_none_or(|f| r.descriptor["artifactType"].as_str() == Some(f))
                })
                .map(|r| r.descriptor.clone())
                .collect();
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX_MEDIA_TYPE,
                "manifests": manifests,
            })
            .to_string();
            let mut response = simple_response(StatusCode::OK, OCI_INDEX_MEDIA_TYPE, body);
            if filter.is_some() {
                response
                    .headers_mut()
                    .insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
            }
            response
        }
        (Method::PUT, Endpoint::Manifest { name, .. }) => {
            let name = name.to_owned();
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return simple_response(StatusCode::BAD_REQUEST, "text/plain", error.to_string())
                }
            };
            let content_type =
                parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let referrer = parse_referrer(&name, &body, content_type.as_deref());
            let request = Request::from_parts(parts, full(body));
            let mut response = forward(state.upstream, state.addr, request).await;
            if let Some(referrer) = referrer {
                if response.status().is_success() {
                    if let Ok(value) = HeaderValue::from_str(&referrer.subject) {
                        response.headers_mut().insert("oci-subject", value);
                    }
                    let mut referrers = state.referrers.lock().unwrap();
                    let digest = &referrer.descriptor["digest"];
                    referrers.retain(|r| {
                        !(r.repository == referrer.repository && &r.descriptor["digest"] == digest)
                    });
                    referrers.push(referrer);
                }
            }
            response
        }
        (Method::DELETE, Endpoint::Manifest { name, reference }) => {
            let (name, reference) = (name.to_owned(), reference.to_owned());
            let response = forward(state.upstream, state.addr, request.map(boxed)).await;
            if response.status().is_success() {
                state.referrers.lock().unwrap().retain(|r| {
                    !(r.repository == name && r.descriptor["digest"].as_str() == Some(&reference))
                });
            }
            response
        }
        _ => forward(state.upstream, state.addr, request.map(boxed)).await,
    }
}

/// The referrer descriptor of a manifest body, if it has a `subject`.
fn parse_referrer(repository: &str, body: &[u8], content_type: Option<&str>) -> Option<PushedReferrer> {
    let manifest: serde_json::Value = serde_json::from_slice(body).ok()?;
    let subject = manifest.get("subject")?.get("digest")?.as_str()?.to_owned();
    let media_type = manifest
        .get("mediaType")
        .and_then(|v| v.as_str())
        .or(content_type)
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    let artifact_type = manifest
        .get("artifactType")
        .and_then(|v| v.as_str())
        .or_else(|| manifest.get("config")?.get("mediaType")?.as_str());
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", hex::encode(sha2::Sha256::digest(body))),
        "size": body.len(),
    });
    if let Some(artifact_type) = artifact_type {
        descriptor["artifactType"] = artifact_type.into();
    }
    if let Some(annotations) =
        manifest.get("annotations").filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
    {
        descriptor["annotations"] = annotations.clone();
    }
    Some(PushedReferrer { repository: repository.to_owned(), subject, descriptor })
}

// ---------------------------------------------------------------------------------------------------
// FaultProxy

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
    upstream: SocketAddr,
    addr: SocketAddr,
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
            upstream,
            addr,
            plan,
            requests: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            cut_started: AtomicUsize::new(0),
            faults: Arc::new(AtomicUsize::new(0)),
            log: RequestLog::default(),
        });
        let handler_state = state.clone();
        let server = serve(listener, move |request| fault_handle(handler_state.clone(), request));
        Ok(FaultProxy { state, _server: server })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.state.addr.to_string()
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

async fn fault_handle(state: Arc<FaultState>, request: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let record = RequestLog::start(&request);
    let plan = &state.plan;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = if plan.only.matches(&method, &path) && take_slot(&state.failed, plan.fail_first) {
        state.faults.fetch_add(1, Ordering::SeqCst);
        // Read the request body first, so the client sees the answer rather than a broken pipe.
        let _ = request.into_body().collect().await;
        match plan.fault {
            Fault::ServerError => {
                registry_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "injected by FaultProxy")
            }
            Fault::TooManyRequests { retry_after_secs } => {
                let mut response = registry_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    "injected by FaultProxy",
                );
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                response
            }
        }
    } else {
        let response = forward(state.upstream, state.addr, request.map(boxed)).await;
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
    };
    state.log.finish(record, response.status());
    response
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
