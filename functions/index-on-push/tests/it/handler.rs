//! The handler with hand-built events, an in-memory registry and a recorder of completion events: every
//! skip rule (none of which touches the registry), the loop guard on fetched content, failures and
//! retries, the deadline, and the completion event of each ECR event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use index::media;
use index::testing::{MemoryRegistry, Mode};
use index::SourceErrorKind;
use index_on_push::{handle, invoke, Config, Invocation, Outcome, Registries, Report, Services};
use index_on_push::{CompletionError, CompletionEvents, Detail};
use registry::Repository;
use serde_json::{json, Value};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

/// Hands out one in-memory registry for every repository, remembering which were opened.
struct FakeRegistries {
    fake: MemoryRegistry,
    opened: Mutex<Vec<String>>,
}

impl FakeRegistries {
    fn new(mode: Mode) -> FakeRegistries {
        let fake = MemoryRegistry::new();
        fake.set_mode(mode);
        FakeRegistries { fake, opened: Mutex::new(Vec::new()) }
    }

    /// A registry that deletes manifests (as ECR does).
    fn deleting() -> FakeRegistries {
        FakeRegistries { fake: MemoryRegistry::with_deletes(), opened: Mutex::new(Vec::new()) }
    }

    /// Whether anything was asked of the registry.
    fn touched(&self) -> bool {
        !self.opened.lock().unwrap().is_empty() || self.fake.calls() > 0
    }
}

impl Registries for FakeRegistries {
    type Registry = MemoryRegistry;

    fn open(&self, repository: &Repository) -> MemoryRegistry {
        self.opened.lock().unwrap().push(repository.to_string());
        self.fake.clone()
    }
}

/// What a [`Recorder`] does with an event.
#[derive(Clone, Copy, Debug, Default)]
enum Put {
    /// Records it.
    #[default]
    Take,
    /// Answers with an error, as EventBridge does for an unknown bus.
    Refuse,
    /// Never answers.
    Hang,
}

/// Completion events, recorded as (bus, detail as JSON).
#[derive(Default)]
struct Recorder {
    put: Put,
    events: Mutex<Vec<(String, Value)>>,
}

impl Recorder {
    fn new(put: Put) -> Recorder {
        Recorder { put, events: Mutex::default() }
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.events.lock().unwrap().clone()
    }
}

impl CompletionEvents for Recorder {
    async fn put(&self, bus: &str, detail: &Detail) -> Result<(), CompletionError> {
        match self.put {
            Put::Take => {
                self.events.lock().unwrap().push((bus.to_owned(), serde_json::to_value(detail).unwrap()));
                Ok(())
            }
            Put::Refuse => Err(CompletionError::Request {
                bus: bus.to_owned(),
                message: "ResourceNotFoundException: Event bus deployments does not exist.".into(),
            }),
            Put::Hang => std::future::pending().await,
        }
    }
}

fn services<'a>(
    registries: &'a FakeRegistries,
    events: &'a Recorder,
) -> Services<'a, FakeRegistries, Recorder> {
    Services { registries, completion: events, ztoc_cache: None }
}

/// Stores `image` in `fake` under `tag`; returns the image's digest.
fn push_image(fake: &MemoryRegistry, image: &TestImage, tag: &str) -> String {
    fake.insert_image(&image.blobs, &image.manifests, &image.root, tag)
}

