//! Lifecycle: remove SOCI artifacts whose image is gone, so none outlives its image.
//!
//! * v2: a `<tag><suffix>` whose `<tag>` no longer exists, and only when it really holds SOCI output
//!   (an image index carrying SOCI index descriptors): the image index, then the SOCI index manifests
//!   and annotated manifests it alone references (never one another tagged SOCI index uses).
//! * v1: a `sha256-<hex>` referrers tag whose subject manifest is gone: its SOCI index manifests, and the
//!   tag's index when it lists nothing else (else it is rewritten without them, and the old one left).
//!
//! What may be deleted follows `ownership.rs` (and the repository's `docs/deletion.md`): never a digest
//! another tag points at (then only our tag goes, where the registry can remove one tag, or nothing
//! does). Decisions are made on one reading of the tags; right before each removal, the facts it rests on
//! are read again (the image still gone, the SOCI tag still where it was): what changed in between is
//! reported as superseded, not removed.
//! The tag-bearing index goes first, then what it referenced: a refusal or failure midway leaves
//! unreferenced manifests at worst, never a visible index pointing at deleted ones.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Serialize;

use crate::error::{registry_error, Error};
pub use crate::fallback::fallback_subject;
use crate::media;
use crate::oci::{Descriptor, Index};
use crate::ownership::{self, current_digests, delete_in_order, plan_removal, Removal, TagView};
use crate::reasons::KeepReason;
use crate::registry::Registry;

/// What kind of SOCI output an orphan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrphanKind {
    /// A v2 `<tag><suffix>` image index.
    V2Index,
    /// A v1 referrers fallback tag.
    V1Referrers,
}

/// SOCI output whose image is gone.
#[derive(Clone, Debug, Serialize)]
pub struct Orphan {
    /// The tag that makes it visible.
    pub tag: String,
    /// What it is.
    pub kind: OrphanKind,
    /// The image that is gone: the base tag (v2) or the subject digest (v1).
    pub image: String,
    /// The digest the tag pointed at when this was decided (checked again right before removal).
    pub digest: String,
    /// Manifests to delete, in order (the tag-bearing index first).
    pub remove: Vec<String>,
    /// Other tags share its image index: only the tag itself is removed.
    pub untag: bool,
    /// v1: the tag's index is rewritten without its SOCI entries (it lists other artifacts too).
    pub rewrite: bool,
    /// Whether it was removed (false in a dry run).
    pub removed: bool,
}

/// A `-soci`-looking tag left alone, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    /// The tag.
    pub tag: String,
    /// Why it stays.
    pub reason: KeepReason,
}

/// What `prune` found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// SOCI output whose image is gone.
    pub orphans: Vec<Orphan>,
    /// Tags that look like SOCI output but stay.
    pub kept: Vec<Kept>,
}

/// What [`prune_untagged`] found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UntaggedReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Untagged SOCI output that nothing uses, removed (or, in a dry run, to remove), indexes first.
    pub removed: Vec<String>,
    /// Untagged manifests left alone: not SOCI output, or still used.
    pub left: usize,
}

/// Finds SOCI output that no tag points at, pushed more than `older_than` ago (the manifests of a run
/// that failed or was superseded, an index replaced when a tag another tag shared moved) and that no
/// tagged SOCI index references, and unless `dry_run` removes it. `Ok(None)`: the registry cannot list
/// untagged manifests (the registry API has no such listing; ECR's API does).
pub async fn prune_untagged<R: Registry>(
    registry: &R,
    older_than: std::time::Duration,
    dry_run: bool,
) -> Result<Option<UntaggedReport>, Error> {
    let Some(untagged) = registry
        .untagged_manifests(older_than)
        .await
        .map_err(registry_error("listing untagged manifests"))?
    else {
        return Ok(None);
    };
    let view = TagView::read(registry).await?;
    let nobody = HashSet::new();
    let live = view.live_references(registry, &nobody).await?;
    let mut report = UntaggedReport { dry_run, ..UntaggedReport::default() };
    let (mut indexes, mut others) = (Vec::new(), Vec::new());
    for digest in untagged {
        if live.contains(&digest) || !view.tags_of(&digest, &nobody).is_empty() {
            report.left += 1;
            continue;
        }
        let fetched =
            registry.get_manifest(&digest).await.map_err(registry_error(format!("fetching {digest}")))?;
        let Some(fetched) = fetched else { continue }; // gone meanwhile
        match ownership::unused_soci_output(registry, &fetched.bytes).await? {
            Some(ownership::UntaggedKind::ImageIndex) => indexes.push(digest),
            Some(_) => others.push(digest),
            None => report.left += 1,
        }
    }
    // What makes others reachable goes first.
    report.removed = indexes.into_iter().chain(others).collect();
    if !dry_run {
        if let Err(position) = delete_in_order(registry, "untagged SOCI output", &report.removed).await? {
            return Err(Error::DeletionRefused {
                tag: "untagged SOCI output".into(),
                digest: report.removed[position].clone(),
                removed: position,
            });
        }
    }
    Ok(Some(report))
}

