//! `soci-indexer create`: make an image in any OCI registry lazy-loadable.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use index::create::{LayerReport, LayerResult, Observer, Outcome};
use index::oci::Platform;
use index::{CreateOptions, IndexVersion};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use registry::index_adapter::RepositoryClient;

/// Arguments of `create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, e.g. `registry.example.com/team/app:1.2` or `localhost:5000/app@sha256:...`.
    #[arg(value_name = "REF")]
    reference: String,
    /// Talk plain HTTP to the registry (for a local registry); TLS is used otherwise.
    #[arg(long)]
    plain_http: bool,
    /// v2 (default): an image index tagged `<tag><suffix>` whose manifests carry the index (what Fargate
    /// reads by default). v1: an index manifest with `subject`, found through the referrers API.
    #[arg(long, value_name = "VERSION", default_value = "v2", value_parser = ["v2", "v1"])]
    index_version: String,
    /// Layers smaller than this (compressed) are left out: they are cheap to pull whole.
    #[arg(long, value_name = "BYTES", default_value_t = index::create::DEFAULT_MIN_LAYER_SIZE)]
    min_layer_size: u64,
    /// Uncompressed bytes between zTOC checkpoints.
    #[arg(long, value_name = "BYTES", default_value_t = ztoc::DEFAULT_SPAN_SIZE, value_parser = clap::value_parser!(u64).range(1..))]
    span_size: u64,
    /// Index only this platform (`os/arch[/variant]`); repeat for several. Default: every platform.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<String>,
    /// v2: the SOCI index is pushed as `<tag><suffix>`; the original tag is never moved.
    #[arg(long, value_name = "S", default_value = index::create::DEFAULT_TAG_SUFFIX)]
    tag_suffix: String,
    /// Identifier written into zTOCs and indexes.
    #[arg(long, value_name = "S", default_value = crate::DEFAULT_BUILD_TOOL)]
    build_tool_identifier: String,
    /// Layers streamed and indexed at once (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..256))]
    concurrency: Option<u64>,
    /// Rebuild even if the image already has a SOCI index.
    #[arg(long)]
    force: bool,
    /// User name for the registry (with --password-stdin).
    #[arg(long, value_name = "U", requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Print one JSON summary object on stdout.
    #[arg(long)]
    json: bool,
}

/// Progress bars on a terminal: one per layer being indexed, bytes done.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn short(digest: &str) -> &str {
        digest.strip_prefix("sha256:").map_or(digest, |hex| &hex[..12.min(hex.len())])
    }
}

impl Observer for Bars {
    fn layer_started(&self, digest: &str, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(Self::short(digest).to_string());
        self.bars.lock().expect("bars lock").insert(digest.to_string(), bar);
    }

    fn layer_progress(&self, digest: &str, done: u64) {
        if let Some(bar) = self.bars.lock().expect("bars lock").get(digest) {
            bar.set_position(done);
        }
    }

    fn layer_finished(&self, report: &LayerReport) {
        let message = match &report.result {
            LayerResult::Indexed { spans, entries, .. } => {
                format!("indexed: {entries} entries, {spans} spans")
            }
            LayerResult::Skipped { reason } => format!("skipped: {reason}"),
            LayerResult::Unsupported { reason } => format!("left out: {reason}"),
        };
        match self.bars.lock().expect("bars lock").remove(&report.digest) {
            Some(bar) => bar.finish_with_message(message),
            None => {
                let _ = self.multi.println(format!("{} {message}", Self::short(&report.digest)));
            }
        }
    }
}

/// Plain lines on stderr when not on a terminal (CI logs): one per finished layer.
struct Lines;

impl Observer for Lines {
    fn layer_finished(&self, report: &LayerReport) {
        match &report.result {
            LayerResult::Unsupported { reason } => {
                eprintln!("warning: layer {} left out of the SOCI index: {reason}", report.digest)
            }
            LayerResult::Indexed { ztoc_digest, .. } => {
                eprintln!("layer {} indexed: zTOC {ztoc_digest}", report.digest)
            }
            LayerResult::Skipped { .. } => {}
        }
    }
}

