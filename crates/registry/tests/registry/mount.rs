//! Cross-repository mounts against the real registry.

use registry::sha256_digest;
use testkit::proxy::{FaultPlan, FaultProxy};
use testkit::registry::LocalRegistry;

use crate::support::*;

#[tokio::test]
async fn a_blob_is_mounted_from_another_repository_without_being_sent_again() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let client = anonymous_client();
    let (source, target) = (repo(&proxy.host(), "team/base"), repo(&proxy.host(), "team/app"));
    let blob = random_bytes(300_000, 7);
    let digest = sha256_digest(&blob);
    client.push_blob(&source, &digest, blob.clone()).await.unwrap();
    let before = proxy.requests_log().len();

    assert!(!client.blob_exists(&target, &digest).await.unwrap());
    assert!(client.mount_blob(&target, &digest, "team/base").await.unwrap());
    assert!(client.blob_exists(&target, &digest).await.unwrap());
    let since: Vec<_> = proxy.requests_log().into_iter().skip(before).collect();
    let mounts: Vec<_> = since.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(mounts.len(), 1, "{since:?}");
    assert_eq!((mounts[0].path.as_str(), mounts[0].status), ("/v2/team/app/blobs/uploads/", 201));
    assert!(mounts[0].query.as_deref().unwrap_or_default().contains("from=team%2Fbase"));
    assert!(!since.iter().any(|r| r.method == "PUT"), "no bytes sent: {since:?}");

    // A source without the blob: the registry opens an upload session instead, which is cancelled.
    let missing = sha256_digest(b"not there");
    assert!(!client.mount_blob(&target, &missing, "team/base").await.unwrap());
    let log = proxy.requests_log();
    let last = log.last().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("DELETE", 204), "{log:?}");
    assert!(!client.blob_exists(&target, &missing).await.unwrap());

    // A bad source name is refused before any request.
    assert!(client.mount_blob(&target, &digest, "Bad/Name").await.is_err());
}