fn config(vars: &[(&str, &str)]) -> Config {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut defaults: HashMap<String, String> =
        [("SOCI_MIN_LAYER_SIZE", "20000"), ("SOCI_SPAN_SIZE", "65536"), ("SOCI_CONCURRENCY", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    defaults.extend(map);
    Config::from_lookup(|name| defaults.get(name).cloned()).unwrap()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The push fixture for `team/app`, with detail fields replaced (null removes one).
fn push(detail: Value) -> Value {
    let mut event = fixture("push-event.json");
    event["detail"]["repository-name"] = json!("team/app");
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
    Invocation { request_id: "req-1".into(), deadline: None }
}

fn small_image() -> TestImage {
    let layer_config = LayerConfig { entries: 40, max_file_size: 64 * 1024, pax_percent: 10 };
    image(
        Style::Oci,
        vec![(
            "linux/amd64".into(),
            vec![TestLayer::gzip(1, &layer_config, 6, false), TestLayer::tar(2, &layer_config, false)],
        )],
        false,
        false,
    )
}

async fn run(event: &Value, config: &Config, registries: &FakeRegistries) -> Report {
    handle(event, &invocation(), config, &services(registries, &Recorder::default())).await
}

/// Replaces an event's `image-tag`.
trait PipeTag {
    fn pipe_tag(self, tag: &str) -> Value;
}

impl PipeTag for Value {
    fn pipe_tag(mut self, tag: &str) -> Value {
        self["detail"]["image-tag"] = json!(tag);
        self
    }
}

/// The delete fixture for `team/app:tag`.
fn delete(tag: &str, digest: &str) -> Value {
    let mut event = fixture("delete-event.json").pipe_tag(tag);
    event["detail"]["repository-name"] = json!("team/app");
    event["detail"]["image-digest"] = json!(digest);
    event
}

fn assert_skipped(report: &Report, expected: &str) {
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    let reason = report.reason.as_deref().unwrap_or_default();
    assert!(reason.contains(expected), "expected {expected:?} in {reason:?}");
    assert!(!report.retry);
}

#[tokio::test]
async fn every_skip_rule_is_decided_without_touching_the_registry() {
    let v2 = config(&[]);
    let soci_tag = push(json!({"image-tag": "1.0-soci"}));
    let cases: Vec<(Value, Config, &str)> = vec![
        (json!({"hello": "world"}), v2.clone(), "not an EventBridge ECR Image Action event"),
        (json!(null), v2.clone(), "not an EventBridge ECR Image Action event"),
        (fixture("scan-event.json"), v2.clone(), "not an ECR image action"),
        (fixture("delete-event.json").pipe_tag("latest-soci"), v2.clone(), "soci-indexer's own output"),
        (fixture("update-storage-class-event.json"), v2.clone(), "not PUSH or DELETE"),
        (push(json!({"result": "FAILURE"})), v2.clone(), "push result \"FAILURE\""),
        (fixture("push-event-soci-index.json"), v2.clone(), "a SOCI index manifest"),
        (
            push(
                json!({"manifest-media-type": media::OCI_MANIFEST, "artifact-media-type": "application/vnd.dev.cosign.artifact.sig.v1+json"}),
            ),
            v2.clone(),
            "not an image: an artifact of type application/vnd.dev.cosign.artifact.sig.v1+json",
        ),
        (soci_tag.clone(), v2.clone(), "ends with the SOCI tag suffix"),
        (soci_tag, config(&[("SOCI_FILTERS", "nothing:*")]), "ends with the SOCI tag suffix"),
        (push(json!({})), config(&[("SOCI_FILTERS", "other/*")]), "team/app:latest matches no filter"),
        (push(json!({})), config(&[("SOCI_FILTERS", "*:*,!team/*")]), "excluded by filter !team/*"),
        (fixture("push-event-tagless.json"), v2.clone(), "pushed without a tag"),
        (
            fixture("push-event-tagless.json"),
            config(&[("SOCI_INDEX_VERSION", "v1"), ("SOCI_FILTERS", "*:?*")]),
            "soci-sample/app: matches no filter",
        ),
    ];
    for (event, config, expected) in cases {
        let registries = FakeRegistries::new(Mode::Serve);
        let report = run(&event, &config, &registries).await;
        assert_skipped(&report, expected);
        assert!(!registries.touched(), "{expected}: the registry was used");
        assert_eq!(report.request_id, "req-1");
    }
}

#[tokio::test]
async fn an_image_is_indexed_then_a_duplicate_event_is_skipped() {
    let registries = FakeRegistries::new(Mode::Serve);
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let event = push(json!({"image-tag": "1.0", "image-digest": digest}));
    let config = config(&[]);

    let report = run(&event, &config, &registries).await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert_eq!(report.repository, "team/app");
    assert_eq!(report.registry.as_deref(), Some("123456789012.dkr.ecr.us-east-1.amazonaws.com"));
    assert_eq!((report.tag.as_deref(), report.digest.as_deref()), (Some("1.0"), Some(digest.as_str())));
    assert_eq!((report.layers_indexed, report.layers_skipped), (2, 0));
    assert!(report.bytes > 0);
    assert_eq!(report.pushed_tag.as_deref(), Some("1.0-soci"));
    let (_, pushed) = registries.fake.manifest("1.0-soci").unwrap();
    assert_eq!(report.index_digest, Some(registry::sha256_digest(&pushed)));
    assert_eq!(report.soci_indexes.len(), 1);
    assert_eq!(report.reason, None);

    let again = run(&event, &config, &registries).await;
    assert_skipped(&again, "already indexed");
}

#[tokio::test]
async fn small_layers_leave_nothing_to_index() {
    let registries = FakeRegistries::new(Mode::Serve);
    push_image(&registries.fake, &small_image(), "1.0");
    let report =
        run(&push(json!({"image-tag": "1.0"})), &config(&[("SOCI_MIN_LAYER_SIZE", "1GiB")]), &registries)
            .await;
    assert_skipped(&report, "nothing to index: 2 layer(s) left out (smaller than the minimum layer size");
    assert_eq!(report.layers_skipped, 2);
}

#[tokio::test]
async fn the_loop_guard_reads_the_fetched_content_not_the_tag() {
    let registries = FakeRegistries::new(Mode::Serve);
    let fake = &registries.fake;
    push_image(fake, &small_image(), "1.0");
    let config = config(&[]);
    let indexed = run(&push(json!({"image-tag": "1.0"})), &config, &registries).await;
    assert_eq!(indexed.outcome, Outcome::Indexed);

    // soci-indexer's own image index, re-tagged under a name that does not end in the suffix.
    let (own_type, own) = fake.manifest("1.0-soci").unwrap();
    let own_digest = fake.insert_manifest(Some("copy"), &own_type, own);
    let report =
        run(&push(json!({"image-tag": "copy", "image-digest": own_digest})), &config, &registries).await;
    assert_skipped(&report, "an image index that already carries SOCI indexes");

    // A SOCI index manifest, tagged, in an event without media types.
    let soci_index = indexed.soci_indexes[0].clone();
    let (soci_type, soci) = fake.manifest(&soci_index).unwrap();
    fake.insert_manifest(Some("soci-manifest"), &soci_type, soci);
    let report = run(&push(json!({"image-tag": "soci-manifest"})), &config, &registries).await;
    assert_skipped(&report, "a SOCI index manifest");

    // Other artifacts: an OCI artifact manifest, a Helm chart (an image manifest with a foreign config).
    fake.insert_manifest(Some("artifact"), "application/vnd.oci.artifact.manifest.v1+json", &br#"{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/example"}"#[..]);
    let report = run(&push(json!({"image-tag": "artifact"})), &config, &registries).await;
    assert_skipped(&report, "not an image manifest or index");
    let chart_config = br#"{"name":"chart"}"#;
    let chart_config_digest = registry::sha256_digest(chart_config);
    fake.insert_blob(&chart_config_digest, Bytes::from_static(chart_config));
    let chart = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{chart_config_digest}","size":{}}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        chart_config.len()
    );
    fake.insert_manifest(Some("chart"), media::OCI_MANIFEST, chart.into_bytes());
    let report = run(&push(json!({"image-tag": "chart"})), &config, &registries).await;
    assert_skipped(&report, "application/vnd.cncf.helm.config.v1+json");

    // The tag was deleted before the event was handled.
    let report = run(&push(json!({"image-tag": "gone"})), &config, &registries).await;
    assert_skipped(&report, "image gone not found");
}

#[tokio::test]
async fn a_moved_tag_indexes_what_it_points_to_now() {
    let registries = FakeRegistries::new(Mode::Serve);
    let current = push_image(&registries.fake, &small_image(), "1.0");
    let stale = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let report =
        run(&push(json!({"image-tag": "1.0", "image-digest": stale})), &config(&[]), &registries).await;
    assert_eq!(report.outcome, Outcome::Indexed);
    assert!(report.reason.as_deref().unwrap_or_default().contains(&current), "{report:?}");
}

#[tokio::test]
async fn v1_indexes_a_tagless_push_by_digest() {
    let registries = FakeRegistries::new(Mode::Serve);
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let event = push(json!({"image-tag": "", "image-digest": digest}));
    let config = config(&[("SOCI_INDEX_VERSION", "v1")]);
    let report = run(&event, &config, &registries).await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert_eq!((report.tag, report.pushed_tag), (None, None));
    assert_eq!(report.index_digest.as_ref(), report.soci_indexes.first());
    // The referrers fallback tag the in-memory registry needed (no referrers API) is our own output.
    let fallback = digest.replacen(':', "-", 1);
    assert!(registries.fake.manifest(&fallback).is_some());
    let report = run(&push(json!({"image-tag": fallback})), &config, &registries).await;
    assert_skipped(&report, "referrers tag-schema index");
    let again = run(&event, &config, &registries).await;
    assert_skipped(&again, "already indexed");
}

#[tokio::test]
async fn registry_failures_fail_and_only_transient_ones_are_retried() {
    let event = push(json!({}));
    let config = config(&[]);

    let throttled = FakeRegistries::new(Mode::Fail { kind: SourceErrorKind::Other, retryable: true });
    let report = run(&event, &config, &throttled).await;
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, true), "{report:?}");
    assert!(report.reason.as_deref().unwrap_or_default().contains("injected Other"));
    let error = invoke(&event, &invocation(), &config, &services(&throttled, &Recorder::default()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("may succeed if retried"), "{error}");
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "SociIndexer.Retryable");

    let denied = FakeRegistries::new(Mode::Fail { kind: SourceErrorKind::Denied, retryable: false });
    let report = run(&event, &config, &denied).await;
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, false), "{report:?}");
    let answer =
        invoke(&event, &invocation(), &config, &services(&denied, &Recorder::default())).await.unwrap();
    assert_eq!(answer.outcome, Outcome::Failed);

    // Skips end the invocation successfully too.
    let skipped =
        invoke(&fixture("scan-event.json"), &invocation(), &config, &services(&denied, &Recorder::default()))
            .await
            .unwrap();
    assert_eq!(skipped.outcome, Outcome::Skipped);
}

