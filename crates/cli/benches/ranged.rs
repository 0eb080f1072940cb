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
//!
//! 4. Memory when a bigger function builds several giant layers at once (a 10 GB Lambda has 6 vCPUs):
//!    six distinct 500+ MB layers (the big one, each with a different empty gzip member appended), built
//!    with `--concurrency 6` on both cores, straight to the registry. Peak RSS is what it costs; this
//!    machine's two cores say nothing of a 6-vCPU function's speed.

// support::measure uses wait4 and this bench pins itself with sched_setaffinity.
#![allow(unsafe_code)]

mod support;

use std::process::{Command, Stdio};

use registry::Repository;
use support::{layer_from_file, measure, push_layers, ChildRun};
use testkit::image::TestLayer;
use testkit::proxy::ThrottleProxy;
use testkit::registry::LocalRegistry;

/// The cap of each connection, as a fraction of the straight run's pace.
const CAP_DIVISOR: f64 = 2.5;

/// How many giant layers the concurrent run builds at once.
const AT_ONCE: usize = 6;

/// Pushes the one-layer image `bench/ranged:big` and the [`AT_ONCE`]-layer image `bench/ranged:six`
/// (in a child process: see `main`).
fn push_images(host: &str) {
    let layer = layer_from_file(&support::big_usr_layer());
    let six = (0..AT_ONCE).map(|i| variant(&layer, i)).collect();
    let repo = Repository::new(host, "bench/ranged").expect("repository");
    let client = support::local_client();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(push_layers(&client, &repo, vec![layer], "big"));
    runtime.block_on(push_layers(&client, &repo, six, "six"));
}

/// `layer` with one more gzip member holding `i + 1` zero tar blocks: the same tar entries, another
/// digest (zero blocks after the end of the archive are part of no entry).
fn variant(layer: &TestLayer, i: usize) -> TestLayer {
    use sha2::{Digest, Sha256};
    let zeros = vec![0u8; 512 * (i + 1)];
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut member, &zeros).expect("gzip");
    let mut blob = layer.blob.clone();
    blob.extend_from_slice(&member.finish().expect("gzip"));
    // The diff id is over the whole tar: inflate the original once more rather than keep its tar.
    let mut tar = Sha256::new();
    let mut original = flate2::read::MultiGzDecoder::new(&layer.blob[..]);
    std::io::copy(&mut original, &mut tar).expect("gunzip");
    tar.update(&zeros);
    TestLayer {
        media_type: layer.media_type.clone(),
        digest: ztoc::sha256_digest(&blob),
        diff_id: format!("sha256:{:x}", tar.finalize()),
        blob,
        files: Vec::new(),
    }
}

/// `soci-indexer create` of `bench/ranged:<tag>` at `host`, pinned to core 0 unless `pinned` is false.
fn create(host: &str, tag: &str, pinned: bool, extra: &[&str]) -> ChildRun {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", if pinned { "0" } else { "0,1" }, env!("CARGO_BIN_EXE_soci-indexer"), "create"])
        .arg(format!("{host}/bench/ranged:{tag}"))
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
        push_images(&args[at + 1]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("ranged: run with `cargo bench -p soci-indexer --bench ranged`");
        return;
    }
    let size = std::fs::metadata(support::big_usr_layer()).expect("big layer").len();
    pin_to_core(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    support::run_self(&["--push-bench-image", &registry.host()]);

    let straight = create(&registry.host(), "big", true, &[]);
    let pace = size as f64 / straight.wall.as_secs_f64();
    let cap = (pace / CAP_DIVISOR) as u64;
    let proxy = runtime.block_on(ThrottleProxy::start(registry.addr(), cap)).expect("throttle proxy");
    let one_stream = create(&proxy.host(), "big", true, &["--ranges-per-layer", "1"]);
    let after_one = (proxy.connections(), proxy.max_busy_connections());
    let ranged = create(&proxy.host(), "big", true, &[]);
    // Both cores for the six: the registry, on core 1, shares one with them.
    let at_once = AT_ONCE.to_string();
    let six = create(&registry.host(), "six", false, &["--concurrency", &at_once]);

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
    println!(
        "{AT_ONCE} such layers at once (--concurrency {AT_ONCE}, both cores, no cap): {:>8.3} s  peak RSS {:>6.1} MiB  \
         CPU {:>6.2} s  ({:.1} MiB per layer over the single-layer run)",
        six.wall.as_secs_f64(),
        six.max_rss_kib as f64 / 1024.0,
        six.cpu.as_secs_f64(),
        (six.max_rss_kib - straight.max_rss_kib) as f64 / 1024.0 / (AT_ONCE - 1) as f64
    );
    println!("target: capped with ranges <= 1.30x straight, peak RSS <= 128 MiB");
}
