//! The v2 binding, as `soci convert` makes it: a new OCI image index in which every image manifest is
//! re-serialized as OCI (and, where its platform has a SOCI index, annotated with that index's digest),
//! followed by one SOCI index descriptor per indexed platform.
//!
//! One deliberate difference from soci: buildx attestation entries (`unknown/unknown`,
//! `vnd.docker.reference.type: attestation-manifest`) keep their annotations, and their
//! `vnd.docker.reference.digest` is moved to the new digest of the manifest they attest, so provenance
//! and SBOM links survive. soci drops those annotations.

use std::collections::BTreeMap;

use crate::media;
use crate::oci::{Annotations, Descriptor, Index, Manifest, Platform};

/// One manifest of the image with what the conversion needs to know about it.
#[derive(Clone, Debug)]
pub struct ImageEntry {
    /// The entry as it appears in the image index (for a single-manifest image: a made-up entry
    /// with the platform from the config).
    pub descriptor: Descriptor,
    /// The parsed manifest, `None` for entries that are not image manifests (nested indexes):
    /// those are kept as they are.
    pub manifest: Option<Manifest>,
    /// The SOCI index manifest made for this entry's platform, if any.
    pub soci_index: Option<Descriptor>,
}

/// What the conversion produced.
#[derive(Clone, Debug)]
pub struct Converted {
    /// Re-serialized image manifests to push by digest: `(descriptor, bytes)`, in index order.
    pub manifests: Vec<(Descriptor, Vec<u8>)>,
    /// The new OCI image index bytes.
    pub index: Vec<u8>,
    /// Old manifest digest → new manifest digest.
    pub renamed: BTreeMap<String, String>,
}

/// Re-serializes `manifest` as soci does: OCI manifest and config media types, the optional SOCI
/// annotation, compact Go JSON.
pub fn reserialize_manifest(manifest: &Manifest, soci_index_digest: Option<&str>) -> Vec<u8> {
    let mut manifest = manifest.clone();
    manifest.media_type = media::OCI_MANIFEST.into();
    manifest.config.media_type = media::OCI_CONFIG.into();
    if let Some(digest) = soci_index_digest {
        manifest
            .annotations
            .get_or_insert_with(Annotations::new)
            .insert(media::ANNOTATION_INDEX_DIGEST.into(), digest.into());
    }
    manifest.to_json()
}

fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor.annotation(media::ANNOTATION_REFERENCE_TYPE) == Some("attestation-manifest")
        || descriptor.platform.as_ref().is_some_and(Platform::is_unknown)
            && descriptor.annotation(media::ANNOTATION_REFERENCE_DIGEST).is_some()
}

/// Builds the converted image. `original` is the parsed image index, or `None` for a single-manifest
/// image (then `entries` has exactly one entry). SOCI descriptors are appended in `entries` order.
pub fn convert(original: Option<&Index>, entries: &[ImageEntry]) -> Converted {
    let mut index = original.cloned().unwrap_or(Index { schema_version: 2, ..Index::default() });
    index.media_type = media::OCI_INDEX.into();
    index.schema_version = 2;

    // First the image manifests, so that attestation entries can point at their new digests.
    let mut renamed = BTreeMap::new();
    let mut manifests = Vec::new();
    let mut new_entries: Vec<Descriptor> = Vec::new();
    for entry in entries {
        // Earlier SOCI v2 descriptors (an image converted before) are replaced, not duplicated.
        if entry.descriptor.artifact_type == media::SOCI_INDEX_V2 {
            continue;
        }
        let Some(manifest) = &entry.manifest else {
            new_entries.push(entry.descriptor.clone());
            continue;
        };
        let bytes = reserialize_manifest(manifest, entry.soci_index.as_ref().map(|d| d.digest.as_str()));
        let mut descriptor = entry.descriptor.clone();
        descriptor.media_type = media::OCI_MANIFEST.into();
        descriptor.digest = ztoc::sha256_digest(&bytes);
        descriptor.size = bytes.len() as i64;
        if !is_attestation(&entry.descriptor) {
            // soci sets the entry's annotations to the manifest's own.
            descriptor.annotations = reserialized_annotations(manifest, entry.soci_index.as_ref());
        }
        renamed.insert(entry.descriptor.digest.clone(), descriptor.digest.clone());
        manifests.push((descriptor.clone(), bytes));
        new_entries.push(descriptor);
    }
    for descriptor in new_entries.iter_mut().filter(|d| is_attestation(d)) {
        if let Some(annotations) = descriptor.annotations.as_mut() {
            if let Some(target) = annotations.get_mut(media::ANNOTATION_REFERENCE_DIGEST) {
                if let Some(new) = renamed.get(target.as_str()) {
                    *target = new.clone();
                }
            }
        }
    }
    for entry in entries {
        if let (Some(soci), Some(new_digest)) = (&entry.soci_index, renamed.get(&entry.descriptor.digest)) {
            let mut annotations = Annotations::new();
            annotations.insert(media::ANNOTATION_IMAGE_MANIFEST_DIGEST.into(), new_digest.clone());
            new_entries.push(Descriptor {
                media_type: media::OCI_MANIFEST.into(),
                digest: soci.digest.clone(),
                size: soci.size,
                annotations: Some(annotations),
                platform: entry.descriptor.platform.clone(),
                artifact_type: media::SOCI_INDEX_V2.into(),
                ..Descriptor::default()
            });
        }
    }
    index.manifests = Some(new_entries);
    Converted { manifests, index: index.to_json(), renamed }
}

