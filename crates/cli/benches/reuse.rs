//! Benchmark: zTOC reuse. Image A = [big layer, small layer], image B = [the same big layer, another
//! small layer] in the same repository, image C = B's layers in another repository.
//!
//! `cargo bench -p soci-indexer --bench reuse` makes (once, cached under `target/bench-data/`) a
//! gzip -6 layer of this machine's /usr of at least 500 MB, pushes the images to a real local registry
//! (Debian's docker-registry), then times in one run, each `soci-indexer create` once with one fresh
//! cache directory: A (cold: every layer built), B (the big layer reused), C (mounted into another
//! repository), and B again without the cache. Target: B and C within 0.3x of A.

// support::measure uses wait4: the one way to read the peak RSS of exactly one child process.
#![allow(unsafe_code)]

mod support;

use std::process::{Command, Stdio};

use registry::Repository;
use support::{layer_from_file, measure, push_layers, ChildRun};
use testkit::image::TestLayer;
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

/// A small layer of an image's own (above the default 10 MiB minimum, so it is indexed too).
fn small_layer(seed: u64) -> TestLayer {
    TestLayer::gzip(seed, &LayerConfig { entries: 400, max_file_size: 256 * 1024, pax_percent: 0 }, 1, false)
}

/// Pushes A and B to `bench/app` and C to `bench/other` (in a child process: see `main`).
fn push_images(host: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = support::local_client();
    let app = Repository::new(host, "bench/app").expect("repository");
    let other = Repository::new(host, "bench/other").expect("repository");
    let big = layer_from_file(&support::big_usr_layer());
    runtime.block_on(async {
        push_layers(&client, &app, vec![big.clone(), small_layer(1)], "a").await;
        push_layers(&client, &app, vec![big.clone(), small_layer(2)], "b").await;
        push_layers(&client, &other, vec![big, small_layer(2)], "c").await;
    });
}

fn create(host: &str, image_ref: &str, cache: &[&str]) -> ChildRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soci-indexer"));
    cmd.args(["create", &format!("{host}/{image_ref}"), "--plain-http", "--force", "--json"])
        .args(cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    measure(cmd)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--push-bench-images") {
        push_images(&args[at + 1]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("reuse: run with `cargo bench -p soci-indexer --bench reuse`");
        return;
    }
    let big = std::fs::metadata(support::big_usr_layer()).expect("big layer").len();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    let host = registry.host();
    support::run_self(&["--push-bench-images", &host]);

    let cache_dir = tempfile::tempdir().expect("cache dir");
    let cache = ["--ztoc-cache", cache_dir.path().to_str().expect("utf-8 path")];
    let a = create(&host, "bench/app:a", &cache);
    let b = create(&host, "bench/app:b", &cache);
    let c = create(&host, "bench/other:c", &cache);
    let b_uncached = create(&host, "bench/app:b", &["--no-ztoc-cache"]);

    println!("big layer: {:.1} MB gzip; one run each, one fresh cache directory", big as f64 / 1e6);
    let line = |name: &str, run: &ChildRun| {
        println!(
            "{name:<36} {:>8.3} s  {:>5.2}x A  peak RSS {:>6.1} MiB",
            run.wall.as_secs_f64(),
            run.wall.as_secs_f64() / a.wall.as_secs_f64(),
            run.max_rss_kib as f64 / 1024.0
        )
    };
    line("A (cold cache)", &a);
    line("B (same repository, big layer reused)", &b);
    line("C (other repository, mounted)", &c);
    line("B without the cache", &b_uncached);
    println!("target: B and C <= 0.30x A");
}
