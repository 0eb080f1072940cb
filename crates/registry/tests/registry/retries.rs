//! Transient failures (500, 429, cut bodies) retried; permanent ones not.

use registry::{sha256_digest, Error, PushedBlob};
use reqwest::Method;
use testkit::proxy::{Fault, FaultPlan, FaultProxy, RequestFilter};
use testkit::registry::LocalRegistry;

use crate::support::*;

#[tokio::test]
async fn server_errors_then_success() {
    let registry = LocalRegistry::start().await.unwrap();
    let direct = repo(&registry.host(), "flaky/app");
    let image = push_image(&anonymous_client(), &direct, "v1", 1000, 40).await;

    let plan = FaultPlan::new().fail_first(2, Fault::ServerError).only(RequestFilter::ManifestGets);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "flaky/app");
    let manifest = anonymous_client().get_manifest(&via, "v1").await.unwrap();
    assert_eq!(manifest.bytes, image.manifest);
    assert_eq!(proxy.faults_injected(), 2);

    let plan = FaultPlan::new()
        .fail_first(2, Fault::TooManyRequests { retry_after_secs: 0 })
        .only(RequestFilter::BlobGets);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "flaky/app");
    let stream = anonymous_client().get_blob(&via, &image.layer_digest, None).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == image.layer);
    assert_eq!(proxy.faults_injected(), 2);
}

#[tokio::test]
async fn persistent_errors_exhaust_the_budget_and_4xx_is_not_retried() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new().fail_first(1000, Fault::ServerError))
        .await
        .unwrap();
    let via = repo(&proxy.host(), "down/app");
    let client = client_with(std::sync::Arc::new(registry::Anonymous), 3);
    match client.get_manifest(&via, "v1").await {
        Err(error @ Error::RetriesExhausted { attempts: 3, .. }) => {
            assert!(error.is_retryable(), "the Lambda may try again later");
            let Error::RetriesExhausted { last, .. } = &error else { unreachable!() };
            assert!(matches!(**last, Error::Http { status: 500, .. }), "{last:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.requests(), 3);

    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let via = repo(&proxy.host(), "down/app");
    let error = client.get_manifest(&via, "v1").await.unwrap_err();
    assert!(error.is_not_found() && !error.is_retryable(), "{error:?}");
    assert_eq!(proxy.requests(), 1, "a 404 is final");

    // Nothing listens: connection refused is a transport error, retried, then given up.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let error = client.get_manifest(&repo(&closed.to_string(), "x/y"), "v1").await.unwrap_err();
    match &error {
        Error::RetriesExhausted { attempts: 3, last } => {
            assert!(matches!(**last, Error::Transport { .. }), "{last:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(error.is_retryable());
}

fn is_upload_put(method: &Method, path: &str) -> bool {
    method == Method::PUT && path.contains("/blobs/uploads/")
}

#[tokio::test]
async fn a_failed_upload_put_restarts_from_a_new_post() {
    let registry = LocalRegistry::start().await.unwrap();
    let plan = FaultPlan::new().fail_first(1, Fault::ServerError).only(RequestFilter::Custom(is_upload_put));
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "uploads/app");
    let blob = random_bytes(200_000, 41);
    let digest = sha256_digest(&blob);
    assert_eq!(
        anonymous_client().push_blob(&via, &digest, blob.clone()).await.unwrap(),
        PushedBlob::Uploaded
    );
    let uploads: Vec<(String, u16)> = proxy
        .requests_log()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/uploads/"))
        .map(|r| (r.method, r.status))
        .collect();
    let expected = [("POST", 202), ("PUT", 500), ("POST", 202), ("PUT", 201)].map(|(m, s)| (m.to_owned(), s));
    assert_eq!(uploads, expected);
    let direct = repo(&registry.host(), "uploads/app");
    let stream = anonymous_client().get_blob(&direct, &digest, Some(blob.len() as u64)).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == blob);
}

#[tokio::test]
async fn a_cut_blob_stream_resumes_with_range() {
    let registry = LocalRegistry::start().await.unwrap();
    let direct = repo(&registry.host(), "cut/app");
    let blob = random_bytes(3 * 1024 * 1024 + 11, 42);
    let digest = sha256_digest(&blob);
    anonymous_client().push_blob(&direct, &digest, blob.clone()).await.unwrap();

    let proxy =
        FaultProxy::start(registry.addr(), FaultPlan::new().cut_blob_gets(2, 1024 * 1024)).await.unwrap();
    let via = repo(&proxy.host(), "cut/app");
    let stream = anonymous_client().get_blob(&via, &digest, Some(blob.len() as u64)).await.unwrap();
    let (bytes, _) = collect(stream).await.unwrap();
    assert!(bytes == blob, "resumed bytes differ");
    let ranges: Vec<Option<String>> =
        proxy.requests_log().into_iter().filter(|r| r.method == "GET").map(|r| r.range).collect();
    assert_eq!(
        ranges,
        [None, Some("bytes=1048576-".to_owned()), Some("bytes=2097152-".to_owned())],
        "each resumption starts where the last body broke"
    );

    // Without a retry budget the cut surfaces as a transport error.
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new().cut_blob_gets(1, 1000)).await.unwrap();
    let via = repo(&proxy.host(), "cut/app");
    let client = client_with(std::sync::Arc::new(registry::Anonymous), 1);
    let stream = client.get_blob(&via, &digest, None).await.unwrap();
    match collect(stream).await {
        Err(error @ Error::Transport { .. }) => assert!(error.is_retryable()),
        other => panic!("{:?}", other.map(|(b, _)| b.len())),
    }
}
