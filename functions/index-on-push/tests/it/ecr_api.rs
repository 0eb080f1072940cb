//! ECR's own API beside the registry client, against moto's ECR: one `DescribeImages` listing of every
//! tag with its digest and media type, and `BatchDeleteImage` by tag removing that tag only (what
//! deletions use when a user's tag shares soci-indexer's index).

use crate::aws;

use index::Registry as _;
use index_on_push::{EcrRegistries, HttpRegistries, Registries as _};
use registry::Repository;
use testkit::moto::MotoServer;

const MANIFEST: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

#[tokio::test]
async fn describe_images_lists_every_tag_and_untag_removes_one_tag_only() {
    let moto = MotoServer::start().await.unwrap();
    let sdk = aws::sdk(&moto.url()).await;
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    ecr.create_repository().repository_name("team/app").send().await.unwrap();
    // One image index under two tags: soci-indexer's v1-soci, and the team's prod.
    for tag in ["v1-soci", "prod"] {
        ecr.put_image()
            .repository_name("team/app")
            .image_manifest(MANIFEST)
            .image_manifest_media_type(index::media::OCI_INDEX)
            .image_tag(tag)
            .send()
            .await
            .unwrap();
    }
    let http =
        HttpRegistries::new(app::client(false, "test", std::sync::Arc::new(registry::Anonymous)).unwrap());
    let host = format!("{}.dkr.ecr.us-east-1.amazonaws.com", MotoServer::ACCOUNT);
    let repository = EcrRegistries::new(http, Some(ecr)).open(&Repository::new(host, "team/app").unwrap());
    assert!(repository.can_untag());

    let mut targets = repository.tag_targets().await.unwrap();
    targets.sort_by(|a, b| a.tag.cmp(&b.tag));
    let tags: Vec<&str> = targets.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(tags, ["prod", "v1-soci"]);
    // (moto computes its own digest of the manifest; ECR's is the sha256 of the bytes.)
    assert!(
        targets[0].digest.starts_with("sha256:") && targets[0].digest == targets[1].digest,
        "{targets:?}"
    );
    assert_eq!(targets[0].media_type.as_deref(), Some(index::media::OCI_INDEX), "{targets:?}");

    assert!(repository.untag("v1-soci").await.unwrap());
    let left: Vec<String> = repository.tag_targets().await.unwrap().into_iter().map(|t| t.tag).collect();
    assert_eq!(left, ["prod"], "only our tag went; the image and prod stay");
    assert!(repository.untag("v1-soci").await.unwrap(), "a tag already gone is what was wanted");
}

#[tokio::test]
async fn without_ecr_the_registry_api_alone_is_used() {
    let http =
        HttpRegistries::new(app::client(true, "test", std::sync::Arc::new(registry::Anonymous)).unwrap());
    let repository =
        EcrRegistries::new(http, None).open(&Repository::new("localhost:5000", "team/app").unwrap());
    assert!(!repository.can_untag(), "the registry API cannot remove one tag alone");
    assert!(!repository.untag("x").await.unwrap());
}

#[tokio::test]
async fn untagged_images_are_listed_by_age() {
    let moto = MotoServer::start().await.unwrap();
    let ecr = aws_sdk_ecr::Client::new(&aws::sdk(&moto.url()).await);
    ecr.create_repository().repository_name("team/app").send().await.unwrap();
    for (manifest, tag) in [(MANIFEST.replace("[]", "[ ]"), None), (MANIFEST.to_owned(), Some("v1"))] {
        ecr.put_image()
            .repository_name("team/app")
            .image_manifest(manifest)
            .image_manifest_media_type(index::media::OCI_INDEX)
            .set_image_tag(tag.map(str::to_owned))
            .send()
            .await
            .unwrap();
    }
    let http =
        HttpRegistries::new(app::client(false, "test", std::sync::Arc::new(registry::Anonymous)).unwrap());
    let host = format!("{}.dkr.ecr.us-east-1.amazonaws.com", MotoServer::ACCOUNT);
    let repository = EcrRegistries::new(http, Some(ecr)).open(&Repository::new(host, "team/app").unwrap());
    let tagged: Vec<String> = repository.tag_targets().await.unwrap().into_iter().map(|t| t.digest).collect();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // pushed-at has whole seconds
    let old = repository.untagged_manifests(std::time::Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(old.len(), 1, "the untagged one only: {old:?}");
    assert!(!tagged.contains(&old[0]));
    let young = repository.untagged_manifests(std::time::Duration::from_secs(3600)).await.unwrap().unwrap();
    assert!(young.is_empty(), "{young:?}");
}
