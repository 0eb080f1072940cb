//! ECR's other events end to end, from fixtures in the shapes of ECR's "Amazon ECR events and
//! EventBridge" documentation: an image replicated into this registry, an image archived and restored,
//! an image cached by a pull through cache rule, and archived images in the reconcile. Against
//! docker-registry (logged in to through moto's `GetAuthorizationToken`) and moto, wired as `main.rs`
//! wires them, through [`dispatch`] as the runtime calls it (the runtime API adds nothing here:
//! `runtime.rs` covers it).

use crate::aws;

use bytes::Bytes;
use index::oci::Descriptor;
use index::{BlobStream, Deletion, FetchedManifest, Location, PushedManifest, SourceError, TagTarget};
use index_on_push::{
    dispatch, wiring, Config, EventBridge, HttpRegistries, Invocation, Registries, Services,
};
use index_on_push::{Lifecycle, WorkQueue};
use registry::{Client, Repository};
use serde_json::{json, Value};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::moto::MotoServer;
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

struct World {
    registry: LocalRegistry,
    moto: MotoServer,
    client: Client,
}

impl World {
    async fn new() -> World {
        let (moto, registry, client) = aws::ecr_stand_ins().await;
        World { registry, moto, client }
    }

    fn config(&self) -> Config {
        aws::config(self.registry.url(), &[])
    }

    fn repository(&self, name: &str) -> Repository {
        Repository::new(self.registry.host(), name).unwrap()
    }

    async fn push(&self, repository: &str, image: &TestImage, tag: &str) -> String {
        aws::push_image(&self.client, &self.repository(repository), image, tag).await
    }

    async fn digest_of(&self, repository: &str, reference: &str) -> Option<String> {
        self.client.get_manifest(&self.repository(repository), reference).await.ok().map(|m| m.digest)
    }

    async fn tags(&self, repository: &str) -> Vec<String> {
        let mut tags = self.client.list_tags(&self.repository(repository)).await.unwrap();
        tags.sort();
        tags
    }
}

fn test_image(seed: u64) -> TestImage {
    let config = LayerConfig { entries: 60, max_file_size: 256 * 1024, pax_percent: 10 };
    image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(seed, &config, 6, false)])],
        false,
        false,
    )
}

/// A fixture with `detail` fields replaced (null removes one).
fn fixture(name: &str, detail: Value) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["account"] = MotoServer::ACCOUNT.into();
    for (key, value) in detail.as_object().unwrap() {
        if value.is_null() {
            event["detail"].as_object_mut().unwrap().remove(key);
        } else {
            event["detail"][key] = value.clone();
        }
    }
    event
}

fn invocation() -> Invocation {
    Invocation { request_id: "events".into(), deadline: None }
}

/// What `main.rs` builds, pointed at moto.
struct Wired {
    registries: HttpRegistries,
    events: EventBridge,
    repositories: index_on_push::EcrRepositories,
}

impl Wired {
    async fn new(world: &World, config: &Config) -> Wired {
        let sdk = aws::sdk(&world.moto.url()).await;
        let (registries, _) = wiring::registries(config, &sdk).unwrap();
        let (repositories, _) = wiring::reconcile(config, &sdk);
        Wired { registries, events: wiring::completion_events(&sdk), repositories }
    }

    async fn dispatch(&self, payload: &Value, config: &Config) -> Value {
        let services = Services { registries: &self.registries, completion: &self.events, ztoc_cache: None };
        let lifecycle = Lifecycle { repositories: &self.repositories, queue: None::<&dyn WorkQueue> };
        dispatch(payload, &invocation(), config, &services, &lifecycle).await.unwrap()
    }
}