/// On tokio's paused clock: the registry never answers, and virtual time runs to the stop.
#[tokio::test(start_paused = true)]
async fn indexing_stops_cleanly_before_the_deadline() {
    let registries = FakeRegistries::new(Mode::Hang);
    let started = tokio::time::Instant::now().into_std();
    let deadline = started + Duration::from_secs(60);
    let invocation = Invocation { request_id: "slow".into(), deadline: Some(deadline) };
    let events = Recorder::default();
    let report = handle(&push(json!({})), &invocation, &config(&[]), &services(&registries, &events)).await;
    let stopped = tokio::time::Instant::now().into_std();
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, true), "{report:?}");
    assert!(report.reason.as_deref().unwrap_or_default().starts_with("deadline: "), "{report:?}");
    // A minute left: the safety margin is 5 s, so indexing stops 55 s in, before the deadline.
    let ran = stopped - started;
    assert!(ran >= Duration::from_secs(55) && ran < Duration::from_millis(55_100), "stopped after {ran:?}");
    assert!(registries.fake.calls() > 0, "it did reach the registry");

    // An invocation whose time is already up fails at once.
    let late = Invocation { request_id: "late".into(), deadline: Some(Instant::now()) };
    let report = handle(&push(json!({})), &late, &config(&[]), &services(&registries, &events)).await;
    assert!(report.reason.as_deref().unwrap_or_default().starts_with("deadline: "));
}

