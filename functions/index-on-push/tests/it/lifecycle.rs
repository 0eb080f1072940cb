//! Deletions and the reconcile end to end: a real registry (docker-registry, deletes enabled) logged in
//! to through moto's `GetAuthorizationToken`, moto's ECR `DescribeRepositories` and SQS for the work
//! queue, wired as `main.rs` wires them, through [`dispatch`] as the runtime calls it.
//!
//! Needs `docker-registry` (apt) and `moto_server` (pip install 'moto[server]'); `.ci/run` installs both.

use crate::aws;

use std::time::Instant;

use aws_sdk_sqs::types::QueueAttributeName;
use index_on_push::{dispatch, wiring, Config, EventBridge, HttpRegistries, Invocation, Services};
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

async fn world() -> World {
    let (moto, registry, client) = aws::ecr_stand_ins().await;
    World { registry, moto, client }
}

impl World {
    fn config(&self, extra: &[(&str, &str)]) -> Config {
        aws::config(self.registry.url(), extra)
    }

    fn repository(&self, name: &str) -> Repository {
        Repository::new(self.registry.host(), name).unwrap()
    }

    async fn push(&self, repository: &str, image: &TestImage, tag: &str) -> String {
        aws::push_image(&self.client, &self.repository(repository), image, tag).await
    }

    async fn exists(&self, repository: &str, reference: &str) -> bool {
        self.client.get_manifest(&self.repository(repository), reference).await.is_ok()
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

fn event(action: &str, repository: &str, tag: &str, digest: &str) -> Value {
    json!({"version": "0", "id": "e", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": MotoServer::ACCOUNT, "region": "us-east-1", "time": "2025-06-11T06:43:44Z", "resources": [],
        "detail": {"result": "SUCCESS", "action-type": action, "repository-name": repository,
                   "image-digest": digest, "image-tag": tag}})
}

fn invocation(deadline: Option<Instant>) -> Invocation {
    Invocation { request_id: "e2e".into(), deadline }
}

/// Everything `main.rs` builds, pointed at moto.
struct Wired {
    registries: HttpRegistries,
    events: EventBridge,
    repositories: index_on_push::EcrRepositories,
    queue: Option<index_on_push::SqsQueue>,
}

impl Wired {
    async fn new(world: &World, config: &Config) -> Wired {
        let sdk = aws::sdk(&world.moto.url()).await;
        let (registries, _) = wiring::registries(config, &sdk).unwrap();
        let (repositories, queue) = wiring::reconcile(config, &sdk);
        Wired { registries, events: wiring::completion_events(&sdk), repositories, queue }
    }

    async fn dispatch(&self, payload: &Value, config: &Config, deadline: Option<Instant>) -> Value {
        let services = Services { registries: &self.registries, completion: &self.events, ztoc_cache: None };
        let lifecycle = Lifecycle {
            repositories: &self.repositories,
            queue: self.queue.as_ref().map(|q| q as &dyn WorkQueue),
        };
        dispatch(payload, &invocation(deadline), config, &services, &lifecycle).await.unwrap()
    }
}

#[tokio::test]
async fn a_deleted_tag_loses_its_soci_index_and_a_deleted_soci_tag_is_skipped() {
    let world = world().await;
    let config = world.config(&[]);
    let wired = Wired::new(&world, &config).await;
    let digest = world.push("team/app", &test_image(1), "1.0").await;
    let indexed = wired.dispatch(&event("PUSH", "team/app", "1.0", &digest), &config, None).await;
    assert_eq!(indexed["outcome"], "indexed", "{indexed}");
    assert!(world.exists("team/app", "1.0-soci").await);

    let deleted = world.client.delete_manifest(&world.repository("team/app"), &digest).await.unwrap();
    assert_eq!(deleted, registry::Deletion::Deleted);
    let pruned = wired.dispatch(&event("DELETE", "team/app", "1.0", &digest), &config, None).await;
    assert_eq!(
        (pruned["outcome"].as_str(), pruned["pruned"].as_u64()),
        (Some("pruned"), Some(1)),
        "{pruned}"
    );
    assert!(!world.exists("team/app", "1.0-soci").await, "the SOCI index went with its image");

    // The deletion of soci-indexer's own output (what the prune just did) starts nothing.
    let own = wired.dispatch(&event("DELETE", "team/app", "1.0-soci", &digest), &config, None).await;
    assert_eq!(own["outcome"], "skipped");
    assert!(own["reason"].as_str().unwrap().contains("soci-indexer's own output"), "{own}");
}

async fn work_queue(world: &World) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&aws::sdk(&world.moto.url()).await);
    let url =
        sqs.create_queue().queue_name("soci-reconcile").send().await.unwrap().queue_url().unwrap().to_owned();
    (sqs, url)
}

