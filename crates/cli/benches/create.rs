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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::{measure, ChildRun};

use bytes::Bytes;
use registry::{Client, ClientConfig, Repository};
use testkit::image::{image, Style, TestLayer};
use testkit::registry::LocalRegistry;

const LAYER_ROOTS: [&[&str]; 4] = [
    &["/usr/lib/x86_64-linux-gnu"],
    &["/usr/lib/jvm", "/usr/lib/gcc"],
    &["/usr/lib/google-cloud-sdk"],
    &["/usr/share", "/usr/lib/llvm-14"],
];

/// The cached layer `n` (gzip -6 of a tar of some /usr trees, ~280 MB of file data).
fn layer(n: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    let path = dir.join(format!("create-layer-{n}.tar.gz"));
    if !path.exists() {
        eprintln!("making {} ...", path.display());
        let partial = path.with_extension("partial");
        let out = std::fs::File::create(&partial).expect("create layer");
        let mut gzip =
            Command::new("gzip").arg("-6").stdin(Stdio::piped()).stdout(out).spawn().expect("gzip");
        let roots: Vec<&Path> = LAYER_ROOTS[n].iter().map(Path::new).collect();
        testkit::tar_host_tree(
            &roots,
            280_000_000,
            std::io::BufWriter::new(gzip.stdin.take().expect("stdin")),
        )
        .expect("write tar");
        assert!(gzip.wait().expect("gzip").success());
        std::fs::rename(&partial, &path).expect("rename");
    }
    path
}

fn test_layer(path: &Path) -> TestLayer {
    let blob = std::fs::read(path).expect("read layer");
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar).expect("gunzip");
    TestLayer::from_parts("application/vnd.oci.image.layer.v1.tar+gzip", blob, &tar, Vec::new())
}

async fn push(client: &Client, repo: &Repository, layers: Vec<TestLayer>, tag: &str) {
    let image = image(Style::Oci, vec![("linux/amd64".into(), layers)], false, false);
    for (digest, _, bytes) in image.blobs {
        client.push_blob(repo, &digest, Bytes::from(bytes)).await.expect("push blob");
    }
    let (_, media_type, bytes) = image.root;
    client.put_manifest(repo, tag, &media_type, Bytes::from(bytes)).await.expect("push manifest");
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
    let client = Client::new(
        ClientConfig { plain_http: true, ..ClientConfig::default() },
        Arc::new(registry::Anonymous),
    )
    .expect("client");
    let repo = Repository::new(host, "bench").expect("repository");
    runtime.block_on(async {
        push(&client, &repo, vec![test_layer(&paths[0])], "one").await;
        push(&client, &repo, paths.iter().map(|p| test_layer(p)).collect(), "four").await;
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
    // The images are pushed by a child process: Linux counts the RSS a child inherits at fork/exec in
    // its peak, so this process must stay small for the measurements below to be the CLI's own.
    let status = Command::new(std::env::current_exe().expect("bench executable"))
        .args(["--push-bench-images", &registry.host()])
        .status()
        .expect("run the pusher");
    assert!(status.success(), "pushing the bench images failed");
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
