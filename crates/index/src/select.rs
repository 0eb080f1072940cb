//! Phase 2, select: which layers get a zTOC. Each distinct layer once, even when platforms share it.

use std::collections::{BTreeMap, HashSet};

use crate::media::{self, LayerKind};
use crate::oci::Descriptor;
use crate::reasons::SkipReason;
use crate::report::{LayerReport, LayerResult};
use crate::resolve::PlatformImage;

/// The layers to build, and the reports of those left out.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Layers to index, in image order.
    pub eligible: Vec<Descriptor>,
    /// Layers left out, with why.
    pub skipped: Vec<LayerReport>,
}

/// Splits the layers of `images` into eligible ones and skipped ones.
pub fn select_layers(images: &BTreeMap<usize, PlatformImage>, min_layer_size: u64) -> Selection {
    let mut selection = Selection::default();
    let mut seen = HashSet::new();
    for layer in images.values().flat_map(|image| image.manifest.layers()) {
        if !seen.insert(layer.digest.as_str()) {
            continue;
        }
        match eligibility(layer, min_layer_size) {
            Ok(()) => selection.eligible.push(layer.clone()),
            Err(reason) => selection.skipped.push(LayerReport {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer_size(layer),
                result: LayerResult::Skipped { reason },
            }),
        }
    }
    selection
}

/// `Ok` if the layer should get a zTOC, else why not.
pub fn eligibility(layer: &Descriptor, min_layer_size: u64) -> Result<(), SkipReason> {
    match media::layer_kind(&layer.media_type) {
        LayerKind::Gzip | LayerKind::Tar => {}
        LayerKind::Zstd => return Err(SkipReason::Zstd),
        LayerKind::Foreign => return Err(SkipReason::Foreign),
        LayerKind::Unknown => return Err(SkipReason::UnknownMediaType(layer.media_type.clone())),
    }
    let size = layer_size(layer);
    if size < min_layer_size {
        return Err(SkipReason::TooSmall { size, min: min_layer_size });
    }
    Ok(())
}

/// A layer's compressed size (resolve refuses negative sizes).
pub fn layer_size(layer: &Descriptor) -> u64 {
    u64::try_from(layer.size).unwrap_or(0)
}
