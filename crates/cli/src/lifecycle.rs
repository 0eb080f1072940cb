//! `soci-indexer sync` and `prune`: keep a whole repository lazy-loadable, and leave no SOCI artifact
//! behind its image.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use index::prune::PruneReport;
use index::sync::{SyncAction, SyncEntry, SyncOptions, SyncReport};

use crate::args::{CacheArgs, IndexArgs, RegistryArgs};
use crate::observe::Lines;

/// Arguments of `sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The repository, e.g. `registry.example.com/team/app` (no tag).
    #[arg(value_name = "REGISTRY/REPO")]
    repository: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    index: IndexArgs,
    /// Only tags matching this glob (`*`, `?`, `[a-z]`); repeat for several. Default: every tag.
    #[arg(long = "filter", value_name = "TAGGLOB")]
    filters: Vec<String>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Images indexed at once, 1 to 256. Their layers share one build budget (one layer per core), so
    /// more images at once overlap registry round trips, not CPU work.
    #[arg(long, value_name = "N", default_value = "2", value_parser = app::settings::parse_concurrency)]
    images: usize,
    /// Manifest writes a second at most (ECR's PutImage quota is 10 a second for the whole account and
    /// region, CI pushes included): a backfill leaves the rest to others. Throttling slows it further.
    #[arg(long, value_name = "PER_SECOND", default_value_t = app::settings::DEFAULT_MAX_WRITE_RATE, value_parser = app::settings::parse_write_rate)]
    max_write_rate: f64,
    /// Say what would be indexed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The repository, e.g. `registry.example.com/team/app` (no tag).
    #[arg(value_name = "REGISTRY/REPO")]
    repository: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The v2 tag suffix whose tags are SOCI output.
    #[arg(long, value_name = "S", default_value = index::DEFAULT_TAG_SUFFIX, value_parser = app::settings::parse_tag_suffix)]
    tag_suffix: String,
    /// List what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")
}

/// Runs `sync`: exit 1 if any tag failed.
pub fn sync(args: SyncArgs) -> Result<ExitCode> {
    let registry = args.registry.connect_repository_writing(&args.repository, Some(args.max_write_rate))?;
    let client = registry.client().clone();
    let globs: Vec<app::glob::Glob> = args.filters.iter().map(|f| app::glob::Glob::new(f)).collect();
    let options = SyncOptions {
        select: Box::new(move |tag| globs.is_empty() || globs.iter().any(|g| g.matches(tag))),
        concurrency: args.images,
        dry_run: args.dry_run,
    };
    let create = index::CreateOptions { ztoc_cache: args.cache.ztoc_cache(), ..args.index.options() };
    // Human output says each tag as it is done (a big repository takes a while); JSON comes at the end.
    let observer: Arc<dyn index::Observer> =
        if args.json { Arc::new(Lines) } else { Arc::new(TagLines(args.repository.clone())) };
    let report = runtime()?
        .block_on(index::sync::sync(Arc::new(registry), &create, &options, observer))
        .with_context(|| format!("cannot sync {}", args.repository))?;
    let throttled = client.throttled_requests();
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["throttled"] = throttled.into();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_sync_summary(&report, throttled);
    }
    Ok(if report.any_failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One line on stdout per tag of `sync` as it finishes (`REPOSITORY:TAG  what happened`); layers as
/// [`Lines`] says them.
struct TagLines(String);

impl index::Observer for TagLines {
    fn layer_finished(&self, report: &index::LayerReport) {
        Lines.layer_finished(report);
    }

    fn tag_finished(&self, entry: &SyncEntry) {
        let line = match &entry.action {
            SyncAction::Indexed { was, layers_indexed, layers_reused } => {
                format!("indexed (was {was}): {layers_indexed} layer(s) built, {layers_reused} reused")
            }
            SyncAction::WouldIndex { state } => format!("would index ({state})"),
            SyncAction::AlreadyIndexed => "already indexed".into(),
            SyncAction::Skipped { reason } => format!("skipped: {reason}"),
            SyncAction::Failed { error } => format!("FAILED: {error}"),
        };
        println!("{}:{}  {line}", self.0, entry.tag);
    }
}

fn print_sync_summary(report: &SyncReport, throttled: u64) {
    let count = |f: fn(&SyncAction) -> bool| report.count(f);
    if throttled > 0 {
        println!("the registry throttled {throttled} request(s): each waited and went on");
    }
    println!(
        "{}{} indexed, {} already indexed, {} skipped, {} failed",
        if report.dry_run { "dry run: " } else { "" },
        count(|a| matches!(a, SyncAction::Indexed { .. } | SyncAction::WouldIndex { .. })),
        count(|a| matches!(a, SyncAction::AlreadyIndexed)),
        count(|a| matches!(a, SyncAction::Skipped { .. })),
        count(|a| matches!(a, SyncAction::Failed { .. })),
    );
}

/// Runs `prune`.
pub fn prune(args: PruneArgs) -> Result<ExitCode> {
    let registry = args.registry.connect_repository(&args.repository)?;
    let report = runtime()?
        .block_on(index::prune::prune(&registry, &args.tag_suffix, args.dry_run))
        .with_context(|| format!("cannot prune {}", args.repository))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_prune(&report, &args.repository);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_prune(report: &PruneReport, repository: &str) {
    let verb = if report.dry_run { "would remove" } else { "removed" };
    for orphan in &report.orphans {
        println!(
            "{repository}:{}  {verb}: {} manifest(s) (its image {} is gone)",
            orphan.tag,
            orphan.remove.len(),
            orphan.image
        );
    }
    for kept in &report.kept {
        println!("{repository}:{}  kept: {}", kept.tag, kept.reason);
    }
    println!(
        "{}{} orphan(s) {verb}, {} kept",
        if report.dry_run { "dry run: " } else { "" },
        report.orphans.len(),
        report.kept.len()
    );
}
