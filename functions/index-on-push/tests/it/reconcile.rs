//! The reconcile with an in-memory registry, a fake repository listing and a recorder of work items:
//! the request queues one item per selected repository, an item indexes what is not indexed and
//! prunes what outlived its image, and a repository too big for one deadline is queued again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use index::testing::{MemoryRegistry, Mode};
use index_on_push::{
    consume, BoxFuture, Lifecycle, Listed, ReconcileError, RepositoryList, WorkItem, WorkQueue, MAX_ATTEMPTS,
    REQUEUE_DELAY,
};
use index_on_push::{dispatch, handle, Config, Invocation, Outcome, Registries, Services};
use index_on_push::{CompletionError, CompletionEvents, Detail};
use registry::Repository;
use serde_json::{json, Value};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// One in-memory registry; each repository its own.
struct Memory(MemoryRegistry);

impl Registries for Memory {
    type Registry = MemoryRegistry;

    fn open(&self, repository: &Repository) -> MemoryRegistry {
        self.0.repository(repository.name())
    }
}

struct NoEvents;

impl CompletionEvents for NoEvents {
    async fn put(&self, _bus: &str, _detail: &Detail) -> Result<(), CompletionError> {
        Ok(())
    }
}

struct Listing(Vec<&'static str>);

impl RepositoryList for Listing {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Listed>, ReconcileError>> {
        let listed =
            self.0.iter().map(|name| Listed { registry: REGISTRY.into(), name: name.to_string() }).collect();
        Box::pin(async move { Ok(listed) })
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(WorkItem, Duration)>>);

impl WorkQueue for Recorder {
    fn send(&self, item: &WorkItem, delay: Duration) -> BoxFuture<'_, Result<(), ReconcileError>> {
        self.0.lock().unwrap().push((item.clone(), delay));
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    fn sent(&self) -> Vec<(WorkItem, Duration)> {
        self.0.lock().unwrap().clone()
    }
}

fn config(filters: &str) -> Config {
    let vars = [
        ("SOCI_MIN_LAYER_SIZE", "20000"),
        ("SOCI_SPAN_SIZE", "65536"),
        ("SOCI_CONCURRENCY", "2"),
        ("SOCI_FILTERS", filters),
    ];
    Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap()
}

fn invocation(deadline: Option<Instant>) -> Invocation {
    Invocation { request_id: "req-r".into(), deadline }
}

fn small_image(seed: u64) -> TestImage {
    let layer_config = LayerConfig { entries: 40, max_file_size: 64 * 1024, pax_percent: 10 };
    image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(seed, &layer_config, 6, false)])],
        false,
        false,
    )
}

fn push_image(fake: &MemoryRegistry, image: &TestImage, tag: &str) -> String {
    fake.insert_image(&image.blobs, &image.manifests, &image.root, tag)
}

fn work_message(repository: &str, attempt: u32) -> Value {
    let body = json!({"registry": REGISTRY, "repository": repository, "attempt": attempt}).to_string();
    json!({"Records": [{"messageId": "m-1", "receiptHandle": "h", "body": body, "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work", "awsRegion": "us-east-1"}]})
}

#[tokio::test]
async fn a_reconcile_request_queues_one_item_per_repository_the_filters_may_select() {
    let registries = Memory(MemoryRegistry::new());
    let services = Services { registries: &registries, completion: &NoEvents, ztoc_cache: None };
    let queue = Recorder::default();
    let listing = Listing(vec!["team/app", "team/web", "scratch/tmp"]);
    let lifecycle = Lifecycle { repositories: &listing, queue: Some(&queue) };
    let answer = dispatch(
        &json!({"reconcile": {}}),
        &invocation(None),
        &config("*:*,!scratch/*"),
        &services,
        &lifecycle,
    )
    .await
    .unwrap();
    assert_eq!(
        (answer["outcome"].as_str(), answer["repositories_listed"].as_u64()),
        (Some("reconciled"), Some(2))
    );
    let sent: Vec<String> = queue.sent().into_iter().map(|(item, _)| item.repository).collect();
    assert_eq!(sent, ["team/app", "team/web"]);
    assert!(queue
        .sent()
        .iter()
        .all(|(item, delay)| item.registry == REGISTRY && item.attempt == 0 && delay.is_zero()));

    // Without a work queue the request fails, for good.
    let lifecycle = Lifecycle { repositories: &listing, queue: None };
    let answer =
        dispatch(&json!({"reconcile": {}}), &invocation(None), &config("*:*"), &services, &lifecycle)
            .await
            .unwrap();
    assert_eq!(answer["outcome"], "failed");
    assert!(answer["reason"].as_str().unwrap().contains("SOCI_RECONCILE_QUEUE_URL"));
}

