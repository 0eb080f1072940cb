//! Benchmark: zTOC build vs. a plain inflate of the same layer, and peak memory.
//!
//! `cargo bench -p soci-indexer --bench ztoc_build` makes (once, cached under `target/bench-data/`) a
//! realistic gzip -6 layer from this machine's /usr/share and /usr/lib, then measures in one run:
//! * `gzip -dc LAYER > /dev/null` (wall time, peak RSS),
//! * a plain in-process inflate of the same bytes with zlib-rs (flate2), the floor for any builder,
//! * `soci-indexer ztoc LAYER -o OUT` (wall time, peak RSS), the full one-pass build.
//!
//! Set `SOCI_BENCH_LAYER=/path/to/layer.tar.gz` to use another layer, `SOCI_BENCH_RUNS` for repeats
//! (default 3; the fastest run counts), `SOCI_BENCH_TAR_BYTES` for the size of the generated tar.

// support::measure uses wait4: the one way to read the peak RSS of exactly one child process.
#![allow(unsafe_code)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::measure;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T, key: impl Fn(&T) -> Duration) -> T {
    (0..runs).map(|_| f()).min_by_key(|r| key(r)).expect("at least one run")
}

fn bench_layer() -> PathBuf {
    if let Ok(path) = std::env::var("SOCI_BENCH_LAYER") {
        return PathBuf::from(path);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).expect("create bench-data dir");
    let limit: u64 =
        std::env::var("SOCI_BENCH_TAR_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(735_000_000);
    let layer = dir.join(format!("usr-{limit}.tar.gz"));
    if !layer.exists() {
        eprintln!(
            "making {} (tar of /usr/share + /usr/lib up to {limit} bytes of file data, gzip -6)...",
            layer.display()
        );
        let partial = layer.with_extension("partial");
        let out = std::fs::File::create(&partial).expect("create layer");
        let mut gzip =
            Command::new("gzip").arg("-6").stdin(Stdio::piped()).stdout(out).spawn().expect("run gzip");
        let stdin = gzip.stdin.take().expect("gzip stdin");
        testkit::tar_host_tree(
            &[Path::new("/usr/share"), Path::new("/usr/lib")],
            limit,
            std::io::BufWriter::new(stdin),
        )
        .expect("write tar");
        assert!(gzip.wait().expect("gzip").success());
        std::fs::rename(&partial, &layer).expect("rename layer");
    }
    layer
}

/// Inflates the whole layer in-process (zlib-rs through flate2): the floor any builder pays.
fn inflate_all(layer: &std::path::Path) -> u64 {
    let file = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(layer).expect("open"));
    let mut decoder = flate2::read::MultiGzDecoder::new(file);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = decoder.read(&mut buf).expect("inflate");
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need: run only on bench.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("ztoc_build: run with `cargo bench -p soci-indexer --bench ztoc_build`");
        return;
    }
    let runs: usize = std::env::var("SOCI_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let layer = bench_layer();
    let compressed = std::fs::metadata(&layer).expect("layer").len();
    let out_dir = tempfile::tempdir().expect("temp dir");
    let ztoc_out = out_dir.path().join("layer.ztoc");
    let binary = env!("CARGO_BIN_EXE_soci-indexer");

    let gzip = best_of(
        runs,
        || {
            let mut cmd = Command::new("gzip");
            cmd.arg("-dc").arg(&layer).stdout(Stdio::null());
            measure(cmd)
        },
        |r| r.wall,
    );
    let (inflate_wall, uncompressed) = best_of(
        runs,
        || {
            let start = Instant::now();
            let total = inflate_all(&layer);
            (start.elapsed(), total)
        },
        |r| r.0,
    );
    let build = best_of(
        runs,
        || {
            let mut cmd = Command::new(binary);
            cmd.arg("ztoc").arg(&layer).arg("-o").arg(&ztoc_out).stderr(Stdio::null());
            measure(cmd)
        },
        |r| r.wall,
    );
    let ztoc_size = std::fs::metadata(&ztoc_out).expect("ztoc written").len();

    let mb = |b: u64| b as f64 / 1e6;
    let rate = |d: Duration| mb(uncompressed) / d.as_secs_f64();
    println!(
        "layer: {} ({:.1} MB gzip, {:.1} MB tar), best of {runs} runs",
        layer.display(),
        mb(compressed),
        mb(uncompressed)
    );
    println!(
        "gzip -dc           {:>8.3} s  {:>7.1} MB/s  peak RSS {:>6.1} MiB",
        gzip.wall.as_secs_f64(),
        rate(gzip.wall),
        gzip.max_rss_kib as f64 / 1024.0
    );
    println!(
        "inflate (zlib-rs)  {:>8.3} s  {:>7.1} MB/s  (in-process floor)",
        inflate_wall.as_secs_f64(),
        rate(inflate_wall)
    );
    println!(
        "soci-indexer ztoc  {:>8.3} s  {:>7.1} MB/s  peak RSS {:>6.1} MiB  zTOC {:.2} MB",
        build.wall.as_secs_f64(),
        rate(build.wall),
        build.max_rss_kib as f64 / 1024.0,
        mb(ztoc_size)
    );
    println!(
        "build / gzip -dc   {:>8.2}x  (target <= 0.60x)",
        build.wall.as_secs_f64() / gzip.wall.as_secs_f64()
    );
    println!("build / inflate    {:>8.2}x", build.wall.as_secs_f64() / inflate_wall.as_secs_f64());
}