fn reserialized_annotations(manifest: &Manifest, soci_index: Option<&Descriptor>) -> Option<Annotations> {
    let mut annotations = manifest.annotations.clone().unwrap_or_default();
    if let Some(soci) = soci_index {
        annotations.insert(media::ANNOTATION_INDEX_DIGEST.into(), soci.digest.clone());
    }
    (!annotations.is_empty()).then_some(annotations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layer: &str) -> Manifest {
        serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c0","size":10}},"layers":[{{"mediaType":"{}","digest":"{layer}","size":20000000}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_LAYER_GZIP
        ))
        .unwrap()
    }

    fn entry(digest: &str, platform: &str, manifest: Manifest, soci: Option<&str>) -> ImageEntry {
        ImageEntry {
            descriptor: Descriptor {
                media_type: media::DOCKER_MANIFEST.into(),
                digest: digest.into(),
                size: 1,
                platform: Platform::parse(platform),
                ..Descriptor::default()
            },
            manifest: Some(manifest),
            soci_index: soci.map(|d| Descriptor { digest: d.into(), size: 99, ..Descriptor::default() }),
        }
    }

    #[test]
    fn docker_list_becomes_an_oci_index_with_soci_descriptors_last() {
        let original =
            Index { schema_version: 2, media_type: media::DOCKER_MANIFEST_LIST.into(), ..Index::default() };
        let entries = vec![
            entry("sha256:a", "linux/amd64", manifest("sha256:l1"), Some("sha256:s1")),
            entry("sha256:b", "linux/arm64/v8", manifest("sha256:l2"), None),
        ];
        let converted = convert(Some(&original), &entries);
        let index: Index = serde_json::from_slice(&converted.index).unwrap();
        assert_eq!(index.media_type, media::OCI_INDEX);
        let m = index.manifests();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].annotation(media::ANNOTATION_INDEX_DIGEST), Some("sha256:s1"));
        assert_eq!(m[1].annotations, None, "a platform without SOCI index gets no annotation");
        assert_eq!(m[2].artifact_type, media::SOCI_INDEX_V2);
        assert_eq!(m[2].annotation(media::ANNOTATION_IMAGE_MANIFEST_DIGEST), Some(m[0].digest.as_str()));
        assert_eq!(m[2].platform, Platform::parse("linux/amd64"));
        // Docker manifests become OCI manifests with an OCI config type; layers keep their type.
        let (desc, bytes) = &converted.manifests[0];
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json""#));
        assert!(text.contains(media::DOCKER_LAYER_GZIP));
        assert!(text.ends_with(r#""annotations":{"com.amazon.soci.index-digest":"sha256:s1"}}"#));
        assert_eq!(desc.digest, ztoc::sha256_digest(bytes));
        assert_eq!(converted.renamed.len(), 2);
    }

    #[test]
    fn attestation_entries_keep_annotations_and_follow_the_new_digest() {
        let mut attestation = entry("sha256:att", "unknown/unknown", manifest("sha256:l9"), None);
        let mut annotations = Annotations::new();
        annotations.insert(media::ANNOTATION_REFERENCE_DIGEST.into(), "sha256:a".into());
        annotations.insert(media::ANNOTATION_REFERENCE_TYPE.into(), "attestation-manifest".into());
        attestation.descriptor.annotations = Some(annotations);
        let entries =
            vec![entry("sha256:a", "linux/amd64", manifest("sha256:l1"), Some("sha256:s1")), attestation];
        let converted = convert(Some(&Index::default()), &entries);
        let index: Index = serde_json::from_slice(&converted.index).unwrap();
        let att = &index.manifests()[1];
        assert_eq!(att.annotation(media::ANNOTATION_REFERENCE_TYPE), Some("attestation-manifest"));
        assert_eq!(
            att.annotation(media::ANNOTATION_REFERENCE_DIGEST),
            Some(index.manifests()[0].digest.as_str())
        );
        assert_ne!(index.manifests()[0].digest, "sha256:a");
    }

    #[test]
    fn same_input_gives_the_same_bytes() {
        let entries = vec![entry("sha256:a", "linux/amd64", manifest("sha256:l1"), Some("sha256:s1"))];
        assert_eq!(convert(None, &entries).index, convert(None, &entries).index);
    }
}
