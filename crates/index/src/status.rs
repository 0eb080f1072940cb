//! Readiness: whether the image a reference points to now is lazy-loadable, per platform, and what to
//! deploy. `create` asks the same question before building (an indexed image is left alone).

use std::collections::HashMap;

use serde::Serialize;

use crate::convert;
use crate::error::{registry_error, Error};
use crate::fallback::fallback_referrers;
use crate::media;
use crate::oci::Manifest;
use crate::options::{Binding, CreateOptions};
use crate::registry::Registry;
pub use crate::report::State;
use crate::resolve::{resolve, PlatformImage, ResolvedImage};
use crate::select::eligibility;
use crate::soci::IndexVersion;

/// One platform's readiness.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformStatus {
    /// The platform as written in the image.
    pub platform: String,
    /// The image manifest digest.
    pub manifest_digest: String,
    /// Its SOCI index manifest, if it has one.
    pub soci_index_digest: Option<String>,
    /// zTOCs in that SOCI index.
    pub ztocs: usize,
    /// Layers that would get a zTOC (media type and size).
    pub layers_eligible: usize,
    /// Layers of this platform that have a zTOC in its SOCI index.
    pub layers_indexed: usize,
    /// Why its SOCI index cannot work, if it cannot (what is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

/// The readiness of an image, for `status --json` and for `create`'s already-indexed check.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The image reference as given.
    pub reference: String,
    /// Digest of the image manifest or index the reference points to now.
    pub image_digest: String,
    /// Whether the image is lazy-loadable as it is.
    pub indexed: bool,
    /// How lazy-loadable it is.
    pub state: State,
    /// v1 or v2.
    pub index_version: IndexVersion,
    /// v2: the tag to deploy, `<tag><suffix>`.
    pub soci_tag: Option<String>,
    /// v2: the digest `soci_tag` points to.
    pub image_index_digest: Option<String>,
    /// Each selected platform.
    pub platforms: Vec<PlatformStatus>,
}

/// Says whether the image `reference` names (a tag or digest; `tag` for v2) is indexed as `options`
/// would index it (version, suffix, platforms, minimum layer size).
pub async fn status<R: Registry>(
    registry: &R,
    reference: &str,
    tag: Option<&str>,
    options: &CreateOptions,
) -> Result<StatusReport, Error> {
    Ok(resolved_status(registry, reference, tag, options).await?.1)
}

/// [`status`], with the image as it was resolved for it (which `sync` hands on to `create`).
pub(crate) async fn resolved_status<R: Registry>(
    registry: &R,
    reference: &str,
    tag: Option<&str>,
    options: &CreateOptions,
) -> Result<(ResolvedImage, StatusReport), Error> {
    let binding = options.binding(tag)?;
    let image = resolve(registry, reference, &options.platforms, options.index_version).await?;
    let status = image_status(registry, reference, &image, &binding, options).await?;
    Ok((image, status))
}

/// [`status`] of an image already resolved.
pub async fn image_status<R: Registry>(
    registry: &R,
    reference: &str,
    image: &ResolvedImage,
    binding: &Binding,
    options: &CreateOptions,
) -> Result<StatusReport, Error> {
    let mut report = StatusReport {
        reference: reference.into(),
        image_digest: image.digest.clone(),
        indexed: false,
        state: State::NotIndexed,
        index_version: options.index_version,
        soci_tag: None,
        image_index_digest: None,
        platforms: Vec::new(),
    };
    let found = match binding {
        Binding::V2 { soci_tag, .. } => {
            report.soci_tag = Some(soci_tag.clone());
            let found = v2_indexes(registry, image, soci_tag).await?;
            report.image_index_digest = found.as_ref().map(|(digest, _)| digest.clone());
            found.map(|(_, bound)| bound)
        }
        Binding::V1 => Some(v1_indexes(registry, image).await?),
    };
    for (position, platform) in &image.selected {
        let soci_index = found.as_ref().and_then(|bound| bound.get(position).cloned().flatten());
        report.platforms.push(platform_status(registry, platform, soci_index, options.min_layer_size).await?);
    }
    report.state = match found {
        None => State::NotIndexed,
        Some(bound) if bound.is_empty() => State::Stale,
        Some(_) => overall_state(&report.platforms),
    };
    report.indexed = report.state == State::Indexed;
    Ok(report)
}

