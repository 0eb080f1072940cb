//! `soci-indexer`: build SOCI zTOCs for container image layers, inspect them, and read files back
//! out of a layer by random access.

mod args;
mod create;
mod extract;
mod info;
mod lifecycle;
mod observe;
mod output;
mod progress;
mod status;
mod ztoc_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The identifier written into zTOCs unless `--build-tool-identifier` says otherwise.
pub use app::DEFAULT_BUILD_TOOL;

/// What `--version` prints after the name: the crate's version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SOCI_INDEXER_COMMIT"), ")");

/// Make container images lazy-loadable: SOCI zTOCs and indexes for AWS Fargate and soci-snapshotter.
#[derive(Debug, Parser)]
#[command(
    name = "soci-indexer",
    version = VERSION,
    about,
    long_about = "Make container images lazy-loadable.\n\n\
A SOCI (Seekable OCI) index lets AWS Fargate and soci-snapshotter start a container before its image \
is downloaded, fetching files on demand. Its core is one zTOC per large layer: the table of contents of \
the layer's tar plus zlib checkpoints every few MiB, so any file can be inflated from the middle of the \
gzip stream. soci-indexer builds zTOCs in one streaming pass, byte-identical to soci-snapshotter's own.",
    after_help = "Examples:\n  \
# Index an image in Amazon ECR (v2: pushes <tag>-soci, the reference to deploy)\n  \
aws ecr get-login-password | soci-indexer create $REGISTRY/app:1.4 --username AWS --password-stdin\n  \
# In a deploy pipeline: start tasks only once the image is lazy-loadable\n  \
aws ecr get-login-password | soci-indexer wait $REGISTRY/app:1.4 --username AWS --password-stdin \\\n      \
--timeout 10m && aws ecs update-service ...\n  \
# Keep a whole repository indexed, and remove what outlived its image\n  \
soci-indexer sync localhost:5000/team/app --plain-http\n  \
soci-indexer prune localhost:5000/team/app --plain-http --dry-run\n  \
# Work on one layer file, without a registry\n  \
soci-indexer ztoc layer.tar.gz -o layer.ztoc && soci-indexer ztoc-info layer.ztoc\n  \
soci-indexer extract layer.tar.gz layer.ztoc usr/bin/env -o env"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Index an image in a registry: stream its layers into zTOCs and push the SOCI index.
    #[command(
        long_about = "Make an image in any OCI registry lazy-loadable: read it, stream every eligible layer \
(gzip or plain tar, at least --min-layer-size compressed) straight from the registry through the zTOC \
builder (nothing on disk, several layers at once, each verified against its digest), then push the zTOCs \
and the SOCI index.\n\n\
v2 (default, what Fargate reads): a new image index tagged <tag><suffix> (default -soci) whose image \
manifests are annotated with their SOCI index; run your tasks from that tag. The original tag is never \
moved. v1: a SOCI index manifest whose subject is the image, found through the referrers API (or the \
sha256-<digest> tag on registries without it).\n\n\
Pushes go blobs first, then manifests, then the tag: a failure never leaves a half-visible index. An \
image that already has an index is left alone unless --force. Layers soci cannot index (e.g. with a \
PAX global header) are left out with a warning.",
        after_help = "Examples:\n  \
soci-indexer create 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.4 --username AWS --password-stdin\n  \
soci-indexer create localhost:5000/app:latest --plain-http --platform linux/arm64 --json"
    )]
    Create(create::Args),
    /// Say whether the image a reference points to now is lazy-loadable, and what to deploy.
    #[command(
        long_about = "Say whether the image REF points to now is lazy-loadable, per platform, and which \
reference to deploy.\n\n\
v2: <tag><suffix> exists and binds exactly this image (its manifests, converted and annotated). v1: a SOCI \
index refers to the image (referrers API, else the sha256-<digest> tag). States: indexed; not-indexed; \
stale (<tag><suffix> binds another image: the tag was re-pointed since); partial (some platforms with \
eligible layers have no SOCI index); broken (a zTOC the index names is gone, or the index covers none of \
its platform's eligible layers: create rebuilds it).\n\n\
Exit status: 0 indexed, 3 not indexed (or stale, partial, broken), 1 error (unknown image, credentials, \
network), 2 usage.",
        after_help = "Examples:\n  \
soci-indexer status 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.4 --username AWS --password-stdin\n  \
soci-indexer status localhost:5000/app:latest --plain-http --json"
    )]
    Status(status::Args),
    /// Wait until the image a reference points to is lazy-loadable (for deploy pipelines).
    #[command(
        long_about = "Check `status` until the image is indexed (exit 0), an error that another check cannot \
fix happens (unknown image or repository, credentials: exit 1 at once), or --timeout passes (exit 3, with \
the last state). Checks start --interval apart and slow down to one every 15 s. Put it between the push \
and the deploy, so tasks never start before their index exists.",
        after_help = "Example (Amazon ECR):\n  \
docker push $IMAGE:1.4\n  \
aws ecr get-login-password |\n    \
soci-indexer wait $IMAGE:1.4 --timeout 10m --username AWS --password-stdin\n  \
aws ecs update-service ...   # only after wait exits 0"
    )]
    Wait(status::WaitArgs),
    /// Index every tag of a repository that is not indexed (or stale, partial, broken).
    #[command(
        long_about = "Bring a repository to \"every image is lazy-loadable\": list its tags (paginated), and \
index each that is not indexed, stale, partial or broken; already indexed images cost a few manifest reads, no \
build. Tags that are SOCI output (ending in the suffix, sha256-<digest> referrers tags) are skipped, as are \
tags no --filter matches. One line per tag as it is done, then a summary; exit 1 if any tag failed. --dry-run says what \
would be indexed and changes nothing.",
        after_help = "Examples:\n  \
soci-indexer sync localhost:5000/team/app --plain-http --dry-run\n  \
soci-indexer sync 123456789012.dkr.ecr.us-east-1.amazonaws.com/app --filter 'v*' --username AWS --password-stdin"
    )]
    Sync(lifecycle::SyncArgs),
    /// Remove SOCI artifacts whose image is gone.
    #[command(
        long_about = "Remove SOCI output whose image is gone: a v2 <tag><suffix> whose <tag> no longer exists \
(only when it really is an image index carrying SOCI indexes: a tag of your own that happens to end in the \
suffix is never touched), with the SOCI index manifests and annotated manifests only it references; and v1 \
sha256-<digest> referrers tags whose subject is gone, with their SOCI index manifests. The tag-bearing index \
goes first, then what it referenced. A registry that refuses deletion (405 / UNSUPPORTED) is a named error \
and nothing is removed. --dry-run lists what would be removed.",
        after_help = "Example:\n  soci-indexer prune localhost:5000/team/app --plain-http --dry-run"
    )]
    Prune(lifecycle::PruneArgs),
    /// Build the zTOC of one layer blob (gzip or plain tar, detected from its bytes).
    #[command(
        long_about = "Build the zTOC of one layer blob.\n\n\
The layer is read once, as a stream: it is inflated, checkpointed and its tar walked in the same pass, \
so `-` (stdin) works as well as a file and memory stays at the size of the zTOC. gzip (also \
multi-member, as pigz writes) and plain tar layers are detected from the first bytes; zstd layers \
cannot be indexed by SOCI. The output is written atomically: on any error no file is left behind.",
        after_help = "Examples:\n  \
soci-indexer ztoc layer.tar.gz -o layer.ztoc\n  \
curl -s URL | soci-indexer ztoc - -o layer.ztoc --span-size 1048576"
    )]
    Ztoc(ztoc_cmd::Args),
    /// Show what a zTOC holds: sizes, spans, digests and every tar entry.
    #[command(
        name = "ztoc-info",
        long_about = "Show what a zTOC holds, like `soci ztoc info`: format version, build tool, sizes, \
compression, span size and digests, and every entry with its offset, size, span range, mode, owner, \
mtime, link target and PAX records. `--json` prints one JSON object for scripts."
    )]
    ZtocInfo(info::Args),
    /// Read one file out of a layer by random access, through its zTOC.
    #[command(
        long_about = "Read one file out of a layer by random access, as a lazy-loading consumer does.\n\n\
Only the compressed spans that hold the file are read; each is checked against its sha256 in the zTOC, \
inflation resumes at the span's checkpoint, and the file's bytes are written. A zTOC built for another \
layer, or a damaged layer, is reported, never silently extracted. Hard links are followed to their \
target. PATH is matched exactly, else without a leading `./` or `/`.",
        after_help = "Examples:\n  \
soci-indexer extract layer.tar.gz layer.ztoc etc/os-release\n  \
soci-indexer extract layer.tar.gz layer.ztoc ./usr/bin/env -o env"
    )]
    Extract(extract::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics for operators: `SOCI_INDEXER_LOG=debug` shows every registry request (never secrets).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOCI_INDEXER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a CI log or a file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Create(args) => done(create::run(args)),
        Command::Status(args) => status::run(args),
        Command::Wait(args) => status::wait(args),
        Command::Sync(args) => lifecycle::sync(args),
        Command::Prune(args) => lifecycle::prune(args),
        Command::Ztoc(args) => done(ztoc_cmd::run(args)),
        Command::ZtocInfo(args) => done(info::run(args)),
        Command::Extract(args) => done(extract::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let causes: Vec<&(dyn std::error::Error + 'static)> = err.chain().collect();
            eprintln!("error: {}", index::chain_of(&causes));
            ExitCode::FAILURE
        }
    }
}

/// A path argument where `-` means stdin or stdout.
pub fn is_std_stream(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}
