//! What the CLI must never do to a real registry (docker-registry, deletes enabled), on multi-platform
//! images: delete a tag a team promoted from a SOCI tag, move a user's own `<tag>-soci`, fail on a
//! manifest another deletion removed first, trust a cache entry the registry does not confirm, or call
//! an index whose zTOC is gone `indexed`.

use std::sync::Arc;

use registry::{Client, ClientConfig, Repository};
use serde_json::Value;
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

use super::{assert_fails_with, cli, push_image};

fn client() -> Client {
    Client::new(ClientConfig { plain_http: true, ..ClientConfig::default() }, Arc::new(registry::Anonymous))
        .unwrap()
}

/// Two platforms, one layer each (in reverse order with `reversed`: the same platform manifests).
fn two_platforms(seed: u64, reversed: bool) -> TestImage {
    let config = LayerConfig { entries: 30, max_file_size: 96 * 1024, pax_percent: 0 };
    let mut platforms = vec![
        ("linux/amd64".to_string(), vec![TestLayer::gzip(seed, &config, 6, false)]),
        ("linux/arm64".to_string(), vec![TestLayer::gzip(seed + 1, &config, 6, false)]),
    ];
    if reversed {
        platforms.reverse();
    }
    image(Style::Oci, platforms, true, false)
}

/// Runs a verb on `team/app` with `--plain-http --json --min-layer-size 20000`.
fn run(verb: &str, host: &str, tag: Option<&str>, extra: &[&str]) -> (Option<i32>, Value, String) {
    let target = match tag {
        Some(tag) => format!("{host}/team/app:{tag}"),
        None => format!("{host}/team/app"),
    };
    let mut command = cli();
    command.args([verb, &target, "--plain-http", "--json"]).args(extra);
    if verb != "prune" {
        command.args(["--min-layer-size", "20000"]);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), serde_json::from_slice(&output.stdout).unwrap_or(Value::Null), stderr)
}

