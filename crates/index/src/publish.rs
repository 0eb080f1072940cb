//! Phase 4, publish: the SOCI index manifests, then the binding that makes them visible.
//!
//! Push order: zTOC blobs (already pushed by the build phase) and the `{}` config, then manifests by
//! digest, then the one thing that makes the result visible: the `<tag><suffix>` tag (v2), or the
//! referrers fallback tags (v1, only for registries without a referrers API). Every manifest is
//! pushed once.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::convert::{self, ImageEntry};
use crate::error::{registry_error, Error};
use crate::fallback::{fallback_referrers, fallback_tag};
use crate::media;
use crate::oci::{Annotations, Descriptor};
use crate::options::{Binding, CreateOptions};
use crate::registry::Registry;
use crate::resolve::ResolvedImage;
use crate::soci::{self, ZtocEntry};

/// Attempts at merging an entry into a v1 fallback index that other writers update too.
const FALLBACK_ATTEMPTS: usize = 5;
/// How long after writing the fallback tag it is read back: a concurrent writer that read the old
/// content overwrites within this window, and the read-back catches it.
const FALLBACK_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// What was made visible.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// The SOCI index manifest of each platform that got one, by position in the image.
    pub soci_indexes: BTreeMap<usize, Descriptor>,
    /// v2: original manifest digest → converted manifest digest.
    pub converted: BTreeMap<String, String>,
    /// v2: the tag pushed.
    pub pushed_tag: Option<String>,
    /// v2: the digest of the new image index.
    pub image_index_digest: Option<String>,
    /// v2: the image's tag moved (or went) while the index was built, so `<tag><suffix>` was left
    /// alone: what the tag points at now (`None`: deleted).
    pub superseded: Option<Option<String>>,
    /// v2: the SOCI image index `<tag><suffix>` held right before this run moved it.
    pub replaced: Option<String>,
}

/// The manifests a run pushed by digest, in order: if the run ends before they are bound to the image
/// (a failure, or superseded), they are left untagged (see `create::leave_unbound`).
#[derive(Clone, Debug, Default)]
pub struct Pushed(pub Vec<String>);

/// Pushes one SOCI index per selected platform that has zTOCs, then binds them to the image.
pub async fn publish<R: Registry>(
    registry: &R,
    image: &ResolvedImage,
    ztocs: &HashMap<String, ZtocEntry>,
    binding: &Binding,
    options: &CreateOptions,
    pushed_by_digest: &mut Pushed,
) -> Result<Published, Error> {
    registry
        .push_blob(media::EMPTY_JSON_DIGEST, Bytes::from_static(media::EMPTY_JSON))
        .await
        .map_err(registry_error("pushing the SOCI config blob"))?;
    let mut published = Published::default();
    let mut subjects_without_referrers = Vec::new();
    for (position, platform) in &image.selected {
        let layer_ztocs: Vec<ZtocEntry> =
            platform.manifest.layers().iter().filter_map(|l| ztocs.get(&l.digest).cloned()).collect();
        if layer_ztocs.is_empty() {
            continue;
        }
        let bytes = soci::index_manifest(
            options.index_version,
            &layer_ztocs,
            Some(&platform.descriptor),
            &options.build_tool_identifier,
        );
        let descriptor = Descriptor::of(media::OCI_MANIFEST, &bytes);
        let pushed = registry
            .push_manifest(&descriptor.digest, media::OCI_MANIFEST, Bytes::from(bytes))
            .await
            .map_err(registry_error(format!("pushing SOCI index {}", descriptor.digest)))?;
        pushed_by_digest.0.push(descriptor.digest.clone());
        if pushed.oci_subject.is_none() {
            subjects_without_referrers.push((platform.descriptor.clone(), descriptor.clone()));
        }
        published.soci_indexes.insert(*position, descriptor);
    }
    match binding {
        Binding::V2 { soci_tag, image_tag } => {
            bind_v2(registry, image, (soci_tag, image_tag), &mut published, pushed_by_digest).await?
        }
        // Every platform's SOCI index is in place before the first fallback tag moves.
        Binding::V1 => {
            for (subject, soci_index) in &subjects_without_referrers {
                update_referrers_fallback(registry, subject, soci_index, &options.build_tool_identifier)
                    .await?;
            }
        }
    }
    Ok(published)
}