#[test]
fn the_safety_margin_scales_with_the_time_left() {
    use index_on_push::safety_margin;
    assert_eq!(safety_margin(Duration::from_secs(900)), Duration::from_secs(5));
    assert_eq!(safety_margin(Duration::from_secs(30)), Duration::from_secs(3));
    assert_eq!(safety_margin(Duration::from_secs(1)), Duration::from_millis(200));
    assert_eq!(safety_margin(Duration::ZERO), Duration::from_millis(200));
}

#[test]
fn the_invocation_deadline_comes_from_the_context() {
    let mut context = lambda_runtime::Context::default();
    context.request_id = "abc".into();
    let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
    context.deadline = in_a_minute.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let invocation = Invocation::from_context(&context);
    assert_eq!(invocation.request_id, "abc");
    let left = invocation.deadline.unwrap() - Instant::now();
    assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60), "{left:?}");
    assert!(Invocation::from_context(&lambda_runtime::Context::default()).deadline.is_none());
    // `cargo lambda watch` sends the time allowed instead of an absolute deadline.
    context.deadline = 600_000;
    let left = Invocation::from_context(&context).deadline.unwrap() - Instant::now();
    assert!(left > Duration::from_secs(598) && left <= Duration::from_secs(600), "{left:?}");
}

#[tokio::test]
async fn invalid_tags_are_skipped_naming_the_tag_rule_without_touching_the_registry() {
    let long = "a".repeat(129);
    let v1 = config(&[("SOCI_INDEX_VERSION", "v1")]);
    for tag in ["-bad", ".hidden", "a/b", "../../x", "a b", "tag:1", "caf\u{e9}", long.as_str()] {
        // v2 fetches by tag, and so does v1 when the event has no digest.
        for (event, config) in [
            (push(json!({"image-tag": tag})), config(&[])),
            (push(json!({"image-tag": tag, "image-digest": null})), v1.clone()),
        ] {
            let registries = FakeRegistries::new(Mode::Serve);
            let report = run(&event, &config, &registries).await;
            assert_skipped(
                &report,
                "a tag is 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
            );
            assert!(!registries.touched(), "{tag:?}: the registry was used");
        }
        // v1 fetches by digest when there is one: the tag plays no part.
        let registries = FakeRegistries::new(Mode::Serve);
        let report = run(&push(json!({"image-tag": tag})), &v1, &registries).await;
        assert!(registries.touched(), "{tag:?}: {report:?}");
    }
    let report =
        run(&push(json!({"image-tag": long})), &config(&[]), &FakeRegistries::new(Mode::Serve)).await;
    assert_skipped(&report, "image-tag is 129 characters long: a tag is");
}

