//! Benchmark: one large layer through a capped connection, as S3 serves a Lambda: one stream versus
//! parallel ranges.
//!
//! `cargo bench -p soci-indexer --bench ranged` reuses the 500+ MB gzip layer of /usr that the reuse
//! bench caches under `target/bench-data/` (or makes it the same way), pushes a one-layer image to a
//! real local registry (Debian's docker-registry), and times `soci-indexer create --no-ztoc-cache`
//! pinned to one core (`taskset -c 0`, like a 1-vCPU Lambda), in one run:
//! 1. straight to the registry (the builder's own pace on one core);
//! 2. through testkit's `ThrottleProxy`, each connection capped at 1/2.5 of that pace, one stream
//!    (`--ranges-per-layer 1`);
//! 3. the same, with the default ranged reads.
//!
//! The registry and the proxy run on the other core. Target: 3 within 1.3x of 1, peak RSS of each
//! create <= 128 MiB.

// support::measure uses wait4 and this bench pins itself with sched_setaffinity.
#![allow(unsafe_code)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use registry::Repository;
use support::{layer_from_file, measure, push_layers, ChildRun};
use testkit::proxy::ThrottleProxy;
use testkit::registry::LocalRegistry;

/// File data in the big layer: about 1.6 GB of /usr compresses to more than 500 MB at gzip -6.
const BIG_LAYER_DATA: u64 = 1_600_000_000;
const BIG_LAYER_ROOTS: [&str; 5] =
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib/jvm", "/usr/lib/gcc", "/usr/lib/google-cloud-sdk", "/usr/share"];
/// The cap of each connection, as a fraction of the straight run's pace.
const CAP_DIVISOR: f64 = 2.5;

/// The reuse bench's cached big layer, made here the same way if it is missing.
fn big_layer() -> PathBuf {
    support::cached_layer("reuse-big.tar.gz", &BIG_LAYER_ROOTS, BIG_LAYER_DATA)
}

/// Pushes the one-layer image `bench/ranged:big` (in a child process: see `main`).
fn push_image(host: &str) {
    let layer = layer_from_file(&big_layer());
    let repo = Repository::new(host, "bench/ranged").expect("repository");
    let client = support::local_client();
    tokio::runtime::Runtime::new().expect("runtime").block_on(push_layers(
        &client,
        &repo,
        vec![layer],
        "big",
    ));
}

/// `soci-indexer create` of the image at `host`, pinned to core 0.
fn create(host: &str, extra: &[&str]) -> ChildRun {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", env!("CARGO_BIN_EXE_soci-indexer"), "create"])
        .arg(format!("{host}/bench/ranged:big"))
        .args(["--plain-http", "--force", "--no-ztoc-cache", "--json"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    measure(cmd)
}

/// Pins this process (and so the registry and proxy it starts) to core 1, away from the creates.
fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity only touch that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "pin");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--push-bench-image") {
        push_image(&args[at + 1]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("ranged: run with `cargo bench -p soci-indexer --bench ranged`");
        return;
    }
    let size = std::fs::metadata(big_layer()).expect("big layer").len();
    pin_to_core(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    support::run_self(&["--push-bench-image", &registry.host()]);

    let straight = create(&registry.host(), &[]);
    let pace = size as f64 / straight.wall.as_secs_f64();
    let cap = (pace / CAP_DIVISOR) as u64;
    let proxy = runtime.block_on(ThrottleProxy::start(registry.addr(), cap)).expect("throttle proxy");
    let one_stream = create(&proxy.host(), &["--ranges-per-layer", "1"]);
    let after_one = (proxy.connections(), proxy.max_busy_connections());
    let ranged = create(&proxy.host(), &[]);

    println!(
        "layer: {:.1} MB gzip; creates pinned to core 0 (taskset -c 0), registry and proxy on core 1; one run",
        size as f64 / 1e6
    );
    println!("cap per connection: {:.1} MB/s (straight pace / {CAP_DIVISOR})", cap as f64 / 1e6);
    let line = |name: &str, run: &ChildRun| {
        println!(
            "{name:<40} {:>8.3} s  {:>7.1} MB/s  {:>5.2}x straight  peak RSS {:>6.1} MiB  CPU {:>6.2} s",
            run.wall.as_secs_f64(),
            size as f64 / 1e6 / run.wall.as_secs_f64(),
            run.wall.as_secs_f64() / straight.wall.as_secs_f64(),
            run.max_rss_kib as f64 / 1024.0,
            run.cpu.as_secs_f64()
        )
    };
    line("straight (no cap)", &straight);
    line("capped, one stream (--ranges-per-layer 1)", &one_stream);
    line("capped, ranges (defaults)", &ranged);
    println!(
        "connections at the proxy: one stream {} (most busy at once {}), ranges {} (most busy at once {})",
        after_one.0,
        after_one.1,
        proxy.connections() - after_one.0,
        proxy.max_busy_connections()
    );
    println!("target: capped with ranges <= 1.30x straight, peak RSS <= 128 MiB");
}