/// v2: the converted image manifests by digest, then the new image index as `soci_tag`, unless the
/// image's tag moved meanwhile (a newer image's run binds that one; this run must not overwrite it).
async fn bind_v2<R: Registry>(
    registry: &R,
    image: &ResolvedImage,
    (soci_tag, image_tag): (&str, &str),
    published: &mut Published,
    pushed_by_digest: &mut Pushed,
) -> Result<(), Error> {
    let entries: Vec<ImageEntry> = image
        .entries
        .iter()
        .enumerate()
        .map(|(position, descriptor)| ImageEntry {
            manifest: image.manifests.get(&descriptor.digest).cloned(),
            soci_index: published.soci_indexes.get(&position).cloned(),
            descriptor: descriptor.clone(),
        })
        .collect();
    let converted = convert::convert(image.index.as_ref(), &entries);
    for (descriptor, bytes) in converted.manifests {
        registry
            .push_manifest(&descriptor.digest, media::OCI_MANIFEST, Bytes::from(bytes))
            .await
            .map_err(registry_error(format!("pushing image manifest {}", descriptor.digest)))?;
        pushed_by_digest.0.push(descriptor.digest.clone());
    }
    let index_digest = ztoc::sha256_digest(&converted.index);
    // The facts the tag move rests on, read again right before it.
    let now =
        registry.resolve_tag(image_tag).await.map_err(registry_error(format!("checking {image_tag}")))?;
    if now.as_ref().map(|t| t.digest.as_str()) != Some(image.digest.as_str()) {
        published.superseded = Some(now.map(|t| t.digest));
        return Ok(());
    }
    published.replaced = soci_tag_holder(registry, soci_tag).await?;
    let pushed = registry
        .push_manifest(soci_tag, media::OCI_INDEX, Bytes::from(converted.index))
        .await
        .map_err(registry_error(format!("pushing image index tag {soci_tag}")))?;
    published.converted = converted.renamed;
    published.image_index_digest = Some(if pushed.digest.is_empty() { index_digest } else { pushed.digest });
    published.pushed_tag = Some(soci_tag.to_owned());
    Ok(())
}

/// The SOCI image index `soci_tag` holds now (`None`: no such tag). A tag that holds anything else is
/// not soci-indexer's to move: [`Error::SociTagTaken`].
pub async fn soci_tag_holder<R: Registry>(registry: &R, soci_tag: &str) -> Result<Option<String>, Error> {
    let Some(fetched) =
        registry.get_manifest(soci_tag).await.map_err(registry_error(format!("fetching {soci_tag}")))?
    else {
        return Ok(None);
    };
    match crate::ownership::as_soci_image_index(&fetched.bytes) {
        Some(_) => Ok(Some(fetched.digest)),
        None => Err(Error::SociTagTaken { tag: soci_tag.into(), digest: fetched.digest }),
    }
}

/// Adds the SOCI index to the `sha256-<hex>` referrers index of its subject, as oras-go does for
/// registries without a referrers API. Another writer may update the same tag at once (registries have
/// no conditional write): after writing, wait a moment, read it back, and merge again until it holds
/// our entry. A writer slower than the pause between its read and its write can still win; the README
/// says so.
async fn update_referrers_fallback<R: Registry>(
    registry: &R,
    subject: &Descriptor,
    soci_index: &Descriptor,
    build_tool_identifier: &str,
) -> Result<(), Error> {
    let mut annotations = Annotations::new();
    annotations.insert(media::ANNOTATION_BUILD_TOOL.into(), build_tool_identifier.into());
    let entry = Descriptor {
        media_type: media::OCI_MANIFEST.into(),
        digest: soci_index.digest.clone(),
        size: soci_index.size,
        annotations: Some(annotations),
        artifact_type: media::SOCI_INDEX_V1.into(),
        ..Descriptor::default()
    };
    let tag = fallback_tag(&subject.digest);
    for _ in 0..FALLBACK_ATTEMPTS {
        let mut index = fallback_referrers(registry, &subject.digest).await?;
        if index.manifests().iter().any(|d| d.digest == entry.digest) {
            return Ok(());
        }
        // The index this push replaces is ours to delete only when it lists nothing but SOCI indexes.
        let ours_alone = index.manifests().iter().all(|d| d.artifact_type == media::SOCI_INDEX_V1);
        let old =
            (!index.manifests().is_empty() && ours_alone).then(|| ztoc::sha256_digest(&index.to_json()));
        // Only ever add: entries of other artifact types (signatures, SBOMs) stay.
        index.manifests.get_or_insert_with(Vec::new).push(entry.clone());
        index.schema_version = 2;
        index.media_type = media::OCI_INDEX.into();
        registry
            .push_manifest(&tag, media::OCI_INDEX, Bytes::from(index.to_json()))
            .await
            .map_err(registry_error(format!("pushing referrers tag {tag}")))?;
        if let Some(old) = old {
            // Now unreferenced, unless another tag points at it; removing it is best effort.
            if let Err(e) = crate::ownership::delete_if_untagged(registry, &old).await {
                tracing::debug!(index = %old, error = %crate::error::chain(&e), "old referrers index not removed");
            }
        }
        tokio::time::sleep(FALLBACK_SETTLE).await;
    }
    Err(Error::FallbackContended { tag, attempts: FALLBACK_ATTEMPTS })
}