#[tokio::test]
async fn echoed_fields_are_bounded_however_long_the_event_made_them() {
    let huge_tag = format!("v{}", "1".repeat(1 << 20));
    let huge_name = format!("team/{}", "a".repeat(1 << 20));
    let huge_digest = format!("sha256:{}", "f".repeat(1 << 20));
    let tag = |report: &Report| report.tag.clone().unwrap_or_default();
    let repository = |report: &Report| report.repository.clone();
    let digest = |report: &Report| report.digest.clone().unwrap_or_default();
    type Echoed<'a> = &'a dyn Fn(&Report) -> String;
    let cases: [(Value, Echoed, usize); 4] = [
        (push(json!({"image-tag": huge_tag})), &tag, huge_tag.len()),
        (push(json!({"image-tag": format!("{huge_tag}-soci")})), &tag, huge_tag.len() + 5),
        (push(json!({"repository-name": huge_name})), &repository, huge_name.len()),
        (push(json!({"image-digest": huge_digest})), &digest, huge_digest.len()),
    ];
    for (event, field, length) in cases {
        let registries = FakeRegistries::new(Mode::Serve);
        let report = run(&event, &config(&[]), &registries).await;
        assert_eq!(
            report.outcome,
            Outcome::Skipped,
            "{length}: {:.300}",
            report.reason.as_deref().unwrap_or_default()
        );
        assert!(!registries.touched(), "{length}: the registry was used");
        let echoed = field(&report);
        assert!(echoed.chars().count() <= 1024, "{length}: the field is {} characters", echoed.len());
        assert!(echoed.contains(&format!("{length} characters")), "{length}: {echoed}");
        let reason = report.reason.clone().unwrap_or_default();
        assert!(reason.chars().count() <= 4096, "{length}: the reason is {} characters", reason.len());
        let answer = serde_json::to_string(&report).unwrap();
        assert!(answer.len() < 16 * 1024, "{length}: the report is {} bytes", answer.len());
    }
}

