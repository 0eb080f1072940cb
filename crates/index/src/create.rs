//! The create pipeline, as named phases: resolve the image → (already indexed? see [`crate::status`]) →
//! select layers → build zTOCs → publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::build::build_ztocs;
use crate::error::Error;
use crate::options::{Binding, CreateOptions};
use crate::ownership;
use crate::publish::{publish, soci_tag_holder, Pushed};
use crate::reasons::KeepReason;
use crate::registry::Registry;
use crate::report::{CreateReport, Observer, Outcome, PlatformReport};
use crate::resolve::{resolve, ResolvedImage};
use crate::select::select_layers;
use crate::status::{image_status, State, StatusReport};

/// Makes and pushes the SOCI index of the image `reference` (a tag or a digest) in `registry`.
/// `tag` is the image's tag, needed for v2 (`<tag><suffix>`).
pub async fn create<R: Registry>(
    registry: Arc<R>,
    reference: &str,
    tag: Option<&str>,
    options: &CreateOptions,
    observer: Arc<dyn Observer>,
) -> Result<CreateReport, Error> {
    let target = Target { reference, tag, started: Instant::now() };
    options.binding(tag)?;
    let image = resolve(registry.as_ref(), reference, &options.platforms, options.index_version).await?;
    create_resolved(registry, target, image, None, options, observer).await
}

/// The image a run indexes, as named, and when the run started.
pub(crate) struct Target<'a> {
    /// The tag or digest.
    pub(crate) reference: &'a str,
    /// The image's tag (v2 needs it).
    pub(crate) tag: Option<&'a str>,
    /// When the run started (the report's duration).
    pub(crate) started: Instant,
}

/// [`create`] of an image already resolved. `checked`: its status, read moments ago by the caller
/// (`sync`), so that the image is not read twice; `None`: read it here (unless `--force`).
pub(crate) async fn create_resolved<R: Registry>(
    registry: Arc<R>,
    target: Target<'_>,
    image: ResolvedImage,
    checked: Option<StatusReport>,
    options: &CreateOptions,
    observer: Arc<dyn Observer>,
) -> Result<CreateReport, Error> {
    let Target { reference, tag, started } = target;
    let binding = options.binding(tag)?;
    // A `<tag><suffix>` that is a user's own image is refused before anything is built.
    if let Binding::V2 { soci_tag, .. } = &binding {
        soci_tag_holder(registry.as_ref(), soci_tag).await?;
    }
    let mut report = initial_report(reference, &image, options);
    let finish = |mut report: CreateReport, outcome| -> Result<CreateReport, Error> {
        report.outcome = outcome;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    };
    if !options.force {
        let status = match checked {
            Some(status) => status,
            None => image_status(registry.as_ref(), reference, &image, &binding, options).await?,
        };
        if status.state == State::Indexed {
            record_found(&mut report, status);
            return finish(report, Outcome::AlreadyIndexed);
        }
    }

    let selection = select_layers(&image.selected, options.min_layer_size);
    for skipped in &selection.skipped {
        observer.layer_finished(skipped);
    }
    report.layers = selection.skipped;
    if selection.eligible.is_empty() {
        return finish(report, Outcome::NothingToIndex);
    }

    let built = build_ztocs(registry.clone(), selection.eligible, options, observer).await?;
    let mut ztocs = HashMap::new();
    for layer in built {
        if let Some(entry) = layer.ztoc {
            ztocs.insert(entry.layer_digest.clone(), entry);
        }
        report.layers.push(layer.report);
    }
    if ztocs.is_empty() {
        return finish(report, Outcome::NothingToIndex);
    }

    let mut pushed = Pushed::default();
    let published = match publish(registry.as_ref(), &image, &ztocs, &binding, options, &mut pushed).await {
        Ok(published) => published,
        Err(e) => {
            leave_unbound(&pushed);
            return Err(e);
        }
    };
    if let Some(now) = published.superseded {
        leave_unbound(&pushed);
        let now = now.unwrap_or_else(|| "nothing (deleted)".into());
        tracing::info!(image = %image.digest, now = %now, "the image's tag moved while it was indexed: its SOCI tag left to the newer run");
        report.superseded_by = Some(now);
        return finish(report, Outcome::Superseded);
    }
    // The index `<tag><suffix>` held right before the move (v2: a re-pointed tag, or --force).
    if let Some(old) =
        published.replaced.clone().filter(|old| published.image_index_digest.as_ref() != Some(old))
    {
        (report.removed, report.kept) = clean_up(registry.as_ref(), &old).await;
    }
    for (position, platform) in image.selected.keys().zip(report.platforms.iter_mut()) {
        platform.soci_index_digest = published.soci_indexes.get(position).map(|d| d.digest.clone());
        platform.converted_manifest_digest = published.converted.get(&platform.manifest_digest).cloned();
    }
    report.pushed_tag = published.pushed_tag;
    report.image_index_digest = published.image_index_digest;
    finish(report, Outcome::Created)
}

