//! Reading one file out of a layer by random access, as a lazy-loading consumer does: fetch only the
//! compressed spans that hold the file, check each span's digest, resume inflation at the span's
//! checkpoint and copy out the file's bytes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeInclusive;

use crate::error::Error;
use crate::model::{EntryType, FileMetadata, Zinfo, Ztoc};
use crate::offset::{CompressedOffset, UncompressedOffset};
use crate::zinfo::{GzipZinfo, SpanError};
use crate::zlib::{Flush, Inflater, WINDOW_BITS_AUTO, WINDOW_BITS_RAW};

/// Random access to the bytes of a layer blob (a local file here; an HTTP range reader elsewhere).
pub trait RandomAccess {
    /// Total size of the blob.
    fn size(&mut self) -> std::io::Result<u64>;
    /// Fills `buf` with the bytes starting at `offset`.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl<T: Read + Seek> RandomAccess for T {
    fn size(&mut self) -> std::io::Result<u64> {
        self.seek(SeekFrom::End(0))
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(offset))?;
        self.read_exact(buf)
    }
}

/// What an extraction read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractStats {
    /// First span read.
    pub first_span: usize,
    /// Last span read (inclusive).
    pub last_span: usize,
    /// Compressed bytes fetched from the blob.
    pub compressed_bytes_read: u64,
    /// File bytes written.
    pub bytes_written: u64,
}

/// Finds the entry a user means by `path`: an exact name match, else the same path without a leading
/// `./` or `/` and trailing `/`. When a tar holds a name twice the last one wins, as on extraction.
pub fn find_entry<'a>(ztoc: &'a Ztoc, path: &str) -> Option<&'a FileMetadata> {
    let entries = &ztoc.toc.metadata;
    if let Some(entry) = entries.iter().rev().find(|e| e.name == path.as_bytes()) {
        return Some(entry);
    }
    let wanted = normalize(path.as_bytes());
    entries.iter().rev().find(|e| normalize(&e.name) == wanted)
}

fn normalize(mut name: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = name.strip_prefix(b"./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix(b"/") {
            name = rest;
        } else {
            break;
        }
    }
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    name
}

/// The regular file whose data `entry` stands for: itself, or the target of a hard link.
pub fn resolve_regular<'a>(ztoc: &'a Ztoc, entry: &'a FileMetadata) -> Result<&'a FileMetadata, Error> {
    let mut current = entry;
    // A hard link names an earlier entry; follow a bounded chain of them.
    for _ in 0..64 {
        match current.entry_type {
            EntryType::Reg => return Ok(current),
            EntryType::Hardlink => {
                let target = current.linkname.clone();
                current = ztoc
                    .toc
                    .metadata
                    .iter()
                    .take_while(|e| !std::ptr::eq(*e, current))
                    .filter(|e| normalize(&e.name) == normalize(&target))
                    .last()
                    .ok_or_else(|| Error::NotFound(String::from_utf8_lossy(&target).into_owned()))?;
            }
            other => {
                return Err(Error::NotRegular {
                    name: String::from_utf8_lossy(&entry.name).into_owned(),
                    kind: other.as_str(),
                })
            }
        }
    }
    Err(Error::NotFound(String::from_utf8_lossy(&entry.name).into_owned()))
}

