//! The create pipeline against an in-memory registry: what is pushed, in which order, and what is not.

use crate::support::{load, loaded};

use std::sync::Arc;

use index::media;
use index::oci::{Descriptor, Index, Manifest};
use index::testing::MemoryRegistry;
use index::{CreateOptions, IndexVersion};
use index::{LayerResult, Outcome};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

fn small() -> LayerConfig {
    LayerConfig { entries: 40, max_file_size: 64 * 1024, pax_percent: 10 }
}

fn options(version: IndexVersion) -> CreateOptions {
    CreateOptions {
        index_version: version,
        min_layer_size: 20_000,
        span_size: 16 * 1024,
        concurrency: 2,
        ..CreateOptions::new("soci-indexer tests")
    }
}

fn two_platform_image(style: Style) -> TestImage {
    let shared = TestLayer::gzip(1, &small(), 6, style == Style::Docker);
    let amd = TestLayer::gzip(2, &small(), 6, style == Style::Docker);
    let arm = TestLayer::gzip(3, &small(), 1, style == Style::Docker);
    let tiny = TestLayer::gzip(4, &LayerConfig { entries: 2, max_file_size: 10, pax_percent: 0 }, 6, false);
    image(
        style,
        vec![
            ("linux/amd64".into(), vec![shared.clone(), amd, tiny]),
            ("linux/arm64/v8".into(), vec![shared, arm]),
        ],
        true,
        true,
    )
}

async fn run(
    registry: &Arc<MemoryRegistry>,
    version: IndexVersion,
) -> Result<index::CreateReport, index::Error> {
    index::create(registry.clone(), "app", Some("app"), &options(version), Arc::new(index::Silent)).await
}

#[tokio::test]
async fn v2_pushes_blobs_then_manifests_then_the_tag_and_binds_every_platform() {
    let image = two_platform_image(Style::Docker);
    let registry = Arc::new(loaded(&image, "app"));
    let report = run(&registry, IndexVersion::V2).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!(report.pushed_tag.as_deref(), Some("app-soci"));

    // Order: every blob push before any manifest push, the tag last, exactly once.
    let pushes = registry.pushes();
    let last_blob = pushes.iter().rposition(|p| p.starts_with("blob")).unwrap();
    let first_manifest = pushes.iter().position(|p| p.starts_with("manifest")).unwrap();
    assert!(last_blob < first_manifest, "{pushes:?}");
    assert_eq!(pushes.last().unwrap(), "tag app-soci");
    assert_eq!(pushes.iter().filter(|p| p.starts_with("tag")).count(), 1);

    // Layers: the shared one built once, the tiny one left out for its size.
    let indexed = report.layers.iter().filter(|l| matches!(l.result, LayerResult::Indexed { .. })).count();
    assert_eq!(indexed, 3);
    assert!(report.layers.iter().any(
        |l| matches!(&l.result, LayerResult::Skipped { reason } if reason.to_string().contains("minimum"))
    ));

    // The new index: image manifests annotated with their SOCI index, SOCI descriptors last.
    let (_, bytes) = registry.manifest("app-soci").unwrap();
    let new_index: Index = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(new_index.media_type, media::OCI_INDEX);
    let entries = new_index.manifests();
    assert_eq!(entries.len(), 5, "2 images + attestation + 2 SOCI indexes");
    assert_eq!(entries[3].artifact_type, media::SOCI_INDEX_V2);
    assert_eq!(entries[4].platform.as_ref().unwrap().variant, "v8", "platform exactly as in the image");
    for (image_entry, soci_entry) in [(&entries[0], &entries[3]), (&entries[1], &entries[4])] {
        let (_, manifest_bytes) = registry.manifest(&image_entry.digest).unwrap();
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest.media_type, media::OCI_MANIFEST);
        assert_eq!(manifest.config.media_type, media::OCI_CONFIG);
        assert_eq!(manifest.layers()[0].media_type, media::DOCKER_LAYER_GZIP, "layers keep Docker types");
        let soci_digest = manifest.annotations.as_ref().unwrap()[media::ANNOTATION_INDEX_DIGEST].clone();
        assert_eq!(soci_digest, soci_entry.digest);
        assert_eq!(
            soci_entry.annotation(media::ANNOTATION_IMAGE_MANIFEST_DIGEST),
            Some(image_entry.digest.as_str())
        );
        // Every zTOC of the SOCI index is in the registry and decodes.
        let (_, soci_bytes) = registry.manifest(&soci_digest).unwrap();
        let soci: Manifest = serde_json::from_slice(&soci_bytes).unwrap();
        assert_eq!(soci.config.media_type, media::SOCI_INDEX_V2);
        assert!(soci.subject.is_none());
        for ztoc_desc in soci.layers() {
            let blob = registry.blob(&ztoc_desc.digest).unwrap();
            let decoded = ztoc::codec::decode(&blob).unwrap();
            assert_eq!(decoded.compression_info.zinfo.span_size(), 16 * 1024);
        }
    }
    // The attestation keeps its annotations and points at the new manifest.
    assert_eq!(entries[2].annotation(media::ANNOTATION_REFERENCE_TYPE), Some("attestation-manifest"));
    assert_eq!(entries[2].annotation(media::ANNOTATION_REFERENCE_DIGEST), Some(entries[0].digest.as_str()));
    // The original tag did not move.
    assert_eq!(ztoc::sha256_digest(&registry.manifest("app").unwrap().1), image.root.0);
}

