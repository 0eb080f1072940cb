//! What the benchmarks share: run a child process and read its own wall time and peak RSS; make (once)
//! and cache gzip layers of this machine's /usr; push one-platform images to a local registry.
//!
//! Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Wall time and peak resident memory of one child process.
pub struct ChildRun {
    /// Time from spawn to exit.
    pub wall: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: i64,
    /// CPU time, user and system, of the child itself.
    pub cpu: Duration,
}

/// Runs `cmd` to completion and reads its own rusage (not the sum over all children).
pub fn measure(mut cmd: Command) -> ChildRun {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which `child` never waits for (it is forgotten below).
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    std::mem::forget(child);
    assert_eq!(waited, pid, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed with status {status}");
    let seconds =
        |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    ChildRun { wall, max_rss_kib: usage.ru_maxrss, cpu }
}

/// Peak RSS of this process so far, MiB (used by one of the two benches).
#[allow(dead_code)]
pub fn own_peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut own: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut own) };
    own.ru_maxrss as f64 / 1024.0
}

/// The directory bench layers are cached in (`target/bench-data`).
pub fn bench_data() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    dir
}

/// `target/bench-data/<name>`, made once: gzip -6 of a tar of up to `data` bytes of files under `roots`
/// (those that exist on this machine).
pub fn cached_layer(name: &str, roots: &[&str], data: u64) -> std::path::PathBuf {
    use std::process::Stdio;
    let path = bench_data().join(name);
    if !path.exists() {
        eprintln!("making {} ...", path.display());
        let partial = path.with_extension("partial");
        let out = std::fs::File::create(&partial).expect("create layer");
        let mut gzip =
            Command::new("gzip").arg("-6").stdin(Stdio::piped()).stdout(out).spawn().expect("gzip");
        let roots: Vec<&std::path::Path> =
            roots.iter().map(std::path::Path::new).filter(|p| p.exists()).collect();
        let stdin = std::io::BufWriter::new(gzip.stdin.take().expect("stdin"));
        testkit::tar_host_tree(&roots, data, stdin).expect("write tar");
        assert!(gzip.wait().expect("gzip").success());
        std::fs::rename(&partial, &path).expect("rename");
    }
    path
}

/// The big layer the reuse and ranged benches share, made once: about 1.6 GB of file data from /usr,
/// which compresses to more than 500 MB at gzip -6.
pub fn big_usr_layer() -> std::path::PathBuf {
    const DATA: u64 = 1_600_000_000;
    const ROOTS: [&str; 5] = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/jvm",
        "/usr/lib/gcc",
        "/usr/lib/google-cloud-sdk",
        "/usr/share",
    ];
    cached_layer("reuse-big.tar.gz", &ROOTS, DATA)
}

/// A gzip layer file as a test layer (its tar inflated once, for the diff id).
pub fn layer_from_file(path: &std::path::Path) -> testkit::image::TestLayer {
    use std::io::Read;
    let blob = std::fs::read(path).expect("read layer");
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar).expect("gunzip");
    testkit::image::TestLayer::from_parts(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        blob,
        &tar,
        Vec::new(),
    )
}

/// A client for the local registry.
pub fn local_client() -> registry::Client {
    let config = registry::ClientConfig { plain_http: true, ..registry::ClientConfig::default() };
    registry::Client::new(config, std::sync::Arc::new(registry::Anonymous)).expect("client")
}

/// Pushes a one-platform (linux/amd64) OCI image of `layers` as `repo:tag`.
pub async fn push_layers(
    client: &registry::Client,
    repo: &registry::Repository,
    layers: Vec<testkit::image::TestLayer>,
    tag: &str,
) {
    let image =
        testkit::image::image(testkit::image::Style::Oci, vec![("linux/amd64".into(), layers)], false, false);
    for (digest, _, bytes) in image.blobs {
        client.push_blob(repo, &digest, bytes::Bytes::from(bytes)).await.expect("push blob");
    }
    let (_, media_type, bytes) = image.root;
    client.put_manifest(repo, tag, &media_type, bytes::Bytes::from(bytes)).await.expect("push manifest");
}

/// Runs this bench executable again with `args` (the pusher): Linux counts the RSS a child inherits at
/// fork/exec in its peak, so the measuring process must stay small for the children's figures to be
/// their own.
pub fn run_self(args: &[&str]) {
    let status = Command::new(std::env::current_exe().expect("bench executable"))
        .args(args)
        .status()
        .expect("run the pusher");
    assert!(status.success(), "{args:?} failed");
}

/// A writer that hashes (sha256) and counts what passes through it on its way to `inner`: a layer's
/// digest and size, or its tar's diff id.
pub struct Hashing<W> {
    pub inner: W,
    pub hash: sha2::Sha256,
    pub count: u64,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn hashing<W: std::io::Write>(inner: W) -> Hashing<W> {
    Hashing { inner, hash: sha2::Digest::new(), count: 0 }
}
