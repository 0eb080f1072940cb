//! `infra/smoke-test.sh`, the post-deploy smoke test, run as an operator runs it, against the local
//! stack instead of an account: moto plays STS and ECR's `GetAuthorizationToken`, docker-registry the
//! ECR registry (basic auth with moto's ECR password), and `cargo lambda watch --only-lambda-apis` the
//! Lambda Invoke API that `aws lambda invoke` calls (`AWS_ENDPOINT_URL_LAMBDA`), with the
//! `index-on-push` binary of this build polling its runtime API as function `_`.
//!
//! The script needs the AWS CLI, cargo-lambda and the `soci-indexer` CLI: each missing one fails the
//! test with what to install (nothing is skipped). The CLI is `SOCI_INDEXER_BIN`, else the
//! `soci-indexer` next to this build's `index-on-push` (`cargo test --workspace` builds both; after
//! `cargo test -p index-on-push` alone, `cargo build -p soci-indexer` first).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use testkit::image::{image, Style, TestLayer};
use testkit::moto::MotoServer;
use testkit::LayerConfig;

use crate::aws;

/// The workspace root (the script's and cargo lambda's working directory).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// PATH with pip's scripts directory first (where install-tools.sh puts cargo-lambda and the AWS CLI).
fn search_path() -> std::ffi::OsString {
    let scripts = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let current = std::env::var_os("PATH").unwrap_or_default();
    let dirs = scripts.into_iter().chain(std::env::split_paths(&current));
    std::env::join_paths(dirs).unwrap()
}

/// `name` on `path`, or a failed test saying how to install it.
fn require(path: &std::ffi::OsStr, name: &str, install: &str) -> PathBuf {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is missing, and the smoke test needs it: {install}"))
}

/// The `soci-indexer` CLI the script runs.
fn soci_indexer() -> PathBuf {
    let path = std::env::var_os("SOCI_INDEXER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_index-on-push")).with_file_name("soci-indexer"));
    assert!(
        path.is_file(),
        "{} is missing: `cargo build -p soci-indexer` (cargo test --workspace builds it), or set SOCI_INDEXER_BIN",
        path.display()
    );
    path
}

/// `cargo lambda watch --only-lambda-apis` on a free port, and the function polling it; both killed
/// when dropped.
struct LocalFunction {
    invoke_url: String,
    _watch: tokio::process::Child,
    _function: tokio::process::Child,
}

impl LocalFunction {
    async fn start(path: &std::ffi::OsStr, vars: &[(&str, String)]) -> LocalFunction {
        let cargo_lambda = require(path, "cargo-lambda", "pip install cargo-lambda (infra/install-tools.sh)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let watch = tokio::process::Command::new(cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--color",
                "never",
                "--invoke-address",
                "127.0.0.1",
            ])
            .args(["--invoke-port", &port.to_string()])
            .current_dir(workspace())
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cargo lambda watch did not listen on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut function = tokio::process::Command::new(env!("CARGO_BIN_EXE_index-on-push"));
        function.env_clear();
        for name in ["PATH", "HOME", "TMPDIR"] {
            if let Some(value) = std::env::var_os(name) {
                function.env(name, value);
            }
        }
        function
            // What cargo lambda watch prints for --only-lambda-apis.
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SOCI_MIN_LAYER_SIZE", "50000")
            .env("SOCI_SPAN_SIZE", "65536")
            .env("SOCI_COMPLETION_EVENT_BUS", "");
        for (name, value) in vars {
            function.env(name, value);
        }
        let function = function
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        LocalFunction { invoke_url: format!("http://127.0.0.1:{port}"), _watch: watch, _function: function }
    }
}

/// What a run of the script printed, and its exit status.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

/// infra/smoke-test.sh `image` against `function`, with AWS's endpoints on the stand-ins.
async fn smoke_test(path: &std::ffi::OsStr, moto: &MotoServer, function: &LocalFunction, image: &str) -> Run {
    let mut command = tokio::process::Command::new(workspace().join("infra/smoke-test.sh"));
    command.env_clear();
    for name in ["HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("PATH", path)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_LAMBDA", &function.invoke_url)
        .env("AWS_ENDPOINT_URL_STS", moto.url())
        .env("AWS_ENDPOINT_URL_ECR", moto.url())
        .args(["--function", "_", "--region", "us-east-1", "--plain-http", "--timeout", "60s"])
        // The function's SOCI_MIN_LAYER_SIZE (the stack's MinLayerSize, read from the stack with --stack).
        .args(["--min-layer-size", "50000"])
        .arg("--soci-indexer")
        .arg(soci_indexer())
        .arg(image)
        .current_dir(workspace())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("infra/smoke-test.sh finished within 5 minutes")
        .unwrap();
    Run {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_test_script_indexes_an_image_through_the_invoke_api_and_names_a_filter_that_skips_it() {
    let path = search_path();
    require(&path, "aws", "pip install awscli (or the AWS CLI v2)");
    let (moto, registry, client) = aws::ecr_stand_ins().await;
    let layer_config = LayerConfig { entries: 60, max_file_size: 256 * 1024, pax_percent: 10 };
    let sample = image(
        Style::Docker,
        vec![("linux/amd64".into(), vec![TestLayer::gzip(17, &layer_config, 6, true)])],
        false,
        false,
    );
    let repository = registry::Repository::new(registry.host(), "smoke/app").unwrap();
    for tag in ["v1", "v2"] {
        aws::push_image(&client, &repository, &sample, tag).await;
    }

    let function = LocalFunction::start(
        &path,
        &[("AWS_ENDPOINT_URL_ECR", moto.url()), ("SOCI_REGISTRY_URL", registry.url())],
    )
    .await;
    let image_v1 = format!("{}/smoke/app:v1", registry.host());
    let run = smoke_test(&path, &moto, &function, &image_v1).await;
    assert_eq!(run.status, Some(0), "{run}");
    assert!(run.stdout.contains("the function indexed smoke/app:v1"), "{run}");
    let deploy = format!(
        "smoke-test: OK: {image_v1} is lazy-loadable; deploy {}/smoke/app:v1-soci (sha256:",
        registry.host()
    );
    assert!(run.stdout.contains(&deploy), "{run}");
    assert!(client.get_manifest(&repository, "v1-soci").await.is_ok(), "v1-soci is in the registry");
    assert!(!format!("{run}").contains(MotoServer::ECR_PASSWORD), "the registry password is never printed");

    // Again: the image is indexed already, and the function says so.
    let run = smoke_test(&path, &moto, &function, &image_v1).await;
    assert_eq!(run.status, Some(0), "{run}");
    assert!(run.stdout.contains("already indexed before this test"), "{run}");

    // A stack whose filters leave the image out: the script fails and says it is the filters.
    let filtered = LocalFunction::start(
        &path,
        &[
            ("AWS_ENDPOINT_URL_ECR", moto.url()),
            ("SOCI_REGISTRY_URL", registry.url()),
            ("SOCI_FILTERS", "prod/*:*".into()),
        ],
    )
    .await;
    let run = smoke_test(&path, &moto, &filtered, &format!("{}/smoke/app:v2", registry.host())).await;
    assert_eq!(run.status, Some(1), "{run}");
    assert!(run.stderr.contains("smoke-test: FAILED: the function skipped the image: filters:"), "{run}");
    assert!(client.get_manifest(&repository, "v2-soci").await.is_err(), "nothing indexed");
}