/// `<tag><suffix>` may be 128 characters at most: the engine refuses a longer one before building, and
/// the handler skips the event (nothing was pushed), while one of exactly 128 is indexed.
#[tokio::test]
async fn a_tag_too_long_for_its_suffix_is_skipped_and_nothing_is_pushed() {
    let too_long = "t".repeat(125);
    let registries = FakeRegistries::new(Mode::Serve);
    push_image(&registries.fake, &small_image(), &too_long);
    let report = run(&push(json!({"image-tag": too_long})), &config(&[]), &registries).await;
    assert_skipped(&report, "longer than 128 characters");
    assert!(registries.fake.pushes().is_empty(), "pushed {:?}", registries.fake.pushes());

    let longest = "t".repeat(123);
    push_image(&registries.fake, &small_image(), &longest);
    let report = run(&push(json!({"image-tag": longest})), &config(&[]), &registries).await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert_eq!(report.pushed_tag.map(|tag| tag.len()), Some(128));
    assert!(!registries.fake.pushes().is_empty());
}

/// The config of the completion event tests: events go to the `deployments` bus.
fn announcing(vars: &[(&str, &str)]) -> Config {
    let mut vars = vars.to_vec();
    vars.push(("SOCI_COMPLETION_EVENT_BUS", "deployments"));
    config(&vars)
}

#[tokio::test]
async fn each_ecr_event_gets_one_completion_event_saying_what_came_of_it() {
    let registries = FakeRegistries::new(Mode::Serve);
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let event = push(json!({"image-tag": "1.0", "image-digest": digest}));
    let config = announcing(&[]);
    let events = Recorder::default();
    let services = services(&registries, &events);

    let indexed = handle(&event, &invocation(), &config, &services).await;
    assert_eq!(indexed.outcome, Outcome::Indexed, "{indexed:?}");
    assert!(!indexed.completion_event_failed);
    let recorded = events.events();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (bus, detail) = &recorded[0];
    assert_eq!(bus, "deployments");
    let image_index = indexed.index_digest.clone().unwrap();
    assert_eq!(
        *detail,
        json!({
            "repository-name": "team/app",
            "image-digest": digest,
            "image-tag": "1.0",
            "outcome": "indexed",
            "reason": null,
            "soci-tag": "1.0-soci",
            "image-index-digest": image_index,
            "soci-index-digests": indexed.soci_indexes,
            "layers-indexed": 2,
            "layers-reused": 0,
            "index-version": "v2",
            "retry": false,
        })
    );

    // EventBridge delivers the push again: already indexed, and the event says where, so that a deployer
    // that missed the first event needs no lookup.
    let again = handle(&event, &invocation(), &config, &services).await;
    assert_skipped(&again, "already indexed");
    let (_, detail) = events.events().pop().unwrap();
    assert_eq!((&detail["outcome"], &detail["reason"]), (&json!("skipped"), &json!("already indexed")));
    assert_eq!((&detail["image-tag"], &detail["layers-indexed"]), (&json!("1.0"), &json!(0)));
    assert_eq!(
        (&detail["soci-tag"], &detail["image-index-digest"], &detail["soci-index-digests"]),
        (&json!("1.0-soci"), &json!(image_index), &json!(indexed.soci_indexes))
    );

    // Skipped by a rule, before any registry call: an event all the same.
    let own = push(json!({"image-tag": "1.0-soci"}));
    handle(&own, &invocation(), &config, &services).await;
    let (_, detail) = events.events().pop().unwrap();
    assert_eq!((&detail["outcome"], &detail["image-tag"]), (&json!("skipped"), &json!("1.0-soci")));
    assert!(detail["reason"].as_str().unwrap().contains("ends with the SOCI tag suffix"), "{detail}");
    assert_eq!((&detail["soci-tag"], &detail["image-index-digest"]), (&Value::Null, &Value::Null));

    // A payload that is no ECR event says nothing about any image: no event.
    let junk = handle(&json!({"hello": "world"}), &invocation(), &config, &services).await;
    assert_eq!(junk.outcome, Outcome::Skipped);
    assert_eq!(events.events().len(), 3, "one event per ECR event handled");
}

