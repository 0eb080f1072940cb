//! Benchmark: `soci-indexer create` time and peak RSS against image size, from 250 MB to 8 GB
//! compressed (past the 6 GB the incumbent Lambda documents as its ceiling).
//!
//! Run through `infra/bench-curve.sh`, which plots the result. `cargo bench -p soci-indexer --bench
//! curve` generates gzip -1 layers of lightly compressible file data (6 random bits a byte: fast to
//! make and to compress, about 0.8 of its size compressed) under `target/bench-data/curve/`, pushes
//! each to a real local registry (Debian's docker-registry) and deletes it, then times `create
//! --no-ztoc-cache` (default settings otherwise) of each image, pinned to one core (`taskset -c 0`) and
//! on both, and writes `docs/bench-curve.csv`. The registry's storage goes with it at the end.
//!
//! Images (decimal GB, compressed): 0.25 and 0.5 GB of 250 MB layers, then 1, 2, 4, 6 and 8 GB of
//! 1 GB layers. `SOCI_CURVE_MAX_GB` stops at a smaller image; `SOCI_CURVE_CREATE_ARGS` adds flags to
//! every create (e.g. `--ranges-per-layer 1`).

// support::measure uses wait4: the one way to read the peak RSS of exactly one child process.
#![allow(unsafe_code)]

mod support;

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use registry::{sha256_digest, Client, ClientConfig, Repository};
use sha2::Digest as _;
use support::{measure, ChildRun};
use testkit::registry::LocalRegistry;

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Bytes of each file in the generated layers.
const FILE_SIZE: usize = 4 << 20;

/// A layer pushed to the registry.
#[derive(Clone, Debug)]
struct Layer {
    digest: String,
    diff_id: String,
    size: u64,
}

/// Writes a gzip -1 tar layer of about `target` compressed bytes to `path`.
fn generate(path: &Path, seed: u64, target: u64) -> Layer {
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create layer"));
    let gzip = flate2::write::GzEncoder::new(support::hashing(file), flate2::Compression::new(1));
    let mut tar = tar::Builder::new(support::hashing(gzip));
    let mut rng = testkit::Rng::new(seed);
    let mut data = vec![0u8; FILE_SIZE];
    let mut n = 0;
    while tar.get_ref().inner.get_ref().count < target {
        for word in data.chunks_exact_mut(8) {
            // Six random bits a byte: compressible a little, like real binaries, and quick to deflate.
            let bits = (rng.next_u64() & 0x3f3f_3f3f_3f3f_3f3f) | 0x4040_4040_4040_4040;
            word.copy_from_slice(&bits.to_le_bytes());
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(FILE_SIZE as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("data/{seed}/{n:06}.bin"), &data[..]).expect("tar entry");
        n += 1;
    }
    let tar_hash = tar.into_inner().expect("finish tar");
    let diff_id = format!("sha256:{}", hex::encode(tar_hash.hash.finalize()));
    let gzip_out = tar_hash.inner.finish().expect("finish gzip");
    let (size, digest) = (gzip_out.count, format!("sha256:{}", hex::encode(gzip_out.hash.finalize())));
    gzip_out.inner.into_inner().expect("flush").sync_all().expect("sync");
    Layer { digest, diff_id, size }
}

/// Generates layers `seed_from..` of `target` bytes two at a time, pushing and deleting each.
async fn make_layers(
    client: &Client,
    repo: &Repository,
    dir: &Path,
    seeds: &[u64],
    target: u64,
) -> Vec<Layer> {
    let mut layers = Vec::new();
    for pair in seeds.chunks(2) {
        let made: Vec<(PathBuf, Layer)> = std::thread::scope(|scope| {
            let handles: Vec<_> = pair
                .iter()
                .map(|&seed| {
                    scope.spawn(move || {
                        let path = dir.join(format!("layer-{seed}.tar.gz"));
                        let layer = generate(&path, seed, target);
                        (path, layer)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("generator")).collect()
        });
        for (path, layer) in made {
            let blob = Bytes::from(std::fs::read(&path).expect("read layer"));
            std::fs::remove_file(&path).expect("delete layer");
            client.push_blob(repo, &layer.digest, blob).await.expect("push layer");
            eprintln!("pushed layer {} ({:.1} MB)", &layer.digest[..19], layer.size as f64 / 1e6);
            layers.push(layer);
        }
    }
    layers
}

/// Pushes the config and manifest of an image of `layers`, tagged `tag`.
async fn push_image(client: &Client, repo: &Repository, tag: &str, layers: &[Layer]) {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("config");
    let config_digest = sha256_digest(&config);
    client.push_blob(repo, &config_digest, Bytes::from(config.clone())).await.expect("push config");
    let descriptors: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({ "mediaType": LAYER_MEDIA_TYPE, "digest": l.digest, "size": l.size }))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len(),
        },
        "layers": descriptors,
    }))
    .expect("manifest");
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    client.put_manifest(repo, tag, media_type, Bytes::from(manifest)).await.expect("push manifest");
}