#[tokio::test]
async fn same_input_same_digests_and_a_second_run_is_already_indexed() {
    let image = two_platform_image(Style::Oci);
    let first = Arc::new(loaded(&image, "app"));
    let a = run(&first, IndexVersion::V2).await.unwrap();
    let second = Arc::new(loaded(&image, "app"));
    let b = run(&second, IndexVersion::V2).await.unwrap();
    assert_eq!(a.image_index_digest, b.image_index_digest);

    let pushes_before = first.pushes().len();
    let again = run(&first, IndexVersion::V2).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyIndexed);
    assert_eq!(first.pushes().len(), pushes_before, "nothing pushed when already indexed");
    // It names what is there, as the run that pushed it did: what to deploy needs no second lookup.
    assert_eq!(
        (again.pushed_tag.as_deref(), &again.image_index_digest),
        (Some("app-soci"), &a.image_index_digest)
    );
    assert_eq!(soci_indexes(&again), soci_indexes(&a));
    assert_eq!(soci_indexes(&a).iter().flatten().count(), 2);

    // The output itself is never indexed (loop guard).
    let err = index::create(
        first.clone(),
        "app-soci",
        Some("app-soci"),
        &CreateOptions { force: true, ..options(IndexVersion::V2) },
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::SociArtifact { .. }), "{err}");
    let soci_manifest = a.platforms[0].soci_index_digest.clone().unwrap();
    let err = index::create(
        first.clone(),
        &soci_manifest,
        Some("x"),
        &options(IndexVersion::V2),
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::SociArtifact { .. }) && err.is_unindexable_input(), "{err}");

    let forced = index::create(
        first.clone(),
        "app",
        Some("app"),
        &CreateOptions { force: true, ..options(IndexVersion::V2) },
        Arc::new(index::Silent),
    )
    .await
    .unwrap();
    assert_eq!(forced.outcome, Outcome::Created);
    assert_eq!(forced.image_index_digest, a.image_index_digest);
}

#[tokio::test]
async fn v1_uses_the_referrers_fallback_tag_without_a_referrers_api() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(loaded(&image, "app"));
    let report = run(&registry, IndexVersion::V1).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert!(report.pushed_tag.is_none());
    for platform in &report.platforms {
        let tag = platform.manifest_digest.replacen(':', "-", 1);
        let (_, bytes) = registry.manifest(&tag).expect("fallback referrers index");
        let referrers: Index = serde_json::from_slice(&bytes).unwrap();
        let soci = &referrers.manifests()[0];
        assert_eq!(soci.artifact_type, media::SOCI_INDEX_V1);
        assert_eq!(Some(&soci.digest), platform.soci_index_digest.as_ref());
        let (_, soci_bytes) = registry.manifest(&soci.digest).unwrap();
        let manifest: Manifest = serde_json::from_slice(&soci_bytes).unwrap();
        assert_eq!(manifest.subject.unwrap().digest, platform.manifest_digest);
    }
    assert!(registry.manifest("app-soci").is_none(), "v1 pushes no v2 tag");
    let again = run(&registry, IndexVersion::V1).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyIndexed);
    assert_eq!(soci_indexes(&again), soci_indexes(&report), "found through the fallback tag");
    assert_eq!((again.pushed_tag, again.image_index_digest), (None, None));
}

