//! zTOC reuse through the cache, against the in-memory registry: every path gives the same index bytes
//! as a build without a cache.

use crate::support::load;

use std::sync::Arc;

use index::testing::{MemoryCache, MemoryRegistry};
use index::{CreateOptions, CreateReport, LayerResult, ReuseKind};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

fn layer_config(entries: usize) -> LayerConfig {
    LayerConfig { entries, max_file_size: 64 * 1024, pax_percent: 5 }
}

/// The big base layer shared by the images, and one small layer of their own.
fn image_with(own_seed: u64) -> TestImage {
    let base = TestLayer::gzip(100, &layer_config(60), 6, false);
    let own = TestLayer::gzip(own_seed, &layer_config(20), 6, false);
    image(Style::Oci, vec![("linux/amd64".into(), vec![base, own])], false, false)
}

fn options(cache: Option<Arc<MemoryCache>>) -> CreateOptions {
    CreateOptions {
        min_layer_size: 20_000,
        span_size: 32 * 1024,
        ztoc_cache: cache.map(|c| c as Arc<dyn index::ZtocCache>),
        ..CreateOptions::new("soci-indexer tests")
    }
}

async fn create(registry: &MemoryRegistry, tag: &str, cache: Option<Arc<MemoryCache>>) -> CreateReport {
    index::create(Arc::new(registry.clone()), tag, Some(tag), &options(cache), Arc::new(index::Silent))
        .await
        .unwrap()
}

/// The image index digest a cache-less run makes for `image`, in a registry of its own.
async fn without_cache(image: &TestImage) -> Option<String> {
    let fresh = MemoryRegistry::new();
    load(&fresh, image, "t");
    create(&fresh, "t", None).await.image_index_digest
}

fn reused(report: &CreateReport) -> Vec<ReuseKind> {
    report
        .layers
        .iter()
        .filter_map(|l| match &l.result {
            LayerResult::Reused { how, .. } => Some(*how),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_layer_seen_before_is_reused_in_the_same_repository_and_mounted_into_another() {
    let cache = Arc::new(MemoryCache::default());
    let app = MemoryRegistry::new();
    let (a, b) = (image_with(1), image_with(2));
    load(&app, &a, "a");
    load(&app, &b, "b");
    let first = create(&app, "a", Some(cache.clone())).await;
    assert_eq!((first.layers_indexed(), first.layers_reused()), (2, 0));
    assert_eq!(cache.entries().len(), 2, "both zTOCs recorded");

    let second = create(&app, "b", Some(cache.clone())).await;
    assert_eq!(reused(&second), vec![ReuseKind::Present], "{:?}", second.layers);
    assert_eq!(second.layers_indexed(), 1, "only the new layer is built");
    assert_eq!(second.image_index_digest, without_cache(&b).await, "same bytes as without a cache");
    assert_eq!(
        index::status(&app, "b", Some("b"), &options(None)).await.unwrap().state,
        index::State::Indexed
    );

    let other = app.repository("other");
    load(&other, &b, "c");
    let third = create(&other, "c", Some(cache.clone())).await;
    assert_eq!(reused(&third), vec![ReuseKind::Mounted, ReuseKind::Mounted], "{:?}", third.layers);
    assert!(other.pushes().iter().any(|p| p.starts_with("mount ")), "{:?}", other.pushes());
    assert_eq!(third.image_index_digest, without_cache(&b).await);
}

#[tokio::test]
async fn without_mounts_the_ztoc_is_copied_and_a_corrupt_source_is_rebuilt() {
    let cache = Arc::new(MemoryCache::default());
    let app = MemoryRegistry::new();
    app.refuse_mounts();
    let a = image_with(3);
    load(&app, &a, "a");
    create(&app, "a", Some(cache.clone())).await;

    let copy = app.repository("copy");
    load(&copy, &a, "a");
    let report = create(&copy, "a", Some(cache.clone())).await;
    assert_eq!(reused(&report), vec![ReuseKind::Copied, ReuseKind::Copied]);
    assert_eq!(report.image_index_digest, without_cache(&a).await);

    // The source's zTOC blobs rot: the copy fails verification, so the layers are built.
    for entry in cache.entries().values() {
        app.break_blob(&entry.ztoc_digest);
    }
    let rebuilt_repo = app.repository("rebuilt");
    load(&rebuilt_repo, &a, "a");
    let rebuilt = create(&rebuilt_repo, "a", Some(cache.clone())).await;
    assert_eq!((rebuilt.layers_reused(), rebuilt.layers_indexed()), (0, 2), "{:?}", rebuilt.layers);
    assert_eq!(rebuilt.image_index_digest, without_cache(&a).await);
    assert!(cache.entries().values().all(|e| e.repository == "rebuilt"), "entries rewritten");
}

#[tokio::test]
async fn a_ztoc_gone_from_the_registry_or_a_failing_cache_means_a_build() {
    let cache = Arc::new(MemoryCache::default());
    let app = MemoryRegistry::new();
    let a = image_with(4);
    load(&app, &a, "a");
    let first = create(&app, "a", Some(cache.clone())).await;

    // The registry was wiped of the zTOCs (garbage collected): built again, entries kept pointing here.
    for entry in cache.entries().values() {
        app.remove_blob(&entry.ztoc_digest);
    }
    let forced = CreateOptions { force: true, ..options(Some(cache.clone())) };
    let again =
        index::create(Arc::new(app.clone()), "a", Some("a"), &forced, Arc::new(index::Silent)).await.unwrap();
    assert_eq!((again.layers_reused(), again.layers_indexed()), (0, 2));
    assert_eq!(again.image_index_digest, first.image_index_digest);

    // A cache that fails on every call changes nothing but speed.
    cache.set_failing(true);
    let b = image_with(5);
    load(&app, &b, "b");
    let report = create(&app, "b", Some(cache.clone())).await;
    assert_eq!((report.layers_reused(), report.layers_indexed()), (0, 2));
    assert_eq!(report.image_index_digest, without_cache(&b).await);
}

#[tokio::test]
async fn another_build_tool_or_span_size_is_another_ztoc() {
    let cache = Arc::new(MemoryCache::default());
    let app = MemoryRegistry::new();
    let (a, b) = (image_with(6), image_with(7));
    load(&app, &a, "a");
    load(&app, &b, "b");
    create(&app, "a", Some(cache.clone())).await;
    let other_span = CreateOptions { span_size: 64 * 1024, ..options(Some(cache.clone())) };
    let report = index::create(Arc::new(app.clone()), "b", Some("b"), &other_span, Arc::new(index::Silent))
        .await
        .unwrap();
    assert_eq!(report.layers_reused(), 0, "{:?}", report.layers);
    let key = |span: u64, tool: &str| {
        index::CacheKey {
            layer_digest: "sha256:ab".into(),
            span_size: span,
            build_tool_identifier: tool.into(),
        }
        .id()
    };
    assert_ne!(key(1, "x"), key(2, "x"));
    assert_ne!(key(1, "x"), key(1, "y"));
    assert!(key(1, "x").contains(ztoc::ZTOC_VERSION) && key(1, "x").ends_with("sha256:ab"));
}