/// `soci-indexer create` of `host/bench/curve:tag`, on core 0 alone or on every core.
fn create(host: &str, tag: &str, one_core: bool) -> ChildRun {
    let binary = env!("CARGO_BIN_EXE_soci-indexer");
    let mut cmd = if one_core {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0", binary]);
        cmd
    } else {
        Command::new(binary)
    };
    let extra = std::env::var("SOCI_CURVE_CREATE_ARGS").unwrap_or_default();
    cmd.arg("create")
        .arg(format!("{host}/bench/curve:{tag}"))
        .args(["--plain-http", "--force", "--no-ztoc-cache", "--json"])
        .args(extra.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    measure(cmd)
}

/// The images to measure: (GB, layers, from the 250 MB layers), up to `max_gb`.
fn plan(max_gb: f64) -> Vec<(f64, usize, bool)> {
    let all = [
        (0.25, 1, true),
        (0.5, 2, true),
        (1.0, 1, false),
        (2.0, 2, false),
        (4.0, 4, false),
        (6.0, 6, false),
        (8.0, 8, false),
    ];
    all.into_iter().filter(|(gb, _, _)| *gb <= max_gb).collect()
}

/// Generates and pushes every layer and image (in a child process, so that the measuring process
/// stays small: a child's peak RSS can include what its parent had when it forked). Prints one line
/// per image: `tag,layers,compressed bytes`.
fn make_images(host: &str, max_gb: f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("target/bench-data/curve");
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = Client::new(
        ClientConfig { plain_http: true, ..ClientConfig::default() },
        Arc::new(registry::Anonymous),
    )
    .expect("client");
    let repo = Repository::new(host, "bench/curve").expect("repository");
    let plan = plan(max_gb);
    let big_layers = plan.iter().filter(|p| !p.2).map(|p| p.1).max().unwrap_or(0);
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let small = make_layers(&client, &repo, &dir, &[1, 2], 250_000_000).await;
        let seeds: Vec<u64> = (10..10 + big_layers as u64).collect();
        let big = make_layers(&client, &repo, &dir, &seeds, 1_000_000_000).await;
        for (gb, count, from_small) in plan {
            let layers = if from_small { &small[..count] } else { &big[..count] };
            let tag = format!("gb{}", (gb * 100.0) as u32);
            push_image(&client, &repo, &tag, layers).await;
            let bytes: u64 = layers.iter().map(|l| l.size).sum();
            println!("{tag},{count},{bytes}");
        }
    });
    let _ = std::fs::remove_dir(&dir);
    eprintln!("layers made and pushed in {:.0} s", started.elapsed().as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let max_gb: f64 = std::env::var("SOCI_CURVE_MAX_GB").ok().and_then(|v| v.parse().ok()).unwrap_or(8.0);
    if let Some(at) = args.iter().position(|a| a == "--make-images") {
        make_images(&args[at + 1], max_gb);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("curve: run with infra/bench-curve.sh (or `cargo bench -p soci-indexer --bench curve`)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let registry = runtime.block_on(LocalRegistry::start()).expect("start docker-registry");
    let host = registry.host();
    let made = Command::new(std::env::current_exe().expect("bench executable"))
        .args(["--make-images", &host])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the image maker");
    assert!(made.status.success(), "making the bench images failed");
    let images = String::from_utf8(made.stdout).expect("utf-8");

    let mut rows =
        vec!["image_gb,layers,compressed_bytes,cores,wall_s,mb_per_s,peak_rss_mib,cpu_s,mb_per_cpu_s"
            .to_owned()];
    println!(
        "{:>9} {:>6} {:>5} {:>9} {:>8} {:>9} {:>8} {:>10}",
        "image GB", "layers", "cores", "wall s", "MB/s", "RSS MiB", "CPU s", "MB/CPU-s"
    );
    for line in images.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let [tag, count, bytes] = fields[..] else { panic!("image line {line:?}") };
        let bytes: u64 = bytes.parse().expect("bytes");
        for one_core in [true, false] {
            let run = create(&host, tag, one_core);
            let cores =
                if one_core { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
            let (wall, rss) = (run.wall.as_secs_f64(), run.max_rss_kib as f64 / 1024.0);
            let (gb, rate) = (bytes as f64 / 1e9, bytes as f64 / 1e6 / wall);
            // Per CPU-second of the create itself: what one vCPU indexes, whoever else shares the cores.
            let cpu = run.cpu.as_secs_f64();
            let per_cpu = bytes as f64 / 1e6 / cpu;
            println!(
                "{gb:>9.2} {count:>6} {cores:>5} {wall:>9.2} {rate:>8.1} {rss:>9.1} {cpu:>8.2} {per_cpu:>10.1}"
            );
            rows.push(format!(
                "{gb:.3},{count},{bytes},{cores},{wall:.2},{rate:.1},{rss:.1},{cpu:.2},{per_cpu:.1}"
            ));
        }
    }
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench-curve.csv");
    std::fs::create_dir_all(csv.parent().expect("docs")).expect("docs dir");
    std::fs::write(&csv, rows.join("\n") + "\n").expect("write csv");
    eprintln!("wrote {}", csv.display());
}
