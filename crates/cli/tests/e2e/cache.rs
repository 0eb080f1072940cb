//! The CLI's zTOC cache against a real registry: a layer seen before is reused (same repository),
//! mounted (another repository), or rebuilt when the registry lost it; the index bytes never change.

use std::sync::Arc;

use registry::{Client, ClientConfig, Repository};
use serde_json::Value;
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

use super::{cli, push_image};

fn client() -> Client {
    Client::new(ClientConfig { plain_http: true, ..ClientConfig::default() }, Arc::new(registry::Anonymous))
        .unwrap()
}

/// A big shared base layer and a small layer of the image's own.
fn image_with(own_seed: u64) -> TestImage {
    let base = TestLayer::gzip(
        200,
        &LayerConfig { entries: 80, max_file_size: 256 * 1024, pax_percent: 5 },
        6,
        false,
    );
    let own = TestLayer::gzip(
        own_seed,
        &LayerConfig { entries: 20, max_file_size: 64 * 1024, pax_percent: 0 },
        6,
        false,
    );
    image(Style::Oci, vec![("linux/amd64".into(), vec![base, own])], false, false)
}

/// `create --json` with the cache flags given; the parsed report.
fn create(reference: &str, cache: &[&str]) -> Value {
    let output = cli()
        .args(["create", reference, "--plain-http", "--json", "--min-layer-size", "20000"])
        .args(cache)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn results(report: &Value) -> Vec<String> {
    let mut results: Vec<String> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| match l["how"].as_str() {
            Some(how) => format!("{} {how}", l["result"].as_str().unwrap()),
            None => l["result"].as_str().unwrap().to_owned(),
        })
        .collect();
    results.sort();
    results
}

#[tokio::test]
async fn layers_seen_before_are_reused_mounted_or_rebuilt_with_identical_indexes() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = client();
    let host = registry.host();
    let app = Repository::new(host.clone(), "team/app").unwrap();
    let (a, b) = (image_with(1), image_with(2));
    push_image(&client, &app, &a, "a").await;
    push_image(&client, &app, &b, "b").await;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ["--ztoc-cache", cache_dir.path().to_str().unwrap()];

    let first = create(&format!("{host}/team/app:a"), &cache);
    assert_eq!(results(&first), ["indexed", "indexed"]);
    let second = create(&format!("{host}/team/app:b"), &cache);
    assert_eq!(results(&second), ["indexed", "reused present"], "{second}");

    // B again without the cache, in a repository of its own: the same index.
    let plain = Repository::new(host.clone(), "plain/b").unwrap();
    push_image(&client, &plain, &b, "b").await;
    let uncached = create(&format!("{host}/plain/b:b"), &["--no-ztoc-cache"]);
    assert_eq!(results(&uncached), ["indexed", "indexed"]);
    assert_eq!(second["image_index_digest"], uncached["image_index_digest"]);

    // B's layers in another repository: the zTOCs are mounted, nothing is built.
    let other = Repository::new(host.clone(), "team/other").unwrap();
    push_image(&client, &other, &b, "c").await;
    let third = create(&format!("{host}/team/other:c"), &cache);
    assert_eq!(results(&third), ["reused mounted", "reused mounted"], "{third}");
    assert_eq!(third["image_index_digest"], uncached["image_index_digest"]);

    // A fresh registry (the old one wiped) with the same cache: rebuilt, and the entries rewritten.
    drop(registry);
    let fresh = LocalRegistry::start().await.unwrap();
    let fresh_app = Repository::new(fresh.host(), "team/app").unwrap();
    push_image(&client, &fresh_app, &a, "a").await;
    let rebuilt = create(&format!("{}/team/app:a", fresh.host()), &cache);
    assert_eq!(results(&rebuilt), ["indexed", "indexed"], "{rebuilt}");
    assert_eq!(rebuilt["image_index_digest"], first["image_index_digest"]);
    let entries: Vec<Value> = std::fs::read_dir(cache_dir.path().join("ztoc"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(entries.len(), 3, "base, a's and b's own layers");
    let here: Vec<&Value> = entries.iter().filter(|e| e["registry"] == fresh.host().as_str()).collect();
    assert_eq!(here.len(), 2, "a's two entries now point at the fresh registry: {entries:?}");
}
