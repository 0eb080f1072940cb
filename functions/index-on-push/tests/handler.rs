//! The handler with hand-built events and an in-memory registry: every skip rule (none of which
//! touches the registry), the loop guard on fetched content, failures and retries, the deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use index::oci::Descriptor;
use index::{media, BlobStream, FetchedManifest, PushedManifest, SourceError, SourceErrorKind};
use index_on_push::{handle, invoke, Config, Invocation, Outcome, Registries, Report};
use registry::Repository;
use serde_json::{json, Value};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::LayerConfig;

/// What the fake does on every call.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Serve,
    Fail { kind: SourceErrorKind, retryable: bool },
    Hang,
}

/// An in-memory registry: manifests by tag and digest, blobs by digest; counts every call.
#[derive(Clone)]
struct Fake {
    manifests: Arc<Mutex<HashMap<String, FetchedManifest>>>,
    blobs: Arc<Mutex<HashMap<String, Bytes>>>,
    calls: Arc<AtomicUsize>,
    mode: Mode,
}

impl Fake {
    fn new(mode: Mode) -> Fake {
        Fake { manifests: Arc::default(), blobs: Arc::default(), calls: Arc::default(), mode }
    }

    fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        let digest = registry::sha256_digest(bytes);
        let fetched = FetchedManifest {
            media_type: media_type.into(),
            digest: digest.clone(),
            bytes: Bytes::copy_from_slice(bytes),
        };
        let mut manifests = self.manifests.lock().unwrap();
        manifests.insert(digest.clone(), fetched.clone());
        manifests.insert(reference.into(), fetched);
        digest
    }

    fn push_image(&self, image: &TestImage, tag: &str) -> String {
        for (digest, _, bytes) in &image.blobs {
            self.blobs.lock().unwrap().insert(digest.clone(), Bytes::from(bytes.clone()));
        }
        for (digest, media_type, bytes) in &image.manifests {
            self.put_manifest(digest, media_type, bytes);
        }
        let (_, media_type, bytes) = &image.root;
        self.put_manifest(tag, media_type, bytes)
    }

    fn manifest(&self, reference: &str) -> Option<FetchedManifest> {
        self.manifests.lock().unwrap().get(reference).cloned()
    }

    async fn enter(&self) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::Serve => Ok(()),
            Mode::Fail { kind, retryable } => {
                Err(SourceError::new(kind, retryable, format!("injected {kind:?}")))
            }
            Mode::Hang => std::future::pending().await,
        }
    }
}

impl index::Registry for Fake {
    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        self.enter().await?;
        Ok(self.manifest(reference))
    }

    async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, SourceError> {
        let bytes = self.get_blob_bytes(descriptor).await?;
        Ok(Box::pin(futures_util::stream::iter(vec![Ok(bytes)])))
    }

    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        self.enter().await?;
        self.blobs
            .lock()
            .unwrap()
            .get(&descriptor.digest)
            .cloned()
            .ok_or_else(|| SourceError::new(SourceErrorKind::NotFound, false, "no such blob"))
    }

    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        self.enter().await?;
        self.blobs.lock().unwrap().insert(digest.into(), bytes);
        Ok(())
    }

    async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest, SourceError> {
        self.enter().await?;
        let digest = self.put_manifest(reference, media_type, &bytes);
        Ok(PushedManifest { digest, oci_subject: None })
    }

    async fn referrers(
        &self,
        _digest: &str,
        _artifact_type: &str,
    ) -> Result<Option<Vec<Descriptor>>, SourceError> {
        self.enter().await?;
        Ok(None)
    }

    async fn delete_manifest(&self, _digest: &str) -> Result<bool, SourceError> {
        self.enter().await?;
        Ok(false)
    }
}

/// Hands out the fake for every repository, remembering which were opened.
struct FakeRegistries {
    fake: Fake,
    opened: Mutex<Vec<String>>,
}

impl FakeRegistries {
    fn new(mode: Mode) -> FakeRegistries {
        FakeRegistries { fake: Fake::new(mode), opened: Mutex::new(Vec::new()) }
    }

    /// Whether anything was asked of the registry.
    fn touched(&self) -> bool {
        !self.opened.lock().unwrap().is_empty() || self.fake.calls.load(Ordering::SeqCst) > 0
    }
}

impl Registries for FakeRegistries {
    type Registry = Fake;

    fn open(&self, repository: &Repository) -> Fake {
        self.opened.lock().unwrap().push(repository.to_string());
        self.fake.clone()
    }
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
    handle(event, &invocation(), config, registries).await
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
        (fixture("delete-event.json"), v2.clone(), "action-type \"DELETE\", not PUSH"),
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
    let digest = registries.fake.push_image(&small_image(), "1.0");
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
    let pushed = registries.fake.manifest("1.0-soci").unwrap();
    assert_eq!(report.index_digest.as_deref(), Some(pushed.digest.as_str()));
    assert_eq!(report.soci_indexes.len(), 1);
    assert_eq!(report.reason, None);

    let again = run(&event, &config, &registries).await;
    assert_skipped(&again, "already indexed");
}