/// Runs `create`.
pub fn run(args: Args) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(mut args: Args) -> Result<()> {
    // `http://host/repo:tag` means the same as `host/repo:tag --plain-http`.
    if let Some(rest) = args.reference.strip_prefix("http://") {
        args.reference = rest.to_string();
        args.plain_http = true;
    } else if let Some(rest) = args.reference.strip_prefix("https://") {
        args.reference = rest.to_string();
    }
    let reference = registry::Reference::parse(&args.reference).with_context(|| {
        format!(
            "{:?} is not an image reference (expected [REGISTRY/]REPOSITORY[:TAG][@DIGEST])",
            args.reference
        )
    })?;
    let credentials = if args.password_stdin {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password).context("reading the password from stdin")?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("--password-stdin: stdin was empty");
        }
        Some(registry::Credentials::new(args.username.clone().unwrap_or_default(), password))
    } else {
        None
    };
    let source: Arc<dyn registry::CredentialSource> = match credentials {
        Some(credentials) => Arc::new(registry::StaticCredentials(credentials)),
        None => Arc::new(registry::Anonymous),
    };
    let config = registry::ClientConfig {
        plain_http: args.plain_http,
        user_agent: crate::DEFAULT_BUILD_TOOL.to_string(),
        ..registry::ClientConfig::default()
    };
    let client = RepositoryClient::new(registry::Client::new(config, source)?, reference.to_repository());
    let mut platforms = Vec::new();
    for spec in &args.platforms {
        platforms.push(Platform::parse(spec).with_context(|| {
            format!("--platform {spec:?}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64")
        })?);
    }
    let options = CreateOptions {
        index_version: if args.index_version == "v1" { IndexVersion::V1 } else { IndexVersion::V2 },
        min_layer_size: args.min_layer_size,
        span_size: args.span_size,
        platforms,
        tag_suffix: args.tag_suffix,
        build_tool_identifier: args.build_tool_identifier,
        concurrency: args
            .concurrency
            .map(|n| n as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        force: args.force,
    };
    let observer: Arc<dyn Observer> = if std::io::stderr().is_terminal() && !args.json {
        Arc::new(Bars { multi: MultiProgress::new(), bars: Mutex::new(HashMap::new()) })
    } else {
        Arc::new(Lines)
    };
    let report =
        index::create(Arc::new(client), reference.manifest_reference(), reference.tag(), &options, observer)
            .await
            .with_context(|| format!("cannot index {}", args.reference))?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let repo = format!("{}/{}", reference.registry(), reference.repository());
    match report.outcome {
        Outcome::Created => {
            let indexed =
                report.layers.iter().filter(|l| matches!(l.result, LayerResult::Indexed { .. })).count();
            eprintln!(
                "created a SOCI {:?} index for {}: {indexed} layer(s) indexed",
                report.index_version, args.reference
            );
            if let Some(tag) = &report.pushed_tag {
                eprintln!(
                    "pushed {repo}:{tag} ({}): run tasks from this tag",
                    report.image_index_digest.as_deref().unwrap_or("")
                );
            }
            for platform in &report.platforms {
                if let Some(soci) = &platform.soci_index_digest {
                    eprintln!("  {}: SOCI index {soci}", platform.platform);
                }
            }
        }
        Outcome::AlreadyIndexed => {
            eprintln!(
                "{} already has a SOCI {:?} index: nothing rebuilt (use --force to rebuild)",
                args.reference, report.index_version
            )
        }
        Outcome::NothingToIndex => eprintln!(
            "nothing to index in {}: no layer is at least {} bytes and gzip or tar; nothing pushed",
            args.reference, options.min_layer_size
        ),
    }
    Ok(())
}
