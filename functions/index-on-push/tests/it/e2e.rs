//! End to end, as deployed but on loopback: a real registry (Debian's docker-registry, CNCF
//! distribution) that takes basic auth with ECR's user and moto's token password, moto's server for
//! `GetAuthorizationToken`, an image pushed, and the handler invoked with push events, wired exactly as
//! `main.rs` wires it (`SOCI_REGISTRY_URL` moves the registry, the login still goes through ECR).
//!
//! moto also plays EventBridge (a rule delivering completion events to an SQS queue) and DynamoDB (the
//! zTOC cache table).
//!
//! Needs `docker-registry` (apt) and `moto_server` (pip install 'moto[server]'); `.ci/run` installs both.

use crate::aws;

use std::sync::Arc;

use index::media;
use index::oci::{Index, Manifest};
use index_on_push::{
    handle, wiring, Config, EventBridge, HttpRegistries, Invocation, Outcome, Report, Services,
};
use index_on_push::{EcrCredentials, EcrTokenSource};
use registry::{Client, ClientConfig, Credentials, Repository, StaticCredentials};
use serde_json::{json, Value};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::moto::MotoServer;
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

const REPOSITORY: &str = "team/app";

/// The registry, moto, and a client to push and inspect with.
struct World {
    registry: LocalRegistry,
    moto: MotoServer,
    client: Client,
    repository: Repository,
}

async fn world() -> World {
    let (moto, registry, client) = aws::ecr_stand_ins().await;
    let repository = Repository::new(registry.host(), REPOSITORY).unwrap();
    World { registry, moto, client, repository }
}

impl World {
    /// The function's settings, as the environment would give them.
    fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut vars = vec![("LOG_LEVEL", "debug")];
        vars.extend_from_slice(extra);
        aws::config(self.registry.url(), &vars)
    }

    /// What `main.rs` builds at cold start, with the SDK pointed at moto (as `AWS_ENDPOINT_URL_ECR`
    /// does) and test credentials.
    async fn deps(&self, config: &Config) -> (HttpRegistries, Arc<EcrCredentials<EcrTokenSource>>) {
        wiring::registries(config, &aws::sdk(&self.moto.url()).await).unwrap()
    }

    async fn push(&self, image: &TestImage, tag: &str) -> String {
        self.push_to(REPOSITORY, image, tag).await
    }

    /// Pushes `image` as `repository:tag`; returns its digest.
    async fn push_to(&self, repository: &str, image: &TestImage, tag: &str) -> String {
        let repository = Repository::new(self.registry.host(), repository).unwrap();
        aws::push_image(&self.client, &repository, image, tag).await
    }

    async fn manifest(&self, reference: &str) -> registry::Manifest {
        self.client.get_manifest(&self.repository, reference).await.unwrap()
    }
}

/// Two platforms, a shared layer, a small layer, an attestation: what `docker buildx` pushes.
fn test_image() -> TestImage {
    let config = LayerConfig { entries: 60, max_file_size: 256 * 1024, pax_percent: 10 };
    let shared = TestLayer::gzip(11, &config, 6, false);
    let small = LayerConfig { entries: 3, max_file_size: 1024, pax_percent: 0 };
    image(
        Style::Oci,
        vec![
            ("linux/amd64".into(), vec![shared.clone(), TestLayer::gzip(12, &config, 6, false)]),
            ("linux/arm64/v8".into(), vec![shared, TestLayer::gzip(13, &small, 6, false)]),
        ],
        true,
        true,
    )
}

