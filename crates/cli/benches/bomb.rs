//! Benchmark: peak memory on a gzip bomb, against the size of its zTOC.
//!
//! `cargo bench -p soci-indexer --bench bomb` makes (once, cached under `target/bench-data/`) a layer
//! holding one file of zeros, 10 GiB inflated (`SOCI_BENCH_BOMB_GIB`), deflated by zlib at level 9: about
//! 10 MB that ends a deflate block every ~4.2 MB of output, so the zTOC holds a checkpoint with its
//! 32 KiB window for almost every 4 MiB span, about 80 MiB of windows. Then it measures in one run the
//! peak RSS of
//! * `soci-indexer ztoc LAYER -o OUT` (build and encode),
//! * `soci-indexer create` of a one-layer image of it in a local registry (build, encode, push),
//!
//! and prints each against the zTOC's size. Target: peak <= 1.3 x the zTOC + 40 MiB, which holds the
//! checkpoints about once (the builder's blob is freed as the encoder copies it, into pages paid for as
//! they are written). `SOCI_BENCH_BIN=PATH` measures another build of the CLI (the static musl one of
//! `infra/release.sh`: its C library's `calloc` differs from glibc's).

// support::measure uses wait4: the one way to read the peak RSS of exactly one child process.
#![allow(unsafe_code)]

mod support;

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::Digest;
use support::{measure, push_layers, ChildRun};

use registry::Repository;
use testkit::image::TestLayer;
use testkit::registry::LocalRegistry;

/// The cached bomb and its diff id (kept beside it: hashing 10 GiB again takes longer than the run).
fn bomb_layer(gib: u64) -> (PathBuf, String) {
    let layer = support::bench_data().join(format!("bomb-{gib}gib.tar.gz"));
    let diff_id_file = layer.with_extension("diffid");
    if let (true, Ok(diff_id)) = (layer.exists(), std::fs::read_to_string(&diff_id_file)) {
        return (layer, diff_id);
    }
    eprintln!("making {} ({gib} GiB of zeros in one file, zlib level 9)...", layer.display());
    let partial = layer.with_extension("partial");
    let file = BufWriter::new(std::fs::File::create(&partial).expect("create layer"));
    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(support::hashing(gzip));
    let size = gib << 30;
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "zeros", std::io::repeat(0).take(size)).expect("write tar");
    let hashing = tar.into_inner().expect("finish tar");
    let diff_id = format!("sha256:{:x}", hashing.hash.finalize());
    hashing.inner.finish().expect("finish gzip").flush().expect("flush layer");
    std::fs::rename(&partial, &layer).expect("rename layer");
    std::fs::write(&diff_id_file, &diff_id).expect("write diff id");
    (layer, diff_id)
}

/// Pushes the bomb as `bench:bomb` (in a child process, so this one stays small: see `run_self`).
fn push_bomb(host: &str, layer: &Path, diff_id: String) {
    let blob = std::fs::read(layer).expect("read layer");
    let layer = TestLayer {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: ztoc::sha256_digest(&blob),
        diff_id,
        blob,
        files: Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let repo = Repository::new(host, "bench").expect("repository");
    runtime.block_on(push_layers(&support::local_client(), &repo, vec![layer], "bomb"));
}

/// The binary measured: this build's, or `SOCI_BENCH_BIN` (a release binary, such as the static musl
/// CLI of `infra/release.sh`, whose C library allocates otherwise).
fn binary() -> PathBuf {
    std::env::var_os("SOCI_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_soci-indexer")), PathBuf::from)
}

fn run(args: &[&str]) -> ChildRun {
    let mut cmd = Command::new(binary());
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    measure(cmd)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gib: u64 = std::env::var("SOCI_BENCH_BOMB_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    if let Some(at) = args.iter().position(|a| a == "--push-bomb") {
        let (layer, diff_id) = bomb_layer(gib);
        push_bomb(&args[at + 1], &layer, diff_id);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("bomb: run with `cargo bench -p soci-indexer --bench bomb`");
        return;
    }
    let (layer, _) = bomb_layer(gib);
    let out = tempfile::tempdir().expect("temp dir");
    let ztoc_path = out.path().join("bomb.ztoc");
    let ztoc = run(&["ztoc", layer.to_str().expect("utf-8 path"), "-o", ztoc_path.to_str().expect("utf-8")]);
    let ztoc_bytes = std::fs::metadata(&ztoc_path).expect("zTOC written").len();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    support::run_self(&["--push-bomb", &registry.host()]);
    let image = format!("{}/bench:bomb", registry.host());
    // The bomb is smaller than the default --min-layer-size (10 MiB): that is part of what makes it one.
    let create =
        run(&["create", &image, "--plain-http", "--force", "--no-ztoc-cache", "--min-layer-size", "0"]);
    let status = Command::new(binary())
        .args(["status", &image, "--plain-http", "--json"])
        .output()
        .expect("run status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("\"indexed\""), "the bomb image is not indexed: {status}");

    let mib = |bytes: f64| bytes / f64::from(1 << 20);
    let ztoc_mib = mib(ztoc_bytes as f64);
    let target = 1.3 * ztoc_mib + 40.0;
    let layer_mb = std::fs::metadata(&layer).expect("layer").len() as f64 / 1e6;
    println!("{}", binary().display());
    println!("layer: {layer_mb:.1} MB gzip, {gib} GiB inflated; zTOC {ztoc_mib:.1} MiB");
    for (what, child) in [("ztoc", &ztoc), ("create", &create)] {
        let peak = child.max_rss_kib as f64 / 1024.0;
        println!(
            "{what:<7} {:>7.2} s  peak RSS {peak:>6.1} MiB = {:.2}x the zTOC  (target <= {target:.1} MiB: {})",
            child.wall.as_secs_f64(),
            peak / ztoc_mib,
            if peak <= target { "met" } else { "NOT met" },
        );
    }
}
