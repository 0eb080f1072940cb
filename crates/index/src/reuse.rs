//! Phase 3, before building a layer: reuse its zTOC if the cache knows one in this registry.
//!
//! Hit in this repository → the blob must still be there; hit in another repository → mount it, or
//! copy it (read, verify, push: a few MB, not the layer) when the registry does not mount. What the
//! cache says is only a hint: the zTOC is then read back from this repository (a mount a registry
//! claims but did not do shows here) and used only when it [`verify`]s: the registry's size equals the
//! cache's, it decodes, it describes a layer of this layer's size, span size and build tool, and it fits
//! `--max-ztoc-size`. Anything else (a miss, a blob gone, corrupt or wrong, a cache error) → `None`,
//! and the layer is built: an index made with a cache is the index made without one.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::cache::{CacheKey, CachedZtoc, ReuseKind, ZtocCache};
use crate::oci::Descriptor;
use crate::registry::{Location, Registry, SourceError};
use crate::report::{BuiltLayer, LayerReport, LayerResult};
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
    max_ztoc_size: u64,
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
    let read_limit = max_ztoc_size.min(MAX_COPIED_ZTOC);
    let (how, bytes) = match place(registry, &hit, &here, read_limit).await {
        Ok(Some(placed)) => placed,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(
                layer = %layer.digest, ztoc = %hit.ztoc_digest, from = %hit.repository, error = %index_chain(&e),
                "cached zTOC cannot be reused; building"
            );
            return None;
        }
    };
    if let Err(reason) = verify(&bytes, &hit, key, layer, max_ztoc_size) {
        tracing::warn!(layer = %layer.digest, ztoc = %hit.ztoc_digest, %reason, "cached zTOC rejected; building");
        return None;
    }
    // The size the index records is the registry's (equal to the cache's, as verified).
    let ztoc_size = bytes.len() as u64;
    drop(bytes);
    let report = LayerReport {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        size: layer_size(layer),
        result: LayerResult::Reused {
            ztoc_digest: hit.ztoc_digest.clone(),
            ztoc_size,
            how,
            from_repository: hit.repository.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        },
    };
    let ztoc = ZtocEntry {
        ztoc_digest: hit.ztoc_digest,
        ztoc_size,
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

/// Makes the cached blob present in this repository and returns its bytes as this repository serves
/// them (read back after a mount: a registry may claim one it did not do); `Ok(None)` when it cannot be
/// (gone, or larger than `read_limit`).
async fn place<R: Registry>(
    registry: &R,
    hit: &CachedZtoc,
    here: &Location,
    read_limit: u64,
) -> Result<Option<(ReuseKind, Bytes)>, SourceError> {
    let how = if registry.blob_exists(&hit.ztoc_digest).await? {
        ReuseKind::Present
    } else if hit.repository == here.repository || hit.ztoc_size > read_limit {
        return Ok(None);
    } else if registry.mount_blob(&hit.ztoc_digest, &hit.repository).await? {
        ReuseKind::Mounted
    } else {
        let copied = registry.get_blob_from(&hit.repository, &unsized_descriptor(hit)).await?;
        let Some(bytes) = read_whole(copied, &hit.ztoc_digest, read_limit).await? else { return Ok(None) };
        registry.push_blob(&hit.ztoc_digest, bytes.clone()).await?;
        return Ok(Some((ReuseKind::Copied, bytes)));
    };
    let here = registry.get_blob(&unsized_descriptor(hit)).await?;
    Ok(read_whole(here, &hit.ztoc_digest, read_limit).await?.map(|bytes| (how, bytes)))
}

/// The zTOC's descriptor without the cache's size: the size checked is the one the registry serves.
fn unsized_descriptor(hit: &CachedZtoc) -> Descriptor {
    Descriptor {
        media_type: crate::media::SOCI_ZTOC.into(),
        digest: hit.ztoc_digest.clone(),
        size: -1,
        ..Descriptor::default()
    }
}

/// A blob's bytes, digest-checked; `None` past `limit` bytes or when they do not match `digest`.
async fn read_whole(
    mut stream: crate::registry::BlobStream,
    digest: &str,
    limit: u64,
) -> Result<Option<Bytes>, SourceError> {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() as u64 > limit {
            return Ok(None);
        }
    }
    // The stream verifies the digest too; a source that does not is caught here.
    Ok((ztoc::sha256_digest(&bytes) == digest).then(|| bytes.freeze()))
}

/// Whether `bytes`, served for a cache hit, are this layer's zTOC as a build would make it now.
pub(crate) fn verify(
    bytes: &[u8],
    hit: &CachedZtoc,
    key: &CacheKey,
    layer: &Descriptor,
    max_ztoc_size: u64,
) -> Result<(), String> {
    let size = bytes.len() as u64;
    if size > max_ztoc_size {
        return Err(format!("{size} bytes, over the --max-ztoc-size limit of {max_ztoc_size}"));
    }
    if size != hit.ztoc_size {
        return Err(format!("the registry serves {size} bytes, the cache says {}", hit.ztoc_size));
    }
    let ztoc = ztoc::codec::decode(bytes).map_err(|e| format!("it does not decode: {e}"))?;
    let recorded = ztoc.compressed_archive_size.get();
    if recorded != layer_size(layer) {
        return Err(format!("it describes a layer of {recorded} bytes, this one has {}", layer_size(layer)));
    }
    let span_size = ztoc.compression_info.zinfo.span_size();
    if span_size != key.span_size {
        return Err(format!("span size {span_size}, not {}", key.span_size));
    }
    if ztoc.build_tool_identifier != key.build_tool_identifier {
        return Err(format!(
            "built by {:?}, not {:?}",
            ztoc.build_tool_identifier, key.build_tool_identifier
        ));
    }
    Ok(())
}

fn index_chain(error: &SourceError) -> String {
    crate::error::chain(error)
}