/// Writes the data of regular-file `entry` to `out`, reading only the spans that hold it.
pub fn extract_entry(
    blob: &mut impl RandomAccess,
    ztoc: &Ztoc,
    entry: &FileMetadata,
    out: &mut (impl Write + ?Sized),
) -> Result<ExtractStats, Error> {
    let blob_size = blob.size()?;
    if blob_size != ztoc.compressed_archive_size.get() {
        return Err(Error::LayerMismatch(format!(
            "the layer is {blob_size} bytes but the zTOC was built for a layer of {} bytes",
            ztoc.compressed_archive_size
        )));
    }
    // Everything the zTOC says about spans is checked before anything is fetched or allocated.
    ztoc.compression_info.zinfo.check_fits(CompressedOffset(blob_size))?;
    let digests = &ztoc.compression_info.span_digests;
    if digests.len() != ztoc.compression_info.zinfo.span_count() {
        return Err(Error::LayerMismatch(format!(
            "the zTOC has {} span digests for {} spans",
            digests.len(),
            ztoc.compression_info.zinfo.span_count()
        )));
    }
    let start = entry.uncompressed_offset;
    let size = entry.uncompressed_size;
    if size == 0 {
        return Ok(ExtractStats::default());
    }
    let end =
        start.get().checked_add(size).filter(|&end| end <= ztoc.uncompressed_archive_size.get()).ok_or_else(
            || {
                Error::LayerMismatch(format!(
                    "entry data [{start}, +{size}) lies outside the archive ({} bytes)",
                    ztoc.uncompressed_archive_size
                ))
            },
        )?;
    let zinfo = &ztoc.compression_info.zinfo;
    let (first, last) = zinfo.spans_holding(start, size)?;
    let mut reader =
        SpanReader { blob, zinfo, layer_size: ztoc.compressed_archive_size, digests, bytes_read: 0 };
    match zinfo {
        Zinfo::Gzip(gzip) => extract_gzip(&mut reader, gzip, first..=last, start, size, out)?,
        Zinfo::Tar(_) => extract_tar(&mut reader, first..=last, start.get(), end, out)?,
    }
    Ok(ExtractStats {
        first_span: first,
        last_span: last,
        compressed_bytes_read: reader.bytes_read,
        bytes_written: size,
    })
}

/// Fetches spans and checks their digests before anything uses them.
struct SpanReader<'a, B> {
    blob: &'a mut B,
    zinfo: &'a Zinfo,
    layer_size: CompressedOffset,
    digests: &'a [String],
    bytes_read: u64,
}

impl<B: RandomAccess> SpanReader<'_, B> {
    /// Reads span `span` into `buf` and checks its digest; returns where its bytes start.
    fn read_span(&mut self, span: usize, buf: &mut Vec<u8>) -> Result<u64, Error> {
        let (start, end) = self.zinfo.compressed_range(span, self.layer_size)?;
        let len = end - start;
        buf.clear();
        buf.resize(len as usize, 0);
        self.blob.read_exact_at(start.get(), buf)?;
        self.bytes_read += len;
        let actual = crate::sha256_digest(buf);
        if actual != self.digests[span] {
            return Err(Error::SpanDigestMismatch { span, expected: self.digests[span].clone(), actual });
        }
        Ok(start.get())
    }
}

fn extract_gzip(
    reader: &mut SpanReader<'_, impl RandomAccess>,
    zinfo: &GzipZinfo,
    spans: RangeInclusive<usize>,
    start: UncompressedOffset,
    size: u64,
    out: &mut (impl Write + ?Sized),
) -> Result<(), Error> {
    let first = *spans.start();
    let checkpoint = zinfo.checkpoint(first)?;
    let corrupt = |reason: String| Error::CorruptGzip { offset: checkpoint.input, reason };

    let mut inflater = Inflater::new(WINDOW_BITS_RAW).map_err(|e| corrupt(e.message))?;
    let mut stream = ResumedStream {
        inflater: &mut inflater,
        raw: true,
        trailer_to_skip: 0,
        to_skip: start - checkpoint.output,
        to_write: size,
        scratch: vec![0u8; 64 * 1024],
    };
    let mut buf = Vec::new();
    for span in spans {
        reader.read_span(span, &mut buf)?;
        let mut data = &buf[..];
        let bits = zinfo.checkpoint(span)?.bits;
        if span == first {
            if bits != 0 {
                // The span starts with the last byte of the previous block; its top `bits` bits are ours.
                let (&shared, rest) = data.split_first().ok_or(SpanError::OutsideLayer {
                    index: span,
                    start: checkpoint.input.get(),
                    end: checkpoint.input.get(),
                    layer_size: reader.layer_size.get(),
                })?;
                stream.inflater.prime(bits, shared >> (8 - bits)).map_err(|e| corrupt(e.message))?;
                data = rest;
            }
            stream.inflater.set_dictionary(checkpoint.window).map_err(|e| corrupt(e.message))?;
        } else if bits != 0 {
            // That shared byte was already fed as the last byte of the previous span.
            data = data.get(1..).unwrap_or_default();
        }
        stream.feed(data, out).map_err(|e| match e {
            FeedError::Zlib(message) => corrupt(message),
            FeedError::Io(e) => Error::Io(e),
        })?;
        if stream.to_write == 0 {
            break;
        }
    }
    if stream.to_write != 0 {
        return Err(Error::LayerMismatch(format!(
            "the spans ended {} bytes before the end of the entry",
            stream.to_write
        )));
    }
    Ok(())
}