#[tokio::test]
async fn a_work_item_indexes_what_is_not_indexed_and_prunes_what_outlived_its_image() {
    let registries = Memory(MemoryRegistry::with_deletes());
    let app = registries.0.repository("team/app");
    let indexed_before = push_image(&app, &small_image(1), "2.0");
    push_image(&app, &small_image(2), "1.0");
    let services = Services { registries: &registries, completion: &NoEvents, ztoc_cache: None };
    let config = config("*:*");
    // 2.0 is indexed by its push event, then deleted without a DELETE event reaching the function.
    let push = json!({"version": "0", "id": "e", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "123456789012", "region": "us-east-1", "time": "2025-06-11T06:43:44Z", "resources": [],
        "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": "team/app",
                   "image-digest": indexed_before, "image-tag": "2.0"}});
    assert_eq!(handle(&push, &invocation(None), &config, &services).await.outcome, Outcome::Indexed);
    app.remove_tag("2.0");
    assert!(app.manifest("2.0-soci").is_some() && app.manifest("1.0-soci").is_none());

    let queue = Recorder::default();
    let lifecycle = Lifecycle { repositories: &Listing(vec![]), queue: Some(&queue) };
    let answer = dispatch(&work_message("team/app", 0), &invocation(None), &config, &services, &lifecycle)
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert!(app.manifest("1.0-soci").is_some(), "the image pushed before is indexed");
    assert!(app.manifest("2.0-soci").is_none(), "the orphan is pruned");
    assert!(queue.sent().is_empty());

    // Again: nothing left to do.
    let answer = dispatch(&work_message("team/app", 0), &invocation(None), &config, &services, &lifecycle)
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
}

/// On tokio's paused clock: the registry never answers, as if the repository were too big.
#[tokio::test(start_paused = true)]
async fn a_repository_too_big_for_one_deadline_is_queued_again_not_lost() {
    let registries = Memory(MemoryRegistry::new());
    registries.0.repository("team/big").set_mode(Mode::Hang);
    let services = Services { registries: &registries, completion: &NoEvents, ztoc_cache: None };
    let queue = Recorder::default();
    let lifecycle = Lifecycle { repositories: &Listing(vec![]), queue: Some(&queue) };
    let deadline = Some(Instant::now() + Duration::from_secs(30));
    let answer =
        dispatch(&work_message("team/big", 3), &invocation(deadline), &config("*:*"), &services, &lifecycle)
            .await
            .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}), "this message succeeds: its rest is queued");
    let sent = queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0.repository.as_str(), sent[0].0.attempt, sent[0].1), ("team/big", 4, REQUEUE_DELAY));

    // The last attempt fails its message instead (SQS parks it in the dead-letter queue).
    let deadline = Some(Instant::now() + Duration::from_secs(30));
    let last = work_message("team/big", MAX_ATTEMPTS - 1);
    let answer = dispatch(&last, &invocation(deadline), &config("*:*"), &services, &lifecycle).await.unwrap();
    assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]}));
    assert_eq!(queue.sent().len(), 1);
}

