//! `soci-indexer status` and `wait` against a real registry (docker-registry): every state, v1 and v2,
//! with and without credentials, and the exit statuses a deploy pipeline relies on.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::{Client, ClientConfig, Credentials, Repository, StaticCredentials};
use serde_json::Value;
use testkit::image::{image, Style, TestImage, TestLayer};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

use super::{cli, push_image};

const USER: &str = "soci";
const PASSWORD: &str = "status-pass";

fn client(auth: bool) -> Client {
    let credentials: Arc<dyn registry::CredentialSource> = if auth {
        Arc::new(StaticCredentials(Credentials::new(USER, PASSWORD)))
    } else {
        Arc::new(registry::Anonymous)
    };
    Client::new(ClientConfig { plain_http: true, ..ClientConfig::default() }, credentials).unwrap()
}

fn layer_config() -> LayerConfig {
    LayerConfig { entries: 30, max_file_size: 128 * 1024, pax_percent: 0 }
}

/// Two platforms, each with an eligible layer of its own.
fn two_platforms(seed: u64) -> TestImage {
    image(
        Style::Oci,
        vec![
            ("linux/amd64".into(), vec![TestLayer::gzip(seed, &layer_config(), 6, false)]),
            ("linux/arm64".into(), vec![TestLayer::gzip(seed + 1, &layer_config(), 6, false)]),
        ],
        true,
        false,
    )
}

