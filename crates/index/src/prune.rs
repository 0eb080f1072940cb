//! Lifecycle: remove SOCI artifacts whose image is gone, so none outlives its image.
//!
//! * v2: a `<tag><suffix>` whose `<tag>` no longer exists, and only when it really holds SOCI output
//!   (an image index carrying SOCI index descriptors): the image index, then the SOCI index manifests
//!   and annotated manifests it alone references (never one another live `-soci` index uses).
//! * v1: a `sha256-<hex>` referrers tag whose subject manifest is gone: its SOCI index manifests, and the
//!   tag's index (rewritten without them when it also lists other artifacts, such as signatures).
//!
//! The tag-bearing index goes first, then what it referenced: a refusal or failure midway leaves
//! unreferenced manifests at worst, never a visible index pointing at deleted ones.

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;
use serde::Serialize;

use crate::error::{registry_error, Error};
use crate::media;
use crate::oci::{Descriptor, Index};
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
    /// Manifests to delete, in order (the tag-bearing index first).
    pub remove: Vec<String>,
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
    pub reason: String,
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

/// Finds SOCI output whose image is gone and, unless `dry_run`, removes it.
pub async fn prune<R: Registry>(registry: &R, tag_suffix: &str, dry_run: bool) -> Result<PruneReport, Error> {
    let tags = registry.list_tags().await.map_err(registry_error("listing tags"))?;
    let mut report = PruneReport { dry_run, ..PruneReport::default() };
    let live = live_soci_references(registry, &tags, tag_suffix).await?;
    for tag in &tags {
        let found = if let Some(base) = tag.strip_suffix(tag_suffix).filter(|b| !b.is_empty()) {
            if tags.iter().any(|t| t == base) {
                continue;
            }
            v2_orphan(registry, tag, base, &live).await?
        } else if let Some(subject) = fallback_subject(tag) {
            v1_orphan(registry, tag, &subject).await?
        } else {
            continue;
        };
        match found {
            Ok(orphan) => report.orphans.push(orphan),
            Err(reason) => report.kept.push(Kept { tag: tag.clone(), reason }),
        }
    }
    if !dry_run {
        for orphan in &mut report.orphans {
            remove(registry, orphan).await?;
            orphan.removed = true;
        }
    }
    Ok(report)
}

/// Removes one orphan: the tag-bearing index first (or its rewrite), then what it referenced.
pub async fn remove<R: Registry>(registry: &R, orphan: &Orphan) -> Result<(), Error> {
    if orphan.rewrite {
        rewrite_without_soci(registry, &orphan.tag).await?;
    }
    delete_in_order(registry, &orphan.tag, &orphan.remove).await
}

/// Deletes `digests` in order (what makes something visible first); `what` names them in errors.
async fn delete_in_order<R: Registry>(registry: &R, what: &str, digests: &[String]) -> Result<(), Error> {
    for (position, digest) in digests.iter().enumerate() {
        let deleted = registry
            .delete_manifest(digest)
            .await
            .map_err(registry_error(format!("deleting {digest} ({what})")))?;
        if !deleted {
            return Err(Error::DeletionRefused {
                tag: what.into(),
                digest: digest.clone(),
                removed: position,
            });
        }
    }
    Ok(())
}

/// Every manifest that a live `<tag><suffix>` index references, and those indexes themselves.
async fn live_soci_references<R: Registry>(
    registry: &R,
    tags: &[String],
    tag_suffix: &str,
) -> Result<HashSet<String>, Error> {
    let mut live = HashSet::new();
    for tag in tags {
        let Some(base) = tag.strip_suffix(tag_suffix).filter(|b| !b.is_empty()) else { continue };
        if !tags.iter().any(|t| t == base) {
            continue;
        }
        if let Some((digest, index)) = soci_index_at(registry, tag).await? {
            live.insert(digest);
            live.extend(v2_references(&index));
        }
    }
    Ok(live)
}

/// The tag's image index, if it is SOCI output (an index with SOCI v2 descriptors).
async fn soci_index_at<R: Registry>(registry: &R, tag: &str) -> Result<Option<(String, Index)>, Error> {
    let Some(fetched) =
        registry.get_manifest(tag).await.map_err(registry_error(format!("fetching {tag}")))?
    else {
        return Ok(None);
    };
    let Ok(index) = serde_json::from_slice::<Index>(&fetched.bytes) else { return Ok(None) };
    let is_soci = index.manifests().iter().any(|d| d.artifact_type == media::SOCI_INDEX_V2);
    Ok(is_soci.then_some((fetched.digest, index)))
}

/// The manifests a v2 index made: each SOCI index manifest and the annotated manifest it belongs to.
fn v2_references(index: &Index) -> Vec<String> {
    let mut references = Vec::new();
    for soci in index.manifests().iter().filter(|d| d.artifact_type == media::SOCI_INDEX_V2) {
        if let Some(manifest) = soci.annotation(media::ANNOTATION_IMAGE_MANIFEST_DIGEST) {
            references.push(manifest.to_owned());
        }
        references.push(soci.digest.clone());
    }
    references
}

