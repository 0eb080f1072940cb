//! Media types and annotation keys of OCI, Docker and SOCI.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI zstd layer (SOCI cannot index it).
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// SOCI index manifest v1 (config media type; bound by `subject` and the referrers API).
pub const SOCI_INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// SOCI index manifest v2 (config media type; bound by an annotation on the image manifest).
pub const SOCI_INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
/// Media type of zTOC blobs in a SOCI index.
pub const SOCI_ZTOC: &str = "application/octet-stream";

/// zTOC descriptor annotation: the layer digest.
pub const ANNOTATION_LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
/// zTOC descriptor annotation: the layer media type (capital T, as soci writes it).
pub const ANNOTATION_LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
/// zTOC descriptor annotation: the span size.
pub const ANNOTATION_SPAN_SIZE: &str = "com.amazon.soci.span-size";
/// SOCI index annotation: the build tool.
pub const ANNOTATION_BUILD_TOOL: &str = "com.amazon.soci.build-tool-identifier";
/// v2: on the SOCI descriptor in the image index, the image manifest it belongs to.
pub const ANNOTATION_IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";
/// v2: on the image manifest, its SOCI index manifest.
pub const ANNOTATION_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
/// buildx attestation entries: the manifest they attest.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// buildx attestation entries: their kind.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// The SOCI config blob: the two bytes `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";
/// sha256 of `{}`.
pub const EMPTY_JSON_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// Whether a media type is an image manifest (OCI or Docker).
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether a media type is an image index (OCI index or Docker manifest list).
pub fn is_image_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// What SOCI can do with a layer of this media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// gzip-compressed tar: indexable.
    Gzip,
    /// Plain tar: indexable.
    Tar,
    /// zstd: not supported by SOCI.
    Zstd,
    /// A foreign or non-distributable layer: not ours to fetch.
    Foreign,
    /// Not a layer type SOCI knows.
    Unknown,
}

/// Classifies a layer media type.
pub fn layer_kind(media_type: &str) -> LayerKind {
    match media_type {
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => LayerKind::Gzip,
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => LayerKind::Tar,
        _ if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") => LayerKind::Zstd,
        _ if media_type.contains("foreign") || media_type.contains("nondistributable") => LayerKind::Foreign,
        _ => LayerKind::Unknown,
    }
}
