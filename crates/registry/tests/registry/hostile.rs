//! What a broken or hostile registry can make the client hold or wait for: bodies that never end,
//! answers that drip, stall or never come.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use registry::{media_type, sha256_digest, Anonymous, Client, ClientConfig, Error};
use tokio::time::Instant;

use crate::script::{head, ScriptServer, Step};
use crate::support::*;

/// Reads a blob stream to its end: how many bytes came as items, and the error that ended it.
async fn drain(mut stream: registry::BlobStream) -> (u64, Option<Error>) {
    let mut received = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => received += chunk.len() as u64,
            Err(error) => return (received, Some(error)),
        }
    }
    (received, None)
}

#[tokio::test]
async fn an_endless_blob_body_fails_as_soon_as_it_passes_the_declared_size() {
    // An image config is read whole into memory: its declared size must bound what is held.
    let declared = 1000u64;
    let digest = sha256_digest(b"the config the manifest declares");
    let chunk_of = |framing: &str| {
        let data = vec![b'x'; 4096];
        match framing {
            "chunked" => [format!("{:x}\r\n", data.len()).into_bytes(), data, b"\r\n".to_vec()].concat(),
            _ => data,
        }
    };
    let framings = [
        ("close-delimited", vec![("Connection", "close")]),
        ("chunked", vec![("Transfer-Encoding", "chunked")]),
        ("Content-Length far above", vec![("Content-Length", "1000000000000")]),
    ];
    for (framing, headers) in framings {
        let bytes = chunk_of(framing);
        let server = ScriptServer::start(move |_, _, _| {
            vec![head(200, &headers), Step::Endless { bytes: bytes.clone(), every: Duration::ZERO }]
        })
        .await;
        let client = anonymous_client();
        let repo = repo(&server.host(), "a/b");
        let read = async {
            let stream = client.get_blob(&repo, &digest, Some(declared)).await.unwrap();
            drain(stream).await
        };
        let (received, error) =
            tokio::time::timeout(Duration::from_secs(20), read).await.expect("the endless body is cut off");
        assert!(received <= declared, "{framing}: {received} bytes passed on");
        match error {
            Some(Error::SizeMismatch { expected, actual, .. }) => {
                assert_eq!(expected, declared, "{framing}");
                assert!(actual > declared && actual <= declared + 1024 * 1024, "{framing}: {actual}");
            }
            other => panic!("{framing}: {other:?}"),
        }
        assert_eq!(server.connections(), 1, "{framing}: a body too long is not resumed");
    }
}

/// The client as the binaries build it: every limit at its default.
fn default_client() -> Client {
    Client::new(ClientConfig { plain_http: true, ..ClientConfig::default() }, Arc::new(Anonymous)).unwrap()
}

/// A client with limits small enough for real-time tests: 250 ms per request, 64 KiB per 300 ms
/// of blob body, two attempts of timeouts (of four for other failures).
fn quick_limits_client() -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_millis(250),
        blob_min_bytes: 64 * 1024,
        blob_stall_window: Duration::from_millis(300),
        timeout_attempts: 2,
        ..config(4)
    };
    Client::new(config, Arc::new(Anonymous)).unwrap()
}

fn manifest_head(len: usize) -> Step {
    head(200, &[("Content-Type", media_type::OCI_MANIFEST), ("Content-Length", &len.to_string())])
}

