//! `soci-indexer create`: make an image in any OCI registry lazy-loadable.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result};
use index::{CreateOptions, CreateReport, IndexVersion, Observer, Outcome};

use crate::args::{self, CacheArgs, IndexArgs, RegistryArgs};
use crate::observe::{self, Bars, Lines};

/// Arguments of `create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, e.g. `registry.example.com/team/app:1.2` or `localhost:5000/app@sha256:...`.
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    index: IndexArgs,
    /// Uncompressed bytes between zTOC checkpoints.
    #[arg(long, value_name = "BYTES", default_value_t = ztoc::DEFAULT_SPAN_SIZE, value_parser = app::settings::parse_span_size)]
    span_size: u64,
    /// Identifier written into zTOCs and indexes.
    #[arg(long, value_name = "S", default_value = app::DEFAULT_BUILD_TOOL)]
    build_tool_identifier: String,
    /// Layers streamed and indexed at once, 1 to 256 (default: one per core).
    #[arg(long, value_name = "N", value_parser = app::settings::parse_concurrency)]
    concurrency: Option<usize>,
    /// Layer downloads in flight at once, every layer's ranges included, 1 to 1024.
    #[arg(long, value_name = "N", default_value_t = registry::DEFAULT_MAX_CONNECTIONS, value_parser = app::settings::parse_max_connections)]
    max_connections: usize,
    /// Ranges of one large layer (64 MiB or more) downloading at once, 1 to 64; 1 reads each layer as
    /// one stream.
    #[arg(long, value_name = "N", default_value_t = registry::RangedReads::default().ranges_in_flight, value_parser = app::settings::parse_ranges_per_layer)]
    ranges_per_layer: usize,
    /// Bytes per range of a large layer (64KiB to 1GiB).
    #[arg(long, value_name = "BYTES", default_value_t = registry::RangedReads::default().range_size, value_parser = app::settings::parse_range_size)]
    range_size: u64,
    /// Rebuild even if the image already has a SOCI index.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    cache: CacheArgs,
    /// A layer whose zTOC would grow past this (e.g. 128MiB) is left out with a warning and the rest of
    /// the image indexed: it bounds the memory a gzip bomb or a layer of millions of files can take.
    #[arg(long, value_name = "BYTES", default_value_t = index::DEFAULT_MAX_ZTOC_SIZE, value_parser = app::settings::parse_min_layer_size)]
    max_ztoc_size: u64,
    /// Give up after this long (`90s`, `10m`, plain seconds); nothing becomes visible after it.
    #[arg(long, value_name = "DURATION", value_parser = app::settings::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Print one JSON object on stdout: the summary, or `{"error": ...}` on failure.
    #[arg(long)]
    json: bool,
}

/// Runs `create`.
pub fn run(args: Args) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let result = runtime.block_on(run_async(&args));
    if args.json {
        if let Err(e) = &result {
            // Scripts read stdout: a failure is a JSON object there too.
            let error = serde_json::json!({ "reference": args.reference, "error": format!("{e:#}") });
            println!("{}", serde_json::to_string_pretty(&error)?);
        }
    }
    result
}

async fn run_async(args: &Args) -> Result<()> {
    let downloads = app::Downloads {
        max_connections: args.max_connections,
        ranges_per_layer: args.ranges_per_layer,
        range_size: args.range_size,
    };
    let mut connected = args.registry.connect_with(&args.reference, downloads)?;
    if let Some(limit) = args.timeout {
        // Throttled requests wait until the run's deadline, no longer.
        let run = app::Run { deadline: Some(std::time::Instant::now() + limit), background: false };
        let repository = connected.registry.repository().clone();
        connected.registry = app::RepositoryClient::new(run.apply(connected.registry.client()), repository);
    }
    let client = connected.registry.client().clone();
    let reference = &connected.reference;
    let options = CreateOptions {
        span_size: args.span_size,
        build_tool_identifier: args.build_tool_identifier.clone(),
        concurrency: args.concurrency.unwrap_or_else(index::default_concurrency),
        force: args.force,
        ztoc_cache: args.cache.ztoc_cache(),
        max_ztoc_size: args.max_ztoc_size,
        ..args.index.options()
    };
    let observer: Arc<dyn Observer> = if std::io::stderr().is_terminal() && !args.json {
        Arc::new(Bars::default())
    } else {
        Arc::new(Lines)
    };
    let registry = Arc::new(connected.registry);
    let work = index::create(registry, reference.manifest_reference(), reference.tag(), &options, observer);
    let result = match args.timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "cannot index {}: not done within --timeout {}s; nothing was tagged (zTOC blobs pushed so \
                 far are unreferenced)",
                args.reference,
                limit.as_secs_f64()
            ),
        },
        None => work.await,
    };
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            let hint = args::hint(&e).map(|hint| format!(" ({hint})")).unwrap_or_default();
            return Err(anyhow::Error::new(e).context(format!("cannot index {}{hint}", args.reference)));
        }
    };
    report.reference = reference.to_string();
    let throttled = client.throttled_requests();
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["throttled"] = throttled.into();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_summary(&report, reference, &options);
        if throttled > 0 {
            eprintln!("the registry throttled {throttled} request(s): each waited and went on");
        }
    }
    Ok(())
}

/// The human summary on stderr: what happened to the image and to every layer, then what to deploy.
fn print_summary(report: &CreateReport, reference: &registry::Reference, options: &CreateOptions) {
    let repo = format!("{}/{}", reference.registry(), reference.repository());
    match report.outcome {
        Outcome::Created => {
            eprintln!(
                "created a SOCI {} index for {reference}: {} layer(s) indexed, {} reused",
                report.index_version,
                report.layers_indexed(),
                report.layers_reused()
            );
            for platform in &report.platforms {
                if let Some(soci) = &platform.soci_index_digest {
                    eprintln!("  {}: SOCI index {soci}", platform.platform);
                }
            }
        }
        Outcome::AlreadyIndexed => eprintln!(
            "{reference} already has a SOCI {} index: nothing rebuilt (use --force to rebuild)",
            report.index_version
        ),
        Outcome::NothingToIndex => {
            eprintln!("nothing to index in {reference}: no layer got a zTOC; nothing pushed");
            for layer in &report.layers {
                eprintln!("  layer {} {}", observe::short(&layer.digest), observe::describe(layer));
            }
        }
        Outcome::Superseded => eprintln!(
            "superseded: the tag of {reference} moved to {} while {} was indexed; its SOCI tag was left to \
             that image (run create again to index what the tag holds now)",
            report.superseded_by.as_deref().unwrap_or("another image"),
            report.image_digest
        ),
    }
    for reason in &report.kept {
        eprintln!("kept: {reason}");
    }
    let published = matches!(report.outcome, Outcome::Created | Outcome::AlreadyIndexed);
    if published && options.index_version == IndexVersion::V2 {
        if let Some(tag) = &report.pushed_tag {
            let digest = report.image_index_digest.as_deref().unwrap_or("");
            eprintln!("deploy {repo}:{tag} ({digest}): run tasks from this tag");
        }
    }
}
