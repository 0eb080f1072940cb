//! The `index-on-push` binary itself, under a local emulation of the Lambda runtime API: the cold start
//! wiring from real environment variables (`SOCI_REGISTRY_URL`, `AWS_ENDPOINT_URL_ECR` to moto), events
//! answered with their report, the JSON log and EMF lines on stdout, and settings errors at cold start.
//!
//! The completion events and the zTOC cache reach moto through `AWS_ENDPOINT_URL_EVENTBRIDGE` and
//! `AWS_ENDPOINT_URL_DYNAMODB`.
//!
//! Set `INDEX_ON_PUSH_BIN` to run another build of the binary (e.g. the release one, to measure its cold
//! start); the timings are printed (`cargo test -p index-on-push --test it runtime -- --nocapture`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use registry::{Client, ClientConfig, Credentials, Repository, StaticCredentials};
use serde_json::{json, Value};
use testkit::image::{image, Style, TestLayer};
use testkit::moto::MotoServer;
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;
use tokio::sync::{mpsc, Notify};

use crate::aws;

fn binary() -> String {
    std::env::var("INDEX_ON_PUSH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_index-on-push").to_owned())
}

/// What the function sent back.
#[derive(Debug)]
enum Answer {
    /// `POST /runtime/invocation/{id}/response`.
    Response { request_id: String, body: Value },
    /// `POST /runtime/invocation/{id}/error`.
    Error { request_id: String, body: Value },
}

/// The runtime API: hands out queued events on `GET /invocation/next` (long-polling when none is
/// queued), reports answers through a channel, and when the first `next` arrived.
struct RuntimeApi {
    addr: SocketAddr,
    events: Arc<Mutex<VecDeque<(String, Value)>>>,
    queued: Arc<Notify>,
    first_poll: Arc<Mutex<Option<Instant>>>,
    answers: mpsc::UnboundedReceiver<(Instant, Answer)>,
    _server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    async fn start() -> RuntimeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events: Arc<Mutex<VecDeque<(String, Value)>>> = Arc::default();
        let queued = Arc::new(Notify::new());
        let first_poll: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (sender, answers) = mpsc::unbounded_channel();
        let state = (events.clone(), queued.clone(), first_poll.clone(), sender);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (events, queued, first_poll, sender) = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (events, queued, first_poll, sender) =
                            (events.clone(), queued.clone(), first_poll.clone(), sender.clone());
                        async move {
                            Ok::<_, Infallible>(serve(request, events, queued, first_poll, sender).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RuntimeApi { addr, events, queued, first_poll, answers, _server: server }
    }

    fn send(&self, request_id: &str, event: Value) {
        self.events.lock().unwrap().push_back((request_id.to_owned(), event));
        self.queued.notify_one();
    }

    async fn answer(&mut self) -> (Instant, Answer) {
        tokio::time::timeout(Duration::from_secs(120), self.answers.recv())
            .await
            .expect("the function answered within 2 minutes")
            .expect("the runtime API is running")
    }
}

async fn serve(
    request: Request<Incoming>,
    events: Arc<Mutex<VecDeque<(String, Value)>>>,
    queued: Arc<Notify>,
    first_poll: Arc<Mutex<Option<Instant>>>,
    sender: mpsc::UnboundedSender<(Instant, Answer)>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if path == "/2018-06-01/runtime/invocation/next" {
        first_poll.lock().unwrap().get_or_insert_with(Instant::now);
        loop {
            let next = events.lock().unwrap().pop_front();
            if let Some((request_id, event)) = next {
                let deadline = SystemTime::now() + Duration::from_secs(120);
                let deadline_ms = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis();
                return Response::builder()
                    .header("lambda-runtime-aws-request-id", request_id)
                    .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
                    .header(
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:index-on-push",
                    )
                    .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(event.to_string())))
                    .unwrap();
            }
            queued.notified().await;
        }
    }
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.trim_start_matches("/2018-06-01/runtime/invocation/").split('/').collect();
    let answer = match parts.as_slice() {
        [id, "response"] => Some(Answer::Response { request_id: id.to_string(), body }),
        [id, "error"] => Some(Answer::Error { request_id: id.to_string(), body }),
        _ => None,
    };
    match answer {
        Some(answer) => {
            let _ = sender.send((Instant::now(), answer));
            Response::builder().status(202).body(Full::new(Bytes::from_static(b"{}"))).unwrap()
        }
        None => Response::builder().status(404).body(Full::new(Bytes::new())).unwrap(),
    }
}

