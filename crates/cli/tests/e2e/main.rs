//! End-to-end tests of soci-indexer: the CLI binary (`CARGO_BIN_EXE_soci-indexer`) against the
//! soci-made corpus, generated layers and a real registry. One test binary; a module per verb.

mod cache;
mod cli_errors;
mod corpus;
mod create;
mod extract;
mod lifecycle;
mod safety;
mod status;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bytes::Bytes;
use testkit::image::TestImage;

/// The soci-made golden corpus copied into the repository.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rules_img")
}

/// The `soci-indexer` binary Cargo built for these tests.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_soci-indexer"))
}

/// Pushes `image` (blobs, platform manifests, then the root under `tag`) with `client`.
pub async fn push_image(
    client: &registry::Client,
    repo: &registry::Repository,
    image: &TestImage,
    tag: &str,
) {
    for (digest, _, bytes) in &image.blobs {
        client.push_blob(repo, digest, Bytes::from(bytes.clone())).await.unwrap();
    }
    for (digest, media_type, bytes) in &image.manifests {
        client.put_manifest(repo, digest, media_type, Bytes::from(bytes.clone())).await.unwrap();
    }
    let (_, media_type, bytes) = &image.root;
    client.put_manifest(repo, tag, media_type, Bytes::from(bytes.clone())).await.unwrap();
}

/// The CLI, with its zTOC cache in a directory of this test process (never the user's).
pub fn cli() -> Command {
    static CACHE_HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = CACHE_HOME.get_or_init(|| tempfile::tempdir().expect("cache home"));
    let mut command = Command::new(binary());
    command.env("XDG_CACHE_HOME", home.path());
    command
}

/// Runs the CLI with `args` and returns its output.
pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    cli().args(args).output().expect("run soci-indexer")
}

/// `OsStr` of anything path-like, for [`run`]'s argument lists.
pub fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Asserts a run failed with a message containing every one of `needles`, and returns stderr.
pub fn assert_fails_with(output: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "expected failure, got success; stderr: {stderr}");
    assert_eq!(output.status.code(), Some(1), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    stderr
}
