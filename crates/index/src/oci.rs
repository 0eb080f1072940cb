//! OCI manifests, indexes, descriptors and platforms, shaped like Go's `image-spec` structs.
//!
//! Parsing drops unknown fields and serializing writes Go's field order, as soci's `json.Unmarshal` then
//! `json.Marshal` round trip does; that is what makes our re-serialized manifests byte-identical to soci's.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::json::to_go_json;

/// Annotations: a sorted map, as Go's encoder sorts map keys.
pub type Annotations = BTreeMap<String, String>;

fn is_empty_map(map: &Option<Annotations>) -> bool {
    map.as_ref().is_none_or(BTreeMap::is_empty)
}

fn is_empty_vec<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

/// A content descriptor (Go `ocispec.Descriptor`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    #[serde(default)]
    pub digest: String,
    /// Size of the content in bytes.
    #[serde(default)]
    pub size: i64,
    /// Alternative download URLs.
    #[serde(default, skip_serializing_if = "is_empty_vec")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub annotations: Option<Annotations>,
    /// Embedded content, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type of the referenced content.
    #[serde(rename = "artifactType", default, skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
}

impl Descriptor {
    /// A plain `{mediaType, digest, size}` descriptor of `bytes`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: ztoc::sha256_digest(bytes),
            size: bytes.len() as i64,
            ..Descriptor::default()
        }
    }

    /// One annotation, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A platform (Go `ocispec.Platform`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(rename = "os.version", default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// OS features (Windows).
    #[serde(rename = "os.features", default, skip_serializing_if = "is_empty_vec")]
    pub os_features: Option<Vec<String>>,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(spec: &str) -> Option<Platform> {
        let parts: Vec<&str> = spec.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => return None,
        };
        if os.is_empty() || arch.is_empty() {
            return None;
        }
        Some(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
            ..Platform::default()
        })
    }

    /// containerd's `platforms.Normalize`: canonical OS, architecture and variant names.
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_lowercase();
        let arch = self.architecture.to_lowercase();
        let variant = self.variant.to_lowercase();
        let (arch, variant) = match arch.as_str() {
            "i386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                ("amd64".to_string(), if variant == "v1" { String::new() } else { variant })
            }
            "aarch64" | "arm64" => (
                "arm64".to_string(),
                if matches!(variant.as_str(), "8" | "v8" | "v8.0") { String::new() } else { variant },
            ),
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let variant = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), variant)
            }
            _ => (arch, variant),
        };
        Platform { os, architecture: arch, variant, ..self.clone() }
    }

    /// Whether this is the `unknown/unknown` platform of buildx attestation manifests.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }

    /// Whether `self` (from the image) is what `wanted` (from the user) asks for: OS and architecture
    /// equal after normalisation, and the variant too when the user gave one.
    pub fn matches(&self, wanted: &Platform) -> bool {
        let (have, want) = (self.normalized(), wanted.normalized());
        have.os == want.os
            && have.architecture == want.architecture
            && (wanted.variant.is_empty() || have.variant == want.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// An image manifest (Go `ocispec.Manifest`), also used to read Docker schema 2 manifests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    /// Media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Artifact type.
    #[serde(rename = "artifactType", default, skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
    /// The config blob.
    #[serde(default)]
    pub config: Descriptor,
    /// The layers (`null` when absent, as Go writes a nil slice).
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub annotations: Option<Annotations>,
}

/// An image index (Go `ocispec.Index`), also used to read Docker manifest lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    /// Media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Artifact type.
    #[serde(rename = "artifactType", default, skip_serializing_if = "String::is_empty")]
    pub artifact_type: String,
    /// The entries (`null` when absent, as Go writes a nil slice).
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub annotations: Option<Annotations>,
}

impl Manifest {
    /// Go `json.Marshal` bytes.
    pub fn to_json(&self) -> Vec<u8> {
        to_go_json(self)
    }

    /// The layers, empty when absent.
    pub fn layers(&self) -> &[Descriptor] {
        self.layers.as_deref().unwrap_or(&[])
    }
}

impl Index {
    /// Go `json.Marshal` bytes.
    pub fn to_json(&self) -> Vec<u8> {
        to_go_json(self)
    }

    /// The entries, empty when absent.
    pub fn manifests(&self) -> &[Descriptor] {
        self.manifests.as_deref().unwrap_or(&[])
    }
}

/// The image config fields needed to tell a single-manifest image's platform.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfigPlatform {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// OS version.
    #[serde(rename = "os.version", default)]
    pub os_version: String,
    /// CPU variant.
    #[serde(default)]
    pub variant: String,
}

impl ImageConfigPlatform {
    /// The normalised platform.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: None,
            variant: self.variant.clone(),
        }
        .normalized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifest_round_trips_in_go_field_order_dropping_unknown_fields() {
        let docker = br#"{
           "schemaVersion": 2,
           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023, "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"},
           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654, "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f"}],
           "unknownField": true
        }"#;
        let manifest: Manifest = serde_json::from_slice(docker).unwrap();
        assert_eq!(
            String::from_utf8(manifest.to_json()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7","size":7023},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f","size":32654}]}"#
        );
    }

    #[test]
    fn index_keeps_platform_variant_and_annotations() {
        let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":2,"annotations":{"vnd.docker.reference.digest":"sha256:aa","vnd.docker.reference.type":"attestation-manifest"},"platform":{"architecture":"unknown","os":"unknown"}}]}"#;
        let index: Index = serde_json::from_slice(json).unwrap();
        assert_eq!(index.to_json(), json.to_vec());
    }

    #[test]
    fn platforms_normalise_like_containerd() {
        let p = |s: &str| Platform::parse(s).unwrap().normalized().to_string();
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("Linux/armhf"), "linux/arm/v7");
        assert!(Platform::parse("linux/arm64/v8").unwrap().matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(Platform::parse("linux").is_none());
    }
}
