//! `soci-indexer ztoc`: build the zTOC of a layer.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ztoc::{BuildOptions, ZtocBuilder, DEFAULT_SPAN_SIZE, MAX_SPAN_SIZE};

use crate::output::write_atomically;
use crate::progress::Progress;

/// Arguments of `ztoc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The layer blob: a gzip-compressed or plain tar file, or `-` for stdin.
    #[arg(value_name = "LAYER")]
    layer: PathBuf,
    /// Where to write the zTOC (`-` for stdout).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Uncompressed bytes between checkpoints: smaller spans mean finer-grained fetches and a bigger zTOC.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_SPAN_SIZE,
        value_parser = clap::value_parser!(u64).range(1..=MAX_SPAN_SIZE)
    )]
    span_size: u64,
    /// Identifier written into the zTOC (soci's CLI writes `AWS SOCI CLI v0.2`).
    #[arg(long, value_name = "STRING", default_value = crate::DEFAULT_BUILD_TOOL)]
    build_tool_identifier: String,
}

/// Runs `ztoc`.
pub fn run(args: Args) -> Result<()> {
    let (mut input, total): (Box<dyn Read>, Option<u64>) = if crate::is_std_stream(&args.layer) {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file =
            File::open(&args.layer).with_context(|| format!("cannot open layer {}", args.layer.display()))?;
        let len = file.metadata().map(|m| m.len()).ok();
        (Box::new(file), len)
    };
    let options = BuildOptions {
        span_size: args.span_size,
        build_tool_identifier: args.build_tool_identifier,
        format: None,
    };
    let mut builder = ZtocBuilder::new(options)?;
    let mut progress = Progress::new("building zTOC", total);
    let mut buf = vec![0u8; 256 * 1024];
    let layer_name = args.layer.display().to_string();
    let result = (|| -> Result<ztoc::Ztoc> {
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {layer_name}")),
            };
            builder.feed(&buf[..n])?;
            progress.update(builder.bytes_fed());
        }
        Ok(builder.finish()?)
    })();
    progress.finish();
    let ztoc = result.with_context(|| format!("cannot index layer {layer_name}"))?;
    let summary = format!(
        "{} entries, {} spans of {} bytes ({} layer, {} bytes)",
        ztoc.toc.metadata.len(),
        ztoc.compression_info.zinfo.span_count(),
        ztoc.compression_info.zinfo.span_size(),
        match ztoc.compression_info.zinfo {
            ztoc::Zinfo::Gzip(_) => "gzip",
            ztoc::Zinfo::Tar(_) => "tar",
        },
        ztoc.compressed_archive_size,
    );
    // The model is given up to the encoder, which frees its checkpoints as it copies them.
    let bytes = ztoc::codec::encode_owned(ztoc);
    write_atomically(&args.output, |w| Ok(w.write_all(&bytes)?))?;
    eprintln!(
        "zTOC {} {} bytes: {summary} -> {}",
        ztoc::sha256_digest(&bytes),
        bytes.len(),
        args.output.display(),
    );
    Ok(())
}
