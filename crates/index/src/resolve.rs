//! Phase 1, resolve: fetch what the reference names, refuse what is not an image (or is SOCI output),
//! and read the manifests of the platforms to index.

use std::collections::{BTreeMap, HashMap};

use crate::error::{registry_error, Error};
use crate::media;
use crate::oci::{Descriptor, ImageConfigPlatform, Index, Manifest, Platform};
use crate::registry::{FetchedManifest, Registry};
use crate::soci::IndexVersion;

/// The largest image config read (a config is a few KiB; this bounds what a hostile registry can make
/// us hold in memory).
pub const MAX_CONFIG_SIZE: i64 = 4 << 20;

/// A platform manifest of the image, selected for indexing.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    /// Its entry in the image index (or a made-up one for a single-manifest image).
    pub descriptor: Descriptor,
    /// The parsed manifest.
    pub manifest: Manifest,
}

impl PlatformImage {
    /// The platform as written in the image (empty if none).
    pub fn platform(&self) -> String {
        self.descriptor.platform.as_ref().map(Platform::to_string).unwrap_or_default()
    }
}

/// An image as the registry holds it.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// Digest of the image manifest or index the reference points to.
    pub digest: String,
    /// The image index, or `None` for a single-manifest image.
    pub index: Option<Index>,
    /// Every entry of the index (one made-up entry for a single manifest), in order.
    pub entries: Vec<Descriptor>,
    /// Image manifests read, by digest (all of them for v2, which re-serializes every one).
    pub manifests: HashMap<String, Manifest>,
    /// The platforms to index, by their position in `entries`.
    pub selected: BTreeMap<usize, PlatformImage>,
}

/// Reads the image `reference` names and the manifests of the wanted platforms (all when `platforms` is
/// empty). v2 needs every image manifest, v1 only the selected ones.
pub async fn resolve<R: Registry>(
    registry: &R,
    reference: &str,
    platforms: &[Platform],
    version: IndexVersion,
) -> Result<ResolvedImage, Error> {
    let root = registry
        .get_manifest(reference)
        .await
        .map_err(registry_error(format!("fetching image {reference}")))?
        .ok_or_else(|| Error::ImageNotFound { reference: reference.into() })?;
    let (index, entries) = read_root(registry, reference, &root).await?;
    let wanted = select_platforms(&entries, platforms)?;
    if wanted.is_empty() {
        return Err(match entries.iter().find(|d| media::is_image_index(&d.media_type)) {
            Some(nested) => Error::NestedIndex { reference: reference.into(), nested: nested.digest.clone() },
            None => Error::NoImageManifest { reference: reference.into() },
        });
    }
    let mut image = ResolvedImage {
        digest: root.digest.clone(),
        index,
        entries,
        manifests: HashMap::new(),
        selected: BTreeMap::new(),
    };
    for (position, descriptor) in image.entries.iter().enumerate() {
        let selected = wanted.contains(&position);
        if !(selected || version == IndexVersion::V2) || !media::is_image_manifest(&descriptor.media_type) {
            continue;
        }
        let manifest = read_manifest(registry, &root, image.index.is_none(), descriptor, selected).await?;
        image.manifests.insert(descriptor.digest.clone(), manifest.clone());
        if selected {
            image.selected.insert(position, PlatformImage { descriptor: descriptor.clone(), manifest });
        }
    }
    Ok(image)
}

/// The image index (if the root is one) and its entries; a single manifest becomes one made-up entry
/// with the platform from its config. Refuses what is not an image, and SOCI output.
async fn read_root<R: Registry>(
    registry: &R,
    reference: &str,
    root: &FetchedManifest,
) -> Result<(Option<Index>, Vec<Descriptor>), Error> {
    let root_type = media_type_of(&root.media_type, &root.bytes);
    if media::is_image_index(&root_type) {
        let index: Index = parse(&root.digest, &root.bytes)?;
        if index.manifests().iter().any(|d| d.artifact_type == media::SOCI_INDEX_V2) {
            return Err(Error::SociArtifact {
                reference: reference.into(),
                what: "an image index that already carries SOCI indexes (soci-indexer's own output)",
            });
        }
        let entries = index.manifests().to_vec();
        return Ok((Some(index), entries));
    }
    if !media::is_image_manifest(&root_type) {
        return Err(Error::NotAnImage { reference: reference.into(), media_type: root_type });
    }
    let manifest: Manifest = parse(&root.digest, &root.bytes)?;
    if is_soci_index(&manifest) {
        return Err(Error::SociArtifact { reference: reference.into(), what: "a SOCI index manifest" });
    }
    let platform = config_platform(registry, &manifest).await?;
    let descriptor = Descriptor {
        media_type: root_type,
        digest: root.digest.clone(),
        size: root.bytes.len() as i64,
        platform: Some(platform),
        ..Descriptor::default()
    };
    Ok((None, vec![descriptor]))
}

/// One image manifest of the image (the root itself for a single-manifest image), checked.
async fn read_manifest<R: Registry>(
    registry: &R,
    root: &FetchedManifest,
    single: bool,
    descriptor: &Descriptor,
    selected: bool,
) -> Result<Manifest, Error> {
    let manifest = if single {
        parse::<Manifest>(&root.digest, &root.bytes)?
    } else {
        let fetched = registry
            .get_manifest(&descriptor.digest)
            .await
            .map_err(registry_error(format!("fetching manifest {}", descriptor.digest)))?
            .ok_or_else(|| Error::ImageNotFound { reference: descriptor.digest.clone() })?;
        parse::<Manifest>(&descriptor.digest, &fetched.bytes)?
    };
    check_layers(&descriptor.digest, &manifest)?;
    if selected && !is_image_config(&manifest.config.media_type) {
        return Err(Error::NotAnImage {
            reference: descriptor.digest.clone(),
            media_type: format!(
                "manifest of {} (config {})",
                descriptor.media_type, manifest.config.media_type
            ),
        });
    }
    Ok(manifest)
}

/// The platform of a single-manifest image, from its config (empty when the config does not say).
async fn config_platform<R: Registry>(registry: &R, manifest: &Manifest) -> Result<Platform, Error> {
    let config = &manifest.config;
    if !(0..=MAX_CONFIG_SIZE).contains(&config.size) {
        return Err(Error::BadSize {
            digest: config.digest.clone(),
            what: "image config",
            size: config.size,
        });
    }
    let bytes = registry
        .get_blob_bytes(config)
        .await
        .map_err(registry_error(format!("fetching config {}", config.digest)))?;
    Ok(serde_json::from_slice::<ImageConfigPlatform>(&bytes).map(|c| c.platform()).unwrap_or_default())
}

/// A negative layer size is a lie we would otherwise repeat in the SOCI index.
fn check_layers(digest: &str, manifest: &Manifest) -> Result<(), Error> {
    match manifest.layers().iter().find(|layer| layer.size < 0) {
        Some(layer) => Err(Error::BadSize { digest: digest.into(), what: "layer", size: layer.size }),
        None => Ok(()),
    }
}

/// Whether a manifest is a SOCI index (v1 or v2), i.e. our own output.
pub fn is_soci_index(manifest: &Manifest) -> bool {
    manifest.config.media_type == media::SOCI_INDEX_V1 || manifest.config.media_type == media::SOCI_INDEX_V2
}

/// Parses a manifest or index, naming it on failure.
pub fn parse<T: serde::de::DeserializeOwned>(digest: &str, bytes: &[u8]) -> Result<T, Error> {
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