fn reason(answer: &Value) -> &str {
    answer["reason"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_replicated_image_is_indexed_byte_identical_to_its_source_and_never_fought_over() {
    let world = World::new().await;
    let config = world.config();
    let wired = Wired::new(&world, &config).await;
    // The source registry (another region): pushed and indexed there.
    let image = test_image(1);
    let digest = world.push("source/app", &image, "1.0").await;
    let push = fixture(
        "push-event.json",
        json!({"repository-name": "source/app", "image-tag": "1.0", "image-digest": digest}),
    );
    assert_eq!(wired.dispatch(&push, &config).await["outcome"], "indexed");

    // The destination: ECR replicates the image, and sends a REPLICATE event, not a PUSH.
    assert_eq!(world.push("team/app", &image, "1.0").await, digest);
    let replicated = fixture(
        "replication-event.json",
        json!({"repository-name": "team/app", "image-tag": "1.0", "image-digest": digest}),
    );
    let answer = wired.dispatch(&replicated, &config).await;
    assert_eq!(answer["outcome"], "indexed", "{answer}");
    let source_soci = world.digest_of("source/app", "1.0-soci").await.unwrap();
    assert_eq!(
        world.digest_of("team/app", "1.0-soci").await.as_deref(),
        Some(source_soci.as_str()),
        "soci-indexer's output is deterministic: built in the destination, it is the source's, byte for byte"
    );

    // The source's 1.0-soci replicated too: its event is soci-indexer's own output, no work; the same
    // image's replication delivered again (or arriving after 1.0-soci) is already indexed.
    let own = fixture(
        "replication-event.json",
        json!({"repository-name": "team/app", "image-tag": "1.0-soci", "image-digest": source_soci}),
    );
    let answer = wired.dispatch(&own, &config).await;
    assert_eq!(answer["outcome"], "skipped");
    assert!(reason(&answer).contains("soci-indexer's own output"), "{answer}");
    let again = wired.dispatch(&replicated, &config).await;
    assert_eq!((again["outcome"].as_str(), reason(&again)), (Some("skipped"), "already indexed"), "{again}");

    // A failed replication starts nothing.
    let failed = fixture(
        "replication-failed-event.json",
        json!({"repository-name": "team/app", "image-tag": "2.0", "image-digest": digest}),
    );
    let answer = wired.dispatch(&failed, &config).await;
    assert_eq!(
        (answer["outcome"].as_str(), reason(&answer)),
        (Some("skipped"), "replication result \"FAILED\", not SUCCESS")
    );
    assert_eq!(world.tags("team/app").await, ["1.0", "1.0-soci"]);
}

#[tokio::test]
async fn an_image_cached_by_a_pull_through_cache_rule_is_indexed_when_the_filters_select_it() {
    let world = World::new().await;
    let config = world.config();
    let wired = Wired::new(&world, &config).await;
    let repository = "ecr-public/docker/library/alpine";
    // ECR's pull through cache pushes the upstream image into the cache repository on the first pull.
    let digest = world.push(repository, &test_image(2), "3.17.2").await;
    let cached = fixture("pull-through-cache-event.json", json!({"image-digest": digest}));
    let answer = wired.dispatch(&cached, &config).await;
    assert_eq!(answer["outcome"], "indexed", "{answer}");
    assert_eq!(world.tags(repository).await, ["3.17.2", "3.17.2-soci"]);

    let failed =
        fixture("pull-through-cache-event.json", json!({"image-digest": digest, "sync-status": "FAILED"}));
    let answer = wired.dispatch(&failed, &config).await;
    assert_eq!(reason(&answer), "pull through cache sync-status \"FAILED\", not SUCCESS", "{answer}");
    let only_team = aws::config(world.registry.url(), &[("SOCI_FILTERS", "team/*")]);
    let answer = wired.dispatch(&cached, &only_team).await;
    assert_eq!(answer["outcome"], "skipped");
    assert!(reason(&answer).contains("filter"), "{answer}");
}

#[tokio::test]
async fn an_archive_writes_nothing_and_a_restore_indexes_the_tags_of_the_image() {
    let world = World::new().await;
    let config = world.config();
    let wired = Wired::new(&world, &config).await;
    let digest = world.push("team/app", &test_image(3), "1.0").await;
    // A second tag on the same image, and one the filters would never pick (soci-indexer's own name).
    let manifest = world.client.get_manifest(&world.repository("team/app"), "1.0").await.unwrap();
    world
        .client
        .put_manifest(&world.repository("team/app"), "stable", &manifest.media_type, manifest.bytes.clone())
        .await
        .unwrap();

    let archived =
        fixture("archive-event.json", json!({"repository-name": "team/app", "image-digest": digest}));
    let answer = wired.dispatch(&archived, &config).await;
    assert_eq!(
        (answer["outcome"].as_str(), reason(&answer)),
        (Some("skipped"), index_on_push::SkipReason::Archived.to_string().as_str()),
        "{answer}"
    );
    assert!(answer.get("registry").is_none(), "decided before any registry call: {answer}");
    assert_eq!(world.tags("team/app").await, ["1.0", "stable"], "nothing written");

    // ECR's restore event names the digest only: the tags naming it now are indexed.
    let restored =
        fixture("restore-event.json", json!({"repository-name": "team/app", "image-digest": digest}));
    let answer = wired.dispatch(&restored, &config).await;
    assert_eq!(answer["outcome"], "indexed", "{answer}");
    assert!(reason(&answer).starts_with("restored image, 2 tags: "), "{answer}");
    assert_eq!(world.tags("team/app").await, ["1.0", "1.0-soci", "stable", "stable-soci"]);
    // Restored again (or a restore of an image indexed before it was archived): already indexed.
    let again = wired.dispatch(&restored, &config).await;
    assert_eq!(again["outcome"], "skipped", "{again}");
    assert!(reason(&again).contains("1.0: skipped (already indexed)"), "{again}");

    // A restored image with no tag the filters select.
    let only_stable = aws::config(world.registry.url(), &[("SOCI_FILTERS", "team/app:nothing")]);
    let answer = wired.dispatch(&restored, &only_stable).await;
    assert_eq!(answer["outcome"], "skipped");
    assert!(reason(&answer).contains("no tag of it to index (its tags: "), "{answer}");
}

/// The HTTP registries with some tags archived, as ECR's `DescribeImages` reports them and as ECR
/// answers their pulls: 404.
struct Archiving {
    inner: HttpRegistries,
    archived: Vec<String>,
}

struct ArchivingRepository {
    inner: <HttpRegistries as Registries>::Registry,
    archived: Vec<String>,
}

impl Registries for Archiving {
    type Registry = ArchivingRepository;

    fn open(&self, repository: &Repository) -> ArchivingRepository {
        ArchivingRepository { inner: self.inner.open(repository), archived: self.archived.clone() }
    }

    fn open_for(&self, repository: &Repository, run: app::Run) -> ArchivingRepository {
        ArchivingRepository { inner: self.inner.open_for(repository, run), archived: self.archived.clone() }
    }
}

impl index::Registry for ArchivingRepository {
    fn location(&self) -> Location {
        self.inner.location()
    }
    async fn list_tags(&self) -> Result<Vec<String>, SourceError> {
        self.inner.list_tags().await
    }
    async fn blob_exists(&self, digest: &str) -> Result<bool, SourceError> {
        self.inner.blob_exists(digest).await
    }
    async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool, SourceError> {
        self.inner.mount_blob(digest, from).await
    }
    async fn get_blob_from(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<BlobStream, SourceError> {
        self.inner.get_blob_from(repository, descriptor).await
    }
    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        if self.archived.iter().any(|tag| tag == reference) {
            return Ok(None);
        }
        self.inner.get_manifest(reference).await
    }
    async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, SourceError> {
        self.inner.get_blob(descriptor).await
    }
    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        self.inner.get_blob_bytes(descriptor).await
    }
    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        self.inner.push_blob(digest, bytes).await
    }
    async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest, SourceError> {
        self.inner.push_manifest(reference, media_type, bytes).await
    }
    async fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Vec<Descriptor>>, SourceError> {
        self.inner.referrers(digest, artifact_type).await
    }
    async fn delete_manifest(&self, digest: &str) -> Result<Deletion, SourceError> {
        self.inner.delete_manifest(digest).await
    }
    async fn resolve_tag(&self, tag: &str) -> Result<Option<TagTarget>, SourceError> {
        self.inner.resolve_tag(tag).await
    }
    async fn archived_tags(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.archived.clone())
    }
}

