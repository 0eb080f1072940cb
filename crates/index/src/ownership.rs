//! What soci-indexer may delete, decided on what the registry says now.
//!
//! A manifest DELETE by digest removes every tag of that digest (in distribution and in ECR), so a
//! digest is deleted only when it is SOCI output (an image index with SOCI indexes, or a manifest such an
//! index references) and no tag other than the one being removed points at it, and no tagged SOCI image
//! index still references it. When another tag shares the digest (a user promoted `v1-soci` to `prod`),
//! only our tag goes, on a registry that can remove one tag (ECR's `BatchDeleteImage` by tag); anywhere
//! else nothing is deleted and the reason is reported. A 404 on DELETE means already gone.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures_util::StreamExt;

use crate::error::{registry_error, Error};
use crate::media;
use crate::oci::Index;
use crate::reasons::KeepReason;
use crate::registry::{Deletion, Registry, TagTarget};

/// Manifests fetched at once while looking for tagged SOCI image indexes.
const FETCHES_IN_FLIGHT: usize = 8;

/// Every tag of the repository and what it points at, read once, just before deciding.
#[derive(Clone, Debug, Default)]
pub(crate) struct TagView {
    targets: Vec<TagTarget>,
}

impl TagView {
    /// Reads every tag and its digest now.
    pub(crate) async fn read<R: Registry>(registry: &R) -> Result<TagView, Error> {
        let targets =
            registry.tag_targets().await.map_err(registry_error("listing tags and their digests"))?;
        Ok(TagView { targets })
    }

    /// The tags, in the registry's order.
    pub(crate) fn tags(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.tag.as_str())
    }

    /// Whether `tag` exists.
    pub(crate) fn has(&self, tag: &str) -> bool {
        self.targets.iter().any(|t| t.tag == tag)
    }

    /// The tags pointing at `digest`, except those in `going` (being removed in this run).
    pub(crate) fn tags_of<'a>(&'a self, digest: &str, going: &HashSet<&str>) -> Vec<&'a str> {
        let pointing = self.targets.iter().filter(|t| t.digest == digest && !going.contains(t.tag.as_str()));
        pointing.map(|t| t.tag.as_str()).collect()
    }

    /// Every manifest that a SOCI image index pointed at by a tag (other than those in `excluding`)
    /// references, and those indexes themselves: what a deletion must leave in place.
    pub(crate) async fn live_references<R: Registry>(
        &self,
        registry: &R,
        excluding: &HashSet<&str>,
    ) -> Result<HashSet<String>, Error> {
        let digests: BTreeSet<&str> = self
            .targets
            .iter()
            .filter(|t| !excluding.contains(t.tag.as_str()) && may_be_index(t.media_type.as_deref()))
            .map(|t| t.digest.as_str())
            .collect();
        let fetches =
            digests.into_iter().map(|digest| async move { soci_image_index(registry, digest).await });
        let found: Vec<Result<Option<(String, Index)>, Error>> =
            futures_util::stream::iter(fetches).buffer_unordered(FETCHES_IN_FLIGHT).collect().await;
        let mut live = HashSet::new();
        for soci in found {
            if let Some((digest, index)) = soci? {
                live.insert(digest);
                live.extend(soci_references(&index));
            }
        }
        Ok(live)
    }
}

/// Whether a manifest of this media type can be an image index (unknown: maybe).
fn may_be_index(media_type: Option<&str>) -> bool {
    media_type.is_none_or(|m| m == media::OCI_INDEX || m == media::DOCKER_MANIFEST_LIST)
}

/// The image index at `reference` (tag or digest), if it is SOCI output: an index carrying SOCI index
/// descriptors. Its digest, as the registry serves it.
pub(crate) async fn soci_image_index<R: Registry>(
    registry: &R,
    reference: &str,
) -> Result<Option<(String, Index)>, Error> {
    let Some(fetched) =
        registry.get_manifest(reference).await.map_err(registry_error(format!("fetching {reference}")))?
    else {
        return Ok(None);
    };
    Ok(as_soci_image_index(&fetched.bytes).map(|index| (fetched.digest, index)))
}

