//! Parallel ranged reads of one blob, against docker-registry and testkit's proxies: the bytes of a
//! single GET whatever the size, ranges resumed on their own, the digest still checked, servers that
//! ignore `Range`, redirect targets reused without credentials and re-resolved when they expire, and
//! one connection budget across blobs and ranges.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use registry::{sha256_digest, Anonymous, Client, ClientConfig, Error, RangedReads, Repository};
use testkit::proxy::{FaultPlan, FaultProxy, RedirectProxy, ThrottleProxy};
use testkit::registry::LocalRegistry;

use crate::support::*;

/// Ranges of 64 KiB: many ranges from small blobs, so the tests stay fast.
const RANGE: u64 = 64 * 1024;

fn ranged_config(ranges_in_flight: usize, max_connections: usize) -> ClientConfig {
    ClientConfig {
        ranged_reads: Some(RangedReads { min_blob_size: 1, range_size: RANGE, ranges_in_flight }),
        max_connections,
        ..config(4)
    }
}

fn ranged_client(ranges_in_flight: usize, max_connections: usize) -> Client {
    Client::new(ranged_config(ranges_in_flight, max_connections), Arc::new(Anonymous)).unwrap()
}

fn one_stream_client() -> Client {
    Client::new(ClientConfig { ranged_reads: None, ..config(4) }, Arc::new(Anonymous)).unwrap()
}

/// Reads a whole blob, failing the test if it takes more than a minute (a lost wake-up or a
/// deadlock in the window would otherwise hang).
async fn read(client: &Client, repo: &Repository, digest: &str, size: usize) -> Result<Vec<u8>, Error> {
    let read = async {
        let stream = client.get_blob(repo, digest, Some(size as u64)).await?;
        assert_eq!(stream.size(), Some(size as u64));
        collect(stream).await.map(|(bytes, _)| bytes)
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the blob read finishes")
}

/// `bytes=A-B` headers of the blob GETs in `log`, as (A, B).
fn ranges_of(log: &[testkit::proxy::RequestRecord]) -> Vec<(u64, u64)> {
    log.iter()
        .filter_map(|r| {
            r.range
                .as_deref()?
                .strip_prefix("bytes=")?
                .split_once('-')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        })
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect()
}

#[tokio::test]
async fn ranged_reads_give_the_bytes_of_a_single_get_at_every_size_around_the_range_boundaries() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let repo = repo(&proxy.host(), "ranged/sizes");
    let (ranged, single) = (ranged_client(4, 16), one_stream_client());
    let r = RANGE as usize;
    for (seed, size) in [(1, 1), (2, r - 1), (3, r), (4, r + 1), (5, 7 * r + 17)] {
        let blob = random_bytes(size, seed);
        let digest = sha256_digest(&blob);
        ranged.push_blob(&repo, &digest, blob.clone()).await.unwrap();
        let before = proxy.requests_log().len();
        let got = read(&ranged, &repo, &digest, size).await.unwrap();
        let requests = proxy.requests_log()[before..].to_vec();
        let whole = read(&single, &repo, &digest, size).await.unwrap();
        assert!(got == whole && got == blob, "size {size}: the ranged read differs from a single GET");

        // One GET per range, each of its own bytes, covering the blob exactly once.
        let mut ranges = ranges_of(&requests);
        ranges.sort_unstable();
        let expected: Vec<(u64, u64)> =
            (0..size as u64).step_by(r).map(|start| (start, (start + RANGE).min(size as u64) - 1)).collect();
        assert_eq!(ranges, expected, "size {size}");
        assert!(requests.iter().all(|q| q.status == 206), "size {size}: {requests:?}");
    }
}

#[tokio::test]
async fn a_range_cut_halfway_resumes_from_where_it_broke_and_only_that_range_is_asked_again() {
    let registry = LocalRegistry::start().await.unwrap();
    let plan = FaultPlan::new().cut_blob_gets(2, RANGE as usize / 2);
    let proxy = FaultProxy::start(registry.addr(), plan).await.unwrap();
    let repo = repo(&proxy.host(), "ranged/cut");
    let blob = random_bytes(6 * RANGE as usize + 99, 10);
    let digest = sha256_digest(&blob);
    let client = ranged_client(3, 16);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();

    let got = read(&client, &repo, &digest, blob.len()).await.unwrap();
    assert!(got == blob, "resumed ranges reassemble the blob");
    assert_eq!(proxy.faults_injected(), 2, "two range bodies were cut");
    let ranges = ranges_of(&proxy.requests_log());
    // 7 ranges, and 2 resumptions that start half-way into a range and end where it ends.
    assert_eq!(ranges.len(), 9, "{ranges:?}");
    let resumed: Vec<_> = ranges.iter().filter(|(start, _)| start % RANGE == RANGE / 2).collect();
    assert_eq!(resumed.len(), 2, "{ranges:?}");
    for (start, end) in resumed {
        assert_eq!(*end, (start - RANGE / 2 + RANGE).min(blob.len() as u64) - 1, "{ranges:?}");
    }
}