#[tokio::test]
async fn the_reconcile_skips_archived_images_by_name_and_keeps_their_soci_indexes() {
    let world = World::new().await;
    let config = world.config();
    let wired = Wired::new(&world, &config).await;
    // 0.9 indexed before it was archived; 0.8 archived unindexed; 1.0 active, unindexed.
    let indexed = world.push("team/app", &test_image(4), "0.9").await;
    let push = fixture(
        "push-event.json",
        json!({"repository-name": "team/app", "image-tag": "0.9", "image-digest": indexed}),
    );
    assert_eq!(wired.dispatch(&push, &config).await["outcome"], "indexed");
    world.push("team/app", &test_image(5), "0.8").await;
    world.push("team/app", &test_image(6), "1.0").await;

    let archiving = Archiving { inner: wired.registries.clone(), archived: vec!["0.9".into(), "0.8".into()] };
    let services = Services { registries: &archiving, completion: &wired.events, ztoc_cache: None };
    let lifecycle = Lifecycle { repositories: &wired.repositories, queue: None };
    let body = json!({"registry": world.registry.host(), "repository": "team/app"}).to_string();
    let consumed = index_on_push::consume(&body, &invocation(), &config, &services, &lifecycle).await;
    let report = &consumed.report;
    assert!(!consumed.failed, "{report:?}");
    assert_eq!(
        (report.outcome, report.tags_indexed, report.pruned),
        (index_on_push::Outcome::Reconciled, 1, 0),
        "{report:?}"
    );
    let reason = report.reason.as_deref().unwrap();
    assert!(reason.contains("2 archived tag(s) skipped"), "{reason}");
    assert_eq!(world.tags("team/app").await, ["0.8", "0.9", "0.9-soci", "1.0", "1.0-soci"], "0.9-soci kept");
}