/// Each platform's SOCI index digest, in the report's order.
fn soci_indexes(report: &index::CreateReport) -> Vec<Option<String>> {
    report.platforms.iter().map(|p| p.soci_index_digest.clone()).collect()
}

#[tokio::test]
async fn v1_with_a_referrers_api_writes_no_fallback_tag() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry::with_referrers_api());
    load(&registry, &image, "app");
    run(&registry, IndexVersion::V1).await.unwrap();
    assert!(registry.pushes().iter().all(|p| !p.starts_with("tag")), "{:?}", registry.pushes());
    assert_eq!(run(&registry, IndexVersion::V1).await.unwrap().outcome, Outcome::AlreadyIndexed);
}

#[tokio::test]
async fn a_platform_without_eligible_layers_does_not_defeat_already_indexed() {
    let tiny = TestLayer::gzip(9, &LayerConfig { entries: 3, max_file_size: 100, pax_percent: 0 }, 6, false);
    let big = TestLayer::gzip(10, &small(), 6, false);
    let image = image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![big]), ("linux/arm64".into(), vec![tiny])],
        true,
        false,
    );
    let registry = Arc::new(loaded(&image, "app"));
    let report = run(&registry, IndexVersion::V2).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert!(report.platforms[1].soci_index_digest.is_none(), "arm64 has no eligible layer");
    let pushes = registry.pushes().len();
    assert_eq!(run(&registry, IndexVersion::V2).await.unwrap().outcome, Outcome::AlreadyIndexed);
    assert_eq!(registry.pushes().len(), pushes);
}

#[tokio::test]
async fn nothing_to_index_pushes_nothing() {
    let tiny = TestLayer::gzip(9, &LayerConfig { entries: 3, max_file_size: 100, pax_percent: 0 }, 6, false);
    let image = image(Style::Oci, vec![("linux/amd64".into(), vec![tiny])], false, false);
    let registry = Arc::new(loaded(&image, "app"));
    let report = run(&registry, IndexVersion::V2).await.unwrap();
    assert_eq!(report.outcome, Outcome::NothingToIndex);
    assert!(registry.pushes().is_empty());
}

#[tokio::test]
async fn a_broken_layer_stream_fails_the_run_before_any_manifest_is_pushed() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(loaded(&image, "app"));
    let victim = image.platforms[0].1[1].digest.clone();
    registry.break_blob(&victim);
    let err = run(&registry, IndexVersion::V2).await.unwrap_err();
    assert!(err.to_string().contains(&victim), "{err}");
    assert!(registry.pushes().iter().all(|p| p.starts_with("blob")), "{:?}", registry.pushes());
}

#[tokio::test]
async fn a_layer_soci_cannot_index_is_left_out_and_the_rest_indexed() {
    // A tar whose first entry is a PAX global header ('g').
    let header = testkit::tar_header("pax_global_header", 0, b'g');
    let mut tar = header.to_vec();
    tar.extend(testkit::generate_layer(5, &small()).tar);
    let blob = testkit::gzip(&tar, &testkit::GzipOptions::default());
    let bad = TestLayer::from_parts(media::OCI_LAYER_GZIP, blob, &tar, Vec::new());
    let good = TestLayer::gzip(6, &small(), 6, false);
    let image = image(Style::Oci, vec![("linux/amd64".into(), vec![bad.clone(), good])], false, false);
    let registry = Arc::new(loaded(&image, "app"));
    let report = run(&registry, IndexVersion::V2).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    let bad_report = report.layers.iter().find(|l| l.digest == bad.digest).unwrap();
    assert!(
        matches!(&bad_report.result, LayerResult::Unsupported { reason } if reason.to_string().contains("pax_global_header"))
    );
    let soci_digest = report.platforms[0].soci_index_digest.clone().unwrap();
    let (_, soci_bytes) = registry.manifest(&soci_digest).unwrap();
    let soci: Manifest = serde_json::from_slice(&soci_bytes).unwrap();
    assert_eq!(soci.layers().len(), 1);
}

