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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use registry::{Client, ClientConfig, Repository};
use support::{measure, ChildRun};
use testkit::image::{image, Style, TestLayer};
use testkit::registry::LocalRegistry;
use testkit::LayerConfig;

/// File data in the big layer: about 1.6 GB of /usr compresses to more than 500 MB at gzip -6.
const BIG_LAYER_DATA: u64 = 1_600_000_000;
const BIG_LAYER_ROOTS: [&str; 5] =
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib/jvm", "/usr/lib/gcc", "/usr/lib/google-cloud-sdk", "/usr/share"];

/// The cached big layer.
fn big_layer() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    let path = dir.join("reuse-big.tar.gz");
    if !path.exists() {
        eprintln!("making {} ...", path.display());
        let partial = path.with_extension("partial");
        let out = std::fs::File::create(&partial).expect("create layer");
        let mut gzip =
            Command::new("gzip").arg("-6").stdin(Stdio::piped()).stdout(out).spawn().expect("gzip");
        let roots: Vec<&Path> = BIG_LAYER_ROOTS.iter().map(Path::new).filter(|p| p.exists()).collect();
        let stdin = std::io::BufWriter::new(gzip.stdin.take().expect("stdin"));
        testkit::tar_host_tree(&roots, BIG_LAYER_DATA, stdin).expect("write tar");
        assert!(gzip.wait().expect("gzip").success());
        std::fs::rename(&partial, &path).expect("rename");
    }
    path
}

fn layer_from_file(path: &Path) -> TestLayer {
    let blob = std::fs::read(path).expect("read layer");
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar).expect("gunzip");
    TestLayer::from_parts("application/vnd.oci.image.layer.v1.tar+gzip", blob, &tar, Vec::new())
}

/// A small layer of an image's own (above the default 10 MiB minimum, so it is indexed too).
fn small_layer(seed: u64) -> TestLayer {
    TestLayer::gzip(seed, &LayerConfig { entries: 400, max_file_size: 256 * 1024, pax_percent: 0 }, 1, false)
}

async fn push(client: &Client, repo: &Repository, layers: Vec<TestLayer>, tag: &str) {
    let image = image(Style::Oci, vec![("linux/amd64".into(), layers)], false, false);
    for (digest, _, bytes) in image.blobs {
        client.push_blob(repo, &digest, Bytes::from(bytes)).await.expect("push blob");
    }
    let (_, media_type, bytes) = image.root;
    client.put_manifest(repo, tag, &media_type, Bytes::from(bytes)).await.expect("push manifest");
}

/// Pushes A and B to `bench/app` and C to `bench/other` (in a child process: see `main`).
fn push_images(host: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = Client::new(
        ClientConfig { plain_http: true, ..ClientConfig::default() },
        Arc::new(registry::Anonymous),
    )
    .expect("client");
    let app = Repository::new(host, "bench/app").expect("repository");
    let other = Repository::new(host, "bench/other").expect("repository");
    let big = layer_from_file(&big_layer());
    runtime.block_on(async {
        push(&client, &app, vec![big.clone(), small_layer(1)], "a").await;
        push(&client, &app, vec![big.clone(), small_layer(2)], "b").await;
        push(&client, &other, vec![big, small_layer(2)], "c").await;
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
    let big = std::fs::metadata(big_layer()).expect("big layer").len();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    let host = registry.host();
    let status = Command::new(std::env::current_exe().expect("bench executable"))
        .args(["--push-bench-images", &host])
        .status()
        .expect("run the pusher");
    assert!(status.success(), "pushing the bench images failed");

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
