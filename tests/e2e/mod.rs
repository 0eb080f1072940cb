//! Test modules and shared helpers.

mod cache;
mod cli_errors;
mod corpus;
mod create;
mod extract;
mod lifecycle;
mod status;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The soci-made golden corpus copied into the repository.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rules_img")
}

/// The `soci-indexer` binary of this workspace, built on first use if `cargo test` did not build it.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/tests-<hash> → target/<profile>/soci-indexer
        let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
        let binary = profile_dir.join("soci-indexer");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "soci-indexer", "--bin", "soci-indexer"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        // Always (re)build: cheap when up to date, and a stale binary would test old code.
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building soci-indexer failed");
        assert!(binary.exists(), "{} missing after build", binary.display());
        binary
    })
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
