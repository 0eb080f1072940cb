//! Phase 3, build: stream each eligible layer through the zTOC builder and push its zTOC.
//!
//! The scheduler runs `concurrency` layers at once, largest first; the per-layer builder streams the
//! blob into a blocking thread that inflates and walks it, so the network and the CPU overlap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::{self, JoinSet};

use crate::cache::{CacheKey, ZtocCache};
use crate::error::{Error, LayerError};
use crate::oci::Descriptor;
use crate::options::CreateOptions;
use crate::reasons::UnsupportedReason;
use crate::registry::Registry;
use crate::report::{BuiltLayer, LayerReport, LayerResult, Observer};
use crate::reuse;
use crate::select::layer_size;
use crate::soci::ZtocEntry;

/// Bytes handed to the zTOC builder at a time.
const FEED_SIZE: usize = 256 * 1024;
/// Pieces in flight between the network and the builder: memory stays bounded.
const PIECES_IN_FLIGHT: usize = 4;

/// How to build one layer's zTOC.
#[derive(Clone, Debug)]
struct LayerBuild {
    ztoc: ztoc::BuildOptions,
    /// Stop (and leave the layer out) when the zTOC would grow past this.
    max_ztoc_size: u64,
}

/// Builds the zTOCs of `layers`, `options.concurrency` at a time (or as the shared `options.build_slots`
/// allow), and pushes each as it is made.
/// Results come back in `layers` order. The first failure stops the others.
pub async fn build_ztocs<R: Registry>(
    registry: Arc<R>,
    layers: Vec<Descriptor>,
    options: &CreateOptions,
    observer: Arc<dyn Observer>,
) -> Result<Vec<BuiltLayer>, Error> {
    let semaphore = options.slots().semaphore();
    let mut running = Running::default();
    // Largest first: with a few workers, this keeps them busy until the end (longest processing time
    // first scheduling), instead of one worker finishing a big layer alone.
    let mut order: Vec<(usize, Descriptor)> = layers.into_iter().enumerate().collect();
    order.sort_by_key(|(position, layer)| (std::cmp::Reverse(layer.size), *position));
    for (position, layer) in order {
        // Taking the permit before spawning keeps the order above.
        let Ok(permit) = semaphore.clone().acquire_owned().await else { break };
        running.collect_finished();
        if running.failure.is_some() {
            break;
        }
        let registry = registry.clone();
        let observer = observer.clone();
        let build_options = LayerBuild {
            ztoc: ztoc::BuildOptions {
                span_size: options.span_size,
                build_tool_identifier: options.build_tool_identifier.clone(),
                format: None,
            },
            max_ztoc_size: options.max_ztoc_size,
        };
        let digest = layer.digest.clone();
        let cache = options.ztoc_cache.clone();
        let handle = running.tasks.spawn(async move {
            let _permit = permit;
            let result =
                reuse_or_build(registry.as_ref(), cache.as_deref(), &layer, build_options, observer.as_ref())
                    .await;
            if let Ok(built) = &result {
                observer.layer_finished(&built.report);
            }
            (position, result)
        });
        running.digests.insert(handle.id(), digest);
    }
    running.finish().await
}

/// What a layer task returns: its position in the input, and its result.
type TaskOutput = (usize, Result<BuiltLayer, Error>);

/// The layer's cached zTOC if it can be reused, else a new one (recorded in the cache).
async fn reuse_or_build<R: Registry>(
    registry: &R,
    cache: Option<&dyn ZtocCache>,
    layer: &Descriptor,
    build_options: LayerBuild,
    observer: &dyn Observer,
) -> Result<BuiltLayer, Error> {
    let Some(cache) = cache else { return build_layer(registry, layer, build_options, observer).await };
    let key = CacheKey {
        layer_digest: layer.digest.clone(),
        span_size: build_options.ztoc.span_size,
        build_tool_identifier: build_options.ztoc.build_tool_identifier.clone(),
    };
    if let Some(reused) = reuse::reuse(registry, cache, &key, layer, build_options.max_ztoc_size).await {
        return Ok(reused);
    }
    let built = build_layer(registry, layer, build_options, observer).await?;
    reuse::record(registry, cache, &key, &built).await;
    Ok(built)
}

/// The layer tasks in flight and what they gave so far.
#[derive(Default)]
struct Running {
    tasks: JoinSet<TaskOutput>,
    /// Which layer each task builds, to name it if the task dies.
    digests: HashMap<task::Id, String>,
    done: Vec<(usize, BuiltLayer)>,
    failure: Option<Error>,
}

impl Running {
    fn collect_finished(&mut self) {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.file(joined);
        }
    }

    async fn finish(mut self) -> Result<Vec<BuiltLayer>, Error> {
        while let Some(joined) = self.tasks.join_next_with_id().await {
            if self.file(joined) {
                // Stop the other layers: the run fails and nothing past blobs is pushed.
                self.tasks.abort_all();
            }
        }
        if let Some(e) = self.failure {
            return Err(e);
        }
        self.done.sort_by_key(|(position, _)| *position);
        Ok(self.done.into_iter().map(|(_, built)| built).collect())
    }

    /// Files a finished task's result; returns true if it is the first failure.
    fn file(&mut self, joined: Result<(task::Id, TaskOutput), task::JoinError>) -> bool {
        let error = match joined {
            Ok((_, (position, Ok(built)))) => {
                self.done.push((position, built));
                return false;
            }
            Ok((_, (_, Err(e)))) => e,
            // Aborted after another layer failed.
            Err(e) if e.is_cancelled() => return false,
            Err(e) => {
                let digest = self.digests.get(&e.id()).cloned().unwrap_or_default();
                Error::Layer { digest, source: LayerError::Crashed(panic_message(e)) }
            }
        };
        let first = self.failure.is_none();
        self.failure.get_or_insert(error);
        first
    }
}

