//! The create pipeline against an in-memory registry: what is pushed, in which order, and what is not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use index::create::{LayerResult, Outcome};
use index::media;
use index::oci::{Descriptor, Index, Manifest};
use index::{
    BlobStream, CreateOptions, FetchedManifest, IndexVersion, PushedManifest, Registry, SourceError,
    SourceErrorKind,
};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

/// A registry in memory that records every push, optionally with a referrers API.
#[derive(Default)]
struct MemoryRegistry {
    blobs: Mutex<HashMap<String, Bytes>>,
    manifests: Mutex<HashMap<String, (String, Bytes)>>,
    tags: Mutex<HashMap<String, String>>,
    pushes: Mutex<Vec<String>>,
    referrers_api: bool,
    /// Blob digests whose stream fails halfway.
    broken_blobs: Mutex<Vec<String>>,
}

fn err(kind: SourceErrorKind, message: &str) -> SourceError {
    SourceError::new(kind, false, message.to_string())
}

impl MemoryRegistry {
    fn with_image(image: &TestImage, tag: &str) -> MemoryRegistry {
        let registry = MemoryRegistry::default();
        registry.load(image, tag);
        registry
    }

    fn load(&self, image: &TestImage, tag: &str) {
        for (digest, _, bytes) in &image.blobs {
            self.blobs.lock().unwrap().insert(digest.clone(), Bytes::from(bytes.clone()));
        }
        for (digest, media_type, bytes) in image.manifests.iter().chain([&image.root]) {
            self.manifests
                .lock()
                .unwrap()
                .insert(digest.clone(), (media_type.clone(), Bytes::from(bytes.clone())));
        }
        self.tags.lock().unwrap().insert(tag.into(), image.root.0.clone());
    }

    fn pushes(&self) -> Vec<String> {
        self.pushes.lock().unwrap().clone()
    }

    fn manifest(&self, reference: &str) -> Option<(String, Bytes)> {
        let digest =
            self.tags.lock().unwrap().get(reference).cloned().unwrap_or_else(|| reference.to_string());
        self.manifests.lock().unwrap().get(&digest).cloned()
    }
}

impl Registry for MemoryRegistry {
    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        Ok(self.manifest(reference).map(|(media_type, bytes)| FetchedManifest {
            media_type,
            digest: ztoc::sha256_digest(&bytes),
            bytes,
        }))
    }

    async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, SourceError> {
        let bytes = self.blobs.lock().unwrap().get(&descriptor.digest).cloned();
        let bytes = bytes.ok_or_else(|| err(SourceErrorKind::NotFound, "blob unknown"))?;
        let broken = self.broken_blobs.lock().unwrap().contains(&descriptor.digest);
        let half = bytes.len() / 2;
        let chunks: Vec<Result<Bytes, SourceError>> = if broken {
            vec![Ok(bytes.slice(..half)), Err(err(SourceErrorKind::Corrupt, "digest mismatch"))]
        } else {
            bytes.chunks(7919).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
        };
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        self.blobs
            .lock()
            .unwrap()
            .get(&descriptor.digest)
            .cloned()
            .ok_or_else(|| err(SourceErrorKind::NotFound, "no blob"))
    }

    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        assert_eq!(ztoc::sha256_digest(&bytes), digest, "pushed blob matches its digest");
        self.pushes.lock().unwrap().push(format!("blob {digest}"));
        self.blobs.lock().unwrap().insert(digest.into(), bytes);
        Ok(())
    }

    async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest, SourceError> {
        let digest = ztoc::sha256_digest(&bytes);
        if reference.starts_with("sha256:") {
            assert_eq!(reference, digest, "pushed by its own digest");
            self.pushes.lock().unwrap().push(format!("manifest {digest}"));
        } else {
            self.pushes.lock().unwrap().push(format!("tag {reference}"));
            self.tags.lock().unwrap().insert(reference.into(), digest.clone());
        }
        let subject =
            serde_json::from_slice::<Manifest>(&bytes).ok().and_then(|m| m.subject).map(|s| s.digest);
        self.manifests.lock().unwrap().insert(digest.clone(), (media_type.into(), bytes));
        Ok(PushedManifest { digest, oci_subject: if self.referrers_api { subject } else { None } })
    }

    async fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Vec<Descriptor>>, SourceError> {
        if !self.referrers_api {
            return Ok(None);
        }
        let manifests = self.manifests.lock().unwrap();
        Ok(Some(
            manifests
                .iter()
                .filter_map(|(d, (_, bytes))| {
                    let m: Manifest = serde_json::from_slice(bytes).ok()?;
                    (m.subject?.digest == digest && m.config.media_type == artifact_type).then(|| {
                        Descriptor {
                            media_type: media::OCI_MANIFEST.into(),
                            digest: d.clone(),
                            size: bytes.len() as i64,
                            artifact_type: artifact_type.into(),
                            ..Descriptor::default()
                        }
                    })
                })
                .collect(),
        ))
    }

    async fn delete_manifest(&self, digest: &str) -> Result<bool, SourceError> {
        self.manifests.lock().unwrap().remove(digest);
        Ok(true)
    }
}

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
    index::create(registry.clone(), "app", Some("app"), &options(version), Arc::new(index::create::Silent))
        .await
}