/// The messages waiting, as the event source mapping would deliver them (one per event), deleted.
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let received = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap();
    let mut events = Vec::new();
    for message in received.messages() {
        events.push(json!({"Records": [{"messageId": message.message_id().unwrap(), "body": message.body().unwrap(),
                                        "eventSource": "aws:sqs", "receiptHandle": message.receipt_handle().unwrap()}]}));
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(message.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    events
}

#[tokio::test]
async fn a_reconcile_queues_each_repository_then_indexes_the_unindexed_and_prunes_the_orphan() {
    let world = world().await;
    let (sqs, url) = work_queue(&world).await;
    let config = world.config(&[("SOCI_RECONCILE_QUEUE_URL", &url), ("SOCI_FILTERS", "team/*:*")]);
    let wired = Wired::new(&world, &config).await;
    let ecr = aws_sdk_ecr::Client::new(&aws::sdk(&world.moto.url()).await);
    for name in ["team/app", "team/web", "other/skip"] {
        ecr.create_repository().repository_name(name).send().await.unwrap();
    }
    // team/app: pushed before the function existed. team/web: indexed, then its image deleted unseen.
    world.push("team/app", &test_image(2), "1.0").await;
    let web = world.push("team/web", &test_image(3), "2.0").await;
    let indexed = wired.dispatch(&event("PUSH", "team/web", "2.0", &web), &config, None).await;
    assert_eq!(indexed["outcome"], "indexed");
    world.client.delete_manifest(&world.repository("team/web"), &web).await.unwrap();

    let started = wired.dispatch(&json!({"reconcile": {}}), &config, None).await;
    assert_eq!(
        (started["outcome"].as_str(), started["repositories_listed"].as_u64()),
        (Some("reconciled"), Some(2))
    );
    let messages = receive(&sqs, &url).await;
    assert_eq!(messages.len(), 2, "one message per repository the filters may select");
    for message in &messages {
        assert_eq!(wired.dispatch(message, &config, None).await, json!({"batchItemFailures": []}));
    }
    assert!(world.exists("team/app", "1.0-soci").await, "the image pushed before is indexed");
    assert!(!world.exists("team/web", "2.0-soci").await, "the orphan is pruned");
}

#[tokio::test]
async fn a_repository_that_does_not_finish_before_the_deadline_is_queued_again() {
    let world = world().await;
    let (sqs, url) = work_queue(&world).await;
    let config = world.config(&[("SOCI_RECONCILE_QUEUE_URL", &url)]);
    let wired = Wired::new(&world, &config).await;
    world.push("team/app", &test_image(4), "1.0").await;
    let body = json!({"registry": world.registry.host(), "repository": "team/app", "attempt": 0}).to_string();
    let message = json!({"Records": [{"messageId": "m-1", "body": body, "eventSource": "aws:sqs"}]});
    // No time left at all: nothing can finish.
    let answer = wired.dispatch(&message, &config, Some(Instant::now())).await;
    assert_eq!(answer, json!({"batchItemFailures": []}), "the message succeeds: its rest is queued");
    assert!(!world.exists("team/app", "1.0-soci").await);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let count = |name: QueueAttributeName| {
        attributes.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let waiting = count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
    assert_eq!(waiting, 1, "the repository is queued again, not lost: {attributes:?}");
}

/// Two platforms, one layer each; `shared_with` puts the same platform manifests in another order (one
/// SOCI index manifest per platform, shared by both images).
fn two_platform_image(seed: u64, reversed: bool) -> TestImage {
    let config = LayerConfig { entries: 60, max_file_size: 256 * 1024, pax_percent: 10 };
    let mut platforms = vec![
        ("linux/amd64".to_string(), vec![TestLayer::gzip(seed, &config, 6, false)]),
        ("linux/arm64".to_string(), vec![TestLayer::gzip(seed + 1, &config, 6, false)]),
    ];
    if reversed {
        platforms.reverse();
    }
    image(Style::Oci, platforms, true, false)
}

#[tokio::test]
async fn deleting_two_images_that_share_soci_indexes_prunes_both_and_fails_neither() {
    let world = world().await;
    let config = world.config(&[]);
    let wired = Wired::new(&world, &config).await;
    let mut digests = Vec::new();
    for (tag, reversed) in [("a", false), ("b", true)] {
        let digest = world.push("team/app", &two_platform_image(10, reversed), tag).await;
        let indexed = wired.dispatch(&event("PUSH", "team/app", tag, &digest), &config, None).await;
        assert_eq!(indexed["outcome"], "indexed", "{indexed}");
        digests.push((tag, digest));
    }
    for (_, digest) in &digests {
        world.client.delete_manifest(&world.repository("team/app"), digest).await.unwrap();
    }
    for (tag, digest) in &digests {
        let pruned = wired.dispatch(&event("DELETE", "team/app", tag, digest), &config, None).await;
        assert_eq!(pruned["outcome"], "pruned", "{pruned}");
        assert!(!world.exists("team/app", &format!("{tag}-soci")).await);
    }
    // The same deletion delivered again finds nothing to do: skipped, not failed.
    let (tag, digest) = &digests[1];
    let again = wired.dispatch(&event("DELETE", "team/app", tag, digest), &config, None).await;
    assert_eq!(again["outcome"], "skipped", "{again}");
}

#[tokio::test]
async fn a_deletion_event_never_deletes_a_tag_promoted_from_a_soci_tag() {
    let world = world().await;
    let config = world.config(&[]);
    let wired = Wired::new(&world, &config).await;
    let digest = world.push("team/app", &two_platform_image(20, false), "v1").await;
    let indexed = wired.dispatch(&event("PUSH", "team/app", "v1", &digest), &config, None).await;
    assert_eq!(indexed["outcome"], "indexed", "{indexed}");
    // `crane tag app:v1-soci prod`: the same image index under a tag of the team's own.
    let repository = world.repository("team/app");
    let soci = world.client.get_manifest(&repository, "v1-soci").await.unwrap();
    world.client.put_manifest(&repository, "prod", &soci.media_type, soci.bytes.clone()).await.unwrap();

    world.client.delete_manifest(&repository, &digest).await.unwrap();
    let kept = wired.dispatch(&event("DELETE", "team/app", "v1", &digest), &config, None).await;
    assert_eq!(kept["outcome"], "skipped", "{kept}");
    assert!(kept["reason"].as_str().unwrap().contains("also tagged prod"), "{kept}");
    let prod = world.client.get_manifest(&repository, "prod").await.unwrap();
    assert_eq!(prod.digest, soci.digest, "prod still points at what the team deploys");
    let index: index::oci::Index = serde_json::from_slice(&prod.bytes).unwrap();
    for entry in index.manifests() {
        assert!(world.exists("team/app", &entry.digest).await, "{} is still there", entry.digest);
    }
}

#[tokio::test]
async fn a_work_item_for_a_repository_deleted_since_it_was_listed_is_skipped() {
    let world = world().await;
    let config = world.config(&[]);
    let wired = Wired::new(&world, &config).await;
    let body =
        json!({"registry": world.registry.host(), "repository": "team/deleted", "attempt": 0}).to_string();
    let services = Services { registries: &wired.registries, completion: &wired.events, ztoc_cache: None };
    let lifecycle = Lifecycle { repositories: &wired.repositories, queue: None };
    let consumed = index_on_push::consume(&body, &invocation(None), &config, &services, &lifecycle).await;
    assert!(!consumed.failed, "{:?}", consumed.report);
    assert_eq!(consumed.report.outcome, index_on_push::Outcome::Skipped, "{:?}", consumed.report);
    let reason = consumed.report.reason.as_deref().unwrap();
    assert!(reason.contains("team/deleted") && reason.contains("no longer exists"), "{reason}");
}

#[tokio::test]
async fn a_push_the_registry_throttles_waits_is_indexed_and_counts_the_throttles() {
    use testkit::proxy::{Fault, FaultPlan, FaultProxy, RequestFilter};
    let world = world().await;
    // ECR over its PutImage quota: 429 TOOMANYREQUESTS without Retry-After, for more requests than the
    // attempt budget of other failures (5) allows.
    let plan = FaultPlan::new().fail_first(6, Fault::RateExceeded).only(RequestFilter::ManifestPuts);
    let proxy = FaultProxy::start(world.registry.addr(), plan).await.unwrap();
    let config = aws::config(format!("http://{}", proxy.host()), &[]);
    let wired = Wired::new(&world, &config).await;
    let digest = world.push("team/app", &two_platform_image(40, false), "v1").await;
    let indexed = wired.dispatch(&event("PUSH", "team/app", "v1", &digest), &config, None).await;
    assert_eq!(indexed["outcome"], "indexed", "{indexed}");
    assert_eq!(indexed["throttled"], 6, "{indexed}");
    assert_eq!(proxy.faults_injected(), 6);
    assert!(world.exists("team/app", "v1-soci").await);
}