/// Removes the index a new one replaced, and what only it referenced, unless another tag still points
/// at it (then it stays, with the reason). Best effort: the new index is in place, so a failure here is
/// logged, never the run's. Returns what was removed, and why anything stayed.
async fn clean_up<R: Registry>(registry: &R, old: &str) -> (Vec<String>, Vec<KeepReason>) {
    match ownership::remove_replaced(registry, old).await {
        Ok(ownership::Replaced { removed, kept }) => {
            if let Some(reason) = &kept {
                tracing::info!(index = %old, %reason, "the replaced SOCI index stays");
            }
            (removed, kept.into_iter().collect())
        }
        Err(e) => {
            tracing::warn!(index = %old, error = %crate::error::chain(&e), "the replaced SOCI index was not removed");
            (Vec::new(), Vec::new())
        }
    }
}

/// Says what this run pushed by digest and never bound to the image. They are not deleted here: the
/// same bytes may be another run's, pushed for the same image under another tag (or for an image with
/// the same layers) and about to be tagged, and a deletion now would break that index. Untagged and
/// unused for long (`prune_untagged`, the reconcile's `SOCI_UNTAGGED_OLDER_THAN`), they go.
fn leave_unbound(pushed: &Pushed) {
    if !pushed.0.is_empty() {
        tracing::info!(
            manifests = ?pushed.0,
            "the run ended before its tag: its manifests stay untagged until the untagged SOCI output is swept"
        );
    }
}

/// An already indexed image's report names what is there, as a created one does: the tag to deploy
/// (v2), its digest, and each platform's SOCI index.
fn record_found(report: &mut CreateReport, status: StatusReport) {
    report.pushed_tag = status.soci_tag;
    report.image_index_digest = status.image_index_digest;
    // Both list the selected platforms in the same order.
    for (platform, found) in report.platforms.iter_mut().zip(status.platforms) {
        platform.soci_index_digest = found.soci_index_digest;
    }
}

/// The report before anything is built: the image and its selected platforms.
fn initial_report(reference: &str, image: &ResolvedImage, options: &CreateOptions) -> CreateReport {
    CreateReport {
        outcome: Outcome::Created,
        reference: reference.into(),
        image_digest: image.digest.clone(),
        index_version: options.index_version,
        platforms: image
            .selected
            .values()
            .map(|platform| PlatformReport {
                platform: platform.platform(),
                manifest_digest: platform.descriptor.digest.clone(),
                converted_manifest_digest: None,
                soci_index_digest: None,
                layers: platform.manifest.layers().iter().map(|l| l.digest.clone()).collect(),
            })
            .collect(),
        layers: Vec::new(),
        pushed_tag: None,
        image_index_digest: None,
        removed: Vec::new(),
        kept: Vec::new(),
        superseded_by: None,
        duration_ms: 0,
    }
}