#[tokio::test]
async fn v2_pushes_blobs_then_manifests_then_the_tag_and_binds_every_platform() {
    let image = two_platform_image(Style::Docker);
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
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
    assert!(report
        .layers
        .iter()
        .any(|l| matches!(&l.result, LayerResult::Skipped { reason } if reason.contains("minimum"))));

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
            let blob = registry.blobs.lock().unwrap()[&ztoc_desc.digest].clone();
            let decoded = ztoc::codec::decode(&blob).unwrap();
            assert_eq!(decoded.compression_info.zinfo.span_size(), 16 * 1024);
        }
    }
    // The attestation keeps its annotations and points at the new manifest.
    assert_eq!(entries[2].annotation(media::ANNOTATION_REFERENCE_TYPE), Some("attestation-manifest"));
    assert_eq!(entries[2].annotation(media::ANNOTATION_REFERENCE_DIGEST), Some(entries[0].digest.as_str()));
    // The original tag did not move.
    assert_eq!(registry.tags.lock().unwrap()["app"], image.root.0);
}

#[tokio::test]
async fn same_input_same_digests_and_a_second_run_is_already_indexed() {
    let image = two_platform_image(Style::Oci);
    let first = Arc::new(MemoryRegistry::with_image(&image, "app"));
    let a = run(&first, IndexVersion::V2).await.unwrap();
    let second = Arc::new(MemoryRegistry::with_image(&image, "app"));
    let b = run(&second, IndexVersion::V2).await.unwrap();
    assert_eq!(a.image_index_digest, b.image_index_digest);

    let pushes_before = first.pushes().len();
    let again = run(&first, IndexVersion::V2).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyIndexed);
    assert_eq!(first.pushes().len(), pushes_before, "nothing pushed when already indexed");

    // The output itself is never indexed (loop guard).
    let err = index::create(
        first.clone(),
        "app-soci",
        Some("app-soci"),
        &CreateOptions { force: true, ..options(IndexVersion::V2) },
        Arc::new(index::create::Silent),
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
        Arc::new(index::create::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::SociArtifact { .. }) && err.is_unindexable_input(), "{err}");

    let forced = index::create(
        first.clone(),
        "app",
        Some("app"),
        &CreateOptions { force: true, ..options(IndexVersion::V2) },
        Arc::new(index::create::Silent),
    )
    .await
    .unwrap();
    assert_eq!(forced.outcome, Outcome::Created);
    assert_eq!(forced.image_index_digest, a.image_index_digest);
}