/// A tag that may be SOCI output of an image that is gone.
struct Candidate {
    tag: String,
    kind: OrphanKind,
    /// The base tag (v2) or subject digest (v1).
    image: String,
}

/// Finds SOCI output whose image is gone and, unless `dry_run`, removes it.
pub async fn prune<R: Registry>(registry: &R, tag_suffix: &str, dry_run: bool) -> Result<PruneReport, Error> {
    let view = TagView::read(registry).await?;
    let candidates = candidates(registry, &view, tag_suffix).await?;
    let going: HashSet<&str> = candidates.iter().map(|c| c.tag.as_str()).collect();
    let live = view.live_references(registry, &going).await?;
    let mut report = PruneReport { dry_run, ..PruneReport::default() };
    for candidate in &candidates {
        let found = match candidate.kind {
            OrphanKind::V2Index => v2_orphan(registry, &view, &live, &going, candidate).await?,
            OrphanKind::V1Referrers => v1_orphan(registry, &view, &going, candidate).await?,
        };
        match found {
            Ok(orphan) => report.orphans.push(orphan),
            Err(reason) => report.kept.push(Kept { tag: candidate.tag.clone(), reason }),
        }
    }
    if !dry_run {
        let mut removed = Vec::new();
        for mut orphan in std::mem::take(&mut report.orphans) {
            match remove(registry, &orphan).await? {
                Ok(()) => {
                    orphan.removed = true;
                    removed.push(orphan);
                }
                Err(reason) => report.kept.push(Kept { tag: orphan.tag, reason }),
            }
        }
        report.orphans = removed;
    }
    Ok(report)
}

/// The tags that look like SOCI output of a gone image: `<base><suffix>` without `<base>` (checked
/// with a `HEAD` too: a listing can lag), and `sha256-<hex>` referrers tags.
async fn candidates<R: Registry>(
    registry: &R,
    view: &TagView,
    tag_suffix: &str,
) -> Result<Vec<Candidate>, Error> {
    let mut candidates = Vec::new();
    for tag in view.tags() {
        if let Some(base) = tag.strip_suffix(tag_suffix).filter(|b| !b.is_empty()) {
            if view.has(base) || current_digests(registry, &[base]).await?[base].is_some() {
                continue;
            }
            candidates.push(Candidate { tag: tag.into(), kind: OrphanKind::V2Index, image: base.into() });
        } else if let Some(subject) = fallback_subject(tag) {
            candidates.push(Candidate { tag: tag.into(), kind: OrphanKind::V1Referrers, image: subject });
        }
    }
    Ok(candidates)
}

/// Removes one orphan, after checking again that its image is still gone and its tag still points
/// where it did. `Ok(Err(reason))`: something changed since, and nothing was removed.
pub async fn remove<R: Registry>(registry: &R, orphan: &Orphan) -> Result<Result<(), KeepReason>, Error> {
    let tag = orphan.tag.as_str();
    let image_back = match orphan.kind {
        OrphanKind::V2Index => current_digests(registry, &[&orphan.image]).await?[&orphan.image].is_some(),
        OrphanKind::V1Referrers => registry
            .get_manifest(&orphan.image)
            .await
            .map_err(registry_error(format!("checking {}", orphan.image)))?
            .is_some(),
    };
    if image_back {
        return Ok(Err(KeepReason::ImageBack { image: orphan.image.clone() }));
    }
    let now = current_digests(registry, &[tag]).await?.remove(tag).flatten();
    if let Some(now) = now.as_ref().filter(|now| **now != orphan.digest) {
        let (tag, now, was) = (tag.to_owned(), now.clone(), orphan.digest.clone());
        return Ok(Err(KeepReason::TagMoved { tag, now, was }));
    }
    // `now` is None: another run or event removed the tag already; what it referenced may remain.
    if orphan.untag {
        if now.is_some()
            && !registry.untag(tag).await.map_err(registry_error(format!("removing the tag {tag}")))?
        {
            return Ok(Err(KeepReason::CannotUntag { tag: tag.to_owned() }));
        }
        return Ok(Ok(()));
    }
    if orphan.rewrite && now.is_some() {
        rewrite_without_soci(registry, tag).await?;
    }
    match delete_in_order(registry, tag, &orphan.remove).await? {
        Ok(()) => Ok(Ok(())),
        Err(position) => Err(Error::DeletionRefused {
            tag: tag.into(),
            digest: orphan.remove[position].clone(),
            removed: position,
        }),
    }
}