#[tokio::test]
async fn platform_selection_and_bad_references_are_named_errors() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(loaded(&image, "app"));
    let arm_only = CreateOptions {
        platforms: vec![index::oci::Platform::parse("linux/arm64").unwrap()],
        ..options(IndexVersion::V2)
    };
    let report = index::create(registry.clone(), "app", Some("app"), &arm_only, Arc::new(index::Silent))
        .await
        .unwrap();
    assert_eq!(report.platforms.len(), 1);
    assert_eq!(report.platforms[0].platform, "linux/arm64/v8");

    let riscv = CreateOptions {
        platforms: vec![index::oci::Platform::parse("linux/riscv64").unwrap()],
        ..options(IndexVersion::V2)
    };
    let err = index::create(registry.clone(), "app", Some("app"), &riscv, Arc::new(index::Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, index::Error::PlatformNotFound { .. }), "{err}");
    let err = index::create(
        registry.clone(),
        "nope",
        Some("nope"),
        &options(IndexVersion::V2),
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::ImageNotFound { .. }), "{err}");
}

#[tokio::test]
async fn v1_pushes_every_manifest_once_and_each_index_before_any_fallback_tag() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(loaded(&image, "app"));
    run(&registry, IndexVersion::V1).await.unwrap();
    let pushes = registry.pushes();
    let manifests: Vec<&String> = pushes.iter().filter(|p| p.starts_with("manifest")).collect();
    let mut distinct = manifests.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(manifests.len(), 2, "one SOCI index per platform: {pushes:?}");
    assert_eq!(distinct.len(), manifests.len(), "no manifest pushed twice: {pushes:?}");
    let last_manifest = pushes.iter().rposition(|p| p.starts_with("manifest")).unwrap();
    let first_tag = pushes.iter().position(|p| p.starts_with("tag")).unwrap();
    assert!(last_manifest < first_tag, "every SOCI index before the first fallback tag: {pushes:?}");
}

#[tokio::test]
async fn a_panicking_layer_task_is_an_error_naming_the_layer() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(loaded(&image, "app"));
    registry.set_mode(index::testing::Mode::PanicOnBlob);
    let err = run(&registry, IndexVersion::V2).await.unwrap_err();
    let index::Error::Layer { digest, source: index::LayerError::Crashed(message) } = &err else {
        panic!("expected a crashed layer, got {err:?}");
    };
    assert!(image.blobs.iter().any(|(d, _, _)| d == digest), "names a layer of the image: {digest}");
    assert!(message.contains("injected panic"), "{message}");
    assert!(registry.pushes().is_empty(), "{:?}", registry.pushes());
}

#[tokio::test]
async fn input_that_can_never_be_indexed_is_refused_by_name_before_any_build() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(loaded(&image, "app"));

    // <tag><suffix> over 128 characters.
    let long_tag = "t".repeat(125);
    load(&registry, &image, &long_tag);
    let err = index::create(
        registry.clone(),
        &long_tag,
        Some(&long_tag),
        &options(IndexVersion::V2),
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::SociTagTooLong { .. }) && err.is_unindexable_input(), "{err}");
    assert_eq!(registry.calls(), 0, "refused before any registry call");

    // An index of indexes.
    let nested = Index {
        schema_version: 2,
        media_type: media::OCI_INDEX.into(),
        manifests: Some(vec![Descriptor {
            media_type: media::OCI_INDEX.into(),
            digest: image.root.0.clone(),
            size: image.root.2.len() as i64,
            ..Descriptor::default()
        }]),
        ..Index::default()
    };
    registry.insert_manifest(Some("nested"), media::OCI_INDEX, nested.to_json());
    let err = index::create(
        registry.clone(),
        "nested",
        Some("nested"),
        &options(IndexVersion::V2),
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::NestedIndex { .. }) && err.to_string().contains("nests"), "{err}");

    // A manifest that lies about a layer's size.
    let mut manifest: Manifest = serde_json::from_slice(&image.manifests[0].2).unwrap();
    manifest.layers.as_mut().unwrap()[0].size = -5;
    registry.insert_manifest(Some("negative"), media::OCI_MANIFEST, manifest.to_json());
    let err = index::create(
        registry.clone(),
        "negative",
        Some("negative"),
        &options(IndexVersion::V2),
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::BadSize { size: -5, .. }), "{err}");

    // A config the manifest says is huge is not read.
    let mut manifest: Manifest = serde_json::from_slice(&image.manifests[0].2).unwrap();
    manifest.config.size = 1 << 40;
    registry.insert_manifest(Some("big-config"), media::OCI_MANIFEST, manifest.to_json());
    let err = index::create(
        registry.clone(),
        "big-config",
        Some("big-config"),
        &options(IndexVersion::V2),
        Arc::new(index::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::BadSize { what: "image config", .. }), "{err}");
    assert!(registry.pushes().is_empty(), "{:?}", registry.pushes());
}

