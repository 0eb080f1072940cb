//! `soci-indexer sync` and `prune` against a real registry (docker-registry with deletes enabled).

use std::sync::Arc;

use registry::{Client, ClientConfig, Repository};
use serde_json::Value;
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::proxy::{Fault, FaultPlan, FaultProxy, RequestFilter};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

use super::{cli, push_image};

fn client() -> Client {
    Client::new(ClientConfig { plain_http: true, ..ClientConfig::default() }, Arc::new(registry::Anonymous))
        .unwrap()
}

fn layer(seed: u64) -> TestLayer {
    TestLayer::gzip(seed, &LayerConfig { entries: 30, max_file_size: 96 * 1024, pax_percent: 0 }, 6, false)
}

fn platforms(layers: Vec<(&str, TestLayer)>) -> TestImage {
    image(Style::Oci, layers.into_iter().map(|(p, l)| (p.to_string(), vec![l])).collect(), false, false)
}

/// Runs a verb with `--plain-http --json`; exit code and the parsed output.
fn run(verb: &str, target: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let output = cli().args([verb, target, "--plain-http", "--json"]).args(extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code(), value, stderr)
}

fn create(host: &str, tag: &str) -> Value {
    let (code, report, stderr) =
        run("create", &format!("{host}/team/app:{tag}"), &["--min-layer-size", "20000"]);
    assert_eq!(code, Some(0), "{stderr}");
    report
}

fn state(host: &str, tag: &str) -> String {
    let (_, report, stderr) =
        run("status", &format!("{host}/team/app:{tag}"), &["--min-layer-size", "20000"]);
    report["state"].as_str().unwrap_or_else(|| panic!("{stderr}")).to_owned()
}

fn action<'a>(report: &'a Value, tag: &str) -> &'a Value {
    report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tag"] == tag)
        .unwrap_or_else(|| panic!("{tag}: {report}"))
}