/// What a platform's SOCI index holds, checked in the registry: the index and each zTOC it names must
/// be there (a `HEAD` each), and it must cover at least one of the platform's eligible layers.
async fn platform_status<R: Registry>(
    registry: &R,
    platform: &PlatformImage,
    soci_index: Option<String>,
    min_layer_size: u64,
) -> Result<PlatformStatus, Error> {
    let layers = platform.manifest.layers();
    let eligible: Vec<&str> =
        layers.iter().filter(|l| eligibility(l, min_layer_size).is_ok()).map(|l| l.digest.as_str()).collect();
    let mut status = PlatformStatus {
        platform: platform.platform(),
        manifest_digest: platform.descriptor.digest.clone(),
        soci_index_digest: None,
        ztocs: 0,
        layers_eligible: eligible.len(),
        layers_indexed: 0,
        broken: None,
    };
    let Some(digest) = soci_index else { return Ok(status) };
    let fetched = registry
        .get_manifest(&digest)
        .await
        .map_err(registry_error(format!("fetching SOCI index {digest}")))?;
    // A SOCI index manifest that is gone counts as none (the platform is not indexed).
    let Some(Ok(manifest)) = fetched.map(|m| serde_json::from_slice::<Manifest>(&m.bytes)) else {
        return Ok(status);
    };
    let mut missing = Vec::new();
    for ztoc in manifest.layers() {
        let there = registry
            .blob_exists(&ztoc.digest)
            .await
            .map_err(registry_error(format!("checking zTOC {}", ztoc.digest)))?;
        if !there {
            missing.push(ztoc.digest.as_str());
        }
    }
    let indexed_layers: Vec<&str> =
        manifest.layers().iter().filter_map(|z| z.annotation(media::ANNOTATION_LAYER_DIGEST)).collect();
    status.ztocs = manifest.layers().len();
    status.layers_indexed = layers.iter().filter(|l| indexed_layers.contains(&l.digest.as_str())).count();
    let covered = eligible.iter().filter(|l| indexed_layers.contains(l)).count();
    status.broken = if !missing.is_empty() {
        Some(format!("zTOC(s) of its SOCI index {digest} are gone: {}", missing.join(", ")))
    } else if covered == 0 && !eligible.is_empty() {
        Some(format!("its SOCI index {digest} covers none of its {} eligible layer(s)", eligible.len()))
    } else {
        None
    };
    status.soci_index_digest = Some(digest);
    Ok(status)
}

/// Broken when any platform's index cannot work; else indexed when every platform with eligible layers
/// has an index, partial when only some do.
fn overall_state(platforms: &[PlatformStatus]) -> State {
    if platforms.iter().any(|p| p.broken.is_some()) {
        return State::Broken;
    }
    let needing: Vec<&PlatformStatus> = platforms.iter().filter(|p| p.layers_eligible > 0).collect();
    let having = needing.iter().filter(|p| p.soci_index_digest.is_some()).count();
    match (having, needing.len()) {
        (_, 0) | (0, _) => State::NotIndexed,
        (having, needing) if having == needing => State::Indexed,
        _ => State::Partial,
    }
}

/// Which SOCI index each selected platform position has, per the v2 tag.
type Bound = HashMap<usize, Option<String>>;

/// v2: `None` when `soci_tag` holds no SOCI output; else the tag's digest and, for each selected
/// platform the tagged index binds (its manifest, re-serialized, is in the index), its SOCI index. An
/// empty map: the tag binds another image.
async fn v2_indexes<R: Registry>(
    registry: &R,
    image: &ResolvedImage,
    soci_tag: &str,
) -> Result<Option<(String, Bound)>, Error> {
    let Some((index_digest, index)) = crate::ownership::soci_image_index(registry, soci_tag).await? else {
        return Ok(None);
    };
    // Each manifest of the tagged index, as it was before conversion annotated it.
    let mut bound_manifests: Vec<(Vec<u8>, Option<String>)> = Vec::new();
    for entry in index.manifests().iter().filter(|d| d.artifact_type.is_empty()) {
        let fetched = registry
            .get_manifest(&entry.digest)
            .await
            .map_err(registry_error(format!("fetching manifest {}", entry.digest)))?;
        if let Some(Ok(mut manifest)) = fetched.map(|m| serde_json::from_slice::<Manifest>(&m.bytes)) {
            let soci_index =
                manifest.annotations.as_mut().and_then(|a| a.remove(media::ANNOTATION_INDEX_DIGEST));
            bound_manifests.push((convert::reserialize_manifest(&manifest, None), soci_index));
        }
    }
    let mut bound = Bound::new();
    for (position, platform) in &image.selected {
        let bytes = convert::reserialize_manifest(&platform.manifest, None);
        if let Some((_, soci_index)) = bound_manifests.iter().find(|(b, _)| *b == bytes) {
            bound.insert(*position, soci_index.clone());
        }
    }
    // Binding only some of the selected platforms is binding another image.
    if bound.len() != image.selected.len() {
        bound.clear();
    }
    Ok(Some((index_digest, bound)))
}

/// v1: each selected platform's SOCI index, found through the referrers API or its fallback tag.
async fn v1_indexes<R: Registry>(registry: &R, image: &ResolvedImage) -> Result<Bound, Error> {
    let mut bound = Bound::new();
    for (position, platform) in &image.selected {
        let digest = &platform.descriptor.digest;
        let referrers = match registry
            .referrers(digest, media::SOCI_INDEX_V1)
            .await
            .map_err(registry_error(format!("listing referrers of {digest}")))?
        {
            Some(referrers) => referrers,
            None => fallback_referrers(registry, digest).await?.manifests().to_vec(),
        };
        let soci_index =
            referrers.iter().find(|d| d.artifact_type == media::SOCI_INDEX_V1).map(|d| d.digest.clone());
        bound.insert(*position, soci_index);
    }
    Ok(bound)
}
