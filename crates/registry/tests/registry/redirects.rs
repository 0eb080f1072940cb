//! Blob downloads redirected to another origin (ECR → S3): followed, without Authorization.

use testkit::proxy::RedirectProxy;
use testkit::registry::LocalRegistry;

use crate::support::*;

#[tokio::test]
async fn redirected_blobs_never_get_the_registry_authorization() {
    let registry = LocalRegistry::start_with_basic_auth("bob", "pw-bob").await.unwrap();
    let proxy = RedirectProxy::start(registry.addr()).await.unwrap();
    let client = basic_client("bob", "pw-bob");
    let repo = repo(&proxy.host(), "team/app");
    let image = push_image(&client, &repo, "v1", 3 * 1024 * 1024 + 5, 30).await;

    let stream = client.get_blob(&repo, &image.layer_digest, Some(image.layer.len() as u64)).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == image.layer);
    let range = client.get_blob_range(&repo, &image.layer_digest, 100, 200_000).await.unwrap();
    assert!(range == image.layer.slice(100..200_000));

    assert!(proxy.redirects() >= 2, "blob GETs were redirected: {}", proxy.redirects());
    assert_eq!(proxy.auth_leaks(), 0);
    let storage = proxy.storage_log();
    assert!(storage.len() >= 2, "{storage:?}");
    assert!(storage.iter().all(|r| !r.authorization && r.status < 300), "{storage:?}");
    assert!(
        storage.iter().any(|r| r.range.as_deref() == Some("bytes=100-199999")),
        "Range survives the redirect: {storage:?}"
    );
    // The registry itself did get credentials for those GETs.
    assert!(proxy
        .requests_log()
        .iter()
        .filter(|r| r.method == "GET")
        .all(|r| r.authorization || r.status == 401));

    // The blob HEAD is not followed to storage (S3 would refuse a HEAD on a presigned GET URL).
    assert!(client.blob_exists(&repo, &image.layer_digest).await.unwrap());
}
