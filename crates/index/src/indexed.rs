//! Whether an image already has the SOCI index a run would make: nothing is rebuilt then.

use crate::convert;
use crate::error::{registry_error, Error};
use crate::media;
use crate::oci::{Index, Manifest};
use crate::options::Binding;
use crate::publish::fallback_referrers;
use crate::registry::Registry;
use crate::resolve::ResolvedImage;

/// Whether the binding already exists for every selected platform of `image`.
pub async fn already_indexed<R: Registry>(
    registry: &R,
    image: &ResolvedImage,
    binding: &Binding,
) -> Result<bool, Error> {
    if image.selected.is_empty() {
        return Ok(false);
    }
    match binding {
        Binding::V2 { soci_tag } => v2_binds_image(registry, image, soci_tag).await,
        Binding::V1 => {
            for platform in image.selected.values() {
                if !has_v1_referrer(registry, &platform.descriptor.digest).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

/// Whether `soci_tag` is SOCI output bound to this image: each selected manifest, re-serialized, is in
/// the tagged index once the SOCI annotation is taken away (same config and layers, so same image). A
/// platform without eligible layers is in it unannotated; at least one must carry an index.
async fn v2_binds_image<R: Registry>(
    registry: &R,
    image: &ResolvedImage,
    soci_tag: &str,
) -> Result<bool, Error> {
    let Some(fetched) =
        registry.get_manifest(soci_tag).await.map_err(registry_error(format!("fetching {soci_tag}")))?
    else {
        return Ok(false);
    };
    let Ok(index) = serde_json::from_slice::<Index>(&fetched.bytes) else { return Ok(false) };
    if !index.manifests().iter().any(|d| d.artifact_type == media::SOCI_INDEX_V2) {
        return Ok(false);
    }
    let mut bound_manifests = Vec::new();
    let mut any_annotated = false;
    for entry in index.manifests().iter().filter(|d| d.artifact_type.is_empty()) {
        let fetched = registry
            .get_manifest(&entry.digest)
            .await
            .map_err(registry_error(format!("fetching manifest {}", entry.digest)))?;
        if let Some(Ok(mut manifest)) = fetched.map(|m| serde_json::from_slice::<Manifest>(&m.bytes)) {
            any_annotated |= manifest
                .annotations
                .as_mut()
                .and_then(|a| a.remove(media::ANNOTATION_INDEX_DIGEST))
                .is_some();
            bound_manifests.push(convert::reserialize_manifest(&manifest, None));
        }
    }
    Ok(any_annotated
        && image.selected.values().all(|platform| {
            bound_manifests.contains(&convert::reserialize_manifest(&platform.manifest, None))
        }))
}

/// Whether a v1 SOCI index names `digest` as its subject (referrers API, else the fallback tag).
async fn has_v1_referrer<R: Registry>(registry: &R, digest: &str) -> Result<bool, Error> {
    let referrers = match registry
        .referrers(digest, media::SOCI_INDEX_V1)
        .await
        .map_err(registry_error(format!("listing referrers of {digest}")))?
    {
        Some(referrers) => referrers,
        None => fallback_referrers(registry, digest).await?.manifests().to_vec(),
    };
    Ok(referrers.iter().any(|d| d.artifact_type == media::SOCI_INDEX_V1))
}
