//! How `create` shows its layers: progress bars on a terminal, one line per layer otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use index::{LayerReport, LayerResult, Observer};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Says on stderr that the registry throttles and how long soci-indexer waits (`waiting: registry
/// throttling (429), retry in 2.1 s`), at most once a second: many requests are throttled at once.
pub fn throttle_printer() -> registry::ThrottleObserver {
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    registry::ThrottleObserver(Arc::new(|event: &registry::ThrottleEvent| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        if LAST_SECOND.swap(now, Ordering::Relaxed) == now {
            return;
        }
        if event.retry_in.is_zero() {
            eprintln!("registry throttling ({}) outlasted the time allowed", event.status);
        } else {
            eprintln!(
                "waiting: registry throttling ({}), retry in {:.1} s",
                event.status,
                event.retry_in.as_secs_f64()
            );
        }
    }))
}

/// The first 12 hex digits of a digest.
pub fn short(digest: &str) -> &str {
    digest.strip_prefix("sha256:").map_or(digest, |hex| &hex[..12.min(hex.len())])
}

/// One line for a finished layer: its result and why.
pub fn describe(report: &LayerReport) -> String {
    match &report.result {
        LayerResult::Indexed { ztoc_digest, spans, entries, .. } => {
            format!("indexed: zTOC {ztoc_digest}, {entries} entries, {spans} spans")
        }
        LayerResult::Reused { ztoc_digest, how, from_repository, .. } => {
            format!("reused: zTOC {ztoc_digest} ({how} from {from_repository})")
        }
        LayerResult::Skipped { reason } => format!("skipped: {reason}"),
        LayerResult::Unsupported { reason } => format!("left out (warning): {reason}"),
    }
}

/// Progress bars on a terminal: one per layer being indexed, bytes done.
#[derive(Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Observer for Bars {
    fn layer_started(&self, digest: &str, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(short(digest).to_string());
        self.bars.lock().unwrap_or_else(|e| e.into_inner()).insert(digest.to_string(), bar);
    }

    fn layer_progress(&self, digest: &str, done: u64) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).get(digest) {
            bar.set_position(done);
        }
    }

    fn layer_finished(&self, report: &LayerReport) {
        let message = describe(report);
        match self.bars.lock().unwrap_or_else(|e| e.into_inner()).remove(&report.digest) {
            Some(bar) => bar.finish_with_message(message),
            None => {
                let _ = self.multi.println(format!("{} {message}", short(&report.digest)));
            }
        }
    }
}

/// Plain lines on stderr when not on a terminal (CI logs): one per finished layer, whatever its result.
pub struct Lines;

impl Observer for Lines {
    fn layer_finished(&self, report: &LayerReport) {
        eprintln!("layer {} {}", report.digest, describe(report));
    }
}
