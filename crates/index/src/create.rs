//! The pipeline: image → eligible layers → zTOCs (streamed from the registry, built concurrently) →
//! SOCI index → push, in an order that never leaves a half-visible index.
//!
//! Push order: zTOC blobs as they are built and the `{}` config (blobs are invisible until referenced),
//! then manifests by digest, then the one thing that makes the result visible: the `<tag><suffix>` tag
//! (v2), or the referrers fallback tag (v1, only for registries without a referrers API).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::convert::{self, ImageEntry};
use crate::error::Error;
use crate::media::{self, LayerKind};
use crate::oci::{Descriptor, ImageConfigPlatform, Index, Manifest, Platform};
use crate::registry::{Registry, SourceError, SourceErrorKind};
use crate::soci::{self, IndexVersion, ZtocEntry};

/// Bytes handed to the zTOC builder at a time.
const FEED_SIZE: usize = 256 * 1024;

/// soci's default minimum compressed layer size: smaller layers are pulled whole.
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 << 20;
/// The default suffix of the v2 tag.
pub const DEFAULT_TAG_SUFFIX: &str = "-soci";

/// What to make.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// v2 (default) or v1.
    pub index_version: IndexVersion,
    /// Layers with a smaller compressed size are left out.
    pub min_layer_size: u64,
    /// zTOC span size.
    pub span_size: u64,
    /// Platforms to index; empty means every platform of the image (attestations excluded).
    pub platforms: Vec<Platform>,
    /// v2: the index is tagged `<tag><tag_suffix>`.
    pub tag_suffix: String,
    /// Written into zTOCs and SOCI indexes.
    pub build_tool_identifier: String,
    /// Layers built at once.
    pub concurrency: usize,
    /// Rebuild even if the image is already indexed.
    pub force: bool,
}

impl CreateOptions {
    /// soci's defaults, one layer per core.
    pub fn new(build_tool_identifier: impl Into<String>) -> CreateOptions {
        CreateOptions {
            index_version: IndexVersion::V2,
            min_layer_size: DEFAULT_MIN_LAYER_SIZE,
            span_size: ztoc::DEFAULT_SPAN_SIZE,
            platforms: Vec::new(),
            tag_suffix: DEFAULT_TAG_SUFFIX.into(),
            build_tool_identifier: build_tool_identifier.into(),
            concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            force: false,
        }
    }
}

/// Hooks for progress display (CLI) or logs (Lambda). All methods default to doing nothing.
pub trait Observer: Send + Sync {
    /// A layer starts streaming.
    fn layer_started(&self, _digest: &str, _size: u64) {}
    /// `done` compressed bytes of the layer were processed.
    fn layer_progress(&self, _digest: &str, _done: u64) {}
    /// A layer is done (indexed, left out, or failed).
    fn layer_finished(&self, _report: &LayerReport) {}
}

/// An observer that observes nothing.
pub struct Silent;
impl Observer for Silent {}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A SOCI index was built and pushed.
    Created,
    /// The image already has a SOCI index of the requested version; nothing was rebuilt.
    AlreadyIndexed,
    /// No layer is eligible; nothing was pushed.
    NothingToIndex,
}

/// What happened to one layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Layer digest.
    pub digest: String,
    /// Layer media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Indexed, or why not.
    #[serde(flatten)]
    pub result: LayerResult,
}

/// The result for one layer.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum LayerResult {
    /// A zTOC was built and pushed.
    Indexed {
        /// zTOC digest.
        ztoc_digest: String,
        /// zTOC size.
        ztoc_size: u64,
        /// Tar entries.
        entries: usize,
        /// Spans.
        spans: usize,
        /// Milliseconds to stream and build.
        duration_ms: u64,
    },
    /// Left out on purpose (size, media type).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Its content cannot be represented in a zTOC (e.g. a PAX global header); left out with a warning.
    Unsupported {
        /// Why.
        reason: String,
    },
}

