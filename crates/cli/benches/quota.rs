//! Benchmark: ECR's API quotas. A real local registry (Debian's docker-registry) behind testkit's
//! `QuotaProxy` with ECR's manifest-PUT quota (`PutImage`, 10 a second) and uploads capped at 20 a
//! second, shared by every client, over quota answered `429 TOOMANYREQUESTS: Rate exceeded`:
//!
//! 1. a release burst: 40 `soci-indexer create` processes at once (what 40 concurrent Lambda
//!    invocations do), without `Retry-After`, then with `Retry-After: 1`;
//! 2. a backfill: `soci-indexer sync --images 8` of 100 tags, at `--max-write-rate 10` (the quota) and
//!    at the default of 3.
//!
//! Each prints how many runs indexed their image, the requests throttled, the quota bound (requests
//! forwarded / rate: the least time the quota allows) and the wall time against it. Targets: 40/40 and
//! 100/100 indexed; the burst within 1.5x its bound, the sync within 1.3x. Ends by itself (a few
//! minutes). `cargo bench -p soci-indexer --bench quota`.

// support::measure uses wait4 (unused here, compiled with the shared module).
#![allow(unsafe_code)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry::Repository;
use serde_json::Value;
use testkit::image::TestLayer;
use testkit::proxy::{QuotaProxy, Quotas};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

const BURST: usize = 40;
const SYNC_TAGS: usize = 100;

/// Two small layers of an image's own (indexed with `--min-layer-size 1000`).
fn layers(seed: u64) -> Vec<TestLayer> {
    let config = LayerConfig { entries: 20, max_file_size: 16 * 1024, pax_percent: 0 };
    vec![TestLayer::gzip(seed * 2, &config, 6, false), TestLayer::gzip(seed * 2 + 1, &config, 6, false)]
}

async fn push_images(host: &str, repository: &str, count: usize, seed: u64) {
    let client = support::local_client();
    let repo = Repository::new(host, repository).expect("repository");
    for i in 0..count {
        support::push_layers(&client, &repo, layers(seed + i as u64), &format!("t{i}")).await;
    }
}

fn soci_indexer(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soci-indexer"));
    command.args(args).args(["--plain-http", "--json", "--min-layer-size", "1000", "--no-ztoc-cache"]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    command
}

/// One result line against the quota's bound (requests forwarded / rate).
fn report(
    label: &str,
    proxy: &QuotaProxy,
    wall: Duration,
    done: usize,
    of: usize,
    throttled: u64,
    target: f64,
) {
    report_against(label, proxy, (wall, proxy.bound()), (done, of), throttled, target)
}

/// One result line against `bound` (the quota's, or a ceiling's when that is lower).
fn report_against(
    label: &str,
    proxy: &QuotaProxy,
    (wall, bound): (Duration, Duration),
    (done, of): (usize, usize),
    throttled: u64,
    target: f64,
) {
    let counts = proxy.counts();
    let ratio = wall.as_secs_f64() / bound.as_secs_f64();
    println!(
        "{label}: {done}/{of} indexed in {:.1} s; bound {:.1} s (the quota's: {:.1} s for {} manifest PUTs at \
         10/s, {} uploads at 20/s): {ratio:.2}x (target <= {target}x) {}",
        wall.as_secs_f64(),
        bound.as_secs_f64(),
        proxy.bound().as_secs_f64(),
        counts.manifest_puts,
        counts.uploads,
        if ratio <= target && done == of { "ok" } else { "MISSED" },
    );
    println!(
        "  throttled: {} manifest PUTs and {} uploads answered 429 (the clients counted {throttled}); upload \
         sessions left open: {}",
        counts.manifest_puts_throttled, counts.uploads_throttled, counts.open_sessions
    );
}

/// 40 creates at once through a fresh proxy; each image its own repository tag.
async fn burst(registry: &LocalRegistry, repository: &str, retry_after_secs: Option<u64>) {
    push_images(&registry.host(), repository, BURST, 1000).await;
    let quotas = Quotas { retry_after_secs, ..Quotas::default() };
    let proxy = QuotaProxy::start(registry.addr(), quotas).await.expect("proxy");
    let started = Instant::now();
    let children: Vec<_> = (0..BURST)
        .map(|i| {
            let reference = format!("{}/{repository}:t{i}", proxy.host());
            soci_indexer(&["create", &reference]).spawn().expect("spawn create")
        })
        .collect();
    let (mut done, mut throttled) = (0, 0);
    for child in children {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
        let json: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        throttled += json["throttled"].as_u64().unwrap_or(0);
        if output.status.success() && json["outcome"] == "created" {
            done += 1;
        }
    }
    let label = match retry_after_secs {
        None => "burst of 40 creates, no Retry-After".to_owned(),
        Some(s) => format!("burst of 40 creates, Retry-After: {s}"),
    };
    report(&label, &proxy, started.elapsed(), done, BURST, throttled, 1.5);
}

async fn sync(registry: &LocalRegistry, repository: &str, max_write_rate: &str) {
    push_images(&registry.host(), repository, SYNC_TAGS, 5000).await;
    let proxy = QuotaProxy::start(registry.addr(), Quotas::default()).await.expect("proxy");
    let target = format!("{}/{repository}", proxy.host());
    let started = Instant::now();
    let mut command = soci_indexer(&["sync", &target, "--images", "8", "--max-write-rate", max_write_rate]);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let wall = started.elapsed();
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let tags = json["tags"].as_array().cloned().unwrap_or_default();
    let done = tags.iter().filter(|t| t["action"] == "indexed").count();
    let throttled = json["throttled"].as_u64().unwrap_or(0);
    let label = format!("sync --images 8 of {SYNC_TAGS} tags, --max-write-rate {max_write_rate}");
    // Under its own ceiling, the bound is the ceiling's (the rest of the quota is left to others).
    let rate: f64 = max_write_rate.parse().unwrap();
    let ceiling = Duration::from_secs_f64(proxy.counts().manifest_puts as f64 / rate.min(10.0));
    report_against(&label, &proxy, (wall, ceiling.max(proxy.bound())), (done, SYNC_TAGS), throttled, 1.3);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to run here
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let registry = LocalRegistry::start().await.expect("docker-registry (apt install docker-registry)");
        // QUOTA_BENCH=burst or =sync runs one half.
        let only = std::env::var("QUOTA_BENCH").unwrap_or_default();
        if only != "sync" {
            burst(&registry, "burst/plain", None).await;
            burst(&registry, "burst/retry-after", Some(1)).await;
        }
        if only != "burst" {
            sync(&registry, "sync/quota", "10").await;
            sync(&registry, "sync/default", "3").await;
        }
    });
}
