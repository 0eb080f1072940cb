//! The SOCI index manifest: one zTOC descriptor per indexed layer, as `soci create` / `soci convert`
//! write it (`MarshalIndex`: an OCI image manifest whose config media type names the SOCI version).

use crate::media;
use crate::oci::{Annotations, Descriptor, Manifest};

/// Which SOCI index format to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexVersion {
    /// v1: the index names its image in `subject` and is found through the referrers API.
    V1,
    /// v2 (default, what Fargate reads by default): the image manifest names its index in an annotation.
    #[default]
    V2,
}

impl std::str::FromStr for IndexVersion {
    type Err = UnknownIndexVersion;

    /// `v1` or `v2`, in any case.
    fn from_str(text: &str) -> Result<IndexVersion, UnknownIndexVersion> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v1" => Ok(IndexVersion::V1),
            "v2" => Ok(IndexVersion::V2),
            _ => Err(UnknownIndexVersion(text.to_owned())),
        }
    }
}

impl std::fmt::Display for IndexVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexVersion::V1 => "v1",
            IndexVersion::V2 => "v2",
        })
    }
}

/// A SOCI index version that is neither `v1` nor `v2`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected v2 or v1, got {0:?}")]
pub struct UnknownIndexVersion(pub String);

impl IndexVersion {
    /// The config media type that tells the version.
    pub fn config_media_type(self) -> &'static str {
        match self {
            IndexVersion::V1 => media::SOCI_INDEX_V1,
            IndexVersion::V2 => media::SOCI_INDEX_V2,
        }
    }
}

/// A zTOC as listed in a SOCI index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZtocEntry {
    /// Digest of the zTOC blob.
    pub ztoc_digest: String,
    /// Size of the zTOC blob.
    pub ztoc_size: u64,
    /// Digest of the layer it indexes.
    pub layer_digest: String,
    /// Media type of that layer, as in the image manifest.
    pub layer_media_type: String,
    /// Span size the zTOC was built with.
    pub span_size: u64,
}

impl ZtocEntry {
    /// The descriptor soci writes for it.
    pub fn descriptor(&self) -> Descriptor {
        let mut annotations = Annotations::new();
        annotations.insert(media::ANNOTATION_LAYER_DIGEST.into(), self.layer_digest.clone());
        annotations.insert(media::ANNOTATION_LAYER_MEDIA_TYPE.into(), self.layer_media_type.clone());
        annotations.insert(media::ANNOTATION_SPAN_SIZE.into(), self.span_size.to_string());
        Descriptor {
            media_type: media::SOCI_ZTOC.into(),
            digest: self.ztoc_digest.clone(),
            size: self.ztoc_size as i64,
            annotations: Some(annotations),
            ..Descriptor::default()
        }
    }
}

/// Builds the SOCI index manifest bytes: zTOCs in image layer order, `subject` only for v1.
pub fn index_manifest(
    version: IndexVersion,
    ztocs: &[ZtocEntry],
    subject: Option<&Descriptor>,
    build_tool_identifier: &str,
) -> Vec<u8> {
    let mut annotations = Annotations::new();
    annotations.insert(media::ANNOTATION_BUILD_TOOL.into(), build_tool_identifier.into());
    let manifest = Manifest {
        schema_version: 2,
        media_type: media::OCI_MANIFEST.into(),
        artifact_type: String::new(),
        config: Descriptor {
            media_type: version.config_media_type().into(),
            digest: media::EMPTY_JSON_DIGEST.into(),
            size: media::EMPTY_JSON.len() as i64,
            ..Descriptor::default()
        },
        layers: Some(ztocs.iter().map(ZtocEntry::descriptor).collect()),
        subject: match version {
            IndexVersion::V1 => subject.map(|s| Descriptor {
                media_type: s.media_type.clone(),
                digest: s.digest.clone(),
                size: s.size,
                ..Descriptor::default()
            }),
            IndexVersion::V2 => None,
        },
        annotations: Some(annotations),
    };
    manifest.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ZtocEntry {
        ZtocEntry {
            ztoc_digest: "sha256:1111".into(),
            ztoc_size: 1234,
            layer_digest: "sha256:2222".into(),
            layer_media_type: media::OCI_LAYER_GZIP.into(),
            span_size: 4194304,
        }
    }

    #[test]
    fn v1_bytes_are_soci_create_bytes() {
        let subject = Descriptor {
            media_type: media::DOCKER_MANIFEST.into(),
            digest: "sha256:3333".into(),
            size: 528,
            platform: Some(crate::oci::Platform::parse("linux/amd64").unwrap()),
            ..Descriptor::default()
        };
        let bytes = index_manifest(IndexVersion::V1, &[entry()], Some(&subject), "AWS SOCI CLI v0.2");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.amazon.soci.index.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/octet-stream","digest":"sha256:1111","size":1234,"annotations":{"com.amazon.soci.image-layer-digest":"sha256:2222","com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","com.amazon.soci.span-size":"4194304"}}],"subject":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:3333","size":528},"annotations":{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}"#
        );
    }

    #[test]
    fn v2_has_no_subject_and_the_v2_config_type() {
        let bytes = index_manifest(IndexVersion::V2, &[entry()], None, "soci-indexer v0.1.0");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""config":{"mediaType":"application/vnd.amazon.soci.index.v2+json""#));
        assert!(!text.contains("subject"));
        assert_eq!(ztoc::sha256_digest(media::EMPTY_JSON), media::EMPTY_JSON_DIGEST);
    }
}
