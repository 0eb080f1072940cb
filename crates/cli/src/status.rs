//! `soci-indexer status` and `wait`: is the image a reference points to now lazy-loadable, and what to
//! deploy. Exit status: 0 indexed, 3 not (yet), 1 error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use index::{State, StatusReport};

use crate::args::{self, Connected, IndexArgs, RegistryArgs};

/// The exit status of an image that is not lazy-loadable (not indexed, stale, partial, broken, or timed
/// out).
pub const NOT_INDEXED: u8 = 3;
/// `wait` polls no less often than this, however long it has waited.
const MAX_INTERVAL: Duration = Duration::from_secs(15);

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image, e.g. `registry.example.com/team/app:1.2` (v2 needs the tag).
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    index: IndexArgs,
    /// Print one JSON object on stdout: the status, or `{"error": ...}` on failure.
    #[arg(long)]
    json: bool,
}

/// Arguments of `wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    status: Args,
    /// Give up after this long (`90s`, `10m`, plain seconds) with exit status 3.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = app::settings::parse_duration)]
    timeout: Duration,
    /// First pause between checks; it grows by half each time, up to 15 s.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = app::settings::parse_duration)]
    interval: Duration,
}

/// Runs `status`.
pub fn run(args: Args) -> Result<ExitCode> {
    let runtime = runtime()?;
    let connected = args.registry.connect(&args.reference)?;
    match runtime.block_on(check(&connected, &args)) {
        Ok(report) => {
            print_status(&report, &connected, &args)?;
            Ok(exit_code(&report))
        }
        Err(e) => fail(e, &args),
    }
}

/// Runs `wait`: `status` until indexed, an error retrying cannot fix, or the timeout.
pub fn wait(args: WaitArgs) -> Result<ExitCode> {
    let runtime = runtime()?;
    let connected = args.status.registry.connect(&args.status.reference)?;
    let started = Instant::now();
    let mut interval = args.interval.max(Duration::from_millis(100));
    let mut last: Option<StatusReport> = None;
    loop {
        // A registry that accepts connections and never answers must not hold `wait` past --timeout:
        // each check gets only the time left.
        let left = args.timeout.saturating_sub(started.elapsed());
        let checked =
            runtime.block_on(async { tokio::time::timeout(left, check(&connected, &args.status)).await });
        let Ok(checked) = checked else {
            eprintln!("warning: the registry did not answer within the {:.1} s left", left.as_secs_f64());
            return give_up(last.as_ref(), &connected, &args, started);
        };
        match checked {
            Ok(report) if report.indexed => {
                eprintln!(
                    "{} is indexed after {:.1} s",
                    args.status.reference,
                    started.elapsed().as_secs_f64()
                );
                print_status(&report, &connected, &args.status)?;
                return Ok(ExitCode::SUCCESS);
            }
            Ok(report) => last = Some(report),
            Err(e) if is_permanent(&e) => return fail(e, &args.status),
            Err(e) => eprintln!("warning: {:#} (will retry)", anyhow::Error::new(e)),
        }
        let left = args.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return give_up(last.as_ref(), &connected, &args, started);
        }
        std::thread::sleep(interval.min(left));
        interval = (interval * 3 / 2).min(MAX_INTERVAL);
    }
}

/// `wait`'s timeout: the last state seen, exit status 3.
fn give_up(
    last: Option<&StatusReport>,
    connected: &Connected,
    args: &WaitArgs,
    started: Instant,
) -> Result<ExitCode> {
    let state = last.map_or("unknown (no check finished)".to_owned(), |r| r.state.to_string());
    eprintln!(
        "{} is still not lazy-loadable after {:.1} s: {state}",
        args.status.reference,
        started.elapsed().as_secs_f64()
    );
    if let Some(report) = last {
        print_status(report, connected, &args.status)?;
    }
    Ok(ExitCode::from(NOT_INDEXED))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

async fn check(connected: &Connected, args: &Args) -> Result<StatusReport, index::Error> {
    let reference = &connected.reference;
    let mut report = index::status(
        &connected.registry,
        reference.manifest_reference(),
        reference.tag(),
        &args.index.options(),
    )
    .await?;
    report.reference = reference.to_string();
    Ok(report)
}

/// Errors that another check cannot fix: bad input, a missing image or repository, credentials.
fn is_permanent(error: &index::Error) -> bool {
    !error.is_retryable()
}

fn exit_code(report: &StatusReport) -> ExitCode {
    if report.indexed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_INDEXED)
    }
}

fn fail(error: index::Error, args: &Args) -> Result<ExitCode> {
    let hint = args::hint(&error).map(|hint| format!(" ({hint})")).unwrap_or_default();
    let error =
        anyhow::Error::new(error).context(format!("cannot tell whether {} is indexed{hint}", args.reference));
    if args.json {
        let object = serde_json::json!({ "reference": args.reference, "error": format!("{error:#}") });
        println!("{}", serde_json::to_string_pretty(&object)?);
    }
    Err(error)
}

/// One line per platform, then what to deploy (stdout: the answer to the question asked).
fn print_status(report: &StatusReport, connected: &Connected, args: &Args) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "{} ({}): {} (SOCI {})",
        report.reference, report.image_digest, report.state, report.index_version
    );
    for platform in &report.platforms {
        let index = platform.soci_index_digest.as_deref().unwrap_or("no SOCI index");
        println!(
            "  {:<16} {index}  {} zTOC(s)  {}/{} eligible layer(s) indexed",
            if platform.platform.is_empty() { "(no platform)" } else { &platform.platform },
            platform.ztocs,
            platform.layers_indexed,
            platform.layers_eligible
        );
    }
    let repository = format!("{}/{}", connected.reference.registry(), connected.reference.repository());
    match (report.state, &report.soci_tag, &report.image_index_digest) {
        (State::Indexed, Some(tag), Some(digest)) => println!("deploy {repository}:{tag} ({digest})"),
        (State::Indexed, None, _) => {
            println!("deploy {} (the runtime finds the SOCI index through referrers)", report.reference)
        }
        (State::Stale, Some(tag), _) => {
            println!(
                "{tag} binds another image (the tag was re-pointed): run `soci-indexer create` to re-index"
            )
        }
        (State::Partial, ..) => {
            println!("some platforms have no SOCI index: run `soci-indexer create` to complete it")
        }
        (State::Broken, ..) => {
            for platform in &report.platforms {
                if let Some(why) = &platform.broken {
                    println!("  {}: {why}", platform.platform);
                }
            }
            println!("the SOCI index cannot work as it is: run `soci-indexer create` to rebuild it")
        }
        _ if report.platforms.iter().all(|p| p.layers_eligible == 0) => {
            println!("no layer is eligible for a zTOC (see --min-layer-size): nothing to lazy-load")
        }
        _ => println!("not indexed: run `soci-indexer create {}`", report.reference),
    }
    Ok(())
}
