//! The engine reading a layer through the HTTP client in parallel ranges, against docker-registry: the
//! zTOC is the one a single stream gives, and a range with wrong bytes fails the layer by name with
//! nothing pushed.

use std::sync::Arc;

use app::RepositoryClient;
use bytes::Bytes;
use index::{CreateOptions, SourceErrorKind};
use registry::{Anonymous, Client, ClientConfig, RangedReads, Repository};
use testkit::image::{image, Style, TestLayer};
use testkit::proxy::{FaultPlan, FaultProxy};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

const RANGE: u64 = 64 * 1024;

/// A client that reads every blob in ranges of 64 KiB (or as one stream, with `ranges` false).
fn client(ranges: bool) -> Client {
    let ranged_reads =
        ranges.then_some(RangedReads { min_blob_size: 1, range_size: RANGE, ranges_in_flight: 4 });
    let config =
        ClientConfig { plain_http: true, ranged_reads, max_connections: 3, ..ClientConfig::default() };
    Client::new(config, Arc::new(Anonymous)).unwrap()
}

/// Pushes a one-layer image tagged `v1`; returns the layer.
async fn push_image(client: &Client, repo: &Repository, seed: u64) -> TestLayer {
    let layer = TestLayer::gzip(
        seed,
        &LayerConfig { entries: 120, max_file_size: 64 * 1024, pax_percent: 0 },
        1,
        false,
    );
    assert!(layer.blob.len() as u64 > 4 * RANGE, "several ranges: {}", layer.blob.len());
    let made = image(Style::Oci, vec![("linux/amd64".into(), vec![layer.clone()])], false, false);
    for (digest, _, bytes) in made.blobs {
        client.push_blob(repo, &digest, Bytes::from(bytes)).await.unwrap();
    }
    let (_, media_type, bytes) = made.root;
    client.put_manifest(repo, "v1", &media_type, Bytes::from(bytes)).await.unwrap();
    layer
}

fn options() -> CreateOptions {
    CreateOptions { min_layer_size: 0, ..CreateOptions::new("ranged-test") }
}

async fn create(client: Client, repo: &Repository) -> Result<index::CreateReport, index::Error> {
    let registry = Arc::new(RepositoryClient::new(client, repo.clone()));
    index::create(registry, "v1", Some("v1"), &options(), Arc::new(index::Silent)).await
}

#[tokio::test]
async fn a_layer_read_in_ranges_gets_the_ztoc_of_a_single_stream() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let (ranged, single) = (
        Repository::new(proxy.host(), "app/ranged").unwrap(),
        Repository::new(proxy.host(), "app/single").unwrap(),
    );
    push_image(&client(false), &ranged, 5).await;
    push_image(&client(false), &single, 5).await;

    let before = proxy.requests_log().len();
    let by_ranges = create(client(true), &ranged).await.unwrap();
    let ranges = proxy.requests_log()[before..].iter().filter(|r| r.method == "GET" && r.had_range()).count();
    assert!(ranges > 4, "the layer was read in ranges: {ranges}");
    let by_stream = create(client(false), &single).await.unwrap();
    assert_eq!((by_ranges.layers.len(), by_stream.layers.len()), (1, 1));
    let ztoc = |report: &index::CreateReport| match &report.layers[0].result {
        index::LayerResult::Indexed { ztoc_digest, .. } => ztoc_digest.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ztoc(&by_ranges), ztoc(&by_stream), "the same zTOC, byte for byte");
}

#[tokio::test]
async fn a_range_with_wrong_bytes_fails_the_layer_as_corrupt_and_nothing_is_pushed() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let repo = Repository::new(proxy.host(), "app/corrupt").unwrap();
    let layer = push_image(&client(false), &repo, 6).await;
    // One byte rots inside the third range: the registry serves its file as it is.
    let hex = layer.digest.strip_prefix("sha256:").unwrap();
    let path =
        registry.storage_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data");
    let mut stored = std::fs::read(&path).unwrap();
    stored[2 * RANGE as usize + 100] ^= 0x01;
    std::fs::write(&path, &stored).unwrap();

    let before = proxy.requests_log().len();
    let error = create(client(true), &repo).await.expect_err("a corrupt layer fails");
    let source = error.registry_source().expect("a registry error");
    assert_eq!(source.kind, SourceErrorKind::Corrupt, "{}", index::chain(&error));
    assert!(index::chain(&error).contains("digest mismatch"), "{}", index::chain(&error));
    let requests = proxy.requests_log()[before..].to_vec();
    assert!(requests.iter().filter(|r| r.method == "GET").any(|r| r.had_range()), "read in ranges");
    assert!(requests.iter().all(|r| !r.is_write()), "nothing pushed: {requests:?}");
}
