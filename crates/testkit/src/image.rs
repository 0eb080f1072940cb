//! Test images: layers from the seeded generator, real configs with diff_ids, Docker v2 or OCI
//! manifests, multi-platform indexes and buildx-style attestation entries. Pure data: pushing them is
//! up to the test (with the project's own registry client).

use sha2::{Digest, Sha256};

use crate::{generate_layer, gzip, GzipOptions, LayerConfig};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A layer blob and what it holds.
#[derive(Clone, Debug)]
pub struct TestLayer {
    /// Layer media type as written in the manifest.
    pub media_type: String,
    /// The blob.
    pub blob: Vec<u8>,
    /// Digest of the blob.
    pub digest: String,
    /// Digest of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// Regular files: `(name, content)`.
    pub files: Vec<(String, Vec<u8>)>,
}

impl TestLayer {
    /// A gzip layer generated from `seed` (`docker` picks the Docker media type).
    pub fn gzip(seed: u64, config: &LayerConfig, level: u32, docker: bool) -> TestLayer {
        let layer = generate_layer(seed, config);
        let blob = gzip(&layer.tar, &GzipOptions { level, members: 1, header_fields: false });
        let media_type = if docker {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        };
        TestLayer::from_parts(media_type, blob, &layer.tar, layer.files)
    }

    /// An uncompressed tar layer generated from `seed`.
    pub fn tar(seed: u64, config: &LayerConfig, docker: bool) -> TestLayer {
        let layer = generate_layer(seed, config);
        let media_type = if docker {
            "application/vnd.docker.image.rootfs.diff.tar"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let blob = layer.tar.clone();
        TestLayer::from_parts(media_type, blob, &layer.tar, layer.files)
    }

    /// A layer from raw parts (e.g. a hand-made tar that soci cannot index).
    pub fn from_parts(
        media_type: &str,
        blob: Vec<u8>,
        tar: &[u8],
        files: Vec<(String, Vec<u8>)>,
    ) -> TestLayer {
        TestLayer { media_type: media_type.into(), digest: digest(&blob), diff_id: digest(tar), blob, files }
    }
}

/// A manifest, index or blob of a test image: `(digest, media type, bytes)`.
pub type Content = (String, String, Vec<u8>);

/// A complete image, ready to push: blobs first, then manifests by digest, then `root` by tag.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Layers and configs.
    pub blobs: Vec<Content>,
    /// Platform manifests (for an index) to push by digest.
    pub manifests: Vec<Content>,
    /// The image itself: an index, or the single manifest.
    pub root: Content,
    /// The layers of each platform, in manifest order.
    pub platforms: Vec<(String, Vec<TestLayer>)>,
}

/// Whether to write Docker or OCI media types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// OCI manifests and index.
    Oci,
    /// Docker schema 2 manifests and manifest list.
    Docker,
}

fn platform_json(platform: &str) -> String {
    let parts: Vec<&str> = platform.split('/').collect();
    let mut json = format!(r#""architecture":"{}","os":"{}""#, parts[1], parts[0]);
    if let Some(variant) = parts.get(2) {
        json.push_str(&format!(r#","variant":"{variant}""#));
    }
    json
}

fn manifest(style: Style, config: &(String, Vec<u8>), layers: &[TestLayer]) -> Vec<u8> {
    let (manifest_type, config_type) = match style {
        Style::Oci => {
            ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
        }
        Style::Docker => (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        ),
    };
    let layers: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#, l.media_type, l.digest, l.blob.len())
        })
        .collect();
    // Pretty-printed on purpose: registries keep bytes as pushed, and converters must re-serialize.
    format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{manifest_type}\",\n  \"config\": {{\"mediaType\": \"{config_type}\", \"digest\": \"{}\", \"size\": {}}},\n  \"layers\": [{}]\n}}\n",
        config.0,
        config.1.len(),
        layers.join(", ")
    )
    .into_bytes()
}

/// Builds an image with one manifest per `(platform, layers)`: a single manifest when there is one
/// platform and `index` is false, else an index (with a buildx-style attestation entry for the first
/// platform when `attestation` is true).
pub fn image(
    style: Style,
    platforms: Vec<(String, Vec<TestLayer>)>,
    index: bool,
    attestation: bool,
) -> TestImage {
    let mut blobs: Vec<Content> = Vec::new();
    let mut manifests: Vec<Content> = Vec::new();
    let manifest_type = match style {
        Style::Oci => "application/vnd.oci.image.manifest.v1+json",
        Style::Docker => "application/vnd.docker.distribution.manifest.v2+json",
    };
    let mut entries = Vec::new();
    for (platform, layers) in &platforms {
        let diff_ids: Vec<String> = layers.iter().map(|l| format!("\"{}\"", l.diff_id)).collect();
        let config = format!(
            r#"{{{},"config":{{"Env":["PATH=/usr/bin"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            platform_json(platform),
            diff_ids.join(",")
        )
        .into_bytes();
        let config = (digest(&config), config);
        blobs.push((config.0.clone(), "config".into(), config.1.clone()));
        for layer in layers {
            if !blobs.iter().any(|b| b.0 == layer.digest) {
                blobs.push((layer.digest.clone(), layer.media_type.clone(), layer.blob.clone()));
            }
        }
        let bytes = manifest(style, &config, layers);
        let d = digest(&bytes);
        entries.push(format!(
            r#"{{"mediaType":"{manifest_type}","digest":"{d}","size":{},"platform":{{{}}}}}"#,
            bytes.len(),
            platform_json(platform)
        ));
        manifests.push((d, manifest_type.into(), bytes));
    }
    if attestation {
        let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2"}"#.to_vec();
        let config = b"{}".to_vec();
        blobs.push((digest(&statement), "in-toto".into(), statement.clone()));
        blobs.push((digest(&config), "config".into(), config.clone()));
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.in-toto+json","digest":"{}","size":{},"annotations":{{"in-toto.io/predicate-type":"https://slsa.dev/provenance/v0.2"}}}}]}}"#,
            digest(&config),
            digest(&statement),
            statement.len()
        )
        .into_bytes();
        let d = digest(&bytes);
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{},"annotations":{{"vnd.docker.reference.digest":"{}","vnd.docker.reference.type":"attestation-manifest"}},"platform":{{"architecture":"unknown","os":"unknown"}}}}"#,
            bytes.len(),
            manifests[0].0
        ));
        manifests.push((d, "application/vnd.oci.image.manifest.v1+json".into(), bytes));
    }
    let root = if index || platforms.len() > 1 || attestation {
        let index_type = match style {
            Style::Oci => "application/vnd.oci.image.index.v1+json",
            Style::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        };
        let bytes = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{index_type}\",\"manifests\":[{}]}}",
            entries.join(",")
        )
        .into_bytes();
        (digest(&bytes), index_type.to_string(), bytes)
    } else {
        manifests.pop().expect("one platform")
    };
    TestImage { blobs, manifests, root, platforms }
}
