//! The referrers API: absent on distribution 2.8, present behind testkit's ReferrersProxy.

use bytes::Bytes;
use registry::{media_type, sha256_digest};
use testkit::proxy::ReferrersProxy;
use testkit::registry::LocalRegistry;

use crate::support::*;

const SOCI_INDEX_TYPE: &str = "application/vnd.amazon.soci.index.v2+json";

#[tokio::test]
async fn distribution_2_8_has_no_referrers_api() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = anonymous_client();
    let repo = repo(&registry.host(), "ref/none");
    let image = push_image(&client, &repo, "v1", 1000, 50).await;
    assert_eq!(client.referrers(&repo, &image.manifest_digest, None).await.unwrap(), None);
    assert_eq!(client.referrers(&repo, &image.manifest_digest, Some(SOCI_INDEX_TYPE)).await.unwrap(), None);
}

#[tokio::test]
async fn referrers_listed_and_oci_subject_reported() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = ReferrersProxy::start(registry.addr()).await.unwrap();
    let client = anonymous_client();
    let repo = repo(&proxy.host(), "ref/some");
    let image = push_image(&client, &repo, "v1", 1000, 51).await;

    let empty = Bytes::from_static(b"{}");
    client.push_blob(&repo, &sha256_digest(&empty), empty.clone()).await.unwrap();
    let referrer = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": SOCI_INDEX_TYPE,
        "config": descriptor("application/vnd.oci.empty.v1+json", &empty),
        "layers": [],
        "subject": descriptor(media_type::OCI_MANIFEST, &image.manifest),
    });
    let referrer = Bytes::from(serde_json::to_vec(&referrer).unwrap());
    let referrer_digest = sha256_digest(&referrer);
    let put = client.put_manifest(&repo, &referrer_digest, media_type::OCI_MANIFEST, referrer).await.unwrap();
    assert_eq!(put.oci_subject.as_deref(), Some(image.manifest_digest.as_str()));

    let index =
        client.referrers(&repo, &image.manifest_digest, Some(SOCI_INDEX_TYPE)).await.unwrap().unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(index["mediaType"], media_type::OCI_INDEX);
    assert_eq!(index["manifests"][0]["digest"], referrer_digest.as_str());
    assert_eq!(index["manifests"][0]["artifactType"], SOCI_INDEX_TYPE);

    let none =
        client.referrers(&repo, &image.manifest_digest, Some("application/x-other")).await.unwrap().unwrap();
    let none: serde_json::Value = serde_json::from_slice(&none).unwrap();
    assert_eq!(none["manifests"].as_array().map(Vec::len), Some(0));
}
