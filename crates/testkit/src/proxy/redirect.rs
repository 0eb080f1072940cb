//! [`RedirectProxy`]: blob GETs redirected to a second origin, like ECR → S3 presigned URLs.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use sha2::Digest;

use super::path::{endpoint, query_param, Endpoint};
use super::relay::{
    bad_gateway, bind, boxed, empty, send_upstream, serve, simple_response, Body, Link, Server,
};
use super::{RequestLog, RequestRecord};

/// The message the redirect target answers (with 400) to a request that carries `Authorization`.
pub const AUTH_LEAK_MESSAGE: &str = "Authorization header sent to redirect target";

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
    link: Link,
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
            link: Link { upstream, proxy: addr },
            storage_addr,
            grants: Mutex::default(),
            next_grant: AtomicUsize::new(1),
            redirects: AtomicUsize::new(0),
            auth_leaks: AtomicUsize::new(0),
            log: RequestLog::default(),
            storage_log: RequestLog::default(),
        });
        let main_state = state.clone();
        let server =
            serve(listener, state.log.clone(), move |request| registry_side(main_state.clone(), request));
        let storage_state = state.clone();
        let storage = serve(storage_listener, state.storage_log.clone(), move |request| {
            storage_side(storage_state.clone(), request)
        });
        Ok(RedirectProxy { state, _server: server, _storage: storage })
    }

    /// The proxy's address (the registry clients talk to).
    pub fn addr(&self) -> SocketAddr {
        self.state.link.proxy
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// The storage host's address (where blob GETs are redirected).
    pub fn storage_addr(&self) -> SocketAddr {
        self.state.storage_addr
    }

    /// How many blob GETs were redirected.
    pub fn redirects(&self) -> usize {
        self.state.redirects.load(Ordering::SeqCst)
    }

    /// Expires every URL handed out so far, as presigned URLs expire: the storage host answers them
    /// `403 AccessDenied` from now on.
    pub fn expire_grants(&self) {
        self.state.grants.lock().unwrap().clear();
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

/// The registry side: blob GETs the upstream would serve become redirects, the rest is forwarded.
async fn registry_side(state: Arc<RedirectState>, request: Request<Incoming>) -> Response<Body> {
    let blob = match endpoint(request.uri().path()) {
        Endpoint::Blob { name, digest } if request.method() == Method::GET => {
            Some((name.to_owned(), digest.to_owned()))
        }
        _ => None,
    };
    let Some((name, digest)) = blob else { return state.link.forward(request).await };
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    match state.link.send(request.map(boxed)).await {
        Err(error) => bad_gateway(format!("upstream: {error}")),
        Ok(response) if !response.status().is_success() => state.link.relay(response),
        Ok(response) => {
            // Only the status was wanted: dropping the response closes that connection.
            drop(response);
            redirect(&state, Grant { name, digest, signature: String::new(), authorization })
        }
    }
}

/// Stores `grant` under a fresh opaque URL on the storage host and redirects there.
fn redirect(state: &RedirectState, mut grant: Grant) -> Response<Body> {
    let n = state.next_grant.fetch_add(1, Ordering::SeqCst);
    let hash = hex::encode(sha2::Sha256::digest(format!("{n}{}", grant.digest)));
    let (token, signature) = (&hash[..24], &hash[24..]);
    grant.signature = signature.to_owned();
    state.grants.lock().unwrap().insert(token.to_owned(), grant);
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

/// The storage host: serves granted blobs to requests without credentials, S3-style errors otherwise.
async fn storage_side(state: Arc<RedirectState>, request: Request<Incoming>) -> Response<Body> {
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
    let upstream = state.link.upstream;
    let mut upstream_request = Request::builder()
        .method(method)
        .uri(format!("/v2/{name}/blobs/{digest}"))
        .header(header::HOST, upstream.to_string());
    if let Some(authorization) = authorization {
        upstream_request = upstream_request.header(header::AUTHORIZATION, authorization);
    }
    for name in [header::RANGE, header::IF_RANGE] {
        if let Some(value) = request.headers().get(&name) {
            upstream_request = upstream_request.header(name, value);
        }
    }
    match send_upstream(upstream, upstream_request.body(empty()).unwrap()).await {
        Ok(response) => as_s3_object(response),
        Err(error) => bad_gateway(error.to_string()),
    }
}

/// An upstream blob response as S3 would answer it: only object headers, S3 error codes.
fn as_s3_object(response: Response<Incoming>) -> Response<Body> {
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