#[tokio::test]
async fn failures_and_v1_indexes_are_announced_too() {
    let throttled = FakeRegistries::new(Mode::Fail { kind: SourceErrorKind::Other, retryable: true });
    let events = Recorder::default();
    let error =
        invoke(&push(json!({})), &invocation(), &announcing(&[]), &services(&throttled, &events)).await;
    assert!(error.is_err(), "retried: {error:?}");
    let (_, detail) = events.events().pop().unwrap();
    assert_eq!((&detail["outcome"], &detail["retry"]), (&json!("failed"), &json!(true)), "{detail}");
    assert!(detail["reason"].as_str().unwrap().contains("injected Other"), "{detail}");

    let registries = FakeRegistries::new(Mode::Serve);
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let events = Recorder::default();
    let v1 = announcing(&[("SOCI_INDEX_VERSION", "v1")]);
    let event = push(json!({"image-tag": "", "image-digest": digest}));
    let report = handle(&event, &invocation(), &v1, &services(&registries, &events)).await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    let (_, detail) = events.events().pop().unwrap();
    assert_eq!((&detail["index-version"], &detail["image-tag"]), (&json!("v1"), &Value::Null));
    assert_eq!((&detail["soci-tag"], &detail["image-index-digest"]), (&Value::Null, &Value::Null));
    assert_eq!(detail["soci-index-digests"], json!(report.soci_indexes));
    assert_eq!(report.soci_indexes.len(), 1);
}

#[tokio::test]
async fn without_a_bus_no_completion_event_is_put() {
    let registries = FakeRegistries::new(Mode::Serve);
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let events = Recorder::default();
    let services = services(&registries, &events);
    let config = config(&[("SOCI_COMPLETION_EVENT_BUS", "")]);
    for event in
        [push(json!({"image-tag": "1.0", "image-digest": digest})), push(json!({"image-tag": "x-soci"}))]
    {
        let report = handle(&event, &invocation(), &config, &services).await;
        assert!(!report.completion_event_failed);
    }
    assert_eq!(registries.fake.manifest("1.0-soci").map(|_| ()), Some(()), "it did index");
    assert!(events.events().is_empty(), "{:?}", events.events());
}

#[tokio::test]
async fn a_completion_event_that_cannot_be_put_leaves_the_outcome_alone_and_is_counted() {
    let registries = FakeRegistries::new(Mode::Serve);
    push_image(&registries.fake, &small_image(), "1.0");
    let refusing = Recorder::new(Put::Refuse);
    let answer = invoke(
        &push(json!({"image-tag": "1.0"})),
        &invocation(),
        &announcing(&[]),
        &services(&registries, &refusing),
    )
    .await
    .unwrap();
    assert_eq!((answer.outcome, answer.retry), (Outcome::Indexed, false), "{answer:?}");
    assert!(answer.completion_event_failed);
    assert_eq!(serde_json::to_value(&answer).unwrap()["completion_event_failed"], true);
    let emf = answer.metrics(0, "f");
    assert_eq!((emf["CompletionEventsFailed"].as_u64(), emf["Indexed"].as_u64()), (Some(1), Some(1)));

    // A skipped event's metrics and answer are unchanged when the put worked.
    let fine = Recorder::default();
    let skipped = handle(
        &push(json!({"image-tag": "1.0"})),
        &invocation(),
        &announcing(&[]),
        &services(&registries, &fine),
    )
    .await;
    assert_skipped(&skipped, "already indexed");
    assert!(serde_json::to_value(&skipped).unwrap().get("completion_event_failed").is_none());
    assert_eq!(skipped.metrics(0, "f")["CompletionEventsFailed"], 0);
}

