//! sync, prune and create's clean-up against the in-memory registry (with deletes).

use crate::support::load;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use index::prune::{prune, OrphanKind};
use index::sync::{sync, SyncAction, SyncOptions};
use index::testing::MemoryRegistry;
use index::{CreateOptions, IndexVersion, Registry as _, State};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

fn options(version: IndexVersion) -> CreateOptions {
    CreateOptions {
        index_version: version,
        min_layer_size: 20_000,
        span_size: 32 * 1024,
        ..CreateOptions::new("lifecycle tests")
    }
}

fn layer(seed: u64) -> TestLayer {
    TestLayer::gzip(seed, &LayerConfig { entries: 30, max_file_size: 64 * 1024, pax_percent: 0 }, 6, false)
}

fn one_layer(seed: u64) -> TestImage {
    image(Style::Oci, vec![("linux/amd64".into(), vec![layer(seed)])], false, false)
}

async fn create(registry: &MemoryRegistry, tag: &str, version: IndexVersion) -> index::CreateReport {
    index::create(Arc::new(registry.clone()), tag, Some(tag), &options(version), Arc::new(index::Silent))
        .await
        .unwrap()
}

fn everything(dry_run: bool) -> SyncOptions {
    SyncOptions { select: Box::new(|_| true), concurrency: 2, dry_run }
}

fn action<'a>(report: &'a index::sync::SyncReport, tag: &str) -> &'a SyncAction {
    &report.tags.iter().find(|e| e.tag == tag).unwrap_or_else(|| panic!("{tag} in {report:?}")).action
}

/// Counts the layers being built at once; each build is held a little so that overlaps show.
#[derive(Default)]
struct InFlight {
    building: Mutex<HashSet<String>>,
    most: AtomicUsize,
}

impl index::Observer for InFlight {
    fn layer_started(&self, digest: &str, _size: u64) {
        let mut building = self.building.lock().unwrap();
        building.insert(digest.into());
        self.most.fetch_max(building.len(), Ordering::SeqCst);
        drop(building);
        std::thread::sleep(Duration::from_millis(40));
    }

    fn layer_finished(&self, report: &index::LayerReport) {
        self.building.lock().unwrap().remove(&report.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_synced_at_once_share_the_layer_build_slots() {
    for slots in [1, 2] {
        let registry = MemoryRegistry::with_deletes();
        for image in 0..4 {
            load(&registry, &one_layer(20 + image), &format!("v{image}"));
        }
        let observer = Arc::new(InFlight::default());
        let options = CreateOptions { concurrency: slots, ..options(IndexVersion::V2) };
        let four_at_once = SyncOptions { concurrency: 4, ..everything(false) };
        let report =
            sync(Arc::new(registry.clone()), &options, &four_at_once, observer.clone()).await.unwrap();
        assert_eq!(report.count(|a| matches!(a, SyncAction::Indexed { .. })), 4, "{report:?}");
        assert_eq!(
            observer.most.load(Ordering::SeqCst),
            slots,
            "four images at once build {slots} layer(s) at a time, not four"
        );
    }
}

#[tokio::test]
async fn sync_indexes_what_needs_it_and_a_dry_run_changes_nothing() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &one_layer(1), "indexed");
    load(&registry, &one_layer(2), "stale");
    load(&registry, &one_layer(3), "never");
    load(&registry, &one_layer(4), "other");
    create(&registry, "indexed", IndexVersion::V2).await;
    create(&registry, "stale", IndexVersion::V2).await;
    load(&registry, &one_layer(5), "stale"); // re-pointed since
    let pushes = registry.pushes().len();

    let dry = sync(
        Arc::new(registry.clone()),
        &options(IndexVersion::V2),
        &everything(true),
        Arc::new(index::Silent),
    )
    .await
    .unwrap();
    assert_eq!(registry.pushes().len(), pushes, "a dry run pushes nothing");
    assert!(matches!(action(&dry, "indexed"), SyncAction::AlreadyIndexed));
    assert!(matches!(action(&dry, "stale"), SyncAction::WouldIndex { state: State::Stale }));
    assert!(matches!(action(&dry, "never"), SyncAction::WouldIndex { state: State::NotIndexed }));
    assert!(matches!(
        action(&dry, "indexed-soci"),
        SyncAction::Skipped { reason: index::TagSkipReason::SociOutput { .. } }
    ));

    let select = SyncOptions { select: Box::new(|tag| tag != "other"), ..everything(false) };
    let done = sync(Arc::new(registry.clone()), &options(IndexVersion::V2), &select, Arc::new(index::Silent))
        .await
        .unwrap();
    assert!(matches!(action(&done, "indexed"), SyncAction::AlreadyIndexed));
    assert!(matches!(
        action(&done, "stale"),
        SyncAction::Indexed { was: State::Stale, layers_indexed: 1, .. }
    ));
    assert!(matches!(action(&done, "never"), SyncAction::Indexed { was: State::NotIndexed, .. }));
    assert!(matches!(
        action(&done, "other"),
        SyncAction::Skipped { reason: index::TagSkipReason::NoFilterMatches }
    ));
    assert!(!done.any_failed());
    for tag in ["indexed", "stale", "never"] {
        let state = index::status(&registry, tag, Some(tag), &options(IndexVersion::V2)).await.unwrap().state;
        assert_eq!(state, State::Indexed, "{tag}");
    }
    assert_eq!(done.tags.len(), 6, "the tags as listed, before never-soci was pushed: {done:?}");
}

#[tokio::test]
async fn re_indexing_a_re_pointed_tag_removes_the_replaced_index() {
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &one_layer(10), "app");
    let first = create(&registry, "app", IndexVersion::V2).await;
    let old_index = first.image_index_digest.clone().unwrap();
    let old_soci = first.platforms[0].soci_index_digest.clone().unwrap();
    load(&registry, &one_layer(11), "app");
    let second = create(&registry, "app", IndexVersion::V2).await;
    assert_ne!(second.image_index_digest.as_deref(), Some(old_index.as_str()));
    assert!(
        second.removed.contains(&old_index) && second.removed.contains(&old_soci),
        "{:?}",
        second.removed
    );
    assert!(registry.manifest(&old_index).is_none() && registry.manifest(&old_soci).is_none());
    assert_eq!(
        index::status(&registry, "app", Some("app"), &options(IndexVersion::V2)).await.unwrap().state,
        State::Indexed
    );
}

