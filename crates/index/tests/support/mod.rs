//! What the engine's test binaries share.

use index::testing::MemoryRegistry;
use testkit::image::TestImage;

/// Stores `image` in `registry`: blobs, platform manifests, and the root under `tag`.
pub fn load(registry: &MemoryRegistry, image: &TestImage, tag: &str) {
    for (digest, _, bytes) in &image.blobs {
        registry.insert_blob(digest, bytes.clone());
    }
    for (_, media_type, bytes) in &image.manifests {
        registry.insert_manifest(None, media_type, bytes.clone());
    }
    registry.insert_manifest(Some(tag), &image.root.1, image.root.2.clone());
}

/// A new in-memory registry holding `image` under `tag`.
#[allow(dead_code)] // not every test binary uses it
pub fn loaded(image: &TestImage, tag: &str) -> MemoryRegistry {
    let registry = MemoryRegistry::new();
    load(&registry, image, tag);
    registry
}
