//! `soci-indexer create` against a real registry (Debian's docker-registry, CNCF distribution 2.8) and
//! fixtures in front of it: ECR-style redirects, a referrers API, injected faults.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use index::media;
use index::oci::{Index, Manifest};
use registry::{Client, ClientConfig, Credentials, Repository, RetryPolicy, StaticCredentials};
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::proxy::{Fault, FaultPlan, FaultProxy, RedirectProxy, ReferrersProxy, RequestFilter};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

use super::{cli, push_image};

const USER: &str = "soci";
const PASSWORD: &str = "s3cret-pass";

fn client(auth: bool) -> Client {
    let config = ClientConfig {
        plain_http: true,
        retry: RetryPolicy { max_attempts: 3, ..RetryPolicy::default() },
        ..ClientConfig::default()
    };
    let credentials: Arc<dyn registry::CredentialSource> = if auth {
        Arc::new(StaticCredentials(Credentials::new(USER, PASSWORD)))
    } else {
        Arc::new(registry::Anonymous)
    };
    Client::new(config, credentials).unwrap()
}

fn layer_config() -> LayerConfig {
    LayerConfig { entries: 60, max_file_size: 256 * 1024, pax_percent: 10 }
}

/// Two platforms (Docker media types), a shared layer, a small layer, an attestation.
fn test_image() -> TestImage {
    let shared = TestLayer::gzip(11, &layer_config(), 6, true);
    image(
        Style::Docker,
        vec![
            ("linux/amd64".into(), vec![shared.clone(), TestLayer::gzip(12, &layer_config(), 6, true)]),
            ("linux/arm64/v8".into(), vec![shared, TestLayer::tar(13, &layer_config(), true)]),
        ],
        true,
        true,
    )
}

/// Runs `soci-indexer create` with the password on stdin; returns (success, stdout, stderr).
fn create(host: &str, image_ref: &str, extra: &[&str]) -> (bool, String, String) {
    create_with_output(host, image_ref, &["--json"], extra)
}