#[tokio::test]
async fn sync_indexes_only_what_needs_it_and_prune_removes_only_orphans() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    let target = format!("{host}/team/app");
    push_image(&client, &repo, &platforms(vec![("linux/amd64", layer(1))]), "indexed").await;
    push_image(&client, &repo, &platforms(vec![("linux/amd64", layer(2))]), "stale").await;
    push_image(&client, &repo, &platforms(vec![("linux/amd64", layer(3))]), "never").await;
    create(&host, "indexed");
    create(&host, "stale");
    push_image(&client, &repo, &platforms(vec![("linux/amd64", layer(4))]), "stale").await;
    let tags_before = client.list_tags(&repo).await.unwrap();

    let sync_args = ["--min-layer-size", "20000"];
    let (code, dry, stderr) = run("sync", &target, &[&sync_args[..], &["--dry-run"]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(action(&dry, "never")["action"], "would-index");
    assert_eq!(action(&dry, "stale")["state"], "stale");
    assert_eq!(action(&dry, "indexed")["action"], "already-indexed");
    assert_eq!(action(&dry, "indexed-soci")["action"], "skipped");
    assert_eq!(client.list_tags(&repo).await.unwrap(), tags_before, "a dry run changes nothing");
    // The human output: a line per tag as it is done, then the summary.
    let human = cli().args(["sync", &target, "--plain-http", "--dry-run"]).args(sync_args).output().unwrap();
    let stdout = String::from_utf8_lossy(&human.stdout);
    for line in [
        format!("{target}:never  would index (not-indexed)"),
        format!("{target}:stale  would index (stale)"),
        format!("{target}:indexed  already indexed"),
        format!("{target}:indexed-soci  skipped: SOCI output"),
        "dry run: 2 indexed, 1 already indexed, 2 skipped, 0 failed".to_owned(),
    ] {
        assert!(stdout.contains(&line), "{line:?} in:\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("0 failed"), "the summary comes last:\n{stdout}");

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().to_str().unwrap();
    let (code, done, stderr) = run("sync", &target, &[&sync_args[..], &["--ztoc-cache", cache]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    let remembered = std::fs::read_dir(cache_dir.path().join("ztoc")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(remembered, 2, "sync remembers the zTOCs it built (never and stale's new layer) where told");
    assert_eq!(action(&done, "never")["action"], "indexed");
    assert_eq!(action(&done, "stale")["action"], "indexed");
    assert_eq!(action(&done, "indexed")["action"], "already-indexed");
    for tag in ["indexed", "stale", "never"] {
        assert_eq!(state(&host, tag), "indexed", "{tag}");
    }

    // One image deleted by digest (its tag goes with it): its -soci index is an orphan.
    let never = client.get_manifest(&repo, "never").await.unwrap();
    let never_soci = client.get_manifest(&repo, "never-soci").await.unwrap();
    let never_index: Value = serde_json::from_slice(&never_soci.bytes).unwrap();
    assert_eq!(client.delete_manifest(&repo, &never.digest).await.unwrap(), registry::Deletion::Deleted);
    let (code, pruned, stderr) = run("prune", &target, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let orphans = pruned["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{pruned}");
    assert_eq!(orphans[0]["tag"], "never-soci");
    for digest in orphans[0]["remove"].as_array().unwrap() {
        let gone = client.get_manifest(&repo, digest.as_str().unwrap()).await.unwrap_err();
        assert!(gone.is_not_found(), "{digest}: {gone}");
    }
    for entry in never_index["manifests"].as_array().unwrap() {
        let digest = entry["digest"].as_str().unwrap();
        assert!(client.get_manifest(&repo, digest).await.unwrap_err().is_not_found(), "{digest}");
    }
    for tag in ["indexed", "stale"] {
        assert_eq!(state(&host, tag), "indexed", "{tag} untouched");
    }
}

#[tokio::test]
async fn a_shared_soci_index_survives_and_a_replaced_index_is_removed() {
    let registry = LocalRegistry::start().await.unwrap();
    let (client, host) = (client(), registry.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    let target = format!("{host}/team/app");
    // "both" and "amd" share the amd64 layer, so the same SOCI index manifest for it; "amd" has a small
    // layer more, so its image manifest is its own (deleting it leaves "both" whole).
    let both_image = platforms(vec![("linux/amd64", layer(10)), ("linux/arm64", layer(11))]);
    push_image(&client, &repo, &both_image, "both").await;
    let tiny = TestLayer::gzip(13, &LayerConfig { entries: 2, max_file_size: 100, pax_percent: 0 }, 6, false);
    let amd_only = image(Style::Oci, vec![("linux/amd64".into(), vec![layer(10), tiny])], false, false);
    push_image(&client, &repo, &amd_only, "amd").await;
    let both = create(&host, "both");
    let amd = create(&host, "amd");
    let shared = amd["platforms"][0]["soci_index_digest"].as_str().unwrap().to_owned();
    assert!(both["platforms"].as_array().unwrap().iter().any(|p| p["soci_index_digest"] == shared.as_str()));

    let amd_image = client.get_manifest(&repo, "amd").await.unwrap();
    assert_eq!(client.delete_manifest(&repo, &amd_image.digest).await.unwrap(), registry::Deletion::Deleted);
    let (code, pruned, stderr) = run("prune", &target, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(pruned["orphans"][0]["tag"], "amd-soci", "{pruned}");
    assert!(client.get_manifest(&repo, &shared).await.is_ok(), "the shared SOCI index stays");
    assert!(client.get_manifest(&repo, "amd-soci").await.unwrap_err().is_not_found());
    assert_eq!(state(&host, "both"), "indexed");

    // Re-pointing "both" and indexing again removes the index it replaced.
    let old_index = both["image_index_digest"].as_str().unwrap().to_owned();
    push_image(&client, &repo, &platforms(vec![("linux/amd64", layer(12))]), "both").await;
    let again = create(&host, "both");
    let removed: Vec<&str> =
        again["removed"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(removed.first(), Some(&old_index.as_str()), "{again}");
    assert!(client.get_manifest(&repo, &old_index).await.unwrap_err().is_not_found());
    assert!(
        client.get_manifest(&repo, &shared).await.unwrap_err().is_not_found(),
        "no live index uses it now"
    );
}

/// Multi-threaded: the proxy runs in this process while the CLI, a child, is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refusing_deletion_is_named_and_nothing_is_removed() {
    let registry = LocalRegistry::start().await.unwrap();
    fn deletes(method: &http::Method, _: &str) -> bool {
        method == http::Method::DELETE
    }
    let plan =
        FaultPlan::new().fail_first(usize::MAX, Fault::Unsupported).only(RequestFilter::Custom(deletes));
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let (client, host) = (client(), proxy.host());
    let repo = Repository::new(host.clone(), "team/app").unwrap();
    push_image(&client, &repo, &platforms(vec![("linux/amd64", layer(20))]), "gone").await;
    create(&host, "gone");
    // The image goes away through the registry itself, not the proxy.
    let direct = Repository::new(registry.host(), "team/app").unwrap();
    let gone = client.get_manifest(&direct, "gone").await.unwrap();
    assert_eq!(client.delete_manifest(&direct, &gone.digest).await.unwrap(), registry::Deletion::Deleted);

    let output = cli().args(["prune", &format!("{host}/team/app"), "--plain-http"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused to delete") && stderr.contains("gone-soci"), "{stderr}");
    assert!(client.get_manifest(&repo, "gone-soci").await.is_ok(), "nothing removed");
}