/// Whether every manifest the index at `reference` lists is in the registry.
async fn whole(client: &Client, repo: &Repository, reference: &str) -> bool {
    let Ok(index) = client.get_manifest(repo, reference).await else { return false };
    let index: index::oci::Index = serde_json::from_slice(&index.bytes).unwrap();
    for entry in index.manifests() {
        if client.get_manifest(repo, &entry.digest).await.is_err() {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn a_tag_promoted_from_a_soci_tag_survives_a_re_index_and_prune() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    push_image(&client, &repo, &two_platforms(1, false), "v1").await;
    let (code, _, stderr) = run("create", &host, Some("v1"), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    // `crane tag app:v1-soci prod`.
    let soci = client.get_manifest(&repo, "v1-soci").await.unwrap();
    client.put_manifest(&repo, "prod", &soci.media_type, soci.bytes.clone()).await.unwrap();

    // v1 is pushed again: create moves v1-soci and keeps the old index, which prod names.
    push_image(&client, &repo, &two_platforms(3, false), "v1").await;
    let (code, report, stderr) = run("create", &host, Some("v1"), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(report["kept"][0].as_str().unwrap().contains("still tagged prod"), "{report}");
    assert_eq!(client.get_manifest(&repo, "prod").await.unwrap().digest, soci.digest);
    assert!(whole(&client, &repo, "prod").await);

    // v1 is deleted: prune removes v1-soci's own index and nothing prod names.
    let v1 = client.get_manifest(&repo, "v1").await.unwrap().digest;
    client.delete_manifest(&repo, &v1).await.unwrap();
    let (code, pruned, stderr) = run("prune", &host, None, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(pruned["orphans"][0]["tag"], "v1-soci", "{pruned}");
    assert_eq!(client.get_manifest(&repo, "prod").await.unwrap().digest, soci.digest, "prod stays");
    assert!(whole(&client, &repo, "prod").await, "with all it references");
    // And now that prod is the only tag of that index, a prune leaves it too (it is nobody's orphan).
    let (code, again, stderr) = run("prune", &host, None, &[]);
    assert_eq!((code, again["orphans"].as_array().map(Vec::len)), (Some(0), Some(0)), "{stderr}");
    assert!(whole(&client, &repo, "prod").await);
}

#[tokio::test]
async fn a_users_own_soci_suffixed_tag_is_refused_with_the_way_out() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    push_image(&client, &repo, &two_platforms(10, false), "x").await;
    let users = two_platforms(12, false);
    push_image(&client, &repo, &users, "x-soci").await;
    let theirs = users.root.0.clone();
    let output = cli()
        .args(["create", &format!("{host}/team/app:x"), "--plain-http", "--min-layer-size", "20000"])
        .output()
        .unwrap();
    assert_fails_with(&output, &["x-soci", "not a SOCI index", "--tag-suffix"]);
    assert_eq!(client.get_manifest(&repo, "x-soci").await.unwrap().digest, theirs, "never moved");
    // Another suffix is the way out.
    let (code, report, stderr) = run("create", &host, Some("x"), &["--tag-suffix=-lazy"]);
    assert_eq!((code, report["pushed_tag"].as_str()), (Some(0), Some("x-lazy")), "{stderr}");
}

#[tokio::test]
async fn prune_of_two_images_sharing_soci_indexes_removes_both_and_exits_zero() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    let (a, b) = (two_platforms(20, false), two_platforms(20, true));
    push_image(&client, &repo, &a, "a").await;
    push_image(&client, &repo, &b, "b").await;
    for tag in ["a", "b"] {
        let (code, _, stderr) = run("create", &host, Some(tag), &[]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    for image in [&a, &b] {
        client.delete_manifest(&repo, &image.root.0).await.unwrap();
    }
    let (code, pruned, stderr) = run("prune", &host, None, &[]);
    assert_eq!(code, Some(0), "the second orphan's shared manifests are already gone, not refused: {stderr}");
    assert_eq!(pruned["orphans"].as_array().unwrap().len(), 2, "{pruned}");
    let tags = client.list_tags(&repo).await.unwrap();
    assert!(!tags.iter().any(|t| t.ends_with("-soci")), "{tags:?}");
}

#[tokio::test]
async fn an_index_whose_ztoc_is_gone_is_broken_and_create_repairs_it() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    push_image(&client, &repo, &two_platforms(30, false), "v1").await;
    let (code, created, stderr) = run("create", &host, Some("v1"), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let ztoc = created["layers"][0]["ztoc_digest"].as_str().unwrap().to_owned();
    let deleted = std::process::Command::new("curl")
        .args(["-sf", "-X", "DELETE", &format!("http://{host}/v2/team/app/blobs/{ztoc}")])
        .status()
        .unwrap();
    assert!(deleted.success(), "the registry deletes the zTOC blob");

    let (code, status, stderr) = run("status", &host, Some("v1"), &[]);
    assert_eq!(status["state"], "broken", "{status} {stderr}");
    assert_ne!(code, Some(0), "not ready: {stderr}");
    let human = cli()
        .args(["status", &format!("{host}/team/app:v1"), "--plain-http", "--min-layer-size", "20000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(stdout.contains(&ztoc) && stdout.contains("soci-indexer create"), "{stdout}");

    let (code, repaired, stderr) = run("create", &host, Some("v1"), &[]);
    assert_eq!((code, repaired["outcome"].as_str()), (Some(0), Some("created")), "{stderr}");
    let (code, status, _) = run("status", &host, Some("v1"), &[]);
    assert_eq!((code, status["state"].as_str()), (Some(0), Some("indexed")), "{status}");
}

#[tokio::test]
async fn a_cache_entry_the_registry_contradicts_is_rebuilt_to_the_same_bytes() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    let image = two_platforms(40, false);
    push_image(&client, &repo, &image, "a").await;
    push_image(&client, &repo, &image, "b").await;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ["--ztoc-cache", cache_dir.path().to_str().unwrap()];
    let (code, first, stderr) = run("create", &host, Some("a"), &cache);
    assert_eq!(code, Some(0), "{stderr}");
    // Every entry now claims a size one byte off.
    for entry in std::fs::read_dir(cache_dir.path().join("ztoc")).unwrap() {
        let path = entry.unwrap().path();
        let mut value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let size = value["ztoc_size"].as_u64().unwrap();
        value["ztoc_size"] = (size + 1).into();
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
    }
    let (code, second, stderr) = run("create", &host, Some("b"), &cache);
    assert_eq!(code, Some(0), "{stderr}");
    let results: Vec<&str> =
        second["layers"].as_array().unwrap().iter().map(|l| l["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["indexed", "indexed"], "rejected entries are rebuilt: {second}");
    assert_eq!(second["image_index_digest"], first["image_index_digest"], "same bytes as the first run");
    // The rebuilt entries are right again: the next run reuses them.
    push_image(&client, &repo, &image, "c").await;
    let (_, third, _) = run("create", &host, Some("c"), &cache);
    assert!(third["layers"].as_array().unwrap().iter().all(|l| l["result"] == "reused"), "{third}");
}