/// `create` with `output` flags (`--json`, or none for the human summary on stderr).
fn create_with_output(
    host: &str,
    image_ref: &str,
    output: &[&str],
    extra: &[&str],
) -> (bool, String, String) {
    let mut child = cli()
        .args(["create", &format!("{host}/{image_ref}"), "--plain-http", "--min-layer-size", "50000"])
        .args(output)
        .args(["--span-size", "65536", "--username", USER, "--password-stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Reads a file of the image back the way a lazy loader does: the SOCI index from the registry, the
/// zTOC blob, then only the span ranges of the layer (HTTP Range), and compares it with the source.
async fn check_round_trip(client: &Client, repo: &Repository, soci_digest: &str, layers: &[TestLayer]) {
    let soci = client.get_manifest(repo, soci_digest).await.unwrap();
    let soci: Manifest = serde_json::from_slice(&soci.bytes).unwrap();
    assert!(!soci.layers().is_empty());
    for ztoc_desc in soci.layers() {
        let layer_digest = ztoc_desc.annotation(media::ANNOTATION_LAYER_DIGEST).unwrap();
        let layer = layers.iter().find(|l| l.digest == layer_digest).expect("zTOC of a layer of this image");
        assert_eq!(ztoc_desc.annotation(media::ANNOTATION_LAYER_MEDIA_TYPE), Some(layer.media_type.as_str()));
        let mut ztoc_bytes = Vec::new();
        let mut stream = client.get_blob(repo, &ztoc_desc.digest, Some(ztoc_desc.size as u64)).await.unwrap();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            ztoc_bytes.extend_from_slice(&chunk.unwrap());
        }
        let ztoc = ztoc::codec::decode(&ztoc_bytes).unwrap();
        assert_eq!(ztoc.compressed_archive_size.get(), layer.blob.len() as u64);
        let mut remote =
            RemoteBlob { client, repo, digest: layer.digest.clone(), size: layer.blob.len() as u64 };
        for (name, content) in layer.files.iter().filter(|(_, c)| !c.is_empty()).take(12) {
            let entry = ztoc::extract::find_entry(&ztoc, name).unwrap();
            let mut out = Vec::new();
            tokio::task::block_in_place(|| ztoc::extract::extract_entry(&mut remote, &ztoc, entry, &mut out))
                .unwrap();
            assert!(out == *content, "{name} from layer {}", layer.digest);
        }
    }
}

/// Random access to a registry blob through HTTP Range requests.
struct RemoteBlob<'a> {
    client: &'a Client,
    repo: &'a Repository,
    digest: String,
    size: u64,
}

impl ztoc::extract::RandomAccess for RemoteBlob<'_> {
    fn size(&mut self) -> std::io::Result<u64> {
        Ok(self.size)
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        let bytes = tokio::runtime::Handle::current()
            .block_on(self.client.get_blob_range(self.repo, &self.digest, offset, end))
            .map_err(std::io::Error::other)?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_through_ecr_style_redirects_with_basic_auth_then_lazy_load_round_trip() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let proxy = RedirectProxy::start(registry.addr()).await.unwrap();
    let client = client(true);
    let repo = Repository::new(proxy.host(), "team/app").unwrap();
    let image = test_image();
    push_image(&client, &repo, &image, "1.0").await;

    let (ok, stdout, stderr) = create(&proxy.host(), "team/app:1.0", &[]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password never reaches the output");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "created");
    assert_eq!(report["pushed_tag"], "1.0-soci");
    assert!(proxy.redirects() > 0, "layers were fetched through the redirect");
    assert_eq!(proxy.auth_leaks(), 0, "no Authorization header reached the redirect target");

    // The new image index binds each platform to its SOCI index; the original tag did not move.
    let soci_tag = client.get_manifest(&repo, "1.0-soci").await.unwrap();
    assert_eq!(report["image_index_digest"], soci_tag.digest);
    let new_index: Index = serde_json::from_slice(&soci_tag.bytes).unwrap();
    assert_eq!(client.get_manifest(&repo, "1.0").await.unwrap().digest, image.root.0);
    let soci_entries: Vec<_> =
        new_index.manifests().iter().filter(|d| d.artifact_type == media::SOCI_INDEX_V2).collect();
    assert_eq!(soci_entries.len(), 2);
    for (platform, layers) in &image.platforms {
        let soci = soci_entries
            .iter()
            .find(|d| d.platform.as_ref().unwrap().to_string() == *platform)
            .unwrap_or_else(|| panic!("SOCI descriptor for {platform}"));
        let image_digest = soci.annotation(media::ANNOTATION_IMAGE_MANIFEST_DIGEST).unwrap();
        let manifest = client.get_manifest(&repo, image_digest).await.unwrap();
        let manifest: Manifest = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(manifest.annotations.unwrap()[media::ANNOTATION_INDEX_DIGEST], soci.digest);
        check_round_trip(&client, &repo, &soci.digest, layers).await;
    }

    // A second run finds the index, pushes nothing, and names what to deploy as the first did.
    let (ok, stdout, stderr) = create(&proxy.host(), "team/app:1.0", &[]);
    assert!(ok, "{stderr}");
    let again: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(again["outcome"], "already_indexed");
    assert_eq!(
        (&again["pushed_tag"], &again["image_index_digest"]),
        (&report["pushed_tag"], &report["image_index_digest"])
    );
    let soci_indexes = |report: &serde_json::Value| {
        report["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["soci_index_digest"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(soci_indexes(&again), soci_indexes(&report));
    let (ok, _, summary) = create_with_output(&proxy.host(), "team/app:1.0", &[], &[]);
    assert!(ok, "{summary}");
    let deploy = format!("deploy {}/team/app:1.0-soci ({})", proxy.host(), soci_tag.digest);
    assert!(summary.contains("already has a SOCI v2 index") && summary.contains(&deploy), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_falls_back_to_the_referrers_tag_on_distribution() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    let repo = Repository::new(registry.host(), "app").unwrap();
    let image = test_image();
    push_image(&client, &repo, &image, "v1").await;
    let (ok, stdout, stderr) =
        create(&registry.host(), "app:v1", &["--index-version", "v1", "--platform", "linux/amd64"]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let platform = &report["platforms"][0];
    let subject = platform["manifest_digest"].as_str().unwrap();
    let fallback = client.get_manifest(&repo, &subject.replacen(':', "-", 1)).await.unwrap();
    let referrers: Index = serde_json::from_slice(&fallback.bytes).unwrap();
    assert_eq!(referrers.manifests()[0].artifact_type, media::SOCI_INDEX_V1);
    assert_eq!(referrers.manifests()[0].digest, platform["soci_index_digest"].as_str().unwrap());
    check_round_trip(&client, &repo, platform["soci_index_digest"].as_str().unwrap(), &image.platforms[0].1)
        .await;
    let (ok, stdout, _) =
        create(&registry.host(), "app:v1", &["--index-version", "v1", "--platform", "linux/amd64"]);
    assert!(ok);
    assert!(stdout.contains("already_indexed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_with_a_referrers_api_writes_no_fallback_tag() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let proxy = ReferrersProxy::start(registry.addr()).await.unwrap();
    let client = client(true);
    let repo = Repository::new(proxy.host(), "app").unwrap();
    let image = test_image();
    push_image(&client, &repo, &image, "r").await;
    let (ok, stdout, stderr) = create(&proxy.host(), "app:r", &["--index-version", "v1"]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(proxy.referrers().len(), 2, "one SOCI index per platform, indexed by the registry");
    for platform in report["platforms"].as_array().unwrap() {
        let subject = platform["manifest_digest"].as_str().unwrap();
        let fallback = client.get_manifest(&repo, &subject.replacen(':', "-", 1)).await;
        assert!(fallback.is_err_and(|e| e.is_not_found()), "no fallback tag when the registry has the API");
    }
    let (ok, stdout, _) = create(&proxy.host(), "app:r", &["--index-version", "v1"]);
    assert!(ok && stdout.contains("already_indexed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_cut_streams_resumed() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    let image = test_image();
    push_image(&client, &Repository::new(registry.host(), "app").unwrap(), &image, "t").await;
    let plan = FaultPlan::new().fail_first(2, testkit::proxy::Fault::ServerError).cut_blob_gets(2, 20_000);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let (ok, stdout, stderr) = create(&proxy.host(), "app:t", &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"created\""), "{stdout}");
    assert!(proxy.faults_injected() >= 3, "faults were injected: {}", proxy.faults_injected());
    assert!(proxy.requests_log().iter().any(|r| r.had_range()), "a cut blob was resumed with Range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_fail_clearly_and_push_nothing() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    let image = test_image();
    push_image(&client, &Repository::new(registry.host(), "app").unwrap(), &image, "t").await;
    let plan = FaultPlan::new()
        .fail_first(1000, testkit::proxy::Fault::ServerError)
        .only(testkit::proxy::RequestFilter::BlobGets);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let (ok, _, stderr) = create(&proxy.host(), "app:t", &[]);
    assert!(!ok);
    assert!(stderr.contains("error:") && stderr.contains("500"), "{stderr}");
    let writes: Vec<_> = proxy
        .requests_log()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .collect();
    assert!(writes.is_empty(), "no manifest pushed after a failure: {writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_and_credentials_are_named() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    push_image(&client, &Repository::new(registry.host(), "app").unwrap(), &test_image(), "t").await;
    let (ok, stdout, stderr) = create(&registry.host(), "app:missing", &[]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    // --json: scripts read a JSON error object on stdout, naming the full reference.
    let error: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    assert_eq!(error["reference"], format!("{}/app:missing", registry.host()));
    assert!(error["error"].as_str().unwrap().contains("not found"), "{error}");
    let (ok, stdout, stderr) = create(&registry.host(), "app:t", &[]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["reference"], format!("{}/app:t", registry.host()), "the full reference, not the tag");
    let (ok, _, stderr) = create(&registry.host(), "nothere:t", &[]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");

    let mut child = cli()
        .args([
            "create",
            &format!("{}/app:t", registry.host()),
            "--plain-http",
            "--username",
            USER,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"wrong-password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.to_lowercase().contains("unauthorized") || stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("wrong-password"));
}

/// Pushes a one-platform OCI image whose only layer is `layer`; returns its registry and client.
async fn one_layer_image(layer: TestLayer, tag: &str) -> (LocalRegistry, Client, TestImage) {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    let image = image(Style::Oci, vec![("linux/amd64".into(), vec![layer])], false, false);
    push_image(&client, &Repository::new(registry.host(), "app").unwrap(), &image, tag).await;
    (registry, client, image)
}

/// Manifests stored in repository `app`, read from the registry's storage: the ground truth of what
/// was pushed.
fn stored_manifests(registry: &LocalRegistry) -> usize {
    let revisions =
        registry.storage_dir().join("docker/registry/v2/repositories/app/_manifests/revisions/sha256");
    std::fs::read_dir(revisions).map_or(0, |entries| entries.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_whose_bytes_do_not_match_its_digest_fails_and_nothing_is_pushed() {
    let layer = TestLayer::gzip(21, &layer_config(), 6, false);
    let (registry, client, image) = one_layer_image(layer.clone(), "t").await;
    // Damage the stored blob in place: the registry now serves bytes that do not hash to the digest.
    let hex = layer.digest.trim_start_matches("sha256:");
    let data =
        registry.storage_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let repo = Repository::new(registry.host(), "app").unwrap();
    let before = client.get_manifest(&repo, "t").await.unwrap();
    let (ok, _, stderr) = create(&registry.host(), "app:t", &[]);
    assert!(!ok);
    assert!(stderr.contains(&layer.digest) && stderr.to_lowercase().contains("digest"), "{stderr}");
    assert!(client.get_manifest(&repo, "t-soci").await.is_err_and(|e| e.is_not_found()), "no index tag");
    assert_eq!(client.get_manifest(&repo, "t").await.unwrap().digest, before.digest);
    assert_eq!(image.manifests.len(), 0);
    assert_eq!(stored_manifests(&registry), 1, "only the image's own manifest is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_fails_with_its_digest_and_nothing_is_pushed() {
    let mut tar = testkit::generate_layer(22, &layer_config()).tar;
    tar.truncate(tar.len() / 2);
    let mut blob = testkit::gzip(&tar, &testkit::GzipOptions::default());
    let crc = blob.len() - 8;
    blob[crc] ^= 0xff;
    let layer = TestLayer::from_parts(media::OCI_LAYER_GZIP, blob, &tar, Vec::new());
    let (registry, _client, _) = one_layer_image(layer.clone(), "t").await;
    let manifests_before = stored_manifests(&registry);
    assert_eq!(manifests_before, 1, "the image's own manifest");
    let (ok, _, stderr) = create(&registry.host(), "app:t", &[]);
    assert!(!ok);
    assert!(stderr.contains(&layer.digest) && stderr.contains("corrupt gzip data"), "{stderr}");
    assert_eq!(stored_manifests(&registry), manifests_before, "no manifest pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_that_is_not_an_image_is_refused() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    let repo = Repository::new(registry.host(), "app").unwrap();
    let config = b"{\"kind\":\"helm chart\"}".to_vec();
    let config_digest = ztoc::sha256_digest(&config);
    client.push_blob(&repo, &config_digest, Bytes::from(config.clone())).await.unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        config.len()
    );
    client.put_manifest(&repo, "chart", media::OCI_MANIFEST, Bytes::from(manifest)).await.unwrap();
    let (ok, _, stderr) = create(&registry.host(), "app:chart", &[]);
    assert!(!ok && stderr.contains("not an image"), "{stderr}");
}

/// A registry that accepts connections and never answers: `--timeout` ends the run, named.
#[test]
fn create_gives_up_at_its_timeout_against_a_registry_that_never_answers() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let output =
        cli().args(["create", &format!("{host}/app:1"), "--plain-http", "--timeout", "2s"]).output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not done within --timeout 2s"), "{stderr}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    drop(silent);
}

/// An image whose only eligible layer cannot be indexed says so, layer by layer, and pushes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_only_layer_is_unsupported_says_why() {
    let registry = LocalRegistry::start().await.unwrap();
    // A tar whose first entry is a PAX global header ('g'), which soci cannot index.
    let header = testkit::tar_header("pax_global_header", 0, b'g');
    let mut tar = header.to_vec();
    tar.extend(testkit::generate_layer(5, &layer_config()).tar);
    let blob = testkit::gzip(&tar, &testkit::GzipOptions::default());
    let layer = TestLayer::from_parts(media::OCI_LAYER_GZIP, blob, &tar, Vec::new());
    let image = image(Style::Oci, vec![("linux/amd64".into(), vec![layer.clone()])], false, false);
    let repo = Repository::new(registry.host(), "odd").unwrap();
    push_image(&client(false), &repo, &image, "1").await;
    let output = cli()
        .args(["create", &format!("{}/odd:1", registry.host()), "--plain-http", "--min-layer-size", "1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("no layer got a zTOC") && stderr.contains("pax_global_header"), "{stderr}");
    assert!(!stderr.contains("no layer is at least"), "{stderr}");
    assert!(client(false).get_manifest(&repo, "1-soci").await.unwrap_err().is_not_found());
}

/// ECR with IMMUTABLE tags refuses to move an existing tag: re-indexing a re-pointed tag whose stale
/// `-soci` tag exists fails by name, with the way out, and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_soci_tag_in_an_immutable_repository_fails_by_name() {
    let registry = LocalRegistry::start().await.unwrap();
    let repo = Repository::new(registry.host(), "locked").unwrap();
    let small = LayerConfig { entries: 20, max_file_size: 64 * 1024, pax_percent: 0 };
    let first = image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(31, &small, 6, false)])],
        false,
        false,
    );
    push_image(&client(false), &repo, &first, "1").await;
    let reference = format!("{}/locked:1", registry.host());
    let ok = cli().args(["create", &reference, "--plain-http", "--min-layer-size", "1000"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let second = image(
        Style::Oci,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(32, &small, 6, false)])],
        false,
        false,
    );
    push_image(&client(false), &repo, &second, "1").await;
    let before = client(false).get_manifest(&repo, "1-soci").await.unwrap().digest;

    // From now on, tag pushes are refused as ECR refuses them for an existing immutable tag.
    fn tag_puts(method: &http::Method, path: &str) -> bool {
        method == http::Method::PUT && path.contains("/manifests/") && !path.contains("sha256:")
    }
    let plan =
        FaultPlan::new().fail_first(usize::MAX, Fault::ImmutableTag).only(RequestFilter::Custom(tag_puts));
    let ecr = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let output = cli()
        .args(["create", &format!("{}/locked:1", ecr.host()), "--plain-http", "--min-layer-size", "1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("immutable") && stderr.contains("prune"), "{stderr}");
    assert_eq!(client(false).get_manifest(&repo, "1-soci").await.unwrap().digest, before, "nothing moved");
}