#[tokio::test]
async fn a_range_with_wrong_bytes_fails_the_whole_blob_digest_check() {
    let registry = LocalRegistry::start().await.unwrap();
    let repo = repo(&registry.host(), "ranged/corrupt");
    let blob = random_bytes(5 * RANGE as usize, 11);
    let digest = sha256_digest(&blob);
    let client = ranged_client(4, 16);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();
    // Rot one byte inside the third range: the registry serves its file as it is.
    let path = blob_data_path(&registry.storage_dir(), &digest);
    let mut stored = std::fs::read(&path).unwrap();
    stored[2 * RANGE as usize + 5] ^= 0x5a;
    std::fs::write(&path, &stored).unwrap();

    let stream = client.get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
    assert_mismatch_after_every_byte(stream, &digest, &stored).await;
}

#[tokio::test]
async fn a_server_that_ignores_range_is_read_as_one_stream() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = ThrottleProxy::start(registry.addr(), 1 << 30).await.unwrap();
    proxy.ignore_range(true);
    let repo = repo(&proxy.host(), "ranged/no-range");
    let blob = random_bytes(5 * RANGE as usize + 3, 12);
    let digest = sha256_digest(&blob);
    let client = ranged_client(4, 16);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();

    let got = read(&client, &repo, &digest, blob.len()).await.unwrap();
    assert!(got == blob);
    let gets: Vec<_> = proxy.requests_log().into_iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 1, "one GET, answered whole, and nothing more: {gets:?}");
    assert_eq!((gets[0].range.as_deref(), gets[0].status), (Some("bytes=0-65535"), 200));
}

#[tokio::test]
async fn a_whole_blob_answering_a_later_range_makes_the_rest_one_stream() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = ThrottleProxy::start(registry.addr(), 1 << 30).await.unwrap();
    let repo = repo(&proxy.host(), "ranged/late-200");
    let blob = random_bytes(40 * RANGE as usize + 5, 14);
    let digest = sha256_digest(&blob);
    let client = ranged_client(4, 16);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();

    // The first range is answered 206; every later one 200 with the whole blob.
    let stream = client.get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
    proxy.ignore_range(true);
    let (got, _) = tokio::time::timeout(Duration::from_secs(60), collect(stream)).await.unwrap().unwrap();
    assert!(got == blob);
    let gets: Vec<_> = proxy.requests_log().into_iter().filter(|r| r.method == "GET").collect();
    let whole = gets.iter().filter(|r| r.status == 200).count();
    // At most the window's ranges ask before the first 200 is seen: not one whole blob per range (40).
    assert!(gets.len() <= 1 + 4 && whole >= 1, "{} GETs: {gets:?}", gets.len());
}

#[tokio::test]
async fn redirected_ranges_reuse_one_target_without_credentials_and_resolve_it_again_when_it_expires() {
    let registry = LocalRegistry::start_with_basic_auth("ann", "pw-ann").await.unwrap();
    let proxy = RedirectProxy::start(registry.addr()).await.unwrap();
    let credentials = registry::StaticCredentials(registry::Credentials::new("ann", "pw-ann"));
    let client = Client::new(ranged_config(2, 16), Arc::new(credentials)).unwrap();
    let repo = repo(&proxy.host(), "team/ranged");
    let image = push_image(&client, &repo, "v1", 12 * RANGE as usize + 1, 13).await;
    let size = image.layer.len() as u64;

    // Every range but the first goes to the target the first one was redirected to.
    let got = read(&client, &repo, &image.layer_digest, image.layer.len()).await.unwrap();
    assert!(got == image.layer);
    assert_eq!(proxy.redirects(), 1, "the redirect is resolved once per blob");
    let storage = proxy.storage_log();
    assert_eq!(ranges_of(&storage).len(), 13, "{storage:?}");
    assert!(storage.iter().all(|r| !r.authorization && r.status == 206), "{storage:?}");
    assert_eq!(proxy.auth_leaks(), 0);
    let registry_gets = proxy.requests_log().into_iter().filter(|r| r.method == "GET" && r.status != 401);
    assert!(registry_gets.clone().all(|r| r.authorization), "the registry did get credentials");
    assert_eq!(registry_gets.count(), 1, "the registry is asked for the blob once");

    // The target expires while the blob is read: the ranges after that resolve it again, once.
    let before = storage.len();
    let mut stream = client.get_blob(&repo, &image.layer_digest, Some(size)).await.unwrap();
    let mut received = stream.next().await.unwrap().unwrap().to_vec();
    proxy.expire_grants();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert!(received == image.layer, "the blob reads whole across the expiry");
    let storage = proxy.storage_log()[before..].to_vec();
    assert!(storage.iter().any(|r| r.status == 403), "the expired target was tried: {storage:?}");
    let redirects = proxy.redirects();
    assert!((3..=4).contains(&redirects), "resolved again once per range that saw it expire: {redirects}");
    assert_eq!(proxy.auth_leaks(), 0);
}

