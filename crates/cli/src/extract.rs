//! `soci-indexer extract`: read one file out of a layer by random access.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ztoc::extract::{extract_entry, find_entry, resolve_regular};

use crate::output::write_atomically;

/// Arguments of `extract`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The layer blob the zTOC was built for.
    #[arg(value_name = "LAYER")]
    layer: PathBuf,
    /// The layer's zTOC.
    #[arg(value_name = "ZTOC")]
    ztoc: PathBuf,
    /// The file to read, as named in the tar (a leading `./` or `/` may be left out).
    #[arg(value_name = "PATH")]
    path: String,
    /// Where to write the file's content (default: stdout).
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,
}

/// Runs `extract`.
pub fn run(args: Args) -> Result<()> {
    let bytes = std::fs::read(&args.ztoc).with_context(|| format!("cannot read {}", args.ztoc.display()))?;
    let ztoc = ztoc::codec::decode(&bytes)
        .with_context(|| format!("{} is not a valid zTOC", args.ztoc.display()))?;
    let entry = find_entry(&ztoc, &args.path)
        .ok_or_else(|| anyhow::anyhow!("no entry named {:?} in {}", args.path, args.ztoc.display()))?;
    let entry = resolve_regular(&ztoc, entry)?;
    let mut layer =
        File::open(&args.layer).with_context(|| format!("cannot open layer {}", args.layer.display()))?;
    let mut stats = None;
    write_atomically(&args.output, |w| {
        stats = Some(
            extract_entry(&mut layer, &ztoc, entry, w)
                .with_context(|| format!("cannot extract {:?} from {}", args.path, args.layer.display()))?,
        );
        Ok(())
    })?;
    let stats = stats.expect("set on success");
    eprintln!(
        "extracted {} bytes of {}: spans {}..={}, read {} of {} compressed bytes",
        stats.bytes_written,
        String::from_utf8_lossy(&entry.name),
        stats.first_span,
        stats.last_span,
        stats.compressed_bytes_read,
        ztoc.compressed_archive_size,
    );
    Ok(())
}