/// One platform of the image.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformReport {
    /// The platform as written in the image.
    pub platform: String,
    /// The image manifest digest.
    pub manifest_digest: String,
    /// v2: the digest of the re-serialized manifest in the new index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_manifest_digest: Option<String>,
    /// The SOCI index manifest, if this platform got one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soci_index_digest: Option<String>,
    /// Layer digests in manifest order.
    pub layers: Vec<String>,
}

/// Everything a run did, for `--json` and for logs.
#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The image reference as given (tag or digest).
    pub reference: String,
    /// Digest of the image manifest or index.
    pub image_digest: String,
    /// v1 or v2.
    pub index_version: IndexVersion,
    /// Platforms considered.
    pub platforms: Vec<PlatformReport>,
    /// Each distinct layer once.
    pub layers: Vec<LayerReport>,
    /// v2: the tag pushed (`<tag><suffix>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_tag: Option<String>,
    /// v2: the digest of the new image index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_index_digest: Option<String>,
    /// Total milliseconds.
    pub duration_ms: u64,
}

/// A platform manifest of the image.
struct PlatformImage {
    descriptor: Descriptor,
    manifest: Manifest,
}

fn registry_error(action: impl Into<String>) -> impl FnOnce(SourceError) -> Error {
    move |source| Error::Registry { action: action.into(), source }
}

fn parse<T: serde::de::DeserializeOwned>(digest: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::BadManifest { digest: digest.into(), source })
}

/// The media type of a manifest: the registry's, else the body's `mediaType`.
fn media_type_of(fetched_type: &str, bytes: &[u8]) -> String {
    if media::is_image_manifest(fetched_type) || media::is_image_index(fetched_type) {
        return fetched_type.into();
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) if !p.media_type.is_empty() => p.media_type,
        Ok(p) if p.manifests.is_some() => media::OCI_INDEX.into(),
        Ok(_) => media::OCI_MANIFEST.into(),
        Err(_) => fetched_type.into(),
    }
}