/// The binary with a clean environment: only what Lambda would set, plus `vars`.
fn command(vars: &[(&str, String)]) -> Command {
    let mut command = Command::new(binary());
    command.env_clear();
    for name in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("AWS_LAMBDA_FUNCTION_NAME", "index-on-push")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

/// The binary with `vars`, its stdout and stderr piped, killed when dropped.
fn start_function(vars: &[(&str, String)]) -> tokio::process::Child {
    tokio::process::Command::from(command(vars))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A registry that only lets in moto's ECR login, holding one single-layer image as `sample/app:v1`.
struct Sample {
    registry: LocalRegistry,
    client: Client,
    repository: Repository,
    digest: String,
}

impl Sample {
    async fn start() -> Sample {
        let registry = LocalRegistry::start_with_basic_auth("AWS", MotoServer::ECR_PASSWORD).await.unwrap();
        let client = Client::new(
            ClientConfig { plain_http: true, ..ClientConfig::default() },
            Arc::new(StaticCredentials(Credentials::new("AWS", MotoServer::ECR_PASSWORD))),
        )
        .unwrap();
        let repository = Repository::new(registry.host(), "sample/app").unwrap();
        let layer_config = LayerConfig { entries: 60, max_file_size: 256 * 1024, pax_percent: 10 };
        let image = image(
            Style::Docker,
            vec![("linux/amd64".into(), vec![TestLayer::gzip(5, &layer_config, 6, true)])],
            false,
            false,
        );
        for (digest, _, bytes) in &image.blobs {
            client.push_blob(&repository, digest, Bytes::from(bytes.clone())).await.unwrap();
        }
        let (digest, media_type, bytes) = &image.root;
        client.put_manifest(&repository, "v1", media_type, Bytes::from(bytes.clone())).await.unwrap();
        Sample { registry, client, repository, digest: digest.clone() }
    }

    /// The push event of `sample/app:v1`.
    fn event(&self) -> Value {
        let mut event = fixture_event();
        event["detail"]["repository-name"] = json!("sample/app");
        event["detail"]["image-tag"] = json!("v1");
        event["detail"]["image-digest"] = json!(self.digest);
        event
    }
}

fn fixture_event() -> Value {
    let path = format!("{}/fixtures/push-event.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Stops the binary and checks what it wrote: no secret, JSON lines only, one outcome line and one EMF
/// object per event (four: the push, then three skips).
async fn assert_output(mut child: tokio::process::Child, registry_host: &str) {
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stdout.contains(MotoServer::ECR_PASSWORD) && !stderr.contains(MotoServer::ECR_PASSWORD));
    let lines: Vec<Value> = stdout.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert_eq!(lines.len(), stdout.lines().count(), "every stdout line is JSON:\n{stdout}");
    let outcomes: Vec<&Value> =
        lines.iter().filter(|l| l.get("outcome").is_some() && l.get("_aws").is_none()).collect();
    assert_eq!(outcomes.len(), 4, "one log line per event:\n{stdout}");
    let indexed = outcomes[0];
    assert_eq!(indexed["request_id"], "req-push", "{indexed}");
    assert_eq!(indexed["outcome"], "indexed");
    assert_eq!(indexed["repository"], "sample/app");
    assert_eq!(indexed["registry"], registry_host);
    assert_eq!(indexed["layers_indexed"], 1);
    assert!(indexed["index_digest"].as_str().is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(indexed["span"]["request_id"], "req-push", "the event's span carries the request id");
    let metrics: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(metrics.len(), 4, "one EMF object per event:\n{stdout}");
    assert_eq!((metrics[0]["Indexed"].as_u64(), metrics[1]["Skipped"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_push_events_from_the_runtime_api() {
    let moto = MotoServer::start().await.unwrap();
    let Sample { registry, client, repository, digest } = Sample::start().await;

    let mut api = RuntimeApi::start().await;
    let started = Instant::now();
    let child = start_function(&[
        ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
        ("AWS_ENDPOINT_URL_ECR", moto.url()),
        ("SOCI_REGISTRY_URL", registry.url()),
        ("SOCI_MIN_LAYER_SIZE", "50000".into()),
        ("SOCI_SPAN_SIZE", "65536".into()),
        ("SOCI_FILTERS", "sample/*".into()),
    ]);

    let mut event = fixture_event();
    event["detail"]["repository-name"] = json!("sample/app");
    event["detail"]["image-tag"] = json!("v1");
    event["detail"]["image-digest"] = json!(digest);
    api.send("req-push", event.clone());

    let (handled_at, answer) = api.answer().await;
    let Answer::Response { request_id, body } = answer else { panic!("expected a response, got {answer:?}") };
    assert_eq!(request_id, "req-push");
    assert_eq!(body["outcome"], "indexed", "{body}");
    assert_eq!(body["pushed_tag"], "v1-soci");
    assert!(client.get_manifest(&repository, "v1-soci").await.is_ok());
    let first_poll = api.first_poll.lock().unwrap().expect("the runtime polled for an event");
    eprintln!(
        "cold start ({}): ready for events after {} ms; first event (index + push) answered after {} ms",
        binary(),
        (first_poll - started).as_millis(),
        (handled_at - started).as_millis()
    );

    // The -soci tag's own push event, then a duplicate, then something that is not an event at all.
    let mut own = event.clone();
    own["detail"]["image-tag"] = json!("v1-soci");
    api.send("req-own", own);
    api.send("req-dup", event);
    api.send("req-junk", json!({"not": "an event"}));
    for (expected_id, expected_reason) in [
        ("req-own", "ends with the SOCI tag suffix"),
        ("req-dup", "already indexed"),
        ("req-junk", "not an EventBridge ECR Image Action event"),
    ] {
        let (_, answer) = api.answer().await;
        let Answer::Response { request_id, body } = answer else {
            panic!("expected a response, got {answer:?}")
        };
        assert_eq!(request_id, expected_id);
        assert_eq!(body["outcome"], "skipped", "{body}");
        assert!(body["reason"].as_str().unwrap_or_default().contains(expected_reason), "{body}");
    }

    assert_output(child, &registry.host()).await;
}

#[test]
fn bad_settings_stop_the_cold_start_naming_the_variable() {
    for (name, value) in [
        ("SOCI_SPAN_SIZE", "big"),
        ("SOCI_INDEX_VERSION", "v9"),
        ("SOCI_FILTERS", "myrepo"),
        ("SOCI_CONCURRENCY", "0"),
        ("LOG_LEVEL", "loud"),
        ("SOCI_REGISTRY_URL", "ftp://registry"),
    ] {
        let output = command(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9".into()), (name, value.into())])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}={value}: {stderr}");
        assert!(stderr.starts_with(&format!("index-on-push: bad setting: {name}: ")), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn outside_lambda_the_binary_says_so() {
    let output = command(&[]).env_remove("AWS_LAMBDA_FUNCTION_NAME").stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_an_error_so_that_lambda_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut api = RuntimeApi::start().await;
    let mut child = start_function(&[
        ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
        ("SOCI_REGISTRY_URL", format!("http://{closed}")),
    ]);
    let path = format!("{}/fixtures/push-event.json", env!("CARGO_MANIFEST_DIR"));
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    api.send("req-down", event);
    let (_, answer) = api.answer().await;
    let Answer::Error { request_id, body } = answer else { panic!("expected an error, got {answer:?}") };
    assert_eq!(request_id, "req-down");
    assert_eq!(body["errorType"], "SociIndexer.Retryable", "{body}");
    assert!(body["errorMessage"].as_str().unwrap_or_default().contains("may succeed if retried"), "{body}");
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(r#""outcome":"failed""#) && stdout.contains(r#""retry":true"#), "{stdout}");
    assert!(stdout.contains(r#""Failed":1"#), "{stdout}");
}

/// Every `LOG_LEVEL`, however verbose, keeps the ECR login out of the log: the AWS SDK logs the raw
/// `GetAuthorizationToken` answer at trace, so its targets (and the HTTP stack's) are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_level_prints_the_ecr_credential() {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", MotoServer::ECR_PASSWORD));
    let moto = MotoServer::start().await.unwrap();
    let sample = Sample::start().await;
    for (run, log_level) in [
        "trace",
        "trace,aws_smithy_runtime=trace,aws_sdk_ecr=trace,hyper=trace",
        "trace,aws_smithy_runtime::client::orchestrator=trace,aws_smithy_runtime_api=trace,aws_config=trace,\
         aws_sigv4=trace,aws_runtime=trace,hyper_util=trace,h2=trace,rustls=trace,registry=trace,app=trace",
        "[event]=trace,[{request_id}]=trace,[invoke]=trace,[send_operation]=trace",
    ]
    .into_iter()
    .enumerate()
    {
        let mut api = RuntimeApi::start().await;
        let mut child = start_function(&[
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            ("AWS_ENDPOINT_URL_ECR", moto.url()),
            ("SOCI_REGISTRY_URL", sample.registry.url()),
            ("SOCI_MIN_LAYER_SIZE", "50000".into()),
            ("SOCI_SPAN_SIZE", "65536".into()),
            ("SOCI_TAG_SUFFIX", format!("-soci{run}")),
            ("LOG_LEVEL", log_level.into()),
        ]);
        // Read while it runs: a trace log fills a pipe's buffer long before the event is answered.
        let stdout = tokio::spawn(read_all(child.stdout.take().unwrap()));
        let stderr = tokio::spawn(read_all(child.stderr.take().unwrap()));
        api.send("req-verbose", sample.event());
        let (_, answer) = api.answer().await;
        let Answer::Response { body, .. } = answer else {
            panic!("{log_level}: expected a response, got {answer:?}")
        };
        // The registry only lets in moto's login: indexing proves the token was fetched and used.
        assert_eq!(body["outcome"], "indexed", "{log_level}: {body}");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let printed = [stdout.await.unwrap(), stderr.await.unwrap()].concat();
        let printed = String::from_utf8_lossy(&printed);
        // Verbose indeed: the registry client's debug lines are there.
        assert!(printed.contains(r#""message":"registry request""#), "{log_level}: quiet run:\n{printed}");
        for (line_number, line) in printed.lines().enumerate() {
            for secret in [MotoServer::ECR_PASSWORD, token.as_str()] {
                assert!(
                    !line.contains(secret),
                    "{log_level}: line {line_number} prints the ECR login: {line}"
                );
            }
        }
    }
}

/// Everything `from` gives until it closes.
async fn read_all(mut from: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut from, &mut all).await.unwrap();
    all
}

/// Whatever the payload (any JSON: Lambda takes nothing else), the function answers and logs one outcome
/// line and its metrics; a huge event's line stays far below CloudWatch's 256 KB per log event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_and_huge_payloads_each_get_one_bounded_outcome_line() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut api = RuntimeApi::start().await;
    let mut child = start_function(&[
        ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
        ("SOCI_REGISTRY_URL", format!("http://{closed}")),
    ]);
    let stdout = tokio::spawn(read_all(child.stdout.take().unwrap()));
    let huge_tag = format!("v{}", "1".repeat(1 << 20));
    let mut huge = fixture_event();
    huge["detail"]["image-tag"] = json!(huge_tag);
    let payloads = [
        ("req-string", json!("hello"), "not an EventBridge ECR Image Action event"),
        ("req-array", json!([1]), "not an EventBridge ECR Image Action event"),
        ("req-number", json!(42), "not an EventBridge ECR Image Action event"),
        ("req-null", json!(null), "not an EventBridge ECR Image Action event"),
        (
            "req-shape",
            json!({"source": "aws.ecr", "detail": [1, 2]}),
            "not an EventBridge ECR Image Action event",
        ),
        ("req-huge", huge, "a tag is 1 to 128 characters"),
    ];
    for (request_id, payload, _) in &payloads {
        api.send(request_id, payload.clone());
    }
    for (expected_id, _, expected_reason) in &payloads {
        let (_, answer) = api.answer().await;
        let Answer::Response { request_id, body } = answer else {
            panic!("{expected_id}: expected a response, got {answer:.2000?}")
        };
        assert_eq!(request_id, *expected_id);
        assert_eq!(body["outcome"], "skipped", "{body:.2000}");
        assert!(body["reason"].as_str().unwrap_or_default().contains(expected_reason), "{body:.2000}");
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let stdout = String::from_utf8(stdout.await.unwrap()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines {
        assert!(line.len() < 16 * 1024, "a {} byte line: {line:.2000}", line.len());
    }
    let lines: Vec<Value> = lines.iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    let outcomes: Vec<&Value> =
        lines.iter().filter(|l| l.get("outcome").is_some() && l.get("_aws").is_none()).collect();
    let ids: Vec<&str> = outcomes.iter().map(|l| l["request_id"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        ids,
        payloads.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        "one outcome line per payload"
    );
    assert!(outcomes.iter().all(|l| l["outcome"] == "skipped"));
    let huge_line = outcomes[5];
    let tag = huge_line["tag"].as_str().unwrap_or_default();
    assert!(tag.starts_with("v111") && tag.contains(&format!("{} characters", huge_tag.len())), "{tag}");
    let metrics = lines.iter().filter(|l| l["Skipped"] == 1).count();
    assert_eq!(metrics, payloads.len(), "one EMF line per payload");
}

/// Starts the binary under `api` with `vars`; returns its stdout and stderr once `answers` answers came
/// back and it was stopped.
async fn serve_events(
    api: &mut RuntimeApi,
    vars: &[(&str, String)],
    events: &[(&str, Value)],
) -> (Vec<Answer>, String) {
    let mut vars = vars.to_vec();
    vars.push(("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()));
    let mut child = start_function(&vars);
    let stdout = tokio::spawn(read_all(child.stdout.take().unwrap()));
    let stderr = tokio::spawn(read_all(child.stderr.take().unwrap()));
    for (request_id, event) in events {
        api.send(request_id, event.clone());
    }
    let mut answers = Vec::new();
    for _ in events {
        answers.push(api.answer().await.1);
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let printed = [stdout.await.unwrap(), stderr.await.unwrap()].concat();
    (answers, String::from_utf8_lossy(&printed).into_owned())
}

/// Through the SDK's endpoint variables, as a local run sets them: a push event puts one completion event
/// (delivered by a rule to a queue) and records its zTOC in the cache table, which another execution
/// environment then reuses; with EventBridge down, the image is indexed all the same and the failure is
/// logged and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reaches_eventbridge_and_dynamodb_through_the_endpoint_variables() {
    let moto = MotoServer::start().await.unwrap();
    let sdk = aws::sdk(&moto.url()).await;
    aws::create_cache_table(&sdk).await;
    let queue = aws::Queue::for_rule(&sdk, "soci", &json!({"source": ["soci-indexer"]})).await;
    let sample = Sample::start().await;
    let vars = |events_endpoint: String, tag_suffix: &str| {
        vec![
            ("AWS_ENDPOINT_URL_ECR", moto.url()),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", events_endpoint),
            ("AWS_ENDPOINT_URL_DYNAMODB", moto.url()),
            ("SOCI_COMPLETION_EVENT_BUS", "default".to_owned()),
            ("SOCI_ZTOC_CACHE_TABLE", aws::CACHE_TABLE.to_owned()),
            ("SOCI_REGISTRY_URL", sample.registry.url()),
            ("SOCI_MIN_LAYER_SIZE", "50000".to_owned()),
            ("SOCI_SPAN_SIZE", "65536".to_owned()),
            ("SOCI_TAG_SUFFIX", tag_suffix.to_owned()),
        ]
    };

    let mut api = RuntimeApi::start().await;
    let (answers, printed) =
        serve_events(&mut api, &vars(moto.url(), "-soci"), &[("req-1", sample.event())]).await;
    let Answer::Response { body, .. } = &answers[0] else { panic!("{answers:?}\n{printed}") };
    assert_eq!(
        (&body["outcome"], &body["layers_indexed"]),
        (&json!("indexed"), &json!(1)),
        "{body}\n{printed}"
    );
    let messages = queue.take().await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let detail = &messages[0]["detail"];
    assert_eq!((&detail["repository-name"], &detail["outcome"]), (&json!("sample/app"), &json!("indexed")));
    assert_eq!((&detail["image-digest"], &detail["soci-tag"]), (&json!(sample.digest), &json!("v1-soci")));
    assert_eq!(aws::cache_items(&sdk).await.len(), 1, "the layer's zTOC is in the table");

    // Another execution environment, EventBridge unreachable, another suffix (so: indexed again).
    let mut api = RuntimeApi::start().await;
    let closed = aws::closed_port();
    let (answers, printed) =
        serve_events(&mut api, &vars(closed, "-lazy"), &[("req-2", sample.event())]).await;
    let Answer::Response { body, .. } = &answers[0] else { panic!("{answers:?}\n{printed}") };
    assert_eq!(body["outcome"], "indexed", "{body}\n{printed}");
    assert_eq!(
        (&body["layers_reused"], &body["layers_indexed"]),
        (&json!(1), &json!(0)),
        "the cache: {body}"
    );
    assert_eq!(body["completion_event_failed"], true, "{body}");
    assert!(sample.client.get_manifest(&sample.repository, "v1-lazy").await.is_ok());
    let lines: Vec<Value> = printed.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let warning = lines
        .iter()
        .find(|l| l["message"] == "the completion event could not be put on the event bus")
        .unwrap_or_else(|| panic!("no warning:\n{printed}"));
    assert_eq!((&warning["level"], &warning["bus"]), (&json!("WARN"), &json!("default")), "{warning}");
    assert!(
        warning["error"].as_str().unwrap_or_default().contains("PutEvents on event bus default"),
        "{warning}"
    );
    let emf = lines.iter().find(|l| l.get("_aws").is_some()).unwrap();
    assert_eq!((&emf["CompletionEventsFailed"], &emf["Indexed"]), (&json!(1), &json!(1)), "{emf}");
    assert!(queue.take().await.is_empty());
}

/// A release pushes 40 images at once: 40 execution environments of the binary, each answering one push
/// event, against docker-registry behind ECR's quotas (manifest PUTs 10 a second, uploads 20, `429
/// TOOMANYREQUESTS` over them, shared by all). Every image is indexed and no invocation fails (so Lambda
/// retries none); the figures are printed (`-- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_pushes_over_ecrs_quota_is_all_indexed_and_none_retried() {
    use testkit::proxy::{QuotaProxy, Quotas};
    const BURST: usize = 40;
    let moto = MotoServer::start().await.unwrap();
    let sample = Sample::start().await;
    let proxy = QuotaProxy::start(sample.registry.addr(), Quotas::default()).await.unwrap();
    let repository = Repository::new(sample.registry.host(), "burst/app").unwrap();
    let layer_config = LayerConfig { entries: 20, max_file_size: 16 * 1024, pax_percent: 0 };
    let mut digests = Vec::new();
    for i in 0..BURST as u64 {
        let layers = vec![TestLayer::gzip(7000 + i, &layer_config, 6, false)];
        let image = image(Style::Oci, vec![("linux/amd64".into(), layers)], false, false);
        for (digest, _, bytes) in &image.blobs {
            sample.client.push_blob(&repository, digest, Bytes::from(bytes.clone())).await.unwrap();
        }
        let (digest, media_type, bytes) = &image.root;
        sample
            .client
            .put_manifest(&repository, &format!("t{i}"), media_type, Bytes::from(bytes.clone()))
            .await
            .unwrap();
        digests.push(digest.clone());
    }
    let mut api = RuntimeApi::start().await;
    let _functions: Vec<tokio::process::Child> = (0..BURST)
        .map(|_| {
            start_function(&[
                ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
                ("AWS_ENDPOINT_URL_ECR", moto.url()),
                ("SOCI_REGISTRY_URL", format!("http://{}", proxy.host())),
                ("SOCI_MIN_LAYER_SIZE", "1000".into()),
                ("SOCI_SPAN_SIZE", "65536".into()),
            ])
        })
        .collect();
    let started = Instant::now();
    for (i, digest) in digests.iter().enumerate() {
        let mut event = fixture_event();
        event["detail"]["repository-name"] = json!("burst/app");
        event["detail"]["image-tag"] = json!(format!("t{i}"));
        event["detail"]["image-digest"] = json!(digest);
        api.send(&format!("req-{i}"), event);
    }
    let (mut indexed, mut throttled) = (0, 0);
    for _ in 0..BURST {
        match api.answer().await.1 {
            Answer::Response { body, .. } => {
                assert_eq!(body["outcome"], "indexed", "{body}");
                indexed += 1;
                throttled += body["throttled"].as_u64().unwrap_or(0);
            }
            Answer::Error { request_id, body } => {
                panic!("{request_id} failed (Lambda would retry it): {body}")
            }
        }
    }
    let (wall, bound, counts) = (started.elapsed(), proxy.bound(), proxy.counts());
    println!(
        "burst of {BURST} push events through the runtime API: {indexed}/{BURST} indexed in {:.1} s, quota bound \
         {:.1} s ({} manifest PUTs, {} uploads): {:.2}x; {throttled} requests throttled; upload sessions left \
         open: {}",
        wall.as_secs_f64(),
        bound.as_secs_f64(),
        counts.manifest_puts,
        counts.uploads,
        wall.as_secs_f64() / bound.as_secs_f64(),
        counts.open_sessions
    );
    assert!(counts.manifest_puts_throttled > 0, "the burst was throttled: {counts:?}");
}
