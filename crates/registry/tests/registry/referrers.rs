//! The referrers API: absent on distribution 2.8, present behind testkit's ReferrersProxy, paginated
//! or broken on a scripted server.

use bytes::Bytes;
use registry::{media_type, sha256_digest, Error, Referrer};
use testkit::proxy::ReferrersProxy;
use testkit::registry::LocalRegistry;

use crate::fake::{FakeServer, RawResponse};
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
    let referrer_len = referrer.len() as u64;
    let put = client.put_manifest(&repo, &referrer_digest, media_type::OCI_MANIFEST, referrer).await.unwrap();
    assert_eq!(put.oci_subject.as_deref(), Some(image.manifest_digest.as_str()));

    let referrers =
        client.referrers(&repo, &image.manifest_digest, Some(SOCI_INDEX_TYPE)).await.unwrap().unwrap();
    assert_eq!(referrers.len(), 1, "{referrers:?}");
    assert_eq!(referrers[0].digest, referrer_digest);
    assert_eq!(referrers[0].artifact_type.as_deref(), Some(SOCI_INDEX_TYPE));
    assert_eq!(referrers[0].media_type, media_type::OCI_MANIFEST);
    assert_eq!(referrers[0].size, referrer_len);

    let none =
        client.referrers(&repo, &image.manifest_digest, Some("application/x-other")).await.unwrap().unwrap();
    assert_eq!(none, []);
}

/// A referrers page of `digests`, as an OCI index, with an annotation on each entry.
fn page(digests: &[&str]) -> String {
    let manifests: Vec<serde_json::Value> = digests
        .iter()
        .map(|d| {
            serde_json::json!({
                "mediaType": media_type::OCI_MANIFEST,
                "digest": d,
                "size": 321,
                "artifactType": SOCI_INDEX_TYPE,
                "annotations": { "n": d },
            })
        })
        .collect();
    serde_json::json!({ "schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests })
        .to_string()
}

#[tokio::test]
async fn paginated_referrers_come_back_as_one_typed_list() {
    let subject = sha256_digest(b"subject");
    let (one, two, three) = (sha256_digest(b"1"), sha256_digest(b"2"), sha256_digest(b"3"));
    let pages = [page(&[&one, &two]), page(&[&three])];
    let server = FakeServer::start(move |request, _| {
        let index = RawResponse::new(200).header("Content-Type", media_type::OCI_INDEX);
        match request.query() {
            "" => index
                .header("Link", &format!(r#"<{}?last=2>; rel="next""#, request.path()))
                .body(pages[0].clone()),
            "last=2" => index.body(pages[1].clone()),
            _ => RawResponse::new(404),
        }
    })
    .await;
    let client = anonymous_client();
    let referrers = client.referrers(&repo(&server.host(), "a/b"), &subject, None).await.unwrap().unwrap();
    let digests: Vec<&str> = referrers.iter().map(|r| r.digest.as_str()).collect();
    assert_eq!(digests, [one.as_str(), two.as_str(), three.as_str()]);
    let expected = Referrer {
        media_type: media_type::OCI_MANIFEST.to_owned(),
        digest: three.clone(),
        size: 321,
        artifact_type: Some(SOCI_INDEX_TYPE.to_owned()),
        annotations: [("n".to_owned(), three.clone())].into(),
    };
    assert_eq!(referrers[2], expected);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn an_index_answer_that_does_not_parse_is_an_invalid_response() {
    let server = FakeServer::start(|_, _| {
        RawResponse::new(200)
            .header("Content-Type", media_type::OCI_INDEX)
            .body(r#"{"schemaVersion":2,"manifests":[{"digest":7}]}"#)
    })
    .await;
    let client = anonymous_client();
    match client.referrers(&repo(&server.host(), "a/b"), &sha256_digest(b"s"), None).await {
        Err(Error::InvalidResponse { url, reason }) => {
            assert!(url.ends_with(&format!("/v2/a/b/referrers/{}", sha256_digest(b"s"))), "{url}");
            assert!(reason.contains("referrers"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