/// Makes and pushes the SOCI index of the image `reference` (a tag or a digest) in `registry`.
/// `tag` is the image's tag, needed for v2 (`<tag><suffix>`).
pub async fn create<R: Registry>(
    registry: Arc<R>,
    reference: &str,
    tag: Option<&str>,
    options: &CreateOptions,
    observer: Arc<dyn Observer>,
) -> Result<CreateReport, Error> {
    let started = Instant::now();
    if options.index_version == IndexVersion::V2 && tag.is_none() {
        return Err(Error::NeedsTag);
    }
    let root = registry
        .get_manifest(reference)
        .await
        .map_err(registry_error(format!("fetching image {reference}")))?
        .ok_or_else(|| Error::ImageNotFound { reference: reference.into() })?;
    let root_type = media_type_of(&root.media_type, &root.bytes);

    // The image as an index (or none) plus the platform manifests to index.
    let (original_index, mut entries) = if media::is_image_index(&root_type) {
        let index: Index = parse(&root.digest, &root.bytes)?;
        if index.manifests().iter().any(|d| d.artifact_type == media::SOCI_INDEX_V2) {
            return Err(Error::SociArtifact {
                reference: reference.into(),
                what: "an image index that already carries SOCI indexes (soci-indexer's own output)",
            });
        }
        let entries = index.manifests().to_vec();
        (Some(index), entries)
    } else if media::is_image_manifest(&root_type) {
        let manifest: Manifest = parse(&root.digest, &root.bytes)?;
        if manifest.config.media_type == media::SOCI_INDEX_V1
            || manifest.config.media_type == media::SOCI_INDEX_V2
        {
            return Err(Error::SociArtifact { reference: reference.into(), what: "a SOCI index manifest" });
        }
        let config = registry
            .get_blob_bytes(&manifest.config)
            .await
            .map_err(registry_error(format!("fetching config {}", manifest.config.digest)))?;
        let platform =
            serde_json::from_slice::<ImageConfigPlatform>(&config).map(|c| c.platform()).unwrap_or_default();
        let descriptor = Descriptor {
            media_type: root_type.clone(),
            digest: root.digest.clone(),
            size: root.bytes.len() as i64,
            platform: Some(platform),
            ..Descriptor::default()
        };
        (None, vec![descriptor])
    } else {
        return Err(Error::NotAnImage { reference: reference.into(), media_type: root_type });
    };

    let selected = select_platforms(&entries, &options.platforms)?;
    let mut images: BTreeMap<usize, PlatformImage> = BTreeMap::new();
    let mut parsed: HashMap<String, Manifest> = HashMap::new();
    for (position, descriptor) in entries.iter().enumerate() {
        // Every image manifest is needed for v2 (all are re-serialized), the selected ones for v1.
        let wanted = selected.contains(&position);
        if !(wanted || options.index_version == IndexVersion::V2)
            || !media::is_image_manifest(&descriptor.media_type)
        {
            continue;
        }
        let manifest = if original_index.is_none() {
            parse::<Manifest>(&root.digest, &root.bytes)?
        } else {
            let fetched = registry
                .get_manifest(&descriptor.digest)
                .await
                .map_err(registry_error(format!("fetching manifest {}", descriptor.digest)))?
                .ok_or_else(|| Error::ImageNotFound { reference: descriptor.digest.clone() })?;
            parse::<Manifest>(&descriptor.digest, &fetched.bytes)?
        };
        if wanted && !is_image_config(&manifest.config.media_type) {
            return Err(Error::NotAnImage {
                reference: descriptor.digest.clone(),
                media_type: format!(
                    "manifest of {} (config {})",
                    descriptor.media_type, manifest.config.media_type
                ),
            });
        }
        parsed.insert(descriptor.digest.clone(), manifest.clone());
        if wanted {
            images.insert(position, PlatformImage { descriptor: descriptor.clone(), manifest });
        }
    }

    let mut report = CreateReport {
        outcome: Outcome::Created,
        reference: reference.into(),
        image_digest: root.digest.clone(),
        index_version: options.index_version,
        platforms: images
            .values()
            .map(|image| PlatformReport {
                platform: image.descriptor.platform.as_ref().map(Platform::to_string).unwrap_or_default(),
                manifest_digest: image.descriptor.digest.clone(),
                converted_manifest_digest: None,
                soci_index_digest: None,
                layers: image.manifest.layers().iter().map(|l| l.digest.clone()).collect(),
            })
            .collect(),
        layers: Vec::new(),
        pushed_tag: None,
        image_index_digest: None,
        duration_ms: 0,
    };

    if !options.force && already_indexed(registry.as_ref(), &images, tag, options).await? {
        report.outcome = Outcome::AlreadyIndexed;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    // Choose the layers; each distinct layer is built once even if platforms share it.
    let mut eligible: Vec<Descriptor> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for image in images.values() {
        for layer in image.manifest.layers() {
            if !seen.insert(layer.digest.clone()) {
                continue;
            }
            match eligibility(layer, options.min_layer_size) {
                Ok(()) => eligible.push(layer.clone()),
                Err(reason) => {
                    let layer_report = LayerReport {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                        size: layer.size.max(0) as u64,
                        result: LayerResult::Skipped { reason },
                    };
                    observer.layer_finished(&layer_report);
                    report.layers.push(layer_report);
                }
            }
        }
    }
    if eligible.is_empty() {
        report.outcome = Outcome::NothingToIndex;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    let built = build_ztocs(registry.clone(), eligible, options, observer.clone()).await?;
    let mut ztocs: HashMap<String, ZtocEntry> = HashMap::new();
    for (layer, result) in built {
        if let Some(entry) = &result.1 {
            ztocs.insert(layer.digest.clone(), entry.clone());
        }
        report.layers.push(result.0);
    }
    if ztocs.is_empty() {
        report.outcome = Outcome::NothingToIndex;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    // SOCI index manifests, one per platform that has at least one zTOC.
    registry
        .push_blob(media::EMPTY_JSON_DIGEST, Bytes::from_static(media::EMPTY_JSON))
        .await
        .map_err(registry_error("pushing the SOCI config blob"))?;
    let mut soci_indexes: BTreeMap<usize, (Descriptor, Vec<u8>)> = BTreeMap::new();
    for (position, image) in &images {
        let layer_ztocs: Vec<ZtocEntry> =
            image.manifest.layers().iter().filter_map(|l| ztocs.get(&l.digest).cloned()).collect();
        if layer_ztocs.is_empty() {
            continue;
        }
        let bytes = soci::index_manifest(
            options.index_version,
            &layer_ztocs,
            Some(&image.descriptor),
            &options.build_tool_identifier,
        );
        soci_indexes.insert(*position, (Descriptor::of(media::OCI_MANIFEST, &bytes), bytes));
    }
    for (position, platform) in images.keys().zip(report.platforms.iter_mut()) {
        platform.soci_index_digest = soci_indexes.get(position).map(|(d, _)| d.digest.clone());
    }
    for (descriptor, bytes) in soci_indexes.values() {
        registry
            .push_manifest(&descriptor.digest, media::OCI_MANIFEST, Bytes::from(bytes.clone()))
            .await
            .map_err(registry_error(format!("pushing SOCI index {}", descriptor.digest)))?;
    }

    match options.index_version {
        IndexVersion::V2 => {
            let image_entries: Vec<ImageEntry> = entries
                .drain(..)
                .enumerate()
                .map(|(position, descriptor)| ImageEntry {
                    manifest: parsed.get(&descriptor.digest).cloned(),
                    soci_index: soci_indexes.get(&position).map(|(d, _)| d.clone()),
                    descriptor,
                })
                .collect();
            let converted = convert::convert(original_index.as_ref(), &image_entries);
            for (descriptor, bytes) in &converted.manifests {
                registry
                    .push_manifest(&descriptor.digest, media::OCI_MANIFEST, Bytes::from(bytes.clone()))
                    .await
                    .map_err(registry_error(format!("pushing image manifest {}", descriptor.digest)))?;
            }
            for platform in &mut report.platforms {
                platform.converted_manifest_digest =
                    converted.renamed.get(&platform.manifest_digest).cloned();
            }
            let new_tag = format!("{}{}", tag.expect("checked above"), options.tag_suffix);
            let pushed = registry
                .push_manifest(&new_tag, media::OCI_INDEX, Bytes::from(converted.index.clone()))
                .await
                .map_err(registry_error(format!("pushing image index tag {new_tag}")))?;
            report.image_index_digest = Some(if pushed.digest.is_empty() {
                ztoc::sha256_digest(&converted.index)
            } else {
                pushed.digest
            });
            report.pushed_tag = Some(new_tag);
        }
        IndexVersion::V1 => {
            for (position, (descriptor, bytes)) in &soci_indexes {
                let subject = &images[position].descriptor;
                let pushed = registry
                    .push_manifest(&descriptor.digest, media::OCI_MANIFEST, Bytes::from(bytes.clone()))
                    .await
                    .map_err(registry_error(format!("pushing SOCI index {}", descriptor.digest)))?;
                if pushed.oci_subject.is_none() {
                    update_referrers_fallback(registry.as_ref(), subject, descriptor, options).await?;
                }
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Whether a config media type is a container image's (not another OCI artifact's).
fn is_image_config(media_type: &str) -> bool {
    media_type == media::OCI_CONFIG || media_type == media::DOCKER_CONFIG
}

/// The positions of the entries to index: every platform but attestations, or those asked for.
fn select_platforms(entries: &[Descriptor], wanted: &[Platform]) -> Result<Vec<usize>, Error> {
    let candidates: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            let d = &entries[i];
            media::is_image_manifest(&d.media_type)
                && d.artifact_type.is_empty()
                && !d.platform.as_ref().is_some_and(Platform::is_unknown)
        })
        .collect();
    if wanted.is_empty() {
        return Ok(candidates);
    }
    let mut selected = Vec::new();
    for want in wanted {
        let matching: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| entries[i].platform.as_ref().is_some_and(|p| p.matches(want)))
            .collect();
        if matching.is_empty() {
            let available: Vec<String> = candidates
                .iter()
                .filter_map(|&i| entries[i].platform.as_ref().map(Platform::to_string))
                .collect();
            return Err(Error::PlatformNotFound {
                platform: want.to_string(),
                available: available.join(", "),
            });
        }
        selected.extend(matching);
    }
    selected.sort_unstable();
    selected.dedup();
    Ok(selected)
}

/// `Ok` if the layer should get a zTOC, else why not.
fn eligibility(layer: &Descriptor, min_layer_size: u64) -> Result<(), String> {
    match media::layer_kind(&layer.media_type) {
        LayerKind::Gzip | LayerKind::Tar => {}
        LayerKind::Zstd => return Err("zstd layers cannot be indexed by SOCI".into()),
        LayerKind::Foreign => return Err("foreign (non-distributable) layer".into()),
        LayerKind::Unknown => {
            return Err(format!("not a gzip or tar layer media type ({})", layer.media_type))
        }
    }
    let size = layer.size.max(0) as u64;
    if size < min_layer_size {
        return Err(format!("smaller than the minimum layer size ({size} < {min_layer_size} bytes)"));
    }
    Ok(())
}

/// Whether the requested index already exists for every selected platform.
async fn already_indexed<R: Registry>(
    registry: &R,
    images: &BTreeMap<usize, PlatformImage>,
    tag: Option<&str>,
    options: &CreateOptions,
) -> Result<bool, Error> {
    if images.is_empty() {
        return Ok(false);
    }
    match options.index_version {
        IndexVersion::V2 => {
            let soci_tag = format!("{}{}", tag.unwrap_or_default(), options.tag_suffix);
            let Some(fetched) = registry
                .get_manifest(&soci_tag)
                .await
                .map_err(registry_error(format!("fetching {soci_tag}")))?
            else {
                return Ok(false);
            };
            let Ok(index) = serde_json::from_slice::<Index>(&fetched.bytes) else { return Ok(false) };
            if !index.manifests().iter().any(|d| d.artifact_type == media::SOCI_INDEX_V2) {
                return Ok(false);
            }
            // Bound to this image when each of its manifests, re-serialized, is in the index (once the
            // SOCI annotation is taken away): same config and layers, so same image. A platform without
            // eligible layers is in it unannotated; at least one must carry an index.
            let mut bound_manifests = Vec::new();
            let mut any_annotated = false;
            for entry in index.manifests().iter().filter(|d| d.artifact_type.is_empty()) {
                if let Some(m) =
                    registry.get_manifest(&entry.digest).await.map_err(registry_error("fetching manifest"))?
                {
                    if let Ok(mut manifest) = serde_json::from_slice::<Manifest>(&m.bytes) {
                        any_annotated |= manifest
                            .annotations
                            .as_mut()
                            .and_then(|a| a.remove(media::ANNOTATION_INDEX_DIGEST))
                            .is_some();
                        bound_manifests.push(convert::reserialize_manifest(&manifest, None));
                    }
                }
            }
            Ok(any_annotated
                && images.values().all(|image| {
                    bound_manifests.contains(&convert::reserialize_manifest(&image.manifest, None))
                }))
        }
        IndexVersion::V1 => {
            for image in images.values() {
                let referrers = match registry
                    .referrers(&image.descriptor.digest, media::SOCI_INDEX_V1)
                    .await
                    .map_err(registry_error("listing referrers"))?
                {
                    Some(referrers) => referrers,
                    None => {
                        fallback_referrers(registry, &image.descriptor.digest).await?.manifests().to_vec()
                    }
                };
                if !referrers.iter().any(|d| d.artifact_type == media::SOCI_INDEX_V1) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

/// The referrers tag schema's tag for `digest`: `sha256-<hex>`.
fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

async fn fallback_referrers<R: Registry>(registry: &R, digest: &str) -> Result<Index, Error> {
    let tag = fallback_tag(digest);
    match registry.get_manifest(&tag).await {
        Ok(Some(fetched)) => parse(&fetched.digest, &fetched.bytes),
        Ok(None) => Ok(Index::default()),
        Err(e) if e.kind == SourceErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(registry_error(format!("fetching referrers tag {tag}"))(e)),
    }
}

/// Adds the SOCI index to the `sha256-<hex>` referrers index of its subject, as oras-go does for
/// registries without a referrers API.
async fn update_referrers_fallback<R: Registry>(
    registry: &R,
    subject: &Descriptor,
    soci_index: &Descriptor,
    options: &CreateOptions,
) -> Result<(), Error> {
    let mut index = fallback_referrers(registry, &subject.digest).await?;
    let old = (!index.manifests().is_empty()).then(|| ztoc::sha256_digest(&index.to_json()));
    let mut annotations = crate::oci::Annotations::new();
    annotations.insert(media::ANNOTATION_BUILD_TOOL.into(), options.build_tool_identifier.clone());
    let entry = Descriptor {
        media_type: media::OCI_MANIFEST.into(),
        digest: soci_index.digest.clone(),
        size: soci_index.size,
        annotations: Some(annotations),
        artifact_type: media::SOCI_INDEX_V1.into(),
        ..Descriptor::default()
    };
    let manifests = index.manifests.get_or_insert_with(Vec::new);
    if manifests.iter().any(|d| d.digest == entry.digest) {
        return Ok(());
    }
    manifests.push(entry);
    index.schema_version = 2;
    index.media_type = media::OCI_INDEX.into();
    let tag = fallback_tag(&subject.digest);
    let bytes = index.to_json();
    registry
        .push_manifest(&tag, media::OCI_INDEX, Bytes::from(bytes))
        .await
        .map_err(registry_error(format!("pushing referrers tag {tag}")))?;
    if let Some(old) = old {
        // The previous referrers index is now unreferenced; removing it is best effort.
        let _ = registry.delete_manifest(&old).await;
    }
    Ok(())
}

type BuiltLayer = (Descriptor, (LayerReport, Option<ZtocEntry>));

/// Streams and indexes the layers, `options.concurrency` at a time; pushes each zTOC as it is made.
async fn build_ztocs<R: Registry>(
    registry: Arc<R>,
    layers: Vec<Descriptor>,
    options: &CreateOptions,
    observer: Arc<dyn Observer>,
) -> Result<Vec<BuiltLayer>, Error> {
    let semaphore = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut results: Vec<(usize, BuiltLayer)> = Vec::new();
    let mut first_error = None;
    // Largest first: with a few workers, this keeps them busy until the end (longest processing time
    // first scheduling), instead of one worker finishing a big layer alone.
    let mut order: Vec<(usize, Descriptor)> = layers.into_iter().enumerate().collect();
    order.sort_by_key(|(position, layer)| (std::cmp::Reverse(layer.size), *position));
    for (position, layer) in order {
        // Taking the permit before spawning keeps the order above.
        let permit = semaphore.clone().acquire_owned().await.expect("semaphore is never closed");
        while let Some(joined) = tasks.try_join_next() {
            collect(joined, &mut results, &mut first_error);
        }
        if first_error.is_some() {
            break;
        }
        let registry = registry.clone();
        let observer = observer.clone();
        let build_options = ztoc::BuildOptions {
            span_size: options.span_size,
            build_tool_identifier: options.build_tool_identifier.clone(),
            format: None,
        };
        tasks.spawn(async move {
            let _permit = permit;
            let result = build_one(registry.as_ref(), &layer, build_options, observer.as_ref()).await;
            if let Ok((report, _)) = &result {
                observer.layer_finished(report);
            }
            (position, layer, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if collect(joined, &mut results, &mut first_error) {
            // Stop the other layers: the run fails and nothing past blobs is pushed.
            tasks.abort_all();
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    results.sort_by_key(|(position, _)| *position);
    Ok(results.into_iter().map(|(_, built)| built).collect())
}

type JoinedLayer =
    Result<(usize, Descriptor, Result<(LayerReport, Option<ZtocEntry>), Error>), tokio::task::JoinError>;

/// Files a finished layer task's result; returns true if it is the first failure.
fn collect(
    joined: JoinedLayer,
    results: &mut Vec<(usize, BuiltLayer)>,
    first_error: &mut Option<Error>,
) -> bool {
    match joined {
        Ok((position, layer, Ok(built))) => {
            results.push((position, (layer, built)));
            false
        }
        Ok((_, _, Err(e))) => {
            let first = first_error.is_none();
            first_error.get_or_insert(e);
            first
        }
        // Aborted after another layer failed.
        Err(e) if e.is_cancelled() => false,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Streams one layer through the zTOC builder (on a blocking thread) and pushes the zTOC.
async fn build_one<R: Registry>(
    registry: &R,
    layer: &Descriptor,
    build_options: ztoc::BuildOptions,
    observer: &dyn Observer,
) -> Result<(LayerReport, Option<ZtocEntry>), Error> {
    let started = Instant::now();
    let size = layer.size.max(0) as u64;
    let span_size = build_options.span_size;
    let layer_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Layer {
        digest: layer.digest.clone(),
        source,
    };
    observer.layer_started(&layer.digest, size);
    let mut stream = registry.get_blob(layer).await.map_err(|e| layer_error(Box::new(e)))?;
    // A few chunks in flight between the network and the builder: memory stays bounded.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let builder = tokio::task::spawn_blocking(move || -> Result<(ztoc::Ztoc, Vec<u8>), ztoc::Error> {
        let mut builder = ztoc::ZtocBuilder::new(build_options)?;
        while let Some(chunk) = receiver.blocking_recv() {
            builder.feed(&chunk)?;
        }
        let built = builder.finish()?;
        let bytes = ztoc::codec::encode(&built);
        Ok((built, bytes))
    });
    let mut done = 0u64;
    let mut stream_error = None;
    let mut last_report = Instant::now();
    // Network chunks are small (a few KiB); the builder is fastest on big pieces, so gather them.
    let mut pending = bytes::BytesMut::with_capacity(FEED_SIZE);
    loop {
        let item = stream.next().await;
        let end = item.is_none();
        match item {
            Some(Ok(chunk)) => {
                done += chunk.len() as u64;
                pending.extend_from_slice(&chunk);
            }
            Some(Err(e)) => {
                stream_error = Some(e);
                break;
            }
            None => {}
        }
        if (end && !pending.is_empty()) || pending.len() >= FEED_SIZE {
            let piece = pending.split().freeze();
            pending.reserve(FEED_SIZE);
            if sender.send(piece).await.is_err() {
                break; // the builder stopped: its error says why
            }
        }
        if end {
            break;
        }
        if last_report.elapsed() > Duration::from_millis(100) {
            observer.layer_progress(&layer.digest, done);
            last_report = Instant::now();
        }
    }
    drop(sender);
    let built = builder.await.expect("zTOC builder panicked");
    if let Some(e) = stream_error {
        // The blob did not arrive whole or did not match its digest: its zTOC must not be used.
        return Err(layer_error(Box::new(e)));
    }
    observer.layer_progress(&layer.digest, done);
    let report = |result| LayerReport {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        size,
        result,
    };
    let (ztoc, bytes) = match built {
        Ok(built) => built,
        Err(ztoc::Error::Tar(
            e @ (ztoc::tar::TarError::UnsupportedEntry { .. } | ztoc::tar::TarError::SparseEntry { .. }),
        )) => {
            tracing::warn!(layer = %layer.digest, error = %e, "layer left out of the SOCI index");
            return Ok((report(LayerResult::Unsupported { reason: e.to_string() }), None));
        }
        Err(e) => return Err(layer_error(Box::new(e))),
    };
    let digest = ztoc::sha256_digest(&bytes);
    let ztoc_size = bytes.len() as u64;
    registry
        .push_blob(&digest, Bytes::from(bytes))
        .await
        .map_err(registry_error(format!("pushing zTOC {digest} of layer {}", layer.digest)))?;
    let entry = ZtocEntry {
        ztoc_digest: digest.clone(),
        ztoc_size,
        layer_digest: layer.digest.clone(),
        layer_media_type: layer.media_type.clone(),
        span_size,
    };
    let result = LayerResult::Indexed {
        ztoc_digest: digest,
        ztoc_size,
        entries: ztoc.toc.metadata.len(),
        spans: ztoc.compression_info.zinfo.span_count(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    Ok((report(result), Some(entry)))
}
