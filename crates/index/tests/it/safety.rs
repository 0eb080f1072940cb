//! What soci-indexer must never do to a registry it can write to, each on multi-platform images: delete
//! a digest another tag still names, move a tag it does not own, decide on stale reads, trust a cache
//! entry it did not verify, call a broken index indexed, or fail on a manifest someone else deleted.

use crate::support::load;

use std::sync::Arc;

use index::prune::{prune, prune_tag};
use index::testing::{MemoryCache, MemoryRegistry};
use index::{CreateOptions, CreateReport, IndexVersion, Outcome, Registry as _, State, ZtocCache as _};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

fn options(version: IndexVersion) -> CreateOptions {
    CreateOptions {
        index_version: version,
        min_layer_size: 20_000,
        span_size: 32 * 1024,
        ..CreateOptions::new("safety tests")
    }
}

fn layer(seed: u64, entries: usize) -> TestLayer {
    TestLayer::gzip(seed, &LayerConfig { entries, max_file_size: 64 * 1024, pax_percent: 0 }, 6, false)
}

/// Two platforms, one eligible layer each.
fn multi(seed: u64) -> TestImage {
    image(
        Style::Oci,
        vec![
            ("linux/amd64".into(), vec![layer(seed, 30)]),
            ("linux/arm64".into(), vec![layer(seed + 1, 40)]),
        ],
        true,
        false,
    )
}

async fn create_with(registry: &MemoryRegistry, tag: &str, options: &CreateOptions) -> CreateReport {
    index::create(Arc::new(registry.clone()), tag, Some(tag), options, Arc::new(index::Silent)).await.unwrap()
}

async fn create(registry: &MemoryRegistry, tag: &str, version: IndexVersion) -> CreateReport {
    create_with(registry, tag, &options(version)).await
}

/// Every manifest a SOCI image index references (SOCI indexes and annotated manifests) is there.
fn whole(registry: &MemoryRegistry, index_digest: &str) -> bool {
    let Some((_, bytes)) = registry.manifest(index_digest) else { return false };
    let index: index::oci::Index = serde_json::from_slice(&bytes).unwrap();
    index.manifests().iter().all(|d| registry.manifest(&d.digest).is_some())
}

#[tokio::test]
async fn a_promoted_soci_tag_outlives_prune_where_only_our_tag_can_go() {
    for (registry, untags) in [(MemoryRegistry::with_deletes(), false), (MemoryRegistry::like_ecr(), true)] {
        load(&registry, &multi(10), "v1");
        let created = create(&registry, "v1", IndexVersion::V2).await;
        let promoted = created.image_index_digest.clone().unwrap();
        // A team runs from the SOCI tag under a name of its own (`crane tag app:v1-soci prod`).
        registry.insert_manifest(
            Some("prod"),
            index::media::OCI_INDEX,
            registry.manifest("v1-soci").unwrap().1,
        );
        registry.remove_tag("v1");

        let report = prune(&registry, "-soci", false).await.unwrap();
        assert_eq!(registry.tag("prod").as_deref(), Some(promoted.as_str()), "prod stays ({untags})");
        assert!(whole(&registry, &promoted), "and everything it references ({untags})");
        if untags {
            let orphan = &report.orphans[0];
            assert!(orphan.untag && orphan.removed && orphan.remove.is_empty(), "{report:?}");
            assert_eq!(registry.tag("v1-soci"), None, "only our tag went");
        } else {
            assert!(report.orphans.is_empty(), "{report:?}");
            let kept = &report.kept[0];
            assert!(
                kept.tag == "v1-soci" && kept.reason.to_string().contains("also tagged prod"),
                "{report:?}"
            );
            assert!(!registry.pushes().iter().any(|p| p.starts_with("delete ")), "nothing deleted");
        }
    }
}