async fn state(registry: &Arc<MemoryRegistry>, version: IndexVersion) -> index::StatusReport {
    index::status(registry.as_ref(), "app", Some("app"), &options(version)).await.unwrap()
}

#[tokio::test]
async fn status_tells_not_indexed_indexed_stale_and_partial_in_v2() {
    use index::Registry as _;
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry::with_deletes());
    load(&registry, &image, "app");

    let before = state(&registry, IndexVersion::V2).await;
    assert_eq!((before.state, before.indexed), (index::State::NotIndexed, false));
    assert_eq!(before.soci_tag.as_deref(), Some("app-soci"));
    assert_eq!(before.image_index_digest, None);
    assert_eq!(before.platforms.len(), 2);
    assert_eq!(before.platforms[0].layers_eligible, 2, "amd64: shared + amd, the tiny layer is too small");
    assert!(before.platforms.iter().all(|p| p.soci_index_digest.is_none() && p.layers_indexed == 0));

    let created = run(&registry, IndexVersion::V2).await.unwrap();
    let after = state(&registry, IndexVersion::V2).await;
    assert_eq!((after.state, after.indexed), (index::State::Indexed, true));
    assert_eq!(after.image_index_digest, created.image_index_digest);
    for (platform, made) in after.platforms.iter().zip(&created.platforms) {
        assert_eq!(platform.soci_index_digest, made.soci_index_digest);
        assert_eq!(platform.layers_indexed, platform.layers_eligible);
        assert_eq!(platform.ztocs, platform.layers_indexed);
    }

    // One platform's SOCI index removed: partial, and create rebuilds.
    let arm_index = after.platforms[1].soci_index_digest.clone().unwrap();
    assert_eq!(registry.delete_manifest(&arm_index).await.unwrap(), index::Deletion::Deleted);
    let partial = state(&registry, IndexVersion::V2).await;
    assert_eq!(partial.state, index::State::Partial);
    assert_eq!(partial.platforms[1].soci_index_digest, None);
    assert_eq!(run(&registry, IndexVersion::V2).await.unwrap().outcome, Outcome::Created);
    assert_eq!(state(&registry, IndexVersion::V2).await.state, index::State::Indexed);

    // The tag re-pointed to another image: the -soci tag binds the old one.
    let other = image_with_seed(30);
    load(&registry, &other, "app");
    let stale = state(&registry, IndexVersion::V2).await;
    assert_eq!((stale.state, stale.indexed), (index::State::Stale, false));
    assert_eq!(stale.image_digest, other.root.0);
}

#[tokio::test]
async fn status_tells_not_indexed_indexed_and_partial_in_v1() {
    use index::Registry as _;
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry::with_deletes());
    load(&registry, &image, "app");
    assert_eq!(state(&registry, IndexVersion::V1).await.state, index::State::NotIndexed);
    let created = run(&registry, IndexVersion::V1).await.unwrap();
    let after = state(&registry, IndexVersion::V1).await;
    assert_eq!((after.state, after.soci_tag.clone()), (index::State::Indexed, None));
    assert_eq!(after.platforms[0].soci_index_digest, created.platforms[0].soci_index_digest);
    let amd_index = after.platforms[0].soci_index_digest.clone().unwrap();
    assert_eq!(registry.delete_manifest(&amd_index).await.unwrap(), index::Deletion::Deleted);
    assert_eq!(state(&registry, IndexVersion::V1).await.state, index::State::Partial);
}