/// On tokio's paused clock: a bus that never answers costs at most 10 s, or the time left before the
/// deadline when that is less.
#[tokio::test(start_paused = true)]
async fn a_bus_that_never_answers_is_given_up_on_in_time() {
    let registries = FakeRegistries::new(Mode::Serve);
    push_image(&registries.fake, &small_image(), "1.0");
    let hanging = Recorder::new(Put::Hang);
    let started = tokio::time::Instant::now();
    let report = handle(
        &push(json!({"image-tag": "1.0"})),
        &invocation(),
        &announcing(&[]),
        &services(&registries, &hanging),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Indexed, "{report:?}");
    assert!(report.completion_event_failed);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_500), "{waited:?}");

    let soon =
        Invocation { request_id: "soon".into(), deadline: Some(Instant::now() + Duration::from_secs(3)) };
    let started = tokio::time::Instant::now();
    let report =
        handle(&push(json!({"image-tag": "1.0"})), &soon, &announcing(&[]), &services(&registries, &hanging))
            .await;
    assert_skipped(&report, "already indexed");
    assert!(report.completion_event_failed);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_deleted_tag_loses_its_soci_index_and_the_deletion_is_announced() {
    let registries = FakeRegistries::deleting();
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let config = announcing(&[]);
    let events = Recorder::default();
    let services = services(&registries, &events);
    let indexed =
        handle(&push(json!({"image-tag": "1.0", "image-digest": digest})), &invocation(), &config, &services)
            .await;
    assert_eq!(indexed.outcome, Outcome::Indexed, "{indexed:?}");
    assert!(registries.fake.manifest("1.0-soci").is_some());

    registries.fake.remove_tag("1.0");
    let report = handle(&delete("1.0", &digest), &invocation(), &config, &services).await;
    assert_eq!((report.outcome, report.pruned, report.retry), (Outcome::Pruned, 1, false), "{report:?}");
    assert!(report.reason.as_deref().unwrap_or_default().starts_with("1.0-soci removed"), "{report:?}");
    assert!(registries.fake.manifest("1.0-soci").is_none(), "the SOCI tag is gone");
    let emf = report.metrics(0, "f");
    assert_eq!((emf["Pruned"].as_u64(), emf["outcome"].as_str()), (Some(1), Some("pruned")));
    let announced = events.events();
    assert_eq!(announced.len(), 2);
    assert_eq!(announced[1].1["outcome"], "pruned");
    assert_eq!(announced[1].1["image-tag"], "1.0");

    // The same event again: nothing left to prune.
    let again = handle(&delete("1.0", &digest), &invocation(), &config, &services).await;
    assert_skipped(&again, "nothing to prune");
}

#[tokio::test]
async fn a_deletion_of_soci_output_or_outside_the_filters_never_touches_the_registry() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    for (event, config, expected) in [
        (delete("1.0-soci", &digest), config(&[]), "soci-indexer's own output"),
        (delete(&format!("sha256-{}", "cd".repeat(32)), &digest), config(&[]), "referrers tag-schema index"),
        (delete("1.0", &digest), config(&[("SOCI_FILTERS", "prod/*:*")]), "matches no filter"),
    ] {
        let registries = FakeRegistries::deleting();
        let report = run(&event, &config, &registries).await;
        assert_skipped(&report, expected);
        assert!(!registries.touched(), "{expected}: the registry was used");
    }
}

#[tokio::test]
async fn a_deletion_whose_tag_was_pushed_again_keeps_the_index() {
    let registries = FakeRegistries::deleting();
    let digest = push_image(&registries.fake, &small_image(), "1.0");
    let config = config(&[]);
    let indexed = run(&push(json!({"image-tag": "1.0", "image-digest": digest})), &config, &registries).await;
    assert_eq!(indexed.outcome, Outcome::Indexed);
    // The DELETE event arrives after the tag was pushed again: nothing is removed.
    let report = run(&delete("1.0", &digest), &config, &registries).await;
    assert_skipped(&report, "exists again");
    assert!(registries.fake.manifest("1.0-soci").is_some());
}

#[tokio::test]
async fn an_immutable_tag_fails_for_good_and_says_what_to_do() {
    let immutable = FakeRegistries::new(Mode::Fail { kind: SourceErrorKind::TagImmutable, retryable: false });
    let report = run(&push(json!({})), &config(&[]), &immutable).await;
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, false), "{report:?}");
    let reason = report.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("IMMUTABLE"), "{reason}");
    assert!(reason.contains("delete it by hand and push again"), "{reason}");
    let answer =
        invoke(&push(json!({})), &invocation(), &config(&[]), &services(&immutable, &Recorder::default()))
            .await;
    assert!(answer.is_ok_and(|report| report.outcome == Outcome::Failed), "not retried");
}
