//! [`ReferrersProxy`]: the OCI 1.1 referrers API in front of a registry that lacks it.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::Digest;

use super::path::{endpoint, query_param, Endpoint};
use super::relay::{bad_gateway, bind, empty, full, serve, simple_response, Body, Link, Server};
use super::{RequestLog, RequestRecord};

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
    link: Link,
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
            link: Link { upstream, proxy: addr },
            referrers: Mutex::default(),
            log: RequestLog::default(),
        });
        let handler_state = state.clone();
        let server =
            serve(listener, state.log.clone(), move |request| handle(handler_state.clone(), request));
        Ok(ReferrersProxy { state, _server: server })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.state.link.proxy
    }

    /// `127.0.0.1:PORT` of the proxy, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.addr().to_string()
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

async fn handle(state: Arc<ReferrersState>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method().clone(), endpoint(&path)) {
        (Method::GET, Endpoint::Referrers { name, digest }) => list(&state, request, name, digest).await,
        (Method::PUT, Endpoint::Manifest { name, .. }) => push(&state, request, name).await,
        (Method::DELETE, Endpoint::Manifest { name, reference }) => {
            let response = state.link.forward(request).await;
            if response.status().is_success() {
                state.referrers.lock().unwrap().retain(|r| {
                    !(r.repository == name && r.descriptor["digest"].as_str() == Some(reference))
                });
            }
            response
        }
        _ => state.link.forward(request).await,
    }
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=X]`, answered from the remembered pushes.
async fn list(
    state: &ReferrersState,
    request: Request<Incoming>,
    name: &str,
    digest: &str,
) -> Response<Body> {
    // Answer only clients the registry would let in: check their credentials on /v2/.
    let mut check = Request::builder().uri("/v2/");
    if let Some(authorization) = request.headers().get(header::AUTHORIZATION) {
        check = check.header(header::AUTHORIZATION, authorization);
    }
    match state.link.send(check.body(empty()).unwrap()).await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => return state.link.relay(response),
        Err(error) => return bad_gateway(error.to_string()),
    }
    let filter = request.uri().query().and_then(|q| query_param(q, "artifactType"));
    let manifests: Vec<serde_json::Value> = state
        .referrers
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.repository == name && r.subject == digest)
        .filter(|r| filter.as_deref().is_none_or(|f| r.descriptor["artifactType"].as_str() == Some(f)))
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
        response.headers_mut().insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    response
}

/// `PUT /v2/<name>/manifests/<reference>`: forwarded; a manifest with a subject is remembered once
/// the registry accepted it, and the answer gets `OCI-Subject`.
async fn push(state: &ReferrersState, request: Request<Incoming>, name: &str) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return simple_response(StatusCode::BAD_REQUEST, "text/plain", error.to_string()),
    };
    let content_type =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let referrer = parse_referrer(name, &body, content_type.as_deref());
    let mut response = state.link.forward(Request::from_parts(parts, full(body))).await;
    if let Some(referrer) = referrer {
        if response.status().is_success() {
            if let Ok(value) = HeaderValue::from_str(&referrer.subject) {
                response.headers_mut().insert("oci-subject", value);
            }
            let mut referrers = state.referrers.lock().unwrap();
            let digest = &referrer.descriptor["digest"];
            referrers.retain(|r| !(r.repository == referrer.repository && &r.descriptor["digest"] == digest));
            referrers.push(referrer);
        }
    }
    response
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