/// `bytes` as a SOCI image index, if that is what they are.
pub(crate) fn as_soci_image_index(bytes: &[u8]) -> Option<Index> {
    let index = serde_json::from_slice::<Index>(bytes).ok()?;
    index.manifests().iter().any(|d| d.artifact_type == media::SOCI_INDEX_V2).then_some(index)
}

/// The manifests a SOCI image index made: each SOCI index manifest and the annotated image manifest
/// it belongs to.
pub(crate) fn soci_references(index: &Index) -> Vec<String> {
    let mut references = Vec::new();
    for soci in index.manifests().iter().filter(|d| d.artifact_type == media::SOCI_INDEX_V2) {
        if let Some(manifest) = soci.annotation(media::ANNOTATION_IMAGE_MANIFEST_DIGEST) {
            references.push(manifest.to_owned());
        }
        references.push(soci.digest.clone());
    }
    references
}

/// How one SOCI tag's output can go without touching anything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Delete these digests in order (the tag-bearing index first): nothing else points at them.
    Delete(Vec<String>),
    /// Other tags share the index: remove only our tag (the registry can).
    Untag,
    /// Leave everything, for this reason.
    Keep(KeepReason),
}

/// Tags as a reason names them.
pub(crate) fn owned(tags: Vec<&str>) -> Vec<String> {
    tags.into_iter().map(str::to_owned).collect()
}

/// Decides how a tag pointing at the SOCI image index `digest` goes. `going`: the tags this run removes
/// (that tag among them); `live`: what SOCI indexes tagged by any other tag still reference.
pub(crate) fn plan_removal<R: Registry>(
    registry: &R,
    view: &TagView,
    live: &HashSet<String>,
    going: &HashSet<&str>,
    digest: &str,
    index: &Index,
) -> Removal {
    let others = view.tags_of(digest, going);
    if !others.is_empty() {
        if registry.can_untag() {
            return Removal::Untag;
        }
        return Removal::Keep(KeepReason::IndexAlsoTagged { digest: digest.to_owned(), tags: owned(others) });
    }
    let mut remove = vec![digest.to_owned()];
    let referenced: BTreeSet<String> = soci_references(index)
        .into_iter()
        .filter(|d| !live.contains(d) && view.tags_of(d, going).is_empty())
        .collect();
    remove.extend(referenced);
    Removal::Delete(remove)
}

/// Deletes `digests` in order; a manifest already gone counts as deleted. `Ok(Err(position))`: the
/// registry refused the one at `position` (deletion disabled).
pub(crate) async fn delete_in_order<R: Registry>(
    registry: &R,
    what: &str,
    digests: &[String],
) -> Result<Result<(), usize>, Error> {
    for (position, digest) in digests.iter().enumerate() {
        let deletion = registry
            .delete_manifest(digest)
            .await
            .map_err(registry_error(format!("deleting {digest} ({what})")))?;
        match deletion {
            Deletion::Deleted => {}
            Deletion::AlreadyGone => {
                tracing::debug!(%digest, %what, "already deleted (by another run or event)");
            }
            Deletion::Refused => return Ok(Err(position)),
        }
    }
    Ok(Ok(()))
}

/// The digest each of `tags` points at now (a `HEAD` each): the facts a deletion re-checks right
/// before it is made.
pub(crate) async fn current_digests<R: Registry>(
    registry: &R,
    tags: &[&str],
) -> Result<HashMap<String, Option<String>>, Error> {
    let mut now = HashMap::new();
    for tag in tags {
        let target = registry.resolve_tag(tag).await.map_err(registry_error(format!("checking {tag}")))?;
        now.insert((*tag).to_owned(), target.map(|t| t.digest));
    }
    Ok(now)
}

