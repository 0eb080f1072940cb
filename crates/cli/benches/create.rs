//! Benchmark: end-to-end `soci-indexer create` of a 4-layer, ~400 MB image against a local registry.
//!
//! `cargo bench -p soci-indexer --bench create` makes (once, cached under `target/bench-data/`) four
//! gzip -6 layers of ~100 MB from this machine's /usr, pushes them as an OCI image to a real local
//! registry (Debian's docker-registry), then measures in one run:
//! * `gzip -dc` of each layer (the slowest one is the yardstick),
//! * `soci-indexer create` of a 1-layer image and of the 4-layer image (wall time, peak RSS),
//!
//! each the best of `SOCI_BENCH_RUNS` (default 3) runs.
//!
//! Targets: the 4-layer create within 1.2x the slowest layer's `gzip -dc`, peak RSS <= 128 MiB and not
//! growing with the image size.

// support::measure uses wait4: the one way to read the peak RSS of exactly one child process.
#![allow(unsafe_code)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{layer_from_file, measure, push_layers, ChildRun};

use registry::Repository;
use testkit::registry::LocalRegistry;

const LAYER_ROOTS: [&[&str]; 4] = [
    &["/usr/lib/x86_64-linux-gnu"],
    &["/usr/lib/jvm", "/usr/lib/gcc"],
    &["/usr/lib/google-cloud-sdk"],
    &["/usr/share", "/usr/lib/llvm-14"],
];

/// The cached layer `n` (gzip -6 of a tar of some /usr trees, ~280 MB of file data).
fn layer(n: usize) -> PathBuf {
    support::cached_layer(&format!("create-layer-{n}.tar.gz"), LAYER_ROOTS[n], 280_000_000)
}

fn create(host: &str, image_ref: &str) -> ChildRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soci-indexer"));
    // No zTOC cache: every run builds (the reuse bench measures the cache).
    cmd.args([
        "create",
        &format!("{host}/{image_ref}"),
        "--plain-http",
        "--force",
        "--json",
        "--no-ztoc-cache",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    measure(cmd)
}

/// Pushes the two bench images (in a child process: see `main`).
fn push_images(host: &str, paths: &[PathBuf]) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = support::local_client();
    let repo = Repository::new(host, "bench").expect("repository");
    runtime.block_on(async {
        push_layers(&client, &repo, vec![layer_from_file(&paths[0])], "one").await;
        push_layers(&client, &repo, paths.iter().map(|p| layer_from_file(p)).collect(), "four").await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--push-bench-images") {
        let paths: Vec<PathBuf> = (0..4).map(layer).collect();
        push_images(&args[at + 1], &paths);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("create: run with `cargo bench -p soci-indexer --bench create`");
        return;
    }
    let paths: Vec<PathBuf> = (0..4).map(layer).collect();
    let sizes: Vec<u64> = paths.iter().map(|p| std::fs::metadata(p).expect("layer").len()).collect();
    let runs: usize = std::env::var("SOCI_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let gzip: Vec<Duration> = paths
        .iter()
        .map(|p| {
            (0..runs)
                .map(|_| {
                    let mut cmd = Command::new("gzip");
                    cmd.arg("-dc").arg(p).stdout(Stdio::null());
                    measure(cmd).wall
                })
                .min()
                .expect("at least one run")
        })
        .collect();
    let slowest = gzip.iter().max().copied().expect("four layers");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    support::run_self(&["--push-bench-images", &registry.host()]);
    println!(
        "(this bench process: peak RSS {:.1} MiB; the figures below are the CLI's own)",
        support::own_peak_rss_mib()
    );

    let best = |image_ref: &str| {
        (0..runs)
            .map(|_| create(&registry.host(), image_ref))
            .min_by_key(|r| r.wall)
            .expect("at least one run")
    };
    let one = best("bench:one");
    let four = best("bench:four");
    println!("best of {runs} runs each");
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "layers: {} MB gzip in all",
        sizes.iter().map(|&s| mb(s)).map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" + ")
    );
    for (i, g) in gzip.iter().enumerate() {
        println!("gzip -dc layer {i}     {:>8.3} s", g.as_secs_f64());
    }
    println!(
        "create, 1 layer      {:>8.3} s  peak RSS {:>6.1} MiB",
        one.wall.as_secs_f64(),
        one.max_rss_kib as f64 / 1024.0
    );
    println!(
        "create, 4 layers     {:>8.3} s  peak RSS {:>6.1} MiB",
        four.wall.as_secs_f64(),
        four.max_rss_kib as f64 / 1024.0
    );
    println!(
        "4-layer create / slowest gzip -dc  {:.2}x  (target <= 1.20x)",
        four.wall.as_secs_f64() / slowest.as_secs_f64()
    );
}
