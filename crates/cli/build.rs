//! Puts the commit the CLI is built from into `SOCI_INDEXER_COMMIT`, for `soci-indexer --version`: the
//! environment's `SOCI_INDEXER_COMMIT` when set (infra/release.sh sets it), else `git rev-parse HEAD` of
//! the checkout, else `unknown` (a source tree without git). Cargo runs it again when HEAD moves.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOCI_INDEXER_COMMIT");
    let commit = match std::env::var("SOCI_INDEXER_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => {
            // HEAD, the branch it names and packed-refs: a commit or a checkout changes one of them.
            let branch = git(&["symbolic-ref", "-q", "HEAD"]);
            for path in ["HEAD", "packed-refs"].into_iter().map(str::to_owned).chain(branch) {
                if let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", &path]) {
                    if Path::new(&file).exists() {
                        println!("cargo:rerun-if-changed={file}");
                    }
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    let short: String = commit.chars().take(12).collect();
    println!("cargo:rustc-env=SOCI_INDEXER_COMMIT={short}");
}
