//! Lifecycle: bring a whole repository to "every matching image is indexed": list its tags, index
//! those that are not indexed or are stale, leave the rest, and say what happened to each.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use crate::create::{create_resolved, Target};
use crate::error::{chain, registry_error, Error};
use crate::fallback::fallback_subject;
use crate::options::CreateOptions;
use crate::reasons::TagSkipReason;
use crate::registry::Registry;
use crate::report::{Observer, Outcome};
pub use crate::report::{SyncAction, SyncEntry};
use crate::soci::IndexVersion;
use crate::status::{resolved_status, State};

/// Which tags `sync` considers, and how.
pub struct SyncOptions {
    /// Whether a tag is wanted (the CLI's `--filter` globs; everything by default).
    pub select: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Images indexed at once (their layer builds share the create options' `concurrency`).
    pub concurrency: usize,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
}

/// What `sync` did, tag by tag.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Every tag of the repository, in the registry's order.
    pub tags: Vec<SyncEntry>,
}

impl SyncReport {
    /// How many tags ended with an action for which `matches` holds.
    pub fn count(&self, matches: impl Fn(&SyncAction) -> bool) -> usize {
        self.tags.iter().filter(|e| matches(&e.action)).count()
    }

    /// Whether any tag failed.
    pub fn any_failed(&self) -> bool {
        self.count(|a| matches!(a, SyncAction::Failed { .. })) > 0
    }
}

/// Indexes every wanted tag of the repository that is not indexed (or is stale, or partial).
/// `sync.concurrency` images at once share `options.concurrency` build slots (unless `options` brings
/// its own): more images at once overlap their registry round trips, never more layer builds.
pub async fn sync<R: Registry>(
    registry: Arc<R>,
    options: &CreateOptions,
    sync: &SyncOptions,
    observer: Arc<dyn Observer>,
) -> Result<SyncReport, Error> {
    let options = &CreateOptions { build_slots: Some(options.slots()), ..options.clone() };
    let tags = registry.list_tags().await.map_err(registry_error("listing tags"))?;
    let archived = registry.archived_tags().await.map_err(registry_error("listing archived images"))?;
    let work = tags.iter().map(|tag| {
        let registry = registry.clone();
        let observer = observer.clone();
        let archived = archived.contains(tag);
        async move {
            let skip = if archived { Some(TagSkipReason::Archived) } else { skip_reason(tag, options, sync) };
            let action = match skip {
                Some(reason) => SyncAction::Skipped { reason },
                None => sync_tag(registry, tag, options, sync.dry_run, observer.clone()).await,
            };
            let entry = SyncEntry { tag: tag.clone(), action };
            observer.tag_finished(&entry);
            entry
        }
    });
    let mut entries: Vec<SyncEntry> =
        futures_util::stream::iter(work).buffer_unordered(sync.concurrency.max(1)).collect().await;
    entries.sort_by_key(|e| tags.iter().position(|t| *t == e.tag));
    Ok(SyncReport { dry_run: sync.dry_run, tags: entries })
}

/// Tags that are SOCI output by name, or that no filter wants.
fn skip_reason(tag: &str, options: &CreateOptions, sync: &SyncOptions) -> Option<TagSkipReason> {
    if options.index_version == IndexVersion::V2 && tag.ends_with(&options.tag_suffix) {
        return Some(TagSkipReason::SociOutput { suffix: options.tag_suffix.clone() });
    }
    if fallback_subject(tag).is_some() {
        return Some(TagSkipReason::ReferrersTag);
    }
    if !(sync.select)(tag) {
        return Some(TagSkipReason::NoFilterMatches);
    }
    None
}

async fn sync_tag<R: Registry>(
    registry: Arc<R>,
    tag: &str,
    options: &CreateOptions,
    dry_run: bool,
    observer: Arc<dyn Observer>,
) -> SyncAction {
    // One read of the image: the status resolves it, and create goes on from there.
    let (image, checked) = match resolved_status(registry.as_ref(), tag, Some(tag), options).await {
        Ok((_, report)) if report.state == State::Indexed => return SyncAction::AlreadyIndexed,
        Ok(resolved) => resolved,
        Err(e) => return failure(e),
    };
    let was = checked.state;
    if dry_run {
        return SyncAction::WouldIndex { state: was };
    }
    let target = Target { reference: tag, tag: Some(tag), started: std::time::Instant::now() };
    match create_resolved(registry, target, image, Some(checked), options, observer).await {
        Ok(report) => match report.outcome {
            Outcome::Created => SyncAction::Indexed {
                was,
                layers_indexed: report.layers_indexed(),
                layers_reused: report.layers_reused(),
            },
            Outcome::AlreadyIndexed => SyncAction::AlreadyIndexed,
            Outcome::NothingToIndex => SyncAction::Skipped { reason: TagSkipReason::NothingEligible },
            Outcome::Superseded => {
                SyncAction::Skipped { reason: TagSkipReason::Superseded { by: report.superseded_by } }
            }
        },
        Err(e) => failure(e),
    }
}

/// Input that can never be indexed is skipped; anything else failed.
fn failure(error: Error) -> SyncAction {
    if error.is_unindexable_input() {
        SyncAction::Skipped { reason: TagSkipReason::Unindexable(chain(&error)) }
    } else {
        SyncAction::Failed { error: chain(&error) }
    }
}