/// The `push-event.json` fixture for this repository, tag and digest, with ECR's newer media type
/// fields when `media_types` says so.
fn push_event(tag: &str, digest: &str, media_types: Option<(&str, Option<&str>)>) -> Value {
    let path = format!("{}/fixtures/push-event.json", env!("CARGO_MANIFEST_DIR"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["account"] = json!(MotoServer::ACCOUNT);
    event["detail"]["repository-name"] = json!(REPOSITORY);
    event["detail"]["image-tag"] = json!(tag);
    event["detail"]["image-digest"] = json!(digest);
    if let Some((manifest, artifact)) = media_types {
        event["detail"]["manifest-media-type"] = json!(manifest);
        if let Some(artifact) = artifact {
            event["detail"]["artifact-media-type"] = json!(artifact);
        }
    }
    event
}

async fn invoke(event: &Value, config: &Config, registries: &HttpRegistries, request_id: &str) -> Report {
    let events = wiring::completion_events(&aws_config::SdkConfig::builder().build());
    let services = Services { registries, completion: &events, ztoc_cache: None };
    invoke_with(event, config, &services, request_id).await
}

/// Handles `event` as `main.rs` does with `services`, then writes its log and EMF lines.
async fn invoke_with(
    event: &Value,
    config: &Config,
    services: &Services<'_, HttpRegistries, EventBridge>,
    request_id: &str,
) -> Report {
    let invocation = Invocation { request_id: request_id.into(), deadline: None };
    let report = handle(event, &invocation, config, services).await;
    report.emit();
    report
}

fn reason(report: &Report) -> &str {
    report.reason.as_deref().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_push_events_index_once_and_skip_their_own_output() {
    let world = world().await;
    let config = world.config(&[]);
    let (registries, credentials) = world.deps(&config).await;
    let image = test_image();
    let digest = world.push(&image, "1.0").await;

    let report = invoke(&push_event("1.0", &digest, None), &config, &registries, "first").await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}\nregistry log:\n{}", world.registry.logs());
    assert_eq!(report.repository, REPOSITORY);
    assert_eq!(report.registry, Some(world.registry.host()));
    assert_eq!(report.pushed_tag.as_deref(), Some("1.0-soci"));
    assert_eq!((report.layers_indexed, report.layers_skipped), (2, 1), "{report:?}");
    assert!(credentials.fetches() >= 1, "the password came from GetAuthorizationToken");

    // The v2 index: an image index tagged 1.0-soci whose manifests carry their SOCI indexes.
    let soci_tag = world.manifest("1.0-soci").await;
    assert_eq!(report.index_digest.as_deref(), Some(soci_tag.digest.as_str()));
    let index: Index = serde_json::from_slice(&soci_tag.bytes).unwrap();
    let soci_entries: Vec<_> =
        index.manifests().iter().filter(|d| d.artifact_type == media::SOCI_INDEX_V2).collect();
    assert_eq!(soci_entries.len(), 2);
    for entry in soci_entries {
        let image_digest = entry.annotation(media::ANNOTATION_IMAGE_MANIFEST_DIGEST).unwrap();
        let manifest: Manifest = serde_json::from_slice(&world.manifest(image_digest).await.bytes).unwrap();
        assert_eq!(manifest.annotations.unwrap()[media::ANNOTATION_INDEX_DIGEST], entry.digest);
        assert!(report.soci_indexes.contains(&entry.digest));
    }
    assert_eq!(world.manifest("1.0").await.digest, digest, "the pushed tag did not move");

    // ECR's event for the index soci-indexer pushed: skipped by its tag, before any request.
    let own = push_event("1.0-soci", &soci_tag.digest, Some((media::OCI_INDEX, None)));
    let report = invoke(&own, &config, &registries, "own-tag").await;
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(reason(&report).contains("ends with the SOCI tag suffix"), "{report:?}");

    // The same index under a tag that does not say so: skipped by its content.
    world
        .client
        .put_manifest(&world.repository, "mirror", media::OCI_INDEX, soci_tag.bytes.clone())
        .await
        .unwrap();
    let report =
        invoke(&push_event("mirror", &soci_tag.digest, None), &config, &registries, "own-content").await;
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(reason(&report).contains("already carries SOCI indexes"), "{report:?}");

    // The SOCI index manifests soci-indexer pushed by digest (tagless): skipped by media type.
    let soci_manifest = push_event(
        "",
        &report_first_soci(&world).await,
        Some((media::OCI_MANIFEST, Some(media::SOCI_INDEX_V2))),
    );
    let report = invoke(&soci_manifest, &config, &registries, "soci-manifest").await;
    assert!(reason(&report).contains("a SOCI index manifest"), "{report:?}");

    // EventBridge delivers at least once: a duplicate is already indexed.
    let report = invoke(&push_event("1.0", &digest, None), &config, &registries, "duplicate").await;
    assert_eq!(report.outcome, Outcome::Skipped);
    assert_eq!(reason(&report), "already indexed");
    assert!(credentials.fetches() >= 1);
}

async fn report_first_soci(world: &World) -> String {
    let index: Index = serde_json::from_slice(&world.manifest("1.0-soci").await.bytes).unwrap();
    index.manifests().iter().find(|d| d.artifact_type == media::SOCI_INDEX_V2).unwrap().digest.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_indexes_by_digest_and_skips_its_own_output() {
    let world = world().await;
    let config = world.config(&[("SOCI_INDEX_VERSION", "v1")]);
    let (registries, _) = world.deps(&config).await;
    let image = test_image();
    let root = world.push(&image, "2.0").await;
    // A multi-platform push: ECR sends an event per platform manifest (by digest, no tag).
    let (amd64, _, _) = &image.manifests[0];

    let event = push_event("", amd64, Some((media::OCI_MANIFEST, Some(media::OCI_CONFIG))));
    let report = invoke(&event, &config, &registries, "by-digest").await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}\nregistry log:\n{}", world.registry.logs());
    assert_eq!((report.tag.as_deref(), report.pushed_tag.as_deref()), (None, None));
    let soci_index = report.index_digest.clone().unwrap();
    // distribution 2.8 has no referrers API: the index is listed in the referrers tag.
    let fallback_tag = amd64.replacen(':', "-", 1);
    let referrers: Index = serde_json::from_slice(&world.manifest(&fallback_tag).await.bytes).unwrap();
    assert_eq!(referrers.manifests()[0].digest, soci_index);
    assert_eq!(referrers.manifests()[0].artifact_type, media::SOCI_INDEX_V1);
    let soci: Manifest = serde_json::from_slice(&world.manifest(&soci_index).await.bytes).unwrap();
    assert_eq!(soci.subject.as_ref().unwrap().digest, *amd64);

    // The events for what soci-indexer pushed: the SOCI index manifest, and the referrers tag.
    let own = push_event("", &soci_index, Some((media::OCI_MANIFEST, Some(media::SOCI_INDEX_V1))));
    assert!(reason(&invoke(&own, &config, &registries, "own").await).contains("a SOCI index manifest"));
    let own_untyped = push_event("", &soci_index, None);
    let report = invoke(&own_untyped, &config, &registries, "own-untyped").await;
    assert!(reason(&report).contains("is a SOCI index manifest"), "{report:?}");
    let referrers_event = push_event(&fallback_tag, "", Some((media::OCI_INDEX, None)));
    let report = invoke(&referrers_event, &config, &registries, "referrers").await;
    assert!(reason(&report).contains("referrers tag-schema index"), "{report:?}");

    // A duplicate is already indexed; the tagged index event indexes the other platform only.
    let report = invoke(&event, &config, &registries, "duplicate").await;
    assert_eq!(reason(&report), "already indexed");
    let tagged = push_event("2.0", &root, Some((media::OCI_INDEX, None)));
    let report = invoke(&tagged, &config, &registries, "tagged").await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    let report = invoke(&tagged, &config, &registries, "tagged-again").await;
    assert_eq!(reason(&report), "already indexed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_rejects_the_token_fails_without_retry_and_without_showing_it() {
    let moto = MotoServer::start().await.unwrap();
    let registry = LocalRegistry::start_with_basic_auth("AWS", "another-password").await.unwrap();
    let client = Client::new(
        ClientConfig { plain_http: true, ..ClientConfig::default() },
        Arc::new(StaticCredentials(Credentials::new("AWS", "another-password"))),
    )
    .unwrap();
    let repository = Repository::new(registry.host(), REPOSITORY).unwrap();
    let digest = aws::push_image(&client, &repository, &test_image(), "1.0").await;

    let world = World { registry, moto, client, repository };
    let config = world.config(&[]);
    let (registries, credentials) = world.deps(&config).await;
    let report = invoke(&push_event("1.0", &digest, None), &config, &registries, "denied").await;
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, false), "{report:?}");
    assert!(reason(&report).contains("401"), "{report:?}");
    let shown = format!("{report:?}{}", serde_json::to_string(&report).unwrap());
    assert!(!shown.contains(MotoServer::ECR_PASSWORD), "the token never shows");
    // moto's tokens are already expired: fetched again for the retry after the 401, never in a loop.
    assert!((2..=4).contains(&credentials.fetches()), "{} fetches", credentials.fetches());
}

/// The rule pattern of the README: `indexed` completion events of one repository.
fn indexed_in(repository: &str) -> Value {
    json!({
        "source": ["soci-indexer"],
        "detail-type": ["SOCI Index Action"],
        "detail": {"repository-name": [repository], "outcome": ["indexed"]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_push_event_puts_one_completion_event_that_an_eventbridge_rule_delivers() {
    let world = world().await;
    let sdk = aws::sdk(&world.moto.url()).await;
    let every = json!({"source": ["soci-indexer"], "detail-type": ["SOCI Index Action"]});
    let all = aws::Queue::for_rule(&sdk, "soci-all", &every).await;
    let indexed = aws::Queue::for_rule(&sdk, "soci-indexed", &indexed_in(REPOSITORY)).await;
    let config = world.config(&[("SOCI_COMPLETION_EVENT_BUS", "default")]);
    let (registries, _) = world.deps(&config).await;
    let events = wiring::completion_events(&sdk);
    let services = Services { registries: &registries, completion: &events, ztoc_cache: None };
    let digest = world.push(&test_image(), "1.0").await;

    let report = invoke_with(&push_event("1.0", &digest, None), &config, &services, "first").await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert!(!report.completion_event_failed, "moto log:\n{}", world.moto.logs());
    let messages = all.take().await;
    assert_eq!(messages.len(), 1, "exactly one event: {messages:#?}");
    let event = &messages[0];
    assert_eq!(
        (&event["source"], &event["detail-type"]),
        (&json!("soci-indexer"), &json!("SOCI Index Action"))
    );
    assert_eq!(event["region"], "us-east-1", "{event:#}");
    let detail = &event["detail"];
    assert_eq!(
        *detail,
        json!({
            "repository-name": REPOSITORY,
            "image-digest": digest,
            "image-tag": "1.0",
            "outcome": "indexed",
            "reason": null,
            "soci-tag": "1.0-soci",
            "image-index-digest": world.manifest("1.0-soci").await.digest,
            "soci-index-digests": report.soci_indexes,
            "layers-indexed": 2,
            "layers-reused": 0,
            "index-version": "v2",
            "retry": false,
        })
    );
    // The same event (moto stamps each rule's copy with its own time: compare the rest).
    let matched = indexed.take().await;
    assert_eq!(matched.len(), 1, "the README's rule matches it: {matched:#?}");
    assert_eq!((&matched[0]["id"], &matched[0]["detail"]), (&event["id"], detail));

    // The duplicate push event: a `skipped` event, which the README's rule leaves out.
    let report = invoke_with(&push_event("1.0", &digest, None), &config, &services, "duplicate").await;
    assert_eq!(reason(&report), "already indexed");
    let messages = all.take().await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(
        (&messages[0]["detail"]["outcome"], &messages[0]["detail"]["reason"]),
        (&json!("skipped"), &json!("already indexed"))
    );
    assert!(indexed.take().await.is_empty());

    // With the bus setting empty, nothing is put, whatever happens.
    let off = world.config(&[("SOCI_COMPLETION_EVENT_BUS", ""), ("SOCI_TAG_SUFFIX", "-lazy")]);
    let report = invoke_with(&push_event("1.0", &digest, None), &off, &services, "no-bus").await;
    assert_eq!(
        (report.outcome, report.pushed_tag.as_deref()),
        (Outcome::Indexed, Some("1.0-lazy")),
        "{report:?}"
    );
    assert!(all.take().await.is_empty() && indexed.take().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_bus_that_cannot_be_reached_or_does_not_exist_leaves_the_image_indexed() {
    let world = world().await;
    let sdk = aws::sdk(&world.moto.url()).await;
    let (registries, _) = world.deps(&world.config(&[])).await;
    let digest = world.push(&test_image(), "1.0").await;

    // EventBridge's endpoint is a closed port: the SDK's retries, then the failure is noted.
    let down = aws_sdk_eventbridge::config::Builder::from(&sdk).endpoint_url(aws::closed_port()).build();
    let events = EventBridge::new(aws_sdk_eventbridge::Client::from_conf(down));
    let services = Services { registries: &registries, completion: &events, ztoc_cache: None };
    let config = world.config(&[("SOCI_COMPLETION_EVENT_BUS", "default")]);
    let report = invoke_with(&push_event("1.0", &digest, None), &config, &services, "down").await;
    assert_eq!((report.outcome, report.retry), (Outcome::Indexed, false), "{report:?}");
    assert!(report.completion_event_failed, "{report:?}");
    assert_eq!(report.metrics(0, "f")["CompletionEventsFailed"], 1);
    assert_eq!(world.manifest("1.0-soci").await.digest, report.index_digest.clone().unwrap());

    // moto answers, but the bus does not exist.
    let events = wiring::completion_events(&sdk);
    let services = Services { registries: &registries, completion: &events, ztoc_cache: None };
    let config = world.config(&[("SOCI_COMPLETION_EVENT_BUS", "no-such-bus"), ("SOCI_TAG_SUFFIX", "-lazy")]);
    let report = invoke_with(&push_event("1.0", &digest, None), &config, &services, "unknown-bus").await;
    assert_eq!((report.outcome, report.completion_event_failed), (Outcome::Indexed, true), "{report:?}");
}

/// Two images, each with its own layer over a shared one.
fn images_sharing_a_layer() -> (TestImage, TestImage) {
    let config = LayerConfig { entries: 80, max_file_size: 256 * 1024, pax_percent: 10 };
    let shared = TestLayer::gzip(21, &config, 6, false);
    let single = |own: u64| {
        image(
            Style::Oci,
            vec![("linux/amd64".into(), vec![shared.clone(), TestLayer::gzip(own, &config, 6, false)])],
            false,
            false,
        )
    };
    (single(22), single(23))
}

fn push_event_in(repository: &str, tag: &str, digest: &str) -> Value {
    let mut event = push_event(tag, digest, None);
    event["detail"]["repository-name"] = json!(repository);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_shared_by_two_images_is_built_once_through_the_dynamodb_cache() {
    let world = world().await;
    let sdk = aws::sdk(&world.moto.url()).await;
    aws::create_cache_table(&sdk).await;
    let config = world.config(&[("SOCI_ZTOC_CACHE_TABLE", aws::CACHE_TABLE)]);
    let (registries, _) = world.deps(&config).await;
    let events = wiring::completion_events(&sdk);
    let cached = Services {
        registries: &registries,
        completion: &events,
        ztoc_cache: wiring::ztoc_cache(&config, &sdk),
    };
    assert!(cached.ztoc_cache.is_some());
    let (first, second) = images_sharing_a_layer();
    let first_digest = world.push_to("team/base", &first, "1.0").await;
    let second_digest = world.push_to("team/app", &second, "1.0").await;

    let report =
        invoke_with(&push_event_in("team/base", "1.0", &first_digest), &config, &cached, "first").await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert_eq!((report.layers_indexed, report.layers_reused), (2, 0), "{report:?}");
    let items = aws::cache_items(&sdk).await;
    assert_eq!(items.len(), 2, "one item per zTOC built: {items:#?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for item in &items {
        assert!(item["pk"].as_s().unwrap().starts_with("ztoc/v"), "{item:?}");
        assert_eq!(item["repository"].as_s().unwrap(), "team/base");
        assert_eq!(item["registry"].as_s().unwrap(), &world.registry.host());
        let expires_at: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        let thirty_days = 30 * 24 * 3600;
        assert!(
            (now + thirty_days - 60..=now + thirty_days + 60).contains(&expires_at),
            "{expires_at} vs {now}"
        );
    }

    // The second image in another repository: the shared layer's zTOC is mounted, not built.
    let report =
        invoke_with(&push_event_in("team/app", "1.0", &second_digest), &config, &cached, "second").await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert_eq!((report.layers_indexed, report.layers_reused), (1, 1), "{report:?}");
    assert_eq!(aws::cache_items(&sdk).await.len(), 3);

    // The same image indexed without the cache: the same SOCI index and image index, byte for byte.
    let uncached = Services { registries: &registries, completion: &events, ztoc_cache: None };
    let no_cache = world.config(&[]);
    world.push_to("team/fresh", &second, "1.0").await;
    let fresh =
        invoke_with(&push_event_in("team/fresh", "1.0", &second_digest), &no_cache, &uncached, "fresh").await;
    assert_eq!(
        (fresh.outcome, fresh.layers_indexed, fresh.layers_reused),
        (Outcome::Indexed, 2, 0),
        "{fresh:?}"
    );
    assert_eq!(fresh.soci_indexes, report.soci_indexes);
    assert_eq!(fresh.index_digest, report.index_digest);
    assert_eq!(aws::cache_items(&sdk).await.len(), 3, "the cache-less build wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_table_that_does_not_exist_only_means_building() {
    let world = world().await;
    let sdk = aws::sdk(&world.moto.url()).await;
    let config = world.config(&[("SOCI_ZTOC_CACHE_TABLE", "no-such-table")]);
    let (registries, _) = world.deps(&config).await;
    let events = wiring::completion_events(&sdk);
    let services = Services {
        registries: &registries,
        completion: &events,
        ztoc_cache: wiring::ztoc_cache(&config, &sdk),
    };
    let digest = world.push(&test_image(), "1.0").await;
    let report = invoke_with(&push_event("1.0", &digest, None), &config, &services, "no-table").await;
    assert_eq!((report.outcome, report.retry), (Outcome::Indexed, false), "{report:?}");
    assert_eq!((report.layers_indexed, report.layers_reused), (2, 0), "{report:?}");
}