#[tokio::test]
async fn one_connection_budget_holds_across_blobs_and_their_ranges() {
    let registry = LocalRegistry::start().await.unwrap();
    // Slow connections (2 MB/s each), so that downloads overlap for as long as they can.
    let proxy = ThrottleProxy::start(registry.addr(), 2_000_000).await.unwrap();
    let repo = repo(&proxy.host(), "ranged/budget");
    let blobs: Vec<_> = (0..4).map(|i| random_bytes(8 * RANGE as usize + 1 + i, 20 + i as u64)).collect();
    let pusher = ranged_client(4, 16);
    for blob in &blobs {
        pusher.push_blob(&repo, &sha256_digest(blob), blob.clone()).await.unwrap();
    }

    for budget in [3, 1] {
        let proxy = ThrottleProxy::start(registry.addr(), 2_000_000).await.unwrap();
        let repo = repo_at(&proxy, "ranged/budget");
        let client = ranged_client(4, budget);
        let reads = blobs.iter().map(|blob| {
            let (client, repo) = (client.clone(), repo.clone());
            async move { read(&client, &repo, &sha256_digest(blob), blob.len()).await }
        });
        let results = futures_util::future::join_all(reads).await;
        for (blob, got) in blobs.iter().zip(results) {
            assert!(got.unwrap() == *blob, "budget {budget}");
        }
        let gets = proxy.requests_log().iter().filter(|r| r.method == "GET").count();
        assert_eq!(gets, 4 * 9, "budget {budget}: every range of every blob, once");
        assert_eq!(proxy.max_busy_connections(), budget, "budget {budget}: used, never exceeded");
        assert!(
            proxy.max_open_connections() <= budget + 1,
            "budget {budget}: {}",
            proxy.max_open_connections()
        );
    }

    // Without a tight budget the same reads use more connections: the budget is what held them.
    let client = ranged_client(4, 16);
    let reads = blobs.iter().map(|blob| {
        let (client, repo) = (client.clone(), repo.clone());
        async move { read(&client, &repo, &sha256_digest(blob), blob.len()).await }
    });
    for got in futures_util::future::join_all(reads).await {
        got.unwrap();
    }
    assert!(proxy.max_busy_connections() > 8, "4 blobs × 4 ranges: {}", proxy.max_busy_connections());
}

fn repo_at(proxy: &ThrottleProxy, name: &str) -> Repository {
    repo(&proxy.host(), name)
}

#[tokio::test]
async fn ranges_read_ahead_hold_their_connection_permits_until_the_reader_has_them() {
    let registry = LocalRegistry::start().await.unwrap();
    let proxy = FaultProxy::start(registry.addr(), FaultPlan::new()).await.unwrap();
    let repo = repo(&proxy.host(), "ranged/read-ahead");
    let blob = random_bytes(10 * RANGE as usize, 30);
    let digest = sha256_digest(&blob);
    let client = ranged_client(4, 2);
    client.push_blob(&repo, &digest, blob.clone()).await.unwrap();

    // The reader takes one chunk and pauses: a window of 4 ranges, but 2 permits, so 2 ranges only
    // (memory read ahead is bounded by the budget, not by the window alone).
    let before = proxy.requests_log().len();
    let mut stream = client.get_blob(&repo, &digest, Some(blob.len() as u64)).await.unwrap();
    let mut received = stream.next().await.unwrap().unwrap().to_vec();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = ranges_of(&proxy.requests_log()[before..]);
    assert_eq!(asked, [(0, RANGE - 1), (RANGE, 2 * RANGE - 1)], "two ranges while the reader waits");
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert!(received == blob);
}

#[tokio::test]
async fn many_blobs_in_ranges_share_a_small_budget_without_deadlock() {
    let registry = LocalRegistry::start().await.unwrap();
    let repo = repo(&registry.host(), "ranged/many");
    let client = ranged_client(4, 2);
    let blobs: Vec<_> = (0..6).map(|i| random_bytes(5 * RANGE as usize + 3 * i, 40 + i as u64)).collect();
    for blob in &blobs {
        client.push_blob(&repo, &sha256_digest(blob), blob.clone()).await.unwrap();
    }
    // Six readers on a budget of two, each pausing between chunks: every one finishes (the ranges of
    // one blob take their permits in order, so each reader's next range always gets one).
    let reads = blobs.iter().map(|blob| {
        let (client, repo) = (client.clone(), repo.clone());
        async move {
            let mut stream = client.get_blob(&repo, &sha256_digest(blob), Some(blob.len() as u64)).await?;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(out)
        }
    });
    let all = tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(reads));
    for (blob, got) in blobs.iter().zip(all.await.expect("no deadlock")) {
        assert!(got.unwrap() == *blob);
    }
}