/// `Ok(orphan)`, or `Err(why it stays)`.
async fn v2_orphan<R: Registry>(
    registry: &R,
    tag: &str,
    base: &str,
    live: &HashSet<String>,
) -> Result<Result<Orphan, String>, Error> {
    let Some((digest, index)) = soci_index_at(registry, tag).await? else {
        return Ok(Err("not SOCI output (no image index with SOCI indexes): a tag of its own".into()));
    };
    if live.contains(&digest) {
        return Ok(Err("its image index is also a live SOCI tag's".into()));
    }
    let mut remove = vec![digest];
    let unique: BTreeSet<String> = v2_references(&index).into_iter().filter(|d| !live.contains(d)).collect();
    remove.extend(unique);
    Ok(Ok(Orphan {
        tag: tag.into(),
        kind: OrphanKind::V2Index,
        image: base.into(),
        remove,
        rewrite: false,
        removed: false,
    }))
}

async fn v1_orphan<R: Registry>(
    registry: &R,
    tag: &str,
    subject: &str,
) -> Result<Result<Orphan, String>, Error> {
    if registry.get_manifest(subject).await.map_err(registry_error(format!("fetching {subject}")))?.is_some()
    {
        return Ok(Err("its subject exists".into()));
    }
    let Some(fetched) =
        registry.get_manifest(tag).await.map_err(registry_error(format!("fetching {tag}")))?
    else {
        return Ok(Err("gone".into()));
    };
    let Ok(index) = serde_json::from_slice::<Index>(&fetched.bytes) else {
        return Ok(Err("not a referrers index".into()));
    };
    let (soci, other): (Vec<&Descriptor>, Vec<&Descriptor>) =
        index.manifests().iter().partition(|d| d.artifact_type == media::SOCI_INDEX_V1);
    if soci.is_empty() {
        return Ok(Err("lists no SOCI index".into()));
    }
    let rewrite = !other.is_empty();
    // Rewritten: the old index is untagged once the new one is pushed, and goes too.
    let mut remove = vec![fetched.digest];
    remove.extend(soci.iter().map(|d| d.digest.clone()));
    Ok(Ok(Orphan {
        tag: tag.into(),
        kind: OrphanKind::V1Referrers,
        image: subject.into(),
        remove,
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

/// The subject digest of a referrers fallback tag (`sha256-<64 hex>`).
pub fn fallback_subject(tag: &str) -> Option<String> {
    let hex = tag.strip_prefix("sha256-")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// The digest of the SOCI image index `tag` holds now, if it holds one.
pub async fn soci_index_digest<R: Registry>(registry: &R, tag: &str) -> Result<Option<String>, Error> {
    Ok(soci_index_at(registry, tag).await?.map(|(digest, _)| digest))
}

/// After `<tag><suffix>` moved to a new index: removes the replaced index `old` and the manifests only
/// it referenced (none that a live `-soci` index, the new one included, still uses). Returns what was
/// removed; a registry that refuses deletion is an error the caller may only report.
pub async fn remove_replaced<R: Registry>(
    registry: &R,
    old: &str,
    tag_suffix: &str,
) -> Result<Vec<String>, Error> {
    let tags = registry.list_tags().await.map_err(registry_error("listing tags"))?;
    let live = live_soci_references(registry, &tags, tag_suffix).await?;
    if live.contains(old) {
        return Ok(Vec::new());
    }
    let Some(fetched) =
        registry.get_manifest(old).await.map_err(registry_error(format!("fetching {old}")))?
    else {
        return Ok(Vec::new());
    };
    let index: Index = crate::resolve::parse(&fetched.digest, &fetched.bytes)?;
    let mut remove = vec![old.to_owned()];
    remove.extend(v2_references(&index).into_iter().filter(|d| !live.contains(d)).collect::<BTreeSet<_>>());
    delete_in_order(registry, &format!("the replaced index {old}"), &remove).await?;
    Ok(remove)
}

/// Removes `<tag><suffix>` and what it alone references, if `tag` is gone and it is SOCI output (the
/// Lambda's answer to the deletion of one tag). `Ok(None)`: nothing to remove (the tag exists again,
/// or there is no SOCI output for it); `Err(reason)` inside: why it stays.
pub async fn prune_tag<R: Registry>(
    registry: &R,
    tag: &str,
    tag_suffix: &str,
    dry_run: bool,
) -> Result<Option<Result<Orphan, String>>, Error> {
    let tags = registry.list_tags().await.map_err(registry_error("listing tags"))?;
    let soci_tag = format!("{tag}{tag_suffix}");
    if tags.iter().any(|t| t == tag) || !tags.contains(&soci_tag) {
        return Ok(None);
    }
    let live = live_soci_references(registry, &tags, tag_suffix).await?;
    let mut found = v2_orphan(registry, &soci_tag, tag, &live).await?;
    if let Ok(orphan) = &mut found {
        if !dry_run {
            remove(registry, orphan).await?;
            orphan.removed = true;
        }
    }
    Ok(Some(found))
}