/// A one-platform image whose layers come from `seed`.
fn image_with_seed(seed: u64) -> TestImage {
    image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(seed, &small(), 6, false)])],
        false,
        false,
    )
}

#[tokio::test]
async fn a_layer_whose_ztoc_would_pass_the_limit_is_left_out_and_the_rest_indexed() {
    // 48 MiB of zeros: a blob of ~50 KiB whose zTOC, with 16 KiB spans, holds a dozen 32 KiB windows.
    let header = testkit::tar_header("zeros", 48 << 20, b'0');
    let mut tar = header.to_vec();
    tar.resize(512 + (48 << 20) + 1024, 0);
    let blob = testkit::gzip(&tar, &testkit::GzipOptions::default());
    let bomb = TestLayer::from_parts(media::OCI_LAYER_GZIP, blob, &tar, Vec::new());
    let good = TestLayer::gzip(6, &small(), 6, false);
    let image =
        image(Style::Oci, vec![("linux/amd64".into(), vec![bomb.clone(), good.clone()])], false, false);
    let registry = Arc::new(loaded(&image, "app"));
    let limited = CreateOptions { max_ztoc_size: 256 << 10, ..options(IndexVersion::V2) };
    let report =
        index::create(registry.clone(), "app", Some("app"), &limited, Arc::new(index::Silent)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    let bomb_report = report.layers.iter().find(|l| l.digest == bomb.digest).unwrap();
    assert!(
        matches!(
            &bomb_report.result,
            LayerResult::Unsupported { reason: index::UnsupportedReason::TooLarge { limit: 262144 } }
        ),
        "{bomb_report:?}"
    );
    assert!(report
        .layers
        .iter()
        .any(|l| l.digest == good.digest && matches!(l.result, LayerResult::Indexed { .. })));

    // Without the limit, the same layer is indexed: the limit alone left it out.
    let fresh = Arc::new(loaded(&image, "app"));
    let unlimited =
        index::create(fresh, "app", Some("app"), &options(IndexVersion::V2), Arc::new(index::Silent))
            .await
            .unwrap();
    let ztoc_size = unlimited
        .layers
        .iter()
        .find_map(|l| match &l.result {
            LayerResult::Indexed { ztoc_size, .. } if l.digest == bomb.digest => Some(*ztoc_size),
            _ => None,
        })
        .expect("indexed without the limit");
    assert!(ztoc_size > 256 << 10, "{ztoc_size}");
}

/// Two v1 runs with different settings read the fallback tag at the same time, then both write it: the
/// tag must end up listing both SOCI indexes (each writer reads back and merges again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_v1_runs_both_end_up_in_the_fallback_tag() {
    let tiny = LayerConfig { entries: 30, max_file_size: 64 * 1024, pax_percent: 0 };
    let image = image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(40, &tiny, 6, false)])],
        false,
        false,
    );
    let registry = Arc::new(loaded(&image, "app"));
    let fallback = image.root.0.replacen(':', "-", 1);
    // Forced (no already-indexed check), the first read of the fallback tag by each run is its update's.
    registry.gate_reads(&fallback, 2);
    let first = CreateOptions { span_size: 16 * 1024, force: true, ..options(IndexVersion::V1) };
    let second = CreateOptions { span_size: 32 * 1024, force: true, ..options(IndexVersion::V1) };
    let (a, b) = tokio::join!(
        index::create(registry.clone(), "app", Some("app"), &first, Arc::new(index::Silent)),
        index::create(registry.clone(), "app", Some("app"), &second, Arc::new(index::Silent)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (_, bytes) = registry.manifest(&fallback).expect("fallback tag");
    let referrers: Index = serde_json::from_slice(&bytes).unwrap();
    let listed: Vec<&str> = referrers.manifests().iter().map(|d| d.digest.as_str()).collect();
    for report in [&a, &b] {
        let soci = report.platforms[0].soci_index_digest.as_deref().unwrap();
        assert!(listed.contains(&soci), "{soci} missing from {listed:?}");
    }
    assert_eq!(listed.len(), 2);
}