enum FeedError {
    Zlib(String),
    Io(std::io::Error),
}

/// Inflation resumed at a checkpoint: skips to the entry, writes it, crosses gzip member boundaries.
struct ResumedStream<'a> {
    inflater: &'a mut Inflater,
    /// Still in the raw deflate data the checkpoint started in (no gzip framing known to zlib).
    raw: bool,
    /// Trailer bytes of a member ended in raw mode, to skip by hand.
    trailer_to_skip: usize,
    to_skip: u64,
    to_write: u64,
    scratch: Vec<u8>,
}

impl ResumedStream<'_> {
    fn feed(&mut self, mut data: &[u8], out: &mut (impl Write + ?Sized)) -> Result<(), FeedError> {
        while !data.is_empty() && self.to_write > 0 {
            if self.trailer_to_skip > 0 {
                let n = self.trailer_to_skip.min(data.len());
                self.trailer_to_skip -= n;
                data = &data[n..];
                if self.trailer_to_skip == 0 {
                    self.inflater.reset(WINDOW_BITS_AUTO).map_err(|e| FeedError::Zlib(e.message))?;
                }
                continue;
            }
            let want = if self.to_skip > 0 { self.to_skip } else { self.to_write };
            let room = want.min(self.scratch.len() as u64) as usize;
            let progress = self
                .inflater
                .inflate(data, &mut self.scratch[..room], Flush::None)
                .map_err(|e| FeedError::Zlib(e.message))?;
            data = &data[progress.consumed..];
            let produced = progress.produced as u64;
            if self.to_skip > 0 {
                self.to_skip -= produced;
            } else {
                out.write_all(&self.scratch[..progress.produced]).map_err(FeedError::Io)?;
                self.to_write -= produced;
            }
            if progress.stream_end {
                if self.raw {
                    // A raw stream stops before the member's CRC and size; skip them, then expect a
                    // gzip header, as soci's reader does.
                    self.raw = false;
                    self.trailer_to_skip = 8;
                } else {
                    self.inflater.reset(WINDOW_BITS_AUTO).map_err(|e| FeedError::Zlib(e.message))?;
                }
            } else if progress.consumed == 0 && progress.produced == 0 {
                break;
            }
        }
        Ok(())
    }
}

fn extract_tar(
    reader: &mut SpanReader<'_, impl RandomAccess>,
    spans: RangeInclusive<usize>,
    start: u64,
    end: u64,
    out: &mut (impl Write + ?Sized),
) -> Result<(), Error> {
    let mut buf = Vec::new();
    for span in spans {
        let span_start = reader.read_span(span, &mut buf)?;
        let span_end = span_start + buf.len() as u64;
        let from = start.max(span_start) - span_start;
        let to = end.min(span_end) - span_start;
        out.write_all(&buf[from as usize..to as usize])?;
    }
    Ok(())
}