/// What a panicked task said, for the error that replaces the panic.
fn panic_message(error: task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

/// Streams one layer through the zTOC builder (on a blocking thread) and pushes the zTOC.
async fn build_layer<R: Registry>(
    registry: &R,
    layer: &Descriptor,
    build_options: LayerBuild,
    observer: &dyn Observer,
) -> Result<BuiltLayer, Error> {
    let started = Instant::now();
    let span_size = build_options.ztoc.span_size;
    let layer_error = |source| Error::Layer { digest: layer.digest.clone(), source };
    observer.layer_started(&layer.digest, layer_size(layer));
    let report = |result| LayerReport {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        size: layer_size(layer),
        result,
    };
    let built = match stream_into_builder(registry, layer, build_options, observer).await {
        Ok(Ok(built)) => built,
        Ok(Err(reason)) => {
            tracing::warn!(layer = %layer.digest, %reason, "layer left out of the SOCI index");
            return Ok(BuiltLayer { report: report(LayerResult::Unsupported { reason }), ztoc: None });
        }
        Err(e) => return Err(layer_error(e)),
    };
    let Encoded { bytes, entries, spans } = built;
    let digest = ztoc::sha256_digest(&bytes);
    let ztoc_size = bytes.len() as u64;
    registry
        .push_blob(&digest, Bytes::from_owner(bytes))
        .await
        .map_err(|source| layer_error(LayerError::Push { digest: digest.clone(), source }))?;
    let entry = ZtocEntry {
        ztoc_digest: digest.clone(),
        ztoc_size,
        layer_digest: layer.digest.clone(),
        layer_media_type: layer.media_type.clone(),
        span_size,
    };
    let result = LayerResult::Indexed {
        ztoc_digest: digest,
        ztoc_size,
        entries,
        spans,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    Ok(BuiltLayer { report: report(result), ztoc: Some(entry) })
}

/// The builder thread: feeds the pieces as they come, stops early past the size limit, encodes.
fn build_blocking(
    receiver: &mut mpsc::Receiver<Bytes>,
    build_options: LayerBuild,
) -> Result<Result<Encoded, UnsupportedReason>, ztoc::Error> {
    let mut builder = ztoc::ZtocBuilder::new(build_options.ztoc)?;
    while let Some(piece) = receiver.blocking_recv() {
        builder.feed(&piece)?;
        if builder.estimated_size() > build_options.max_ztoc_size {
            return Ok(Err(UnsupportedReason::TooLarge { limit: build_options.max_ztoc_size }));
        }
    }
    let built = builder.finish()?;
    let (entries, spans) = (built.toc.metadata.len(), built.compression_info.zinfo.span_count());
    // Given up to the encoder, which frees the checkpoints as it copies them: one copy at the peak.
    let bytes = ztoc::codec::encode_owned(built);
    Ok(Ok(Encoded { bytes, entries, spans }))
}

/// A zTOC encoded for pushing; the model it came from is already dropped (one copy in memory).
struct Encoded {
    bytes: ztoc::codec::EncodedZtoc,
    entries: usize,
    spans: usize,
}

/// Feeds the verified blob to a builder thread; returns the encoded zTOC, or why the layer is left out.
async fn stream_into_builder<R: Registry>(
    registry: &R,
    layer: &Descriptor,
    build_options: LayerBuild,
    observer: &dyn Observer,
) -> Result<Result<Encoded, UnsupportedReason>, LayerError> {
    let mut stream = registry.get_blob(layer).await.map_err(LayerError::Download)?;
    let (sender, mut receiver) = mpsc::channel::<Bytes>(PIECES_IN_FLIGHT);
    let builder = task::spawn_blocking(move || -> Result<Result<Encoded, UnsupportedReason>, ztoc::Error> {
        match build_blocking(&mut receiver, build_options) {
            Err(ztoc::Error::Tar(
                e @ (ztoc::tar::TarError::UnsupportedEntry { .. } | ztoc::tar::TarError::SparseEntry { .. }),
            )) => Ok(Err(UnsupportedReason::Content(e))),
            other => other,
        }
    });
    let mut done = 0u64;
    let mut stream_error = None;
    let mut last_report = Instant::now();
    // Network chunks are small (a few KiB); the builder is fastest on big pieces, so gather them.
    let mut pending = BytesMut::with_capacity(FEED_SIZE);
    loop {
        let item = stream.next().await;
        let end = item.is_none();
        match item {
            Some(Ok(chunk)) => {
                done += chunk.len() as u64;
                pending.extend_from_slice(&chunk);
            }
            Some(Err(e)) => {
                stream_error = Some(e);
                break;
            }
            None => {}
        }
        if (end && !pending.is_empty()) || pending.len() >= FEED_SIZE {
            let piece = pending.split().freeze();
            pending.reserve(FEED_SIZE);
            if sender.send(piece).await.is_err() {
                break; // the builder stopped: its error says why
            }
        }
        if end {
            break;
        }
        if last_report.elapsed() > Duration::from_millis(100) {
            observer.layer_progress(&layer.digest, done);
            last_report = Instant::now();
        }
    }
    drop(sender);
    let built = builder.await.map_err(|e| LayerError::Crashed(panic_message(e)))?;
    if let Some(e) = stream_error {
        // The blob did not arrive whole or did not match its digest: its zTOC must not be used.
        return Err(LayerError::Download(e));
    }
    observer.layer_progress(&layer.digest, done);
    built.map_err(LayerError::Build)
}
