//! Manifests by tag and digest, with exact bytes, HEAD, media types, delete, and verification.

use bytes::Bytes;
use registry::{media_type, sha256_digest, Deletion, Error, ManifestInfo, Resource};
use testkit::registry::LocalRegistry;

use crate::support::*;

#[tokio::test]
async fn by_tag_and_by_digest_with_exact_bytes() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "apps/web");
    let image = push_image(&client, &repo, "v1", 10_000, 10).await;

    let by_tag = client.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(by_tag.media_type, media_type::OCI_MANIFEST);
    assert_eq!(by_tag.digest, image.manifest_digest);
    // Pretty-printed on push: any re-serialisation would show.
    assert_eq!(by_tag.bytes, image.manifest);

    let by_digest = client.get_manifest(&repo, &image.manifest_digest).await.unwrap();
    assert_eq!(by_digest, by_tag);

    let info = ManifestInfo {
        media_type: media_type::OCI_MANIFEST.into(),
        digest: image.manifest_digest.clone(),
        size: image.manifest.len() as u64,
    };
    assert_eq!(client.head_manifest(&repo, "v1").await.unwrap(), Some(info.clone()));
    assert_eq!(client.head_manifest(&repo, &image.manifest_digest).await.unwrap(), Some(info));
    assert_eq!(client.head_manifest(&repo, "v2").await.unwrap(), None);

    match client.get_manifest(&repo, "v2").await {
        Err(Error::NotFound { what: Resource::Manifest, reference }) => {
            assert_eq!(reference, format!("{}/apps/web:v2", registry.host()))
        }
        other => panic!("{other:?}"),
    }
    let unknown_repo = crate::support::repo(&registry.host(), "no/such/repo");
    let error = client.get_manifest(&unknown_repo, "latest").await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert!(!error.is_retryable());

    assert!(matches!(client.get_manifest(&repo, "bad/tag").await, Err(Error::InvalidReference { .. })));
}

#[tokio::test]
async fn media_types_push_by_digest_and_delete() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "apps/api");
    let image = push_image(&client, &repo, "oci", 1000, 11).await;

    // The same content as a Docker v2 manifest, pushed by digest.
    let docker: serde_json::Value = {
        let mut m: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        m["mediaType"] = media_type::DOCKER_MANIFEST.into();
        m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
        m["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
        m
    };
    let docker = Bytes::from(serde_json::to_vec(&docker).unwrap());
    let docker_digest = sha256_digest(&docker);
    let put = client
        .put_manifest(&repo, &docker_digest, media_type::DOCKER_MANIFEST, docker.clone())
        .await
        .unwrap();
    assert_eq!(put.digest, docker_digest);
    assert_eq!(put.oci_subject, None);
    let got = client.get_manifest(&repo, &docker_digest).await.unwrap();
    assert_eq!((got.media_type.as_str(), &got.bytes), (media_type::DOCKER_MANIFEST, &docker));

    // An index over both.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [
            descriptor(media_type::OCI_MANIFEST, &image.manifest),
            descriptor(media_type::DOCKER_MANIFEST, &docker),
        ],
    });
    let index = Bytes::from(serde_json::to_vec(&index).unwrap());
    client.put_manifest(&repo, "multi", media_type::OCI_INDEX, index.clone()).await.unwrap();
    let got = client.get_manifest(&repo, "multi").await.unwrap();
    assert_eq!((got.media_type.as_str(), &got.bytes), (media_type::OCI_INDEX, &index));

    // A digest reference that does not match the bytes is refused before sending.
    match client.put_manifest(&repo, &image.manifest_digest, media_type::OCI_MANIFEST, docker.clone()).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (image.manifest_digest.clone(), docker_digest.clone()))
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(client.delete_manifest(&repo, &docker_digest).await.unwrap(), Deletion::Deleted);
    assert_eq!(client.head_manifest(&repo, &docker_digest).await.unwrap(), None);
    // A second delete (another run's, or a deletion event seen twice) finds it gone: not a refusal.
    assert_eq!(client.delete_manifest(&repo, &docker_digest).await.unwrap(), Deletion::AlreadyGone);
}

#[tokio::test]
async fn stored_manifest_that_changed_is_caught_by_digest() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "apps/rot");
    let image = push_image(&client, &repo, "v1", 1000, 12).await;

    // Same length, still valid JSON, different bytes: the registry serves it under the old digest.
    let path = blob_data_path(&registry.storage_dir(), &image.manifest_digest);
    let stored = std::fs::read(&path).unwrap();
    let changed: Vec<u8> = {
        let mut c = stored.clone();
        let space = c.iter().position(|&b| b == b' ').unwrap();
        c[space] = b'\t';
        c
    };
    std::fs::write(&path, &changed).unwrap();

    match client.get_manifest(&repo, &image.manifest_digest).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, image.manifest_digest);
            assert_eq!(actual, sha256_digest(&changed));
        }
        other => panic!("{other:?}"),
    }
    // By tag, the digest is that of the bytes received, not the registry's Docker-Content-Digest.
    let by_tag = client.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(by_tag.digest, sha256_digest(&changed));
    assert_eq!(by_tag.bytes, changed);
}