#[tokio::test]
async fn v1_uses_the_referrers_fallback_tag_without_a_referrers_api() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
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
    assert!(!registry.tags.lock().unwrap().contains_key("app-soci"), "v1 pushes no v2 tag");
    assert_eq!(run(&registry, IndexVersion::V1).await.unwrap().outcome, Outcome::AlreadyIndexed);
}

#[tokio::test]
async fn v1_with_a_referrers_api_writes_no_fallback_tag() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry { referrers_api: true, ..MemoryRegistry::default() });
    registry.load(&image, "app");
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
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
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
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
    let report = run(&registry, IndexVersion::V2).await.unwrap();
    assert_eq!(report.outcome, Outcome::NothingToIndex);
    assert!(registry.pushes().is_empty());
}

#[tokio::test]
async fn a_broken_layer_stream_fails_the_run_before_any_manifest_is_pushed() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
    let victim = image.platforms[0].1[1].digest.clone();
    registry.broken_blobs.lock().unwrap().push(victim.clone());
    let err = run(&registry, IndexVersion::V2).await.unwrap_err();
    assert!(err.to_string().contains(&victim), "{err}");
    assert!(registry.pushes().iter().all(|p| p.starts_with("blob")), "{:?}", registry.pushes());
}

#[tokio::test]
async fn a_layer_soci_cannot_index_is_left_out_and_the_rest_indexed() {
    // A tar whose first entry is a PAX global header ('g').
    let mut header = [0u8; 512];
    header[..17].copy_from_slice(b"pax_global_header");
    header[100..107].copy_from_slice(b"0000644");
    header[124..135].copy_from_slice(b"00000000000");
    header[156] = b'g';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend(testkit::generate_layer(5, &small()).tar);
    let blob = testkit::gzip(&tar, &testkit::GzipOptions::default());
    let bad = TestLayer::from_parts(media::OCI_LAYER_GZIP, blob, &tar, Vec::new());
    let good = TestLayer::gzip(6, &small(), 6, false);
    let image = image(Style::Oci, vec![("linux/amd64".into(), vec![bad.clone(), good])], false, false);
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
    let report = run(&registry, IndexVersion::V2).await.unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    let bad_report = report.layers.iter().find(|l| l.digest == bad.digest).unwrap();
    assert!(
        matches!(&bad_report.result, LayerResult::Unsupported { reason } if reason.contains("pax_global_header"))
    );
    let soci_digest = report.platforms[0].soci_index_digest.clone().unwrap();
    let (_, soci_bytes) = registry.manifest(&soci_digest).unwrap();
    let soci: Manifest = serde_json::from_slice(&soci_bytes).unwrap();
    assert_eq!(soci.layers().len(), 1);
}

#[tokio::test]
async fn platform_selection_and_bad_references_are_named_errors() {
    let image = two_platform_image(Style::Oci);
    let registry = Arc::new(MemoryRegistry::with_image(&image, "app"));
    let arm_only = CreateOptions {
        platforms: vec![index::oci::Platform::parse("linux/arm64").unwrap()],
        ..options(IndexVersion::V2)
    };
    let report =
        index::create(registry.clone(), "app", Some("app"), &arm_only, Arc::new(index::create::Silent))
            .await
            .unwrap();
    assert_eq!(report.platforms.len(), 1);
    assert_eq!(report.platforms[0].platform, "linux/arm64/v8");

    let riscv = CreateOptions {
        platforms: vec![index::oci::Platform::parse("linux/riscv64").unwrap()],
        ..options(IndexVersion::V2)
    };
    let err = index::create(registry.clone(), "app", Some("app"), &riscv, Arc::new(index::create::Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, index::Error::PlatformNotFound { .. }), "{err}");
    let err = index::create(
        registry.clone(),
        "nope",
        Some("nope"),
        &options(IndexVersion::V2),
        Arc::new(index::create::Silent),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, index::Error::ImageNotFound { .. }), "{err}");
}