#[tokio::test]
async fn a_deletion_event_and_a_re_index_keep_a_promoted_index() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &multi(20), "v1");
    let first = create(&registry, "v1", IndexVersion::V2).await;
    let promoted = first.image_index_digest.clone().unwrap();
    registry.insert_manifest(Some("prod"), index::media::OCI_INDEX, registry.manifest("v1-soci").unwrap().1);

    // v1 is re-pushed with another image: create moves v1-soci, and the old index stays for prod.
    load(&registry, &multi(22), "v1");
    let second = create(&registry, "v1", IndexVersion::V2).await;
    assert_eq!(second.outcome, Outcome::Created);
    assert!(second.removed.is_empty(), "{second:?}");
    assert!(second.kept[0].to_string().contains("still tagged prod"), "{second:?}");
    assert!(whole(&registry, &promoted));

    // v1 is deleted: the Lambda's prune_tag removes v1-soci's own index, never prod's.
    registry.remove_tag("v1");
    let pruned = prune_tag(&registry, "v1", "-soci", false).await.unwrap().unwrap().unwrap();
    assert!(pruned.removed, "{pruned:?}");
    assert_eq!(registry.tag("prod").as_deref(), Some(promoted.as_str()));
    assert!(whole(&registry, &promoted));
}

#[tokio::test]
async fn a_users_own_soci_suffixed_tag_is_never_moved() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &multi(30), "x");
    load(&registry, &multi(32), "x-soci"); // a plain image of the user's, named like our output
    let theirs = registry.tag("x-soci").unwrap();
    let v2 = options(IndexVersion::V2);
    let err = index::create(Arc::new(registry.clone()), "x", Some("x"), &v2, Arc::new(index::Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, index::Error::SociTagTaken { .. }), "{err}");
    assert!(err.to_string().contains("--tag-suffix"), "the way out is named: {err}");
    assert!(err.is_unindexable_input(), "an event for it is skipped, not retried");
    assert_eq!(registry.tag("x-soci"), Some(theirs.clone()), "untouched");
    assert!(!registry.pushes().iter().any(|p| p.starts_with("blob ")), "refused before building");
    // v1 has no tag to move: it indexes, and x-soci stays the user's.
    assert_eq!(create(&registry, "x", IndexVersion::V1).await.outcome, Outcome::Created);
    assert_eq!(registry.tag("x-soci"), Some(theirs));
}

#[tokio::test]
async fn prune_looks_again_before_deleting_a_tag_the_listing_missed() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &multi(40), "v1");
    create(&registry, "v1", IndexVersion::V2).await;
    // The listing lags (or v1 was pushed again just after it was read): v1 is live.
    registry.leave_out_of_listing("v1");
    let dry = prune(&registry, "-soci", true).await.unwrap();
    assert!(dry.orphans.is_empty(), "{dry:?}");
    let report = prune(&registry, "-soci", false).await.unwrap();
    assert!(report.orphans.is_empty(), "{report:?}");
    assert!(registry.tag("v1-soci").is_some());
    assert_eq!(
        index::status(&registry, "v1", Some("v1"), &options(IndexVersion::V2)).await.unwrap().state,
        State::Indexed
    );
}

/// Moves a tag to another image as soon as the first layer is built: a newer push landing while an
/// older image is indexed.
struct RepointTag {
    registry: MemoryRegistry,
    tag: &'static str,
    to: TestImage,
}

impl index::Observer for RepointTag {
    fn layer_finished(&self, _report: &index::LayerReport) {
        load(&self.registry, &self.to, self.tag);
    }
}