#[tokio::test]
async fn prune_removes_orphans_only_and_keeps_what_live_indexes_share() {
    let registry = MemoryRegistry::with_deletes();
    let (amd, arm) = (layer(20), layer(21));
    let both = image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![amd.clone()]), ("linux/arm64".into(), vec![arm])],
        false,
        false,
    );
    let amd_only = image(Style::Oci, vec![("linux/amd64".into(), vec![amd])], false, false);
    load(&registry, &both, "both");
    load(&registry, &amd_only, "amd");
    load(&registry, &one_layer(22), "gone");
    load(&registry, &one_layer(23), "v1");
    load(&registry, &one_layer(24), "twin");
    load(&registry, &one_layer(24), "twin2"); // the same image under two tags: identical -soci indexes
    let both_report = create(&registry, "both", IndexVersion::V2).await;
    let amd_report = create(&registry, "amd", IndexVersion::V2).await;
    let gone = create(&registry, "gone", IndexVersion::V2).await;
    let v1 = create(&registry, "v1", IndexVersion::V1).await;
    create(&registry, "twin", IndexVersion::V2).await;
    create(&registry, "twin2", IndexVersion::V2).await;
    let shared_soci = amd_report.platforms[0].soci_index_digest.clone().unwrap();
    assert!(
        both_report.platforms.iter().any(|p| p.soci_index_digest.as_ref() == Some(&shared_soci)),
        "the amd64 SOCI index is shared"
    );
    // A user's own image whose tag ends in the suffix, with no base tag: never touched.
    load(&registry, &one_layer(25), "mine-soci");
    // The images go away.
    for tag in ["gone", "amd", "twin2"] {
        registry.remove_tag(tag);
    }
    let v1_subject = v1.platforms[0].manifest_digest.clone();
    assert_eq!(registry.delete_manifest(&v1_subject).await.unwrap(), index::Deletion::Deleted);

    let dry = prune(&registry, "-soci", true).await.unwrap();
    let mut orphan_tags: Vec<&str> = dry.orphans.iter().map(|o| o.tag.as_str()).collect();
    orphan_tags.sort();
    let fallback = v1_subject.replacen(':', "-", 1);
    assert_eq!(orphan_tags, vec!["amd-soci", "gone-soci", fallback.as_str()], "{dry:?}");
    assert!(
        dry.kept.iter().any(|k| k.tag == "mine-soci" && k.reason == index::KeepReason::NotSociOutput),
        "{dry:?}"
    );
    assert!(
        dry.kept
            .iter()
            .any(|k| k.tag == "twin2-soci" && k.reason.to_string().contains("also tagged twin-soci")),
        "{dry:?}"
    );
    assert!(dry.orphans.iter().all(|o| !o.removed));
    assert!(registry.manifest("gone-soci").is_some(), "a dry run removes nothing");
    let amd_orphan = dry.orphans.iter().find(|o| o.tag == "amd-soci").unwrap();
    assert!(
        !amd_orphan.remove.contains(&shared_soci),
        "a SOCI index a live index uses stays: {amd_orphan:?}"
    );

    let done = prune(&registry, "-soci", false).await.unwrap();
    let gone_orphan = done.orphans.iter().find(|o| o.tag == "gone-soci").unwrap();
    assert_eq!(gone_orphan.kind, OrphanKind::V2Index);
    assert_eq!(
        gone_orphan.remove[0],
        gone.image_index_digest.clone().unwrap(),
        "the tag-bearing index first"
    );
    assert_eq!(gone_orphan.remove.len(), 3, "index, SOCI index, annotated manifest");
    for orphan in &done.orphans {
        assert!(orphan.removed);
        for digest in &orphan.remove {
            assert!(registry.manifest(digest).is_none(), "{digest} removed");
        }
    }
    for tag in ["gone-soci", "amd-soci", fallback.as_str()] {
        assert!(registry.manifest(tag).is_none(), "{tag}");
    }
    assert!(registry.manifest(v1.platforms[0].soci_index_digest.as_ref().unwrap()).is_none());
    // What survives is still whole.
    assert!(registry.manifest(&shared_soci).is_some());
    for tag in ["both", "twin"] {
        let state = index::status(&registry, tag, Some(tag), &options(IndexVersion::V2)).await.unwrap().state;
        assert_eq!(state, State::Indexed, "{tag}");
    }
    assert!(registry.manifest("mine-soci").is_some());
}