/// Asserts that `error` is the last of `attempts` attempts that each exceeded `limit` on `GET url`.
fn assert_deadline_exceeded(error: &Error, attempts: u32, url: &str, limit: Duration) {
    assert!(error.is_timeout() && error.is_retryable(), "{error:?}");
    let last = match error {
        Error::RetriesExhausted { attempts: a, last } if *a == attempts => last.as_ref(),
        last if attempts == 1 => last,
        other => panic!("{other:?}"),
    };
    match last {
        Error::DeadlineExceeded { method, url: u, limit: l } => {
            assert_eq!((method.as_str(), u.as_str(), *l), ("GET", url, limit));
            let message = last.to_string();
            assert!(
                message.contains(&format!("GET {url}")) && message.contains(&format!("{limit:?}")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_manifest_sent_a_byte_a_second_fails_at_the_default_deadline_in_about_three_minutes() {
    let body = vec![b' '; 2000];
    let server = ScriptServer::start(move |_, _, _| {
        vec![
            manifest_head(body.len()),
            Step::Drip { bytes: body.clone(), piece: 1, every: Duration::from_secs(1) },
        ]
    })
    .await;
    let start = Instant::now();
    let error = default_client().get_manifest(&repo(&server.host(), "a/b"), "v1").await.unwrap_err();
    let elapsed = start.elapsed();
    // Three attempts of 60 s each, and under a second of backoff between them.
    assert!(elapsed >= Duration::from_secs(180) && elapsed < Duration::from_secs(185), "{elapsed:?}");
    let url = format!("http://{}/v2/a/b/manifests/v1", server.host());
    assert_deadline_exceeded(&error, 3, &url, Duration::from_secs(60));
    assert_eq!(server.connections(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_registry_that_accepts_and_never_answers_fails_in_about_three_minutes() {
    let server = ScriptServer::start(|_, _, _| vec![Step::Hang]).await;
    let start = Instant::now();
    let error = default_client().get_manifest(&repo(&server.host(), "a/b"), "v1").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(180) && elapsed < Duration::from_secs(185), "{elapsed:?}");
    let url = format!("http://{}/v2/a/b/manifests/v1", server.host());
    assert_deadline_exceeded(&error, 3, &url, Duration::from_secs(60));
    assert_eq!(server.connections(), 3, "timeouts get fewer attempts than the five of other failures");
}

#[tokio::test]
async fn the_configured_deadline_names_the_token_request_that_never_answers() {
    let server = ScriptServer::start(|request, _, addr| {
        if request.path() == "/token" {
            return vec![Step::Hang];
        }
        let challenge = format!(r#"Bearer realm="http://{addr}/token",service="s""#);
        vec![head(401, &[("WWW-Authenticate", &challenge), ("Content-Length", "0")])]
    })
    .await;
    let start = Instant::now();
    let error = quick_limits_client().get_manifest(&repo(&server.host(), "a/b"), "v1").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    let url = format!("http://{}/token", server.host());
    assert_deadline_exceeded(&error, 2, &url, Duration::from_millis(250));
}

/// Asserts that `error` ended a blob read after two attempts that each moved too little.
fn assert_too_slow(error: &Error, blob_url: &str) {
    assert!(error.is_timeout() && error.is_retryable(), "{error:?}");
    match error {
        Error::RetriesExhausted { attempts: 2, last } => match last.as_ref() {
            Error::TooSlow { method, url, min_bytes, window } => {
                assert_eq!((method.as_str(), url.as_str()), ("GET", blob_url));
                assert_eq!((*min_bytes, *window), (64 * 1024, Duration::from_millis(300)));
                assert!(last.to_string().contains(&format!("GET {blob_url}")), "{last}");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_blob_that_stalls_or_trickles_mid_stream_fails_on_the_minimum_throughput() {
    let blob = random_bytes(1024 * 1024, 70);
    let digest = sha256_digest(&blob);
    // Both answer every request (resumptions too) with the blob from its start.
    let stalls = {
        let blob = blob.clone();
        move |_: &_, _, _| {
            let length = blob.len().to_string();
            vec![head(200, &[("Content-Length", &length)]), Step::Write(blob[..100_000].to_vec()), Step::Hang]
        }
    };
    let trickles = {
        let blob = blob.clone();
        move |_: &_, _, _| {
            let length = blob.len().to_string();
            // 20 KB/s, a tenth of the minimum.
            let drip = Step::Drip { bytes: blob.to_vec(), piece: 1000, every: Duration::from_millis(50) };
            vec![head(200, &[("Content-Length", &length)]), drip]
        }
    };
    for (case, server) in
        [("stall", ScriptServer::start(stalls).await), ("trickle", ScriptServer::start(trickles).await)]
    {
        let repo = repo(&server.host(), "a/b");
        let blob_url = format!("http://{}/v2/a/b/blobs/{digest}", server.host());
        let start = Instant::now();
        let stream = quick_limits_client().get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
        let (received, error) = drain(stream).await;
        assert!(start.elapsed() < Duration::from_secs(3), "{case}: {:?}", start.elapsed());
        assert!(received <= 100_000, "{case}: {received}");
        assert_too_slow(&error.expect(case), &blob_url);
        assert_eq!(server.connections(), 2, "{case}: one resumption, which moved nothing new");

        // Ranges are held to the same minimum.
        let error = quick_limits_client().get_blob_range(&repo, &digest, 0, 500_000).await.unwrap_err();
        assert_too_slow(&error, &blob_url);
    }
}

#[tokio::test]
async fn a_slow_blob_above_the_minimum_throughput_outlives_the_request_deadline() {
    let blob = random_bytes(600 * 1024, 71);
    let digest = sha256_digest(&blob);
    let served = blob.clone();
    let server = ScriptServer::start(move |_, _, _| {
        let length = served.len().to_string();
        // About 800 KiB/s: four times the minimum, and three times longer than the request deadline.
        let drip = Step::Drip { bytes: served.to_vec(), piece: 16 * 1024, every: Duration::from_millis(20) };
        vec![head(200, &[("Content-Length", &length)]), drip]
    })
    .await;
    let start = Instant::now();
    let mut stream = quick_limits_client()
        .get_blob(&repo(&server.host(), "a/b"), &digest, Some(blob.len() as u64))
        .await
        .unwrap();
    let mut received = stream.next().await.unwrap().unwrap().to_vec();
    // A consumer slower than the window: only time spent waiting for the registry counts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert!(received == blob, "the bytes differ");
    assert!(start.elapsed() > Duration::from_millis(600), "{:?}", start.elapsed());
    assert_eq!(server.connections(), 1, "never resumed");
}
