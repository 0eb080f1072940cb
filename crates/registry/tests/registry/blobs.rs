//! Blob upload, existence, streaming with verification, and ranges.

use registry::{sha256_digest, Error, PushedBlob, Resource};
use testkit::proxy::{FaultPlan, FaultProxy};
use testkit::registry::LocalRegistry;

use crate::support::*;

#[tokio::test]
async fn push_is_post_then_put_and_the_blob_streams_back_verified() {
    let registry = LocalRegistry::start().await.unwrap();
    // A proxy without faults, for its request log.
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let client = anonymous_client();
    let repo = repo(&proxy.host(), "blobs/big");
    let blob = random_bytes(5 * 1024 * 1024 + 123, 1);
    let digest = sha256_digest(&blob);

    assert!(!client.blob_exists(&repo, &digest).await.unwrap());
    assert_eq!(client.push_blob(&repo, &digest, blob.clone()).await.unwrap(), PushedBlob::Uploaded);
    let uploads: Vec<_> =
        proxy.requests_log().into_iter().filter(|r| r.path.contains("/blobs/uploads/")).collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(
        (uploads[0].method.as_str(), uploads[0].path.as_str()),
        ("POST", "/v2/blobs/big/blobs/uploads/")
    );
    assert_eq!(uploads[0].status, 202);
    assert_eq!(uploads[1].method, "PUT");
    assert_eq!(uploads[1].status, 201);
    let query = uploads[1].query.clone().unwrap_or_default();
    assert!(query.contains(&format!("digest={}", digest.replace(':', "%3A"))), "{query}");
    assert!(query.contains("_state="), "the upload location's own query is kept: {query}");

    assert!(client.blob_exists(&repo, &digest).await.unwrap());
    assert_eq!(client.push_blob(&repo, &digest, blob.clone()).await.unwrap(), PushedBlob::AlreadyExisted);

    let stream = client.get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
    assert_eq!(stream.size(), Some(blob.len() as u64));
    let (bytes, chunks) = collect(stream).await.unwrap();
    assert!(bytes == blob, "streamed bytes differ");
    assert!(chunks > 1, "a multi-MB blob arrives in several chunks, not buffered: {chunks}");

    // Without an expected size, the registry's Content-Length is the size.
    let stream = client.get_blob(&repo, &digest, None).await.unwrap();
    assert_eq!(stream.size(), Some(blob.len() as u64));
    assert!(collect(stream).await.unwrap().0 == blob);
}

#[tokio::test]
async fn missing_blob_and_bad_input() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "blobs/missing");
    let digest = sha256_digest(b"never pushed");
    match client.get_blob(&repo, &digest, None).await {
        Err(Error::NotFound { what: Resource::Blob, reference }) => {
            assert_eq!(reference, format!("{repo}@{digest}"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!client.blob_exists(&repo, &digest).await.unwrap());

    // Bytes that do not hash to the digest are refused before anything is sent.
    match client.push_blob(&repo, &digest, bytes::Bytes::from_static(b"other bytes")).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, digest);
            assert_eq!(actual, sha256_digest(b"other bytes"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.blob_exists(&repo, "sha256:abc").await, Err(Error::UnsupportedDigest { .. })));
    assert!(matches!(client.get_blob(&repo, "md5:00", None).await, Err(Error::UnsupportedDigest { .. })));
}

#[tokio::test]
async fn wrong_sizes_fail_the_stream() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "blobs/sizes");
    let blob = random_bytes(300_000, 2);
    let digest = sha256_digest(&blob);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();

    for expected in [blob.len() as u64 - 1, blob.len() as u64 + 1, 0] {
        let stream = client.get_blob(&repo, &digest, Some(expected)).await.unwrap();
        match collect(stream).await {
            Err(Error::SizeMismatch { digest: d, expected: e, .. }) => {
                assert_eq!((d.as_str(), e), (digest.as_str(), expected))
            }
            other => panic!("expected size {expected}: {:?}", other.map(|(b, _)| b.len())),
        }
    }
}

#[tokio::test]
async fn corrupted_content_ends_the_stream_with_digest_mismatch() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "blobs/corrupt");
    let blob = random_bytes(2 * 1024 * 1024, 3);
    let digest = sha256_digest(&blob);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();

    // Rot one byte in the registry's storage: it serves files as they are.
    let path = blob_data_path(&registry.storage_dir(), &digest);
    let mut stored = std::fs::read(&path).unwrap();
    assert!(stored == blob);
    stored[1_000_000] ^= 0xff;
    std::fs::write(&path, &stored).unwrap();

    let stream = client.get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
    assert_mismatch_after_every_byte(stream, &digest, &stored).await;
}

#[tokio::test]
async fn blob_ranges() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let client = anonymous_client();
    let repo = repo(&proxy.host(), "blobs/ranges");
    let blob = random_bytes(1024 * 1024 + 7, 4);
    let digest = sha256_digest(&blob);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();
    let len = blob.len() as u64;

    for (start, end) in [(0, 10), (1000, 70_000), (len - 5, len), (0, len), (12_345, 12_346)] {
        let got = client.get_blob_range(&repo, &digest, start, end).await.unwrap();
        assert!(got == blob.slice(start as usize..end as usize), "{start}..{end}");
    }
    let ranges: Vec<_> = proxy.requests_log().into_iter().filter_map(|r| r.range).collect();
    assert!(ranges.contains(&"bytes=1000-69999".to_owned()), "{ranges:?}");

    assert!(client.get_blob_range(&repo, &digest, 5, 5).await.unwrap().is_empty());
    match client.get_blob_range(&repo, &digest, len - 5, len + 10).await {
        Err(Error::InvalidResponse { reason, .. }) => assert!(reason.contains("beyond the end"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(client.get_blob_range(&repo, &digest, len + 10, len + 20).await.is_err());
    assert!(client.get_blob_range(&repo, &digest, 10, 5).await.is_err());
    let missing = sha256_digest(b"missing");
    assert!(client.get_blob_range(&repo, &missing, 0, 1).await.unwrap_err().is_not_found());
}