/// What became of an index that `<tag><suffix>` no longer holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Replaced {
    /// Deleted (the index first).
    pub(crate) removed: Vec<String>,
    /// Why it stayed, if it did.
    pub(crate) kept: Option<KeepReason>,
}

/// After `<tag><suffix>` moved to a new index: removes the replaced index `old` and the manifests only it
/// referenced, unless a tag still points at it (a user's promoted copy: then it stays, reported).
pub(crate) async fn remove_replaced<R: Registry>(registry: &R, old: &str) -> Result<Replaced, Error> {
    let view = TagView::read(registry).await?;
    let nobody = HashSet::new();
    let still_tagged = view.tags_of(old, &nobody);
    if !still_tagged.is_empty() {
        let kept = KeepReason::ReplacedStillTagged { digest: old.to_owned(), tags: owned(still_tagged) };
        return Ok(Replaced { removed: Vec::new(), kept: Some(kept) });
    }
    let Some((_, index)) = soci_image_index(registry, old).await? else {
        return Ok(Replaced::default()); // gone already, or not SOCI output
    };
    let live = view.live_references(registry, &nobody).await?;
    let remove = match plan_removal(registry, &view, &live, &nobody, old, &index) {
        Removal::Delete(remove) => remove,
        Removal::Untag => return Ok(Replaced::default()),
        Removal::Keep(reason) => return Ok(Replaced { removed: Vec::new(), kept: Some(reason) }),
    };
    match delete_in_order(registry, &format!("the replaced index {old}"), &remove).await? {
        Ok(()) => Ok(Replaced { removed: remove, kept: None }),
        Err(position) => Err(Error::DeletionRefused {
            tag: format!("the replaced index {old}"),
            digest: remove[position].clone(),
            removed: position,
        }),
    }
}

/// Deletes `digest` if no tag points at it now. `Ok(false)`: a tag does, or the registry refused.
pub(crate) async fn delete_if_untagged<R: Registry>(registry: &R, digest: &str) -> Result<bool, Error> {
    let view = TagView::read(registry).await?;
    if !view.tags_of(digest, &HashSet::new()).is_empty() {
        return Ok(false);
    }
    let deleted = delete_in_order(registry, digest, &[digest.to_owned()]).await?;
    Ok(deleted.is_ok())
}

/// What an untagged manifest is, when it is SOCI output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UntaggedKind {
    /// A v2 image index with SOCI indexes (a replaced or never bound `<tag><suffix>`).
    ImageIndex,
    /// An image manifest annotated with its SOCI index (v2's converted manifest).
    Converted,
    /// A SOCI index manifest (v2; or v1 whose subject is gone).
    SociIndex,
}

/// Whether the untagged manifest `bytes` is soci-indexer's output that nothing uses: `None` when it is
/// someone else's (an image, a signature) or still in use (a v1 SOCI index whose subject exists is
/// found through the referrers API without any tag).
pub(crate) async fn unused_soci_output<R: Registry>(
    registry: &R,
    bytes: &[u8],
) -> Result<Option<UntaggedKind>, Error> {
    if as_soci_image_index(bytes).is_some() {
        return Ok(Some(UntaggedKind::ImageIndex));
    }
    let Ok(manifest) = serde_json::from_slice::<crate::oci::Manifest>(bytes) else { return Ok(None) };
    let soci_type = |t: &str| t == media::SOCI_INDEX_V2 || t == media::SOCI_INDEX_V1;
    if soci_type(&manifest.artifact_type) || soci_type(&manifest.config.media_type) {
        if let Some(subject) = &manifest.subject {
            let found = registry
                .get_manifest(&subject.digest)
                .await
                .map_err(registry_error(format!("fetching {}", subject.digest)))?;
            if found.is_some() {
                return Ok(None);
            }
        }
        return Ok(Some(UntaggedKind::SociIndex));
    }
    let annotated =
        manifest.annotations.as_ref().is_some_and(|a| a.contains_key(media::ANNOTATION_INDEX_DIGEST));
    Ok(annotated.then_some(UntaggedKind::Converted))
}