#[tokio::test]
async fn an_older_create_that_finishes_last_does_not_overwrite_the_newer_index() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &multi(50), "app");
    let newer = multi(52);
    let observer = Arc::new(RepointTag { registry: registry.clone(), tag: "app", to: newer.clone() });
    let older =
        index::create(Arc::new(registry.clone()), "app", Some("app"), &options(IndexVersion::V2), observer)
            .await
            .unwrap();
    assert_eq!(older.outcome, Outcome::Superseded, "{older:?}");
    assert_eq!(older.superseded_by, registry.tag("app"));
    assert_eq!(registry.tag("app-soci"), None, "the older image's index was not tagged");

    let newest = create(&registry, "app", IndexVersion::V2).await;
    assert_eq!(newest.outcome, Outcome::Created);
    let status = index::status(&registry, "app", Some("app"), &options(IndexVersion::V2)).await.unwrap();
    assert_eq!(status.state, State::Indexed, "{status:?}");
}

#[tokio::test]
async fn two_deleted_images_sharing_a_soci_index_are_both_pruned() {
    let registry = MemoryRegistry::with_deletes();
    let (amd, arm) =
        (("linux/amd64".to_string(), vec![layer(60, 30)]), ("linux/arm64".to_string(), vec![layer(61, 30)]));
    // The same platform manifests in two image indexes: one SOCI index manifest each platform, shared
    // (a v2 SOCI index has no subject).
    let a = image(Style::Oci, vec![amd.clone(), arm.clone()], true, false);
    let b = image(Style::Oci, vec![arm, amd], true, false);
    load(&registry, &a, "a");
    load(&registry, &b, "b");
    let (ra, rb) =
        (create(&registry, "a", IndexVersion::V2).await, create(&registry, "b", IndexVersion::V2).await);
    let shared = ra.platforms[0].soci_index_digest.clone().unwrap();
    assert!(rb.platforms.iter().any(|p| p.soci_index_digest.as_ref() == Some(&shared)), "shared");
    registry.remove_tag("a");
    registry.remove_tag("b");
    let report = prune(&registry, "-soci", false).await.unwrap();
    assert_eq!(report.orphans.len(), 2, "{report:?}");
    assert!(report.orphans.iter().all(|o| o.removed), "the second finds the shared one gone: {report:?}");
    assert!(registry.manifest(&shared).is_none());
    let again = prune(&registry, "-soci", false).await.unwrap();
    assert!(again.orphans.is_empty() && again.kept.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_manifest_another_run_deleted_first_counts_as_deleted() {
    for version in [IndexVersion::V2, IndexVersion::V1] {
        let registry = MemoryRegistry::with_deletes();
        load(&registry, &multi(65), "a");
        let created = create(&registry, "a", version).await;
        registry.remove_tag("a");
        for platform in &created.platforms {
            registry.delete_manifest(&platform.manifest_digest).await.unwrap();
        }
        let plan = prune(&registry, "-soci", true).await.unwrap();
        // v2: one `a-soci`; v1: one referrers tag per platform.
        let expected = if version == IndexVersion::V2 { 1 } else { 2 };
        assert_eq!(plan.orphans.len(), expected, "{version}: {plan:?}");
        // Another invocation (the same deletion event delivered twice) removes a SOCI index first.
        let soci = created.platforms[1].soci_index_digest.clone().unwrap();
        assert_eq!(registry.delete_manifest(&soci).await.unwrap(), index::Deletion::Deleted);
        for orphan in &plan.orphans {
            let removed = index::prune::remove(&registry, orphan).await.unwrap();
            assert_eq!(removed, Ok(()), "{version}");
            assert!(orphan.remove.iter().all(|d| registry.manifest(d).is_none()), "{version}");
        }
    }
}

fn cached_options(cache: &Arc<MemoryCache>, max_ztoc_size: u64) -> CreateOptions {
    CreateOptions {
        ztoc_cache: Some(cache.clone() as Arc<dyn index::ZtocCache>),
        max_ztoc_size,
        ..options(IndexVersion::V2)
    }
}

/// The image index a cache-less run makes for `image` with `options`, in a registry of its own.
async fn without_cache(image: &TestImage, options: &CreateOptions) -> CreateReport {
    let fresh = MemoryRegistry::new();
    load(&fresh, image, "t");
    create_with(&fresh, "t", &CreateOptions { ztoc_cache: None, ..options.clone() }).await
}

#[tokio::test]
async fn cache_entries_are_hints_the_registry_must_confirm() {
    let cache = Arc::new(MemoryCache::default());
    let registry = MemoryRegistry::new();
    let img = multi(70);
    load(&registry, &img, "a");
    let opts = cached_options(&cache, index::DEFAULT_MAX_ZTOC_SIZE);
    create_with(&registry, "a", &opts).await;
    let mut entries: Vec<(String, index::CachedZtoc)> = cache.entries().into_iter().collect();
    assert_eq!(entries.len(), 2);
    let expected = without_cache(&img, &opts).await.image_index_digest;

    // A wrong size, then two entries swapped: the layers are built, the index is the cache-less one.
    let (k0, e0) = entries[0].clone();
    cache.put(&k0, &index::CachedZtoc { ztoc_size: e0.ztoc_size + 1, ..e0.clone() }).await.unwrap();
    load(&registry, &img, "b");
    let sized = create_with(&registry, "b", &opts).await;
    assert_eq!((sized.layers_reused(), sized.layers_indexed()), (1, 1), "{:?}", sized.layers);
    assert_eq!(sized.image_index_digest, expected);

    entries = cache.entries().into_iter().collect();
    let ((k0, e0), (k1, e1)) = (entries[0].clone(), entries[1].clone());
    cache.put(&k0, &e1).await.unwrap();
    cache.put(&k1, &e0).await.unwrap();
    load(&registry, &img, "c");
    let swapped = create_with(&registry, "c", &opts).await;
    assert_eq!((swapped.layers_reused(), swapped.layers_indexed()), (0, 2), "{:?}", swapped.layers);
    assert_eq!(swapped.image_index_digest, expected);

    // --max-ztoc-size holds with a cache as without: nothing fits, nothing is indexed.
    let tight = cached_options(&cache, 1_000);
    load(&registry, &img, "d");
    let limited = create_with(&registry, "d", &tight).await;
    assert_eq!(limited.outcome, without_cache(&img, &tight).await.outcome);
    assert_eq!(limited.outcome, Outcome::NothingToIndex);
}

#[tokio::test]
async fn a_mount_the_registry_claims_but_did_not_do_never_fails_indexing() {
    let cache = Arc::new(MemoryCache::default());
    let app = MemoryRegistry::new();
    let img = multi(80);
    load(&app, &img, "a");
    let opts = cached_options(&cache, index::DEFAULT_MAX_ZTOC_SIZE);
    create_with(&app, "a", &opts).await;
    app.claim_mounts_without_doing_them();
    for round in 0..2 {
        let other = app.repository("other");
        load(&other, &img, "a");
        let report = create_with(&other, "a", &CreateOptions { force: true, ..opts.clone() }).await;
        assert_eq!(report.outcome, Outcome::Created, "round {round}");
        let status = index::status(&other, "a", Some("a"), &opts).await.unwrap();
        assert_eq!(status.state, State::Indexed, "round {round}: {status:?}");
    }
}

#[tokio::test]
async fn an_index_that_cannot_work_is_broken_and_create_repairs_it() {
    for version in [IndexVersion::V2, IndexVersion::V1] {
        let registry = MemoryRegistry::with_deletes();
        load(&registry, &multi(90), "a");
        let created = create(&registry, "a", version).await;
        let ztoc = match &created.layers[0].result {
            index::LayerResult::Indexed { ztoc_digest, .. } => ztoc_digest.clone(),
            other => panic!("{other:?}"),
        };
        registry.remove_blob(&ztoc); // garbage collected, or deleted by hand
        let status = index::status(&registry, "a", Some("a"), &options(version)).await.unwrap();
        assert_eq!(status.state, State::Broken, "{version}: {status:?}");
        assert!(status.platforms.iter().any(|p| p.broken.as_deref().is_some_and(|b| b.contains(&ztoc))));
        let repaired = create(&registry, "a", version).await;
        assert_eq!(repaired.outcome, Outcome::Created, "{version}");
        let status = index::status(&registry, "a", Some("a"), &options(version)).await.unwrap();
        assert_eq!(status.state, State::Indexed, "{version}: {status:?}");
    }
}

#[tokio::test]
async fn a_soci_index_covering_none_of_the_layers_is_broken() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &multi(100), "a");
    load(&registry, &multi(102), "b");
    create(&registry, "a", IndexVersion::V2).await;
    let other = create(&registry, "b", IndexVersion::V2).await;
    // a-soci's amd64 manifest is made to name b's amd64 SOCI index (a mix-up an older tool could make).
    let (_, bytes) = registry.manifest("a-soci").unwrap();
    let mut index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let entry =
        index["manifests"].as_array_mut().unwrap().iter_mut().find(|d| d["artifactType"].is_null()).unwrap();
    let (_, manifest) = registry.manifest(entry["digest"].as_str().unwrap()).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    manifest["annotations"]["com.amazon.soci.index-digest"] =
        other.platforms[0].soci_index_digest.clone().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    entry["digest"] = registry.insert_manifest(None, index::media::OCI_MANIFEST, manifest.clone()).into();
    entry["size"] = manifest.len().into();
    registry.insert_manifest(Some("a-soci"), index::media::OCI_INDEX, serde_json::to_vec(&index).unwrap());

    let status = index::status(&registry, "a", Some("a"), &options(IndexVersion::V2)).await.unwrap();
    assert_eq!(status.state, State::Broken, "{status:?}");
    assert!(status.platforms[0].broken.as_deref().unwrap().contains("covers none"), "{status:?}");
    assert_eq!(create(&registry, "a", IndexVersion::V2).await.outcome, Outcome::Created, "repaired");
}