#[tokio::test]
async fn a_registry_that_refuses_deletion_is_a_named_error_and_nothing_is_removed() {
    let registry = MemoryRegistry::new(); // refuses deletes
    load(&registry, &one_layer(30), "gone");
    create(&registry, "gone", IndexVersion::V2).await;
    registry.remove_tag("gone");
    let err = prune(&registry, "-soci", false).await.unwrap_err();
    assert!(matches!(err, index::Error::DeletionRefused { removed: 0, .. }), "{err}");
    assert!(err.to_string().contains("refused to delete"), "{err}");
    assert!(registry.manifest("gone-soci").is_some());
}

#[tokio::test]
async fn prune_tag_removes_one_deleted_tags_index_only() {
    use index::prune::prune_tag;
    let registry = MemoryRegistry::with_deletes();
    load(&registry, &one_layer(40), "a");
    load(&registry, &one_layer(41), "b");
    create(&registry, "a", IndexVersion::V2).await;
    create(&registry, "b", IndexVersion::V2).await;
    assert!(prune_tag(&registry, "a", "-soci", false).await.unwrap().is_none(), "a still exists");
    registry.remove_tag("a");
    registry.remove_tag("b");
    let removed = prune_tag(&registry, "a", "-soci", false).await.unwrap().unwrap().unwrap();
    assert!(removed.removed && removed.tag == "a-soci");
    assert!(registry.manifest("a-soci").is_none());
    assert!(registry.manifest("b-soci").is_some(), "only the deleted tag's index");
    assert!(prune_tag(&registry, "a", "-soci", false).await.unwrap().is_none(), "nothing left to do");
}

#[tokio::test]
async fn sync_reads_each_image_once_and_hands_it_to_create() {
    // What status then create cost on their own, against what sync pays for the same tag.
    let separate = MemoryRegistry::with_deletes();
    load(&separate, &one_layer(50), "v1");
    let before = separate.calls();
    index::status(&separate, "v1", Some("v1"), &options(IndexVersion::V2)).await.unwrap();
    create(&separate, "v1", IndexVersion::V2).await;
    let separately = separate.calls() - before;

    let synced = MemoryRegistry::with_deletes();
    load(&synced, &one_layer(50), "v1");
    let before = synced.calls();
    let report = sync(
        Arc::new(synced.clone()),
        &options(IndexVersion::V2),
        &everything(false),
        Arc::new(index::Silent),
    )
    .await
    .unwrap();
    assert!(matches!(action(&report, "v1"), SyncAction::Indexed { .. }), "{report:?}");
    let together = synced.calls() - before - 1; // less its tag listing
                                                // The image (one manifest) and the status's reads of the absent v1-soci: three calls saved.
    assert!(together + 3 <= separately, "sync: {together} registry calls, status + create: {separately}");
}
