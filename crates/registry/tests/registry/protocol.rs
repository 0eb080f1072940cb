//! Protocol corners against a scripted server: bearer tokens, same-origin redirects, servers that
//! ignore Range, odd media types, and what errors may say.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use registry::{media_type, sha256_digest, Credentials, Error, StaticCredentials};

use crate::fake::{FakeServer, RawRequest, RawResponse};
use crate::support::*;

const MANIFEST: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A registry with a token service on the same server: tokens for `u`/`p` only, or anonymous ones
/// that the registry does not accept.
fn token_registry(field: &'static str) -> impl Fn(&RawRequest, std::net::SocketAddr) -> RawResponse {
    move |request, addr| {
        if request.path() == "/token" {
            let scope_ok = request.query().contains("service=fake-registry")
                && request.query().contains("scope=repository%3Aa%2Fb%3Apull");
            return match request.header("authorization") {
                _ if !scope_ok => RawResponse::new(400).body(format!("bad query {}", request.query())),
                Some(a) if a == basic("u", "p") => {
                    let token =
                        if request.query().contains("pull%2Cpush") { "push-token" } else { "pull-token" };
                    RawResponse::new(200).body(format!(r#"{{"{field}":"{token}","expires_in":300}}"#))
                }
                Some(_) => RawResponse::new(401),
                None => RawResponse::new(200).body(r#"{"token":"anonymous-token"}"#),
            };
        }
        let needed = if request.method == "PUT" { "Bearer push-token" } else { "Bearer pull-token" };
        let authorized = request.header("authorization") == Some(needed)
            || (request.method != "PUT" && request.header("authorization") == Some("Bearer push-token"));
        if !authorized {
            let action = if request.method == "PUT" { "pull,push" } else { "pull" };
            return RawResponse::new(401).header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://{addr}/token",service="fake-registry",scope="repository:a/b:{action}""#
                ),
            );
        }
        match (request.method.as_str(), request.path()) {
            ("GET", "/v2/a/b/manifests/t") => {
                RawResponse::new(200).header("Content-Type", media_type::OCI_MANIFEST).body(MANIFEST)
            }
            ("PUT", "/v2/a/b/manifests/t") => RawResponse::new(201)
                .header("Docker-Content-Digest", &sha256_digest(MANIFEST.as_bytes()))
                .header(
                    "OCI-Subject",
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                ),
            _ => RawResponse::new(404),
        }
    }
}

#[tokio::test]
async fn bearer_token_is_fetched_with_credentials_and_cached_per_scope() {
    for field in ["token", "access_token"] {
        let server = FakeServer::start(token_registry(field)).await;
        let client = basic_client("u", "p");
        let repo = repo(&server.host(), "a/b");
        for _ in 0..3 {
            let manifest = client.get_manifest(&repo, "t").await.unwrap();
            assert_eq!(manifest.bytes, MANIFEST.as_bytes());
        }
        let token_requests = || server.requests().iter().filter(|r| r.path() == "/token").count();
        assert_eq!(token_requests(), 1, "the token is cached");

        let put = client
            .put_manifest(
                &repo,
                "t",
                media_type::OCI_MANIFEST,
                bytes::Bytes::from_static(MANIFEST.as_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(put.oci_subject.as_deref().map(|s| &s[..7]), Some("sha256:"));
        assert_eq!(token_requests(), 2, "pushing needs a pull,push token");
        let push_token_request = server.requests().into_iter().rfind(|r| r.path() == "/token").unwrap();
        assert!(push_token_request.query().contains("scope=repository%3Aa%2Fb%3Apull%2Cpush"));
    }
}

#[tokio::test]
async fn bearer_failures_are_unauthorized() {
    let server = FakeServer::start(token_registry("token")).await;
    let repo = repo(&server.host(), "a/b");
    // An anonymous token the registry refuses.
    match anonymous_client().get_manifest(&repo, "t").await {
        Err(Error::Unauthorized { credentials_sent: false, .. }) => {}
        other => panic!("{other:?}"),
    }
    // The token service refuses the credentials.
    match basic_client("u", "nope").get_manifest(&repo, "t").await {
        Err(error @ Error::Unauthorized { credentials_sent: true, .. }) => {
            assert!(!format!("{error} {error:?}").contains("nope"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn same_origin_redirect_keeps_authorization() {
    let blob = random_bytes(100_000, 60);
    let digest = sha256_digest(&blob);
    let served = blob.clone();
    let blob_path = format!("/v2/a/b/blobs/{digest}");
    let server = FakeServer::start(move |request, _| {
        if request.header("authorization") != Some(basic("u", "p").as_str()) {
            return RawResponse::new(401).header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        if request.path() == blob_path {
            RawResponse::new(307).header("Location", "/storage/blob")
        } else if request.path() == "/storage/blob" {
            RawResponse::new(200).body(served.to_vec())
        } else {
            RawResponse::new(404)
        }
    })
    .await;
    let client = basic_client("u", "p");
    let stream = client.get_blob(&repo(&server.host(), "a/b"), &digest, None).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == blob);
    assert!(server
        .requests()
        .iter()
        .any(|r| r.path() == "/storage/blob" && r.header("authorization").is_some()));
}

#[tokio::test]
async fn a_server_ignoring_range_is_resumed_by_skipping() {
    let blob = random_bytes(500_000, 61);
    let digest = sha256_digest(&blob);
    let served = blob.clone();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let server = FakeServer::start(move |_, _| {
        // The first body breaks at 200 000 bytes; later answers ignore Range and send everything.
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        let mut response = RawResponse::new(200).body(served.to_vec());
        response.cut_after = first.then_some(200_000);
        response
    })
    .await;
    let client = anonymous_client();
    let repo = repo(&server.host(), "a/b");
    let stream = client.get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == blob);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("range"), Some("bytes=200000-"));

    // get_blob_range reads only the prefix it needs from a 200.
    let range = client.get_blob_range(&repo, &digest, 1000, 1100).await.unwrap();
    assert!(range == blob.slice(1000..1100));
}

#[tokio::test]
async fn media_types_digest_headers_and_non_index_referrers() {
    let server = FakeServer::start(|request, _| match request.path() {
        "/v2/a/b/manifests/schema1" => RawResponse::new(200)
            .header("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
            .body(r#"{"schemaVersion":1}"#),
        "/v2/a/b/manifests/json" => RawResponse::new(200)
            .header("Content-Type", "application/json")
            .header(
                "Docker-Content-Digest",
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            )
            .body(MANIFEST),
        p if p.starts_with("/v2/a/b/referrers/") => {
            RawResponse::new(200).header("Content-Type", "text/html").body("<html>catch-all</html>")
        }
        _ => RawResponse::new(404),
    })
    .await;
    let client = anonymous_client();
    let repo = repo(&server.host(), "a/b");
    match client.get_manifest(&repo, "schema1").await {
        Err(Error::UnsupportedMediaType { media_type }) => assert!(media_type.contains("v1+prettyjws")),
        other => panic!("{other:?}"),
    }
    // A generic Content-Type falls back to the document's mediaType; a wrong digest header is ignored.
    let manifest = client.get_manifest(&repo, "json").await.unwrap();
    assert_eq!(manifest.media_type, media_type::OCI_MANIFEST);
    assert_eq!(manifest.digest, sha256_digest(MANIFEST.as_bytes()));

    assert_eq!(client.referrers(&repo, &sha256_digest(b"x"), None).await.unwrap(), None);
}

#[tokio::test]
async fn errors_from_storage_carry_neither_query_nor_body_secrets() {
    let storage = FakeServer::start(|_, _| {
        RawResponse::new(403)
            .header("Content-Type", "application/xml")
            .body("<Error><Code>AccessDenied</Code><StringToSign>SIGNED-SECRET</StringToSign></Error>")
    })
    .await;
    let storage_host = storage.host();
    let registry = FakeServer::start(move |request, _| {
        RawResponse::new(307).header(
            "Location",
            &format!("http://{storage_host}/bucket{}?X-Amz-Signature=QUERY-SECRET", request.path()),
        )
    })
    .await;
    let client = client_with(Arc::new(StaticCredentials(Credentials::new("u", "PASSWORD-SECRET"))), 2);
    let error =
        client.get_blob(&repo(&registry.host(), "a/b"), &sha256_digest(b"b"), None).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(matches!(error, Error::Http { status: 403, .. }), "{shown}");
    assert!(shown.contains("AccessDenied"), "{shown}");
    for secret in ["QUERY-SECRET", "SIGNED-SECRET", "PASSWORD-SECRET", "X-Amz"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn redirect_loops_stop() {
    let server =
        FakeServer::start(|request, _| RawResponse::new(302).header("Location", request.path())).await;
    match anonymous_client().get_manifest(&repo(&server.host(), "a/b"), "t").await {
        Err(Error::TooManyRedirects { max, .. }) => assert_eq!(max, 5),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn forbidden_and_insufficient_scope_are_denied() {
    let server = FakeServer::start(|request, addr| {
        if request.path() == "/token" {
            // Authenticates anyone with credentials but never grants push.
            return match request.header("authorization") {
                Some(_) => RawResponse::new(200).body(r#"{"token":"read-only"}"#),
                None => RawResponse::new(401),
            };
        }
        match (request.method.as_str(), request.header("authorization")) {
            (_, None) => RawResponse::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://{addr}/token",service="s",scope="repository:a/b:pull""#),
            ),
            ("PUT", Some(_)) => RawResponse::new(401).header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://{addr}/token",service="s",scope="repository:a/b:pull,push",error="insufficient_scope""#
                ),
            ),
            (_, Some(_)) => RawResponse::new(403).header("Content-Type", "application/json").body(
                r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":null}]}"#,
            ),
        }
    })
    .await;
    let client = basic_client("reader", "p");
    let repo = repo(&server.host(), "a/b");
    match client.get_manifest(&repo, "t").await {
        Err(error @ Error::Denied { .. }) => {
            let message = error.to_string();
            assert!(message.contains("DENIED: requested access to the resource is denied"), "{message}");
            assert!(!error.is_retryable());
        }
        other => panic!("{other:?}"),
    }
    let put =
        client.put_manifest(&repo, "t", media_type::OCI_MANIFEST, bytes::Bytes::from_static(b"{}")).await;
    match put {
        Err(Error::Denied { detail, .. }) => assert_eq!(detail, "insufficient_scope"),
        other => panic!("{other:?}"),
    }
}