#[tokio::test]
async fn what_a_run_that_fails_before_binding_pushed_is_left_for_the_untagged_sweep_and_nothing_shared_goes()
{
    for (version, shared) in [(IndexVersion::V2, true), (IndexVersion::V2, false), (IndexVersion::V1, false)]
    {
        let registry = MemoryRegistry::with_deletes();
        let layers = vec![
            ("linux/amd64".to_string(), vec![layer(110, 30)]),
            ("linux/arm64".into(), vec![layer(111, 30)]),
        ];
        let mut reversed = layers.clone();
        reversed.reverse();
        // b is indexed first. Shared: c holds b's platform manifests in another index, so c's SOCI index
        // manifests and annotated manifests are b's too (v2); else c is an image of its own.
        let c = if shared { image(Style::Oci, layers, true, false) } else { multi(112) };
        load(&registry, &image(Style::Oci, reversed, true, false), "b");
        load(&registry, &c, "c");
        let b = create(&registry, "b", version).await;
        match version {
            IndexVersion::V2 => registry.refuse_pushes_to("c-soci"),
            IndexVersion::V1 => {
                for (digest, _, _) in &c.manifests {
                    registry.refuse_pushes_to(&digest.replacen(':', "-", 1));
                }
            }
        }
        let before = registry.pushes().len();
        let err = index::create(
            Arc::new(registry.clone()),
            "c",
            Some("c"),
            &options(version),
            Arc::new(index::Silent),
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let pushed: Vec<String> = registry.pushes()[before..]
            .iter()
            .filter_map(|p| p.strip_prefix("manifest ").map(str::to_owned))
            .collect();
        assert!(!pushed.is_empty(), "{version}: the run pushed manifests by digest");
        let bs = b.image_index_digest.as_deref().map(|d| registry.manifest(d).unwrap().1);
        let named_by_b =
            |digest: &str| bs.as_ref().is_some_and(|bytes| String::from_utf8_lossy(bytes).contains(digest));
        // Nothing is deleted at once: the same bytes may be another run's, about to be tagged.
        assert!(pushed.iter().all(|d| registry.manifest(d).is_some()), "{version}: all left, untagged");
        // The sweep of untagged SOCI output removes the run's own and keeps what b's index names. v1 SOCI
        // indexes whose subject exists stay: a referrers API finds them without a tag, and the next run
        // binds them again through the fallback tag.
        let swept =
            index::prune::prune_untagged(&registry, std::time::Duration::ZERO, false).await.unwrap().unwrap();
        let should_stay = |digest: &str| version == IndexVersion::V1 || named_by_b(digest);
        for digest in &pushed {
            let kept = registry.manifest(digest).is_some();
            assert_eq!(kept, should_stay(digest), "{version}: {digest}: {swept:?}");
        }
        if version == IndexVersion::V2 {
            assert_eq!(pushed.iter().all(|d| named_by_b(d)), shared, "shared with b: all kept");
            assert_eq!(pushed.iter().any(|d| registry.manifest(d).is_some()), shared, "else all gone");
        }
        let b = index::status(&registry, "b", Some("b"), &options(version)).await.unwrap();
        assert_eq!(b.state, State::Indexed, "{version}: b's index is whole: {b:?}");
    }
}

#[tokio::test]
async fn untagged_soci_output_past_its_grace_is_removed_and_nothing_else() {
    use index::prune::prune_untagged;
    use std::time::Duration;
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &multi(120), "kept");
    load(&registry, &multi(122), "lost");
    load(&registry, &multi(124), "v1");
    let kept = create(&registry, "kept", IndexVersion::V2).await;
    let lost = create(&registry, "lost", IndexVersion::V2).await;
    let v1 = create(&registry, "v1", IndexVersion::V1).await;
    // lost-soci's tag went (a run cut off between its manifests and its tag leaves the same).
    registry.remove_tag("lost-soci");
    let lost_index = lost.image_index_digest.clone().unwrap();
    let (_, index_bytes) = registry.manifest(&lost_index).unwrap();
    let lost_refs: Vec<String> = serde_json::from_slice::<index::oci::Index>(&index_bytes)
        .unwrap()
        .manifests()
        .iter()
        .map(|d| d.digest.clone())
        .collect();

    // Younger than the grace period: nothing.
    let young = prune_untagged(&registry, Duration::from_secs(3600), false).await.unwrap().unwrap();
    assert!(young.removed.is_empty(), "{young:?}");
    let dry = prune_untagged(&registry, Duration::ZERO, true).await.unwrap().unwrap();
    assert!(registry.manifest(&lost_index).is_some(), "a dry run removes nothing");
    let done = prune_untagged(&registry, Duration::ZERO, false).await.unwrap().unwrap();
    assert_eq!(done.removed, dry.removed);
    assert_eq!(done.removed[0], lost_index, "the index first: {done:?}");
    let mut expected: Vec<String> = std::iter::once(lost_index.clone()).chain(lost_refs).collect();
    expected.sort();
    let mut removed = done.removed.clone();
    removed.sort();
    assert_eq!(removed, expected, "the index, its SOCI indexes and its annotated manifests, nothing else");
    // The images themselves (their platform manifests are untagged too), the v1 SOCI indexes whose
    // subjects exist, and the tagged index stay.
    for (tag, version) in [("kept", IndexVersion::V2), ("v1", IndexVersion::V1)] {
        let status = index::status(&registry, tag, Some(tag), &options(version)).await.unwrap();
        assert_eq!(status.state, State::Indexed, "{tag}: {status:?}");
    }
    for platform in lost.platforms.iter().chain(&kept.platforms).chain(&v1.platforms) {
        assert!(registry.manifest(&platform.manifest_digest).is_some(), "image manifests stay");
    }
    assert!(done.left > 0, "{done:?}");
}