/// A CLI run against the registry, the password on stdin when `auth`.
fn command(verb: &str, reference: &str, auth: bool, extra: &[&str]) -> Command {
    let mut command = cli();
    command.args([verb, reference, "--plain-http", "--min-layer-size", "20000"]).args(extra);
    if auth {
        command.args(["--username", USER, "--password-stdin"]);
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn spawn(verb: &str, reference: &str, auth: bool, extra: &[&str]) -> Child {
    let mut child = command(verb, reference, auth, extra).spawn().expect("run soci-indexer");
    let mut stdin = child.stdin.take().unwrap();
    if auth {
        stdin.write_all(PASSWORD.as_bytes()).unwrap();
    }
    drop(stdin);
    child
}

fn run(verb: &str, reference: &str, auth: bool, extra: &[&str]) -> Output {
    spawn(verb, reference, auth, extra).wait_with_output().unwrap()
}

/// `status --json`: exit code and the parsed object.
fn status(reference: &str, auth: bool, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let output = run("status", reference, auth, &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), value)
}

fn create(reference: &str, auth: bool, extra: &[&str]) {
    let output = run("create", reference, auth, extra);
    assert!(output.status.success(), "create: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn v2_status_in_every_state_with_credentials() {
    let registry = LocalRegistry::start_with_basic_auth(USER, PASSWORD).await.unwrap();
    let client = client(true);
    let repo = Repository::new(registry.host(), "team/app").unwrap();
    let image = two_platforms(40);
    push_image(&client, &repo, &image, "1.0").await;
    let reference = format!("{}/team/app:1.0", registry.host());

    let (code, before) = status(&reference, true, &[]);
    assert_eq!(code, Some(3), "{before}");
    assert_eq!((before["state"].as_str(), before["indexed"].as_bool()), (Some("not-indexed"), Some(false)));
    assert_eq!(before["reference"], reference.as_str());
    assert_eq!(before["image_digest"], image.root.0.as_str());
    assert_eq!(before["soci_tag"], "1.0-soci");
    assert!(before["image_index_digest"].is_null());

    create(&reference, true, &[]);
    let (code, after) = status(&reference, true, &[]);
    assert_eq!(code, Some(0), "{after}");
    assert_eq!((after["state"].as_str(), after["indexed"].as_bool()), (Some("indexed"), Some(true)));
    assert_eq!(after["index_version"], "v2");
    let index_digest = after["image_index_digest"].as_str().unwrap().to_owned();
    let tagged = client.get_manifest(&repo, "1.0-soci").await.unwrap();
    assert_eq!(index_digest, tagged.digest, "the digest to deploy is the -soci tag's");
    let platforms = after["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for platform in platforms {
        assert!(platform["soci_index_digest"].as_str().unwrap().starts_with("sha256:"), "{platform}");
        assert_eq!(platform["layers_eligible"], 1, "{platform}");
        assert_eq!(platform["layers_indexed"], 1, "{platform}");
        assert!(platform["manifest_digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(platform["platform"].as_str().unwrap().starts_with("linux/"));
    }

    // The human output says what to deploy.
    let human = run("status", &reference, true, &[]);
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(
        stdout.contains(&format!("deploy {}/team/app:1.0-soci ({index_digest})", registry.host())),
        "{stdout}"
    );
    assert!(stdout.contains("linux/arm64") && stdout.contains("1/1 eligible layer(s) indexed"), "{stdout}");

    // One platform's SOCI index deleted: partial.
    let arm_index = platforms[1]["soci_index_digest"].as_str().unwrap();
    assert_eq!(client.delete_manifest(&repo, arm_index).await.unwrap(), registry::Deletion::Deleted);
    let (code, partial) = status(&reference, true, &[]);
    assert_eq!((code, partial["state"].as_str()), (Some(3), Some("partial")), "{partial}");
    assert!(partial["platforms"][1]["soci_index_digest"].is_null());

    // The tag re-pointed to another image: the -soci tag is stale.
    push_image(&client, &repo, &two_platforms(50), "1.0").await;
    let (code, stale) = status(&reference, true, &[]);
    assert_eq!((code, stale["state"].as_str()), (Some(3), Some("stale")), "{stale}");
    let human = run("status", &reference, true, &[]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("binds another image"));

    // Without credentials: exit 1, named.
    let output = run("status", &reference, false, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401") && stderr.contains("--username"), "{stderr}");
}

#[tokio::test]
async fn v1_status_without_credentials_and_a_missing_image() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = client(false);
    let repo = Repository::new(registry.host(), "app").unwrap();
    push_image(&client, &repo, &two_platforms(60), "v1").await;
    let reference = format!("{}/app:v1", registry.host());
    let v1 = ["--index-version", "v1"];

    let (code, before) = status(&reference, false, &v1);
    assert_eq!((code, before["state"].as_str()), (Some(3), Some("not-indexed")), "{before}");
    create(&reference, false, &v1);
    let (code, after) = status(&reference, false, &v1);
    assert_eq!((code, after["state"].as_str()), (Some(0), Some("indexed")), "{after}");
    assert!(after["soci_tag"].is_null() && after["index_version"] == "v1", "{after}");
    let amd_index = after["platforms"][0]["soci_index_digest"].as_str().unwrap();
    assert_eq!(client.delete_manifest(&repo, amd_index).await.unwrap(), registry::Deletion::Deleted);
    let (code, partial) = status(&reference, false, &v1);
    assert_eq!((code, partial["state"].as_str()), (Some(3), Some("partial")), "{partial}");

    // A reference to nothing: exit 1 with a named error, as JSON too.
    let missing = format!("{}/app:nope", registry.host());
    let (code, error) = status(&missing, false, &[]);
    assert_eq!(code, Some(1));
    assert!(error["error"].as_str().unwrap().contains("not found"), "{error}");
}

#[tokio::test]
async fn wait_returns_when_the_index_lands_times_out_or_fails_at_once() {
    let registry = LocalRegistry::start().await.unwrap();
    let client = client(false);
    let repo = Repository::new(registry.host(), "app").unwrap();
    push_image(&client, &repo, &two_platforms(70), "1").await;
    let reference = format!("{}/app:1", registry.host());

    // Never indexed: exit 3 after about the timeout, with the last state.
    let started = Instant::now();
    let output = run("wait", &reference, false, &["--timeout", "2s", "--interval", "500ms"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "{took:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not-indexed"));

    // A missing repository: exit 1 at once.
    let started = Instant::now();
    let output = run("wait", &format!("{}/nothing/here:1", registry.host()), false, &["--timeout", "60s"]);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // Started before create: returns 0 soon after the index appears.
    let waiter = spawn("wait", &reference, false, &["--timeout", "120s", "--interval", "500ms"]);
    std::thread::sleep(Duration::from_secs(1));
    create(&reference, false, &[]);
    let indexed_at = Instant::now();
    let output = waiter.wait_with_output().unwrap();
    let after = indexed_at.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(after < Duration::from_secs(5), "wait returned {after:?} after the index landed");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1-soci"));
}

#[test]
fn wait_ends_at_its_timeout_when_the_registry_accepts_and_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    // Accept every connection and hold it open, silent.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let output = run("wait", &format!("{host}/team/app:1"), false, &["--timeout", "3s"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        took < Duration::from_secs(8),
        "wait --timeout 3s took {took:?} (a request's own timeout is 60 s)"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not answer") && stderr.contains("still not lazy-loadable"), "{stderr}");
}
