//! Phase 3, before building a layer: reuse its zTOC if the cache knows one in this registry.
//!
//! Hit in this repository → the blob must still be there; hit in another repository → mount it, or
//! copy it (read, verify, push: a few MB, not the layer) when the registry does not mount. Anything
//! else (a miss, a blob gone or corrupt, a cache error) → `None`, and the layer is built.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::build::BuiltLayer;
use crate::cache::{CacheKey, CachedZtoc, ReuseKind, ZtocCache};
use crate::oci::Descriptor;
use crate::registry::{Location, Registry, SourceError};
use crate::report::{LayerReport, LayerResult};
use crate::select::layer_size;
use crate::soci::ZtocEntry;

/// The largest zTOC copied between repositories (a zTOC is a few MB even for multi-GB layers).
const MAX_COPIED_ZTOC: u64 = 1 << 30;

/// The layer's zTOC from the cache, placed in this repository; `None` to build it.
pub async fn reuse<R: Registry>(
    registry: &R,
    cache: &dyn ZtocCache,
    key: &CacheKey,
    layer: &Descriptor,
) -> Option<BuiltLayer> {
    let started = Instant::now();
    let hit = match cache.get(&key.id()).await {
        Ok(Some(hit)) => hit,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(layer = %layer.digest, error = %e, "zTOC cache lookup failed; building");
            return None;
        }
    };
    let here = registry.location();
    if hit.registry != here.registry {
        return None;
    }
    let how = match place(registry, &hit, &here).await {
        Ok(Some(how)) => how,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(
                layer = %layer.digest, ztoc = %hit.ztoc_digest, from = %hit.repository, error = %index_chain(&e),
                "cached zTOC cannot be reused; building"
            );
            return None;
        }
    };
    let report = LayerReport {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        size: layer_size(layer),
        result: LayerResult::Reused {
            ztoc_digest: hit.ztoc_digest.clone(),
            ztoc_size: hit.ztoc_size,
            how,
            from_repository: hit.repository.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        },
    };
    let ztoc = ZtocEntry {
        ztoc_digest: hit.ztoc_digest,
        ztoc_size: hit.ztoc_size,
        layer_digest: layer.digest.clone(),
        layer_media_type: layer.media_type.clone(),
        span_size: key.span_size,
    };
    Some(BuiltLayer { report, ztoc: Some(ztoc) })
}

/// Records where a freshly built zTOC was pushed (a failure is logged: the next run builds again).
pub async fn record<R: Registry>(registry: &R, cache: &dyn ZtocCache, key: &CacheKey, built: &BuiltLayer) {
    let Some(ztoc) = &built.ztoc else { return };
    let here = registry.location();
    let entry = CachedZtoc {
        ztoc_digest: ztoc.ztoc_digest.clone(),
        ztoc_size: ztoc.ztoc_size,
        registry: here.registry,
        repository: here.repository,
    };
    if let Err(e) = cache.put(&key.id(), &entry).await {
        tracing::warn!(layer = %ztoc.layer_digest, error = %e, "zTOC cache not updated");
    }
}

/// Makes the cached blob present in this repository; `Ok(None)` when it cannot be (gone).
async fn place<R: Registry>(
    registry: &R,
    hit: &CachedZtoc,
    here: &Location,
) -> Result<Option<ReuseKind>, SourceError> {
    if registry.blob_exists(&hit.ztoc_digest).await? {
        return Ok(Some(ReuseKind::Present));
    }
    if hit.repository == here.repository || hit.ztoc_size > MAX_COPIED_ZTOC {
        return Ok(None);
    }
    if registry.mount_blob(&hit.ztoc_digest, &hit.repository).await? {
        return Ok(Some(ReuseKind::Mounted));
    }
    let descriptor = Descriptor {
        media_type: crate::media::SOCI_ZTOC.into(),
        digest: hit.ztoc_digest.clone(),
        size: hit.ztoc_size as i64,
        ..Descriptor::default()
    };
    // The stream verifies the digest: a corrupt or truncated copy ends in an error, never a push.
    let mut stream = registry.get_blob_from(&hit.repository, &descriptor).await?;
    let mut bytes = BytesMut::with_capacity(hit.ztoc_size as usize);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    if ztoc::sha256_digest(&bytes) != hit.ztoc_digest {
        return Ok(None);
    }
    registry.push_blob(&hit.ztoc_digest, Bytes::from(bytes)).await?;
    Ok(Some(ReuseKind::Copied))
}

fn index_chain(error: &SourceError) -> String {
    crate::error::chain(error)
}
