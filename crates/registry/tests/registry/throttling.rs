//! Throttling is waiting, not failing: 429s (ECR's `TOOMANYREQUESTS: Rate exceeded`, mostly without
//! `Retry-After`) are retried past the attempt budget until the deadline, counted and told to an
//! observer; a throttled upload keeps its session; two uploads of one blob at once do not fail; writes
//! of background clones are paced under a ceiling shared by every clone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use registry::{media_type, sha256_digest, Client, ClientConfig, Error, ThrottleEvent, ThrottleObserver};
use reqwest::Method;
use testkit::proxy::{Fault, FaultPlan, FaultProxy, RequestFilter};
use testkit::registry::LocalRegistry;

use crate::support::*;

/// A client with the fast test retries, three attempts for other failures, and a log of throttles.
fn observed_client(extra: impl FnOnce(&mut ClientConfig)) -> (Client, Arc<Mutex<Vec<ThrottleEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut config = config(3);
    config.on_throttle =
        Some(ThrottleObserver(Arc::new(move |e: &ThrottleEvent| log.lock().unwrap().push(e.clone()))));
    extra(&mut config);
    (Client::new(config, Arc::new(registry::Anonymous)).unwrap(), seen)
}

fn manifest(seed: u8) -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"annotations":{{"seed":"{seed}"}}}}"#,
        media_type::OCI_INDEX
    ))
}

#[tokio::test]
async fn throttling_outlasts_the_attempt_budget_and_is_counted() {
    let registry = LocalRegistry::start().await.unwrap();
    anonymous_client()
        .put_manifest(&repo(&registry.host(), "busy/app"), "v1", media_type::OCI_INDEX, manifest(1))
        .await
        .unwrap();
    // Reads: not paced, so only the retries show (writes are also slowed by the pacer).
    let plan = FaultPlan::new().fail_first(12, Fault::RateExceeded).only(RequestFilter::ManifestGets);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "busy/app");
    let (client, seen) = observed_client(|_| {});
    client.get_manifest(&via, "v1").await.unwrap();
    assert_eq!(proxy.faults_injected(), 12, "twelve 429s, four times the attempt budget of 3");
    assert_eq!(client.throttled_requests(), 12);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 12);
    assert!(seen.iter().all(|e| e.status == 429 && e.registry == proxy.host()), "{seen:?}");
    assert_eq!(seen.last().unwrap().times, 12);
}

#[tokio::test]
async fn throttling_past_the_deadline_is_a_named_retryable_error() {
    let registry = LocalRegistry::start().await.unwrap();
    let plan = FaultPlan::new().fail_first(100_000, Fault::RateExceeded).only(RequestFilter::ManifestPuts);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "busy/app");
    let (client, _) = observed_client(|c| c.retry.throttle_budget = Duration::from_secs(3600));
    let started = Instant::now();
    let until = client.with_deadline(started + Duration::from_millis(400));
    let error = until.put_manifest(&via, "v1", media_type::OCI_INDEX, manifest(2)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "stops at the deadline: {:?}", started.elapsed());
    assert!(matches!(error, Error::Throttled { times, .. } if times >= 2), "{error:?}");
    assert!(error.is_throttled() && error.is_retryable(), "{error}");
    assert!(error.to_string().contains("kept throttling"), "{error}");
}

fn is_upload_put(method: &Method, path: &str) -> bool {
    method == Method::PUT && path.contains("/blobs/uploads/")
}

#[tokio::test]
async fn a_throttled_upload_put_is_sent_again_to_the_same_session() {
    let registry = LocalRegistry::start().await.unwrap();
    let plan = FaultPlan::new().fail_first(3, Fault::RateExceeded).only(RequestFilter::Custom(is_upload_put));
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "uploads/app");
    let blob = random_bytes(100_000, 51);
    let digest = sha256_digest(&blob);
    let (client, _) = observed_client(|_| {});
    client.push_blob(&via, &digest, blob.clone()).await.unwrap();
    let uploads: Vec<(String, u16)> = proxy
        .requests_log()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/uploads/"))
        .map(|r| (r.method, r.status))
        .collect();
    let expected = [("POST", 202), ("PUT", 429), ("PUT", 429), ("PUT", 429), ("PUT", 201)];
    assert_eq!(uploads, expected.map(|(m, s)| (m.to_owned(), s)), "one session, no new POST");
}

#[tokio::test]
async fn an_upload_refused_as_another_clients_clash_is_checked_and_tried_again() {
    let registry = LocalRegistry::start().await.unwrap();
    let plan =
        FaultPlan::new().fail_first(1, Fault::DigestInvalid).only(RequestFilter::Custom(is_upload_put));
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let via = repo(&proxy.host(), "uploads/app");
    let blob = random_bytes(50_000, 52);
    let digest = sha256_digest(&blob);
    anonymous_client().push_blob(&via, &digest, blob.clone()).await.unwrap();
    let direct = repo(&registry.host(), "uploads/app");
    let stream = anonymous_client().get_blob(&direct, &digest, Some(blob.len() as u64)).await.unwrap();
    assert!(collect(stream).await.unwrap().0 == blob);
}

#[tokio::test]
async fn background_clones_share_one_write_ceiling_per_host() {
    let registry = LocalRegistry::start().await.unwrap();
    let via = repo(&registry.host(), "paced/app");
    let (client, _) = observed_client(|c| c.max_background_write_rate = Some(5.0));
    let (first, second) = (client.for_background(), client.for_background());
    let started = Instant::now();
    let puts =
        (0..11u8).map(|seed| {
            let handle = if seed % 2 == 0 { first.clone() } else { second.clone() };
            let via = via.clone();
            async move {
                handle.put_manifest(&via, &format!("t{seed}"), media_type::OCI_INDEX, manifest(seed)).await
            }
        });
    for result in futures_util::future::join_all(puts).await {
        result.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "6 writes at 5/s: 5 gaps of 200 ms");
    // The foreground is not held under the background's ceiling.
    let started = Instant::now();
    for seed in 20..31u8 {
        client.put_manifest(&via, &format!("f{seed}"), media_type::OCI_INDEX, manifest(seed)).await.unwrap();
    }
    assert_eq!(client.throttled_requests(), 0);
    // (held under 5/s, these 11 would take 2 s)
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}
