//! What the engine's integration tests share.

use index::testing::MemoryRegistry;
use testkit::image::TestImage;

/// Stores `image` in `registry`: blobs, platform manifests, and the root under `tag`.
pub fn load(registry: &MemoryRegistry, image: &TestImage, tag: &str) {
    registry.insert_image(&image.blobs, &image.manifests, &image.root, tag);
}

/// A new in-memory registry holding `image` under `tag`.
pub fn loaded(image: &TestImage, tag: &str) -> MemoryRegistry {
    let registry = MemoryRegistry::new();
    load(&registry, image, tag);
    registry
}