/// On tokio's paused clock: one image's layer never arrives; the two others are indexed before the
/// deadline, and the cut-off invocation's report counts them.
#[tokio::test(start_paused = true)]
async fn a_cut_off_reconcile_reports_what_it_indexed_before_its_deadline() {
    let registries = Memory(MemoryRegistry::new());
    let app = registries.0.repository("team/app");
    push_image(&app, &small_image(11), "1.0");
    push_image(&app, &small_image(12), "2.0");
    let stuck = small_image(13);
    push_image(&app, &stuck, "3.0");
    app.hang_blob(&stuck.platforms[0].1[0].digest);
    let services = Services { registries: &registries, completion: &NoEvents, ztoc_cache: None };
    let queue = Recorder::default();
    let lifecycle = Lifecycle { repositories: &Listing(vec![]), queue: Some(&queue) };
    // Two build slots, whatever this machine's cores: the stuck layer holds one.
    let config = Config { concurrency: 2, ..config("*:*") };
    let body = work_message("team/app", 0)["Records"][0]["body"].as_str().unwrap().to_owned();
    let deadline = Some(Instant::now() + Duration::from_secs(30));
    let consumed = consume(&body, &invocation(deadline), &config, &services, &lifecycle).await;

    assert!(!consumed.failed);
    let report = consumed.report;
    assert_eq!((report.outcome, report.requeued), (Outcome::Reconciled, true), "{report:?}");
    assert_eq!((report.tags_indexed, report.layers_indexed), (2, 2), "{report:?}");
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.starts_with("time ran short after 2 tag(s) indexed: the rest was queued again"),
        "{reason}"
    );
    assert!(app.manifest("1.0-soci").is_some() && app.manifest("2.0-soci").is_some());
    assert!(app.manifest("3.0-soci").is_none());
    assert_eq!(queue.sent().len(), 1);
}

#[tokio::test]
async fn work_items_for_other_registries_or_unreadable_are_dropped() {
    let registries = Memory(MemoryRegistry::new());
    let services = Services { registries: &registries, completion: &NoEvents, ztoc_cache: None };
    let queue = Recorder::default();
    let lifecycle = Lifecycle { repositories: &Listing(vec![]), queue: Some(&queue) };
    let elsewhere = json!({"Records": [{"messageId": "m-2", "eventSource": "aws:sqs",
        "body": json!({"registry": "evil.example", "repository": "team/app"}).to_string()}]});
    let garbage = json!({"Records": [{"messageId": "m-3", "eventSource": "aws:sqs", "body": "hello"}]});
    for message in [elsewhere, garbage] {
        let answer =
            dispatch(&message, &invocation(None), &config("*:*"), &services, &lifecycle).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
    }
    assert_eq!(registries.0.repository("team/app").calls(), 0, "nothing was asked of the registry");
}

#[tokio::test]
async fn a_work_item_removes_untagged_soci_output_past_its_grace() {
    let registries = Memory(MemoryRegistry::with_deletes());
    let app = registries.0.repository("team/app");
    let digest = push_image(&app, &small_image(7), "3.0");
    let services = Services { registries: &registries, completion: &NoEvents, ztoc_cache: None };
    let vars =
        [("SOCI_MIN_LAYER_SIZE", "20000"), ("SOCI_SPAN_SIZE", "65536"), ("SOCI_UNTAGGED_OLDER_THAN", "0")];
    let config =
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
            .unwrap();
    let push = json!({"version": "0", "id": "e", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "123456789012", "region": "us-east-1", "time": "2025-06-11T06:43:44Z", "resources": [],
        "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": "team/app",
                   "image-digest": digest, "image-tag": "3.0"}});
    let indexed = handle(&push, &invocation(None), &config, &services).await;
    assert_eq!(indexed.outcome, Outcome::Indexed);
    // The image is untagged (its tag moved to another repository, say) and so is its SOCI index (as a
    // run cut off after its manifests, before its tag, leaves it).
    let left_behind = indexed.index_digest.clone().unwrap();
    app.remove_tag("3.0-soci");
    app.remove_tag("3.0");

    let body = json!({"registry": REGISTRY, "repository": "team/app", "attempt": 0}).to_string();
    let queue = Recorder::default();
    let lifecycle = Lifecycle { repositories: &Listing(vec![]), queue: Some(&queue) };
    let consumed = consume(&body, &invocation(None), &config, &services, &lifecycle).await;
    assert!(!consumed.failed, "{:?}", consumed.report);
    assert_eq!(consumed.report.untagged_removed, 3, "the index, its SOCI index, its annotated manifest");
    assert!(app.manifest(&left_behind).is_none());
    assert!(app.manifest(&digest).is_some(), "the image itself stays");
}