/// `Ok(orphan)`, or `Err(why it stays)`.
async fn v2_orphan<R: Registry>(
    registry: &R,
    view: &TagView,
    live: &HashSet<String>,
    going: &HashSet<&str>,
    candidate: &Candidate,
) -> Result<Result<Orphan, KeepReason>, Error> {
    let Some((digest, index)) = ownership::soci_image_index(registry, &candidate.tag).await? else {
        return Ok(Err(KeepReason::NotSociOutput));
    };
    let (remove, untag) = match plan_removal(registry, view, live, going, &digest, &index) {
        Removal::Keep(reason) => return Ok(Err(reason)),
        Removal::Untag => (Vec::new(), true),
        Removal::Delete(remove) => (remove, false),
    };
    Ok(Ok(Orphan {
        tag: candidate.tag.clone(),
        kind: OrphanKind::V2Index,
        image: candidate.image.clone(),
        digest,
        remove,
        untag,
        rewrite: false,
        removed: false,
    }))
}

async fn v1_orphan<R: Registry>(
    registry: &R,
    view: &TagView,
    going: &HashSet<&str>,
    candidate: &Candidate,
) -> Result<Result<Orphan, KeepReason>, Error> {
    let (tag, subject) = (candidate.tag.as_str(), candidate.image.as_str());
    if registry.get_manifest(subject).await.map_err(registry_error(format!("fetching {subject}")))?.is_some()
    {
        return Ok(Err(KeepReason::SubjectExists));
    }
    let Some(fetched) =
        registry.get_manifest(tag).await.map_err(registry_error(format!("fetching {tag}")))?
    else {
        return Ok(Err(KeepReason::Gone));
    };
    let Ok(index) = serde_json::from_slice::<Index>(&fetched.bytes) else {
        return Ok(Err(KeepReason::NotReferrersIndex));
    };
    let (soci, other): (Vec<&Descriptor>, Vec<&Descriptor>) =
        index.manifests().iter().partition(|d| d.artifact_type == media::SOCI_INDEX_V1);
    if soci.is_empty() {
        return Ok(Err(KeepReason::NoSociIndex));
    }
    let shared = view.tags_of(&fetched.digest, going);
    if !shared.is_empty() {
        return Ok(Err(KeepReason::ReferrersIndexAlsoTagged { tags: ownership::owned(shared) }));
    }
    // Listing other artifacts too, the index is not ours alone: it is rewritten without our entries,
    // and the old one is left (untagged) rather than deleted.
    let rewrite = !other.is_empty();
    let mut remove = if rewrite { Vec::new() } else { vec![fetched.digest.clone()] };
    remove.extend(soci.iter().map(|d| d.digest.clone()).filter(|d| view.tags_of(d, going).is_empty()));
    Ok(Ok(Orphan {
        tag: tag.into(),
        kind: OrphanKind::V1Referrers,
        image: subject.into(),
        digest: fetched.digest,
        remove,
        untag: false,
        rewrite,
        removed: false,
    }))
}

/// Pushes the referrers index of `tag` without its SOCI entries.
async fn rewrite_without_soci<R: Registry>(registry: &R, tag: &str) -> Result<(), Error> {
    let Some(fetched) =
        registry.get_manifest(tag).await.map_err(registry_error(format!("fetching {tag}")))?
    else {
        return Ok(());
    };
    let mut index: Index = crate::resolve::parse(&fetched.digest, &fetched.bytes)?;
    if let Some(manifests) = index.manifests.as_mut() {
        manifests.retain(|d| d.artifact_type != media::SOCI_INDEX_V1);
    }
    registry
        .push_manifest(tag, media::OCI_INDEX, Bytes::from(index.to_json()))
        .await
        .map_err(registry_error(format!("rewriting {tag}")))?;
    Ok(())
}

/// Removes `<tag><suffix>` and what it alone references, if `tag` is gone and it is SOCI output (the
/// Lambda's answer to the deletion of one tag). `Ok(None)`: nothing to remove (the tag exists again,
/// or there is no SOCI output for it); `Err(reason)` inside: why it stays.
pub async fn prune_tag<R: Registry>(
    registry: &R,
    tag: &str,
    tag_suffix: &str,
    dry_run: bool,
) -> Result<Option<Result<Orphan, KeepReason>>, Error> {
    let soci_tag = format!("{tag}{tag_suffix}");
    let now = current_digests(registry, &[tag, &soci_tag]).await?;
    if now[tag].is_some() || now[&soci_tag].is_none() {
        return Ok(None);
    }
    let view = TagView::read(registry).await?;
    let going = HashSet::from([soci_tag.as_str()]);
    let live = view.live_references(registry, &going).await?;
    let candidate = Candidate { tag: soci_tag.clone(), kind: OrphanKind::V2Index, image: tag.into() };
    let mut found = v2_orphan(registry, &view, &live, &going, &candidate).await?;
    if let (Ok(orphan), false) = (&mut found, dry_run) {
        match remove(registry, orphan).await? {
            Ok(()) => orphan.removed = true,
            Err(reason) => found = Err(reason),
        }
    }
    Ok(Some(found))
}
