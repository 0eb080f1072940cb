//! `soci-indexer ztoc-info`: show what a zTOC holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use ztoc::{EntryType, FileMetadata, Zinfo, Ztoc};

/// Arguments of `ztoc-info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The zTOC file (`-` for stdin).
    #[arg(value_name = "ZTOC")]
    ztoc: PathBuf,
    /// Print one JSON object instead of a text report.
    #[arg(long)]
    json: bool,
}

/// The report, also the `--json` schema.
#[derive(Serialize)]
struct Report<'a> {
    digest: String,
    size: usize,
    version: &'a str,
    build_tool: &'a str,
    compression: &'static str,
    compressed_archive_size: u64,
    uncompressed_archive_size: u64,
    span_size: u64,
    num_spans: usize,
    num_files: usize,
    num_multi_span_files: usize,
    spans: Vec<SpanReport<'a>>,
    files: Vec<FileReport>,
}

#[derive(Serialize)]
struct SpanReport<'a> {
    id: usize,
    digest: &'a str,
    compressed_offset: u64,
    uncompressed_offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bits: Option<u8>,
}

#[derive(Serialize)]
struct FileReport {
    filename: String,
    #[serde(rename = "type")]
    kind: &'static str,
    offset: u64,
    /// The size field as stored (negative for some header-only entries, as soci stores them).
    size: i64,
    /// `null` when the zTOC's spans cannot hold the entry's data.
    start_span: Option<usize>,
    end_span: Option<usize>,
    mode: String,
    uid: u32,
    gid: u32,
    uname: String,
    gname: String,
    mod_time: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    linkname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<(i64, i64)>,
    pax_records: std::collections::BTreeMap<String, String>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first and last spans holding the entry's data (`None` when the zTOC's spans cannot hold it).
/// Only regular files have data: Go's tar reader skips none for the other types, whatever their size
/// field says (it may even be negative).
fn entry_spans(ztoc: &Ztoc, entry: &FileMetadata) -> Option<(usize, usize)> {
    let data = if entry.entry_type == EntryType::Reg { entry.uncompressed_size } else { 0 };
    ztoc.compression_info.zinfo.spans_holding(entry.uncompressed_offset, data).ok()
}

fn report<'a>(ztoc: &'a Ztoc, bytes: &[u8]) -> Report<'a> {
    let info = &ztoc.compression_info;
    let spans = (0..info.zinfo.span_count())
        .filter_map(|id| {
            let start = info.zinfo.span_start(id).ok()?;
            Some(SpanReport {
                id,
                digest: info.span_digests.get(id).map(String::as_str).unwrap_or(""),
                compressed_offset: start.compressed.get(),
                uncompressed_offset: start.uncompressed.get(),
                bits: start.bits,
            })
        })
        .collect();
    let files: Vec<FileReport> = ztoc
        .toc
        .metadata
        .iter()
        .map(|e| {
            let spans = entry_spans(ztoc, e);
            FileReport {
                filename: lossy(&e.name),
                kind: e.entry_type.as_str(),
                offset: e.uncompressed_offset.get(),
                size: e.size_field(),
                start_span: spans.map(|(first, _)| first),
                end_span: spans.map(|(_, last)| last),
                mode: format!("{:o}", e.mode),
                uid: e.uid,
                gid: e.gid,
                uname: lossy(&e.uname),
                gname: lossy(&e.gname),
                mod_time: e.mod_time.clone(),
                linkname: lossy(&e.linkname),
                device: matches!(e.entry_type, EntryType::Char | EntryType::Block)
                    .then_some((e.devmajor, e.devminor)),
                pax_records: e.pax_records.iter().map(|r| (lossy(&r.key), lossy(&r.value))).collect(),
            }
        })
        .collect();
    Report {
        digest: ztoc::sha256_digest(bytes),
        size: bytes.len(),
        version: &ztoc.version,
        build_tool: &ztoc.build_tool_identifier,
        compression: match info.zinfo {
            Zinfo::Gzip(_) => "gzip",
            Zinfo::Tar(_) => "uncompressed",
        },
        compressed_archive_size: ztoc.compressed_archive_size.get(),
        uncompressed_archive_size: ztoc.uncompressed_archive_size.get(),
        span_size: info.zinfo.span_size(),
        num_spans: info.zinfo.span_count(),
        num_files: files.len(),
        num_multi_span_files: files.iter().filter(|f| f.end_span > f.start_span).count(),
        spans,
        files,
    }
}

/// Runs `ztoc-info`.
pub fn run(args: Args) -> Result<()> {
    let bytes = if crate::is_std_stream(&args.ztoc) {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        buf
    } else {
        std::fs::read(&args.ztoc).with_context(|| format!("cannot read {}", args.ztoc.display()))?
    };
    let ztoc = ztoc::codec::decode(&bytes)
        .with_context(|| format!("{} is not a valid zTOC", args.ztoc.display()))?;
    let report = report(&ztoc, &bytes);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report)?;
    }
    out.flush()?;
    Ok(())
}

use std::io::Write;

fn print_text(out: &mut impl Write, r: &Report<'_>) -> std::io::Result<()> {
    writeln!(out, "digest:                    {}", r.digest)?;
    writeln!(out, "size:                      {} bytes", r.size)?;
    writeln!(out, "version:                   {}", r.version)?;
    writeln!(out, "build tool:                {}", r.build_tool)?;
    writeln!(out, "compression:               {}", r.compression)?;
    writeln!(out, "compressed archive size:   {}", r.compressed_archive_size)?;
    writeln!(out, "uncompressed archive size: {}", r.uncompressed_archive_size)?;
    writeln!(out, "span size:                 {}", r.span_size)?;
    writeln!(out, "spans:                     {}", r.num_spans)?;
    writeln!(
        out,
        "files:                     {} ({} across more than one span)",
        r.num_files, r.num_multi_span_files
    )?;
    writeln!(out, "\nSPAN  COMPRESSED    UNCOMPRESSED  BITS  DIGEST")?;
    for s in &r.spans {
        let bits = s.bits.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<5} {:<13} {:<13} {:<5} {}",
            s.id, s.compressed_offset, s.uncompressed_offset, bits, s.digest
        )?;
    }
    writeln!(out, "\nTYPE      MODE     UID/GID      SIZE         OFFSET       SPANS    MTIME                          NAME")?;
    for f in &r.files {
        let mut line = format!(
            "{:<9} {:<8} {:<12} {:<12} {:<12} {:<8} {:<30} {}",
            f.kind,
            f.mode,
            format!("{}/{}", f.uid, f.gid),
            f.size,
            f.offset,
            match (f.start_span, f.end_span) {
                (Some(first), Some(last)) => format!("{first}-{last}"),
                _ => "-".to_owned(),
            },
            f.mod_time,
            f.filename
        );
        if !f.linkname.is_empty() {
            line.push_str(&format!(" -> {}", f.linkname));
        }
        if let Some((major, minor)) = f.device {
            line.push_str(&format!(" [{major},{minor}]"));
        }
        writeln!(out, "{line}")?;
        for (key, value) in &f.pax_records {
            writeln!(out, "{:>10} {key}={value:?}", "")?;
        }
    }
    Ok(())
}