#[tokio::test]
async fn small_layers_leave_nothing_to_index() {
    let registries = FakeRegistries::new(Mode::Serve);
    registries.fake.push_image(&small_image(), "1.0");
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
    fake.push_image(&small_image(), "1.0");
    let config = config(&[]);
    let indexed = run(&push(json!({"image-tag": "1.0"})), &config, &registries).await;
    assert_eq!(indexed.outcome, Outcome::Indexed);

    // soci-indexer's own image index, re-tagged under a name that does not end in the suffix.
    let own = fake.manifest("1.0-soci").unwrap();
    fake.put_manifest("copy", &own.media_type, &own.bytes);
    let report =
        run(&push(json!({"image-tag": "copy", "image-digest": own.digest})), &config, &registries).await;
    assert_skipped(&report, "an image index that already carries SOCI indexes");

    // A SOCI index manifest, tagged, in an event without media types.
    let soci_index = indexed.soci_indexes[0].clone();
    let soci = fake.manifest(&soci_index).unwrap();
    fake.put_manifest("soci-manifest", &soci.media_type, &soci.bytes);
    let report = run(&push(json!({"image-tag": "soci-manifest"})), &config, &registries).await;
    assert_skipped(&report, "a SOCI index manifest");

    // Other artifacts: an OCI artifact manifest, a Helm chart (an image manifest with a foreign config).
    fake.put_manifest("artifact", "application/vnd.oci.artifact.manifest.v1+json", br#"{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/example"}"#);
    let report = run(&push(json!({"image-tag": "artifact"})), &config, &registries).await;
    assert_skipped(&report, "not an image manifest or index");
    let chart_config = br#"{"name":"chart"}"#;
    let chart_config_digest = registry::sha256_digest(chart_config);
    fake.blobs.lock().unwrap().insert(chart_config_digest.clone(), Bytes::from_static(chart_config));
    let chart = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{chart_config_digest}","size":{}}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        chart_config.len()
    );
    fake.put_manifest("chart", media::OCI_MANIFEST, chart.as_bytes());
    let report = run(&push(json!({"image-tag": "chart"})), &config, &registries).await;
    assert_skipped(&report, "application/vnd.cncf.helm.config.v1+json");

    // The tag was deleted before the event was handled.
    let report = run(&push(json!({"image-tag": "gone"})), &config, &registries).await;
    assert_skipped(&report, "image gone not found");
}

#[tokio::test]
async fn a_moved_tag_indexes_what_it_points_to_now() {
    let registries = FakeRegistries::new(Mode::Serve);
    let current = registries.fake.push_image(&small_image(), "1.0");
    let stale = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let report =
        run(&push(json!({"image-tag": "1.0", "image-digest": stale})), &config(&[]), &registries).await;
    assert_eq!(report.outcome, Outcome::Indexed);
    assert!(report.reason.as_deref().unwrap_or_default().contains(&current), "{report:?}");
}

#[tokio::test]
async fn v1_indexes_a_tagless_push_by_digest() {
    let registries = FakeRegistries::new(Mode::Serve);
    let digest = registries.fake.push_image(&small_image(), "1.0");
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
    let error = invoke(&event, &invocation(), &config, &throttled).await.unwrap_err();
    assert!(error.to_string().contains("may succeed if retried"), "{error}");
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "SociIndexer.Retryable");

    let denied = FakeRegistries::new(Mode::Fail { kind: SourceErrorKind::Denied, retryable: false });
    let report = run(&event, &config, &denied).await;
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, false), "{report:?}");
    let answer = invoke(&event, &invocation(), &config, &denied).await.unwrap();
    assert_eq!(answer.outcome, Outcome::Failed);

    // Skips end the invocation successfully too.
    let skipped = invoke(&fixture("delete-event.json"), &invocation(), &config, &denied).await.unwrap();
    assert_eq!(skipped.outcome, Outcome::Skipped);
}

#[tokio::test]
async fn indexing_stops_cleanly_before_the_deadline() {
    let registries = FakeRegistries::new(Mode::Hang);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(1500);
    let invocation = Invocation { request_id: "slow".into(), deadline: Some(deadline) };
    let report = handle(&push(json!({})), &invocation, &config(&[]), &registries).await;
    let stopped = Instant::now();
    assert_eq!((report.outcome, report.retry), (Outcome::Failed, true), "{report:?}");
    assert!(report.reason.as_deref().unwrap_or_default().starts_with("deadline: "), "{report:?}");
    assert!(stopped < deadline, "stopped {:?} after the deadline", stopped - deadline);
    assert!(stopped >= deadline - Duration::from_millis(500), "stopped too early: {:?}", deadline - stopped);

    // An invocation whose time is already up fails at once.
    let late = Invocation { request_id: "late".into(), deadline: Some(Instant::now()) };
    let report = handle(&push(json!({})), &late, &config(&[]), &registries).await;
    assert!(report.reason.as_deref().unwrap_or_default().starts_with("deadline: "));
}

#[test]
fn the_safety_margin_scales_with_the_time_left() {
    use index_on_push::handler::safety_margin;
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
