//! Reading one file out of a layer by random access, as a lazy-loading consumer does: fetch only the
//! compressed spans that hold the file, check each span's digest, resume inflation at the span's
//! checkpoint and copy out the file's bytes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeInclusive;

use crate::error::Error;
use crate::model::{EntryType, FileMetadata, Zinfo, Ztoc};
use crate::offset::{CompressedOffset, UncompressedOffset};
use crate::spans::{SpanFetcher, KEEP_LIMIT};
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
    /// Compressed bytes read from the blob: each span once, or twice (to check, then to write) when the
    /// file's spans are too big to keep in memory in between.
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

/// Writes the data of regular-file `entry` to `out`, reading only the spans that hold it. Every span is
/// checked against its digest before the first byte is written; see [`ExtractStats`] for what is read.
pub fn extract_entry(
    blob: &mut impl RandomAccess,
    ztoc: &Ztoc,
    entry: &FileMetadata,
    out: &mut (impl Write + ?Sized),
) -> Result<ExtractStats, Error> {
    extract_keeping(blob, ztoc, entry, out, KEEP_LIMIT)
}

/// [`extract_entry`], keeping at most `keep_limit` bytes of checked spans in memory for the writing pass.
fn extract_keeping(
    blob: &mut impl RandomAccess,
    ztoc: &Ztoc,
    entry: &FileMetadata,
    out: &mut (impl Write + ?Sized),
    keep_limit: u64,
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
    let mut fetcher = SpanFetcher::new(blob, zinfo, ztoc.compressed_archive_size, digests);
    // Every span is checked before the first byte is written.
    fetcher.verify(first..=last, keep_limit)?;
    match zinfo {
        Zinfo::Gzip(gzip) => extract_gzip(&mut fetcher, gzip, first..=last, start, size, out)?,
        Zinfo::Tar(_) => extract_tar(&mut fetcher, first..=last, start.get(), end, out)?,
    }
    Ok(ExtractStats {
        first_span: first,
        last_span: last,
        compressed_bytes_read: fetcher.bytes_read,
        bytes_written: size,
    })
}

fn extract_gzip(
    fetcher: &mut SpanFetcher<'_, impl RandomAccess>,
    zinfo: &GzipZinfo,
    spans: RangeInclusive<usize>,
    start: UncompressedOffset,
    size: u64,
    out: &mut (impl Write + ?Sized),
) -> Result<(), Error> {
    let first = *spans.start();
    let checkpoint = zinfo.checkpoint(first)?;
    let corrupt = |reason: String| Error::CorruptGzip { offset: checkpoint.input, reason };
    let layer_size = fetcher.layer_size();

    let mut inflater = Inflater::new(WINDOW_BITS_RAW).map_err(|e| corrupt(e.message))?;
    let mut stream = ResumedStream {
        inflater: &mut inflater,
        raw: true,
        trailer_to_skip: 0,
        to_skip: start - checkpoint.output,
        to_write: size,
        scratch: vec![0u8; 64 * 1024],
    };
    for span in spans {
        let bits = zinfo.checkpoint(span)?.bits;
        let mut at_span_start = true;
        let more = fetcher.for_each_piece(span, |_, mut piece| {
            if std::mem::take(&mut at_span_start) {
                if bits != 0 {
                    // The span starts with the last byte of the previous block: its top `bits` bits
                    // start the first span's data; later spans had it as the previous span's last byte.
                    let (&shared, rest) = piece.split_first().ok_or(SpanError::OutsideLayer {
                        index: span,
                        start: checkpoint.input.get(),
                        end: checkpoint.input.get(),
                        layer_size: layer_size.get(),
                    })?;
                    if span == first {
                        stream.inflater.prime(bits, shared >> (8 - bits)).map_err(|e| corrupt(e.message))?;
                    }
                    piece = rest;
                }
                if span == first {
                    stream.inflater.set_dictionary(checkpoint.window).map_err(|e| corrupt(e.message))?;
                }
            }
            stream.feed(piece, out).map_err(|e| match e {
                FeedError::Zlib(message) => corrupt(message),
                FeedError::Io(e) => Error::Io(e),
            })?;
            Ok(stream.to_write > 0)
        })?;
        if !more || stream.to_write == 0 {
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
    fetcher: &mut SpanFetcher<'_, impl RandomAccess>,
    spans: RangeInclusive<usize>,
    start: u64,
    end: u64,
    out: &mut (impl Write + ?Sized),
) -> Result<(), Error> {
    for span in spans {
        fetcher.for_each_piece(span, |at, piece| {
            // Offsets in a plain tar layer are the same compressed and uncompressed.
            let piece_end = at + piece.len() as u64;
            let (from, to) = (start.max(at).min(piece_end), end.min(piece_end).max(at));
            out.write_all(&piece[(from - at) as usize..(to - at) as usize])?;
            Ok(piece_end < end)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build_ztoc, BuildOptions, LayerFormat};
    use std::io::Cursor;

    /// With no room to keep spans, each is read twice: checked, then read and checked again to write.
    #[test]
    fn spans_too_big_to_keep_are_read_twice_and_still_checked_first() {
        let layer = testkit::generate_layer(
            32,
            &testkit::LayerConfig { entries: 20, max_file_size: 150_000, pax_percent: 0 },
        );
        let gz = testkit::gzip(&layer.tar, &testkit::GzipOptions::default());
        let mut multi_span = 0;
        for (blob, format) in [(gz, LayerFormat::Gzip), (layer.tar.clone(), LayerFormat::Tar)] {
            let options = BuildOptions { span_size: 4096, format: Some(format), ..BuildOptions::new("t") };
            let ztoc = build_ztoc(&blob[..], &options).unwrap();
            let zinfo = &ztoc.compression_info.zinfo;
            for (name, content) in layer.files.iter().filter(|(_, content)| !content.is_empty()) {
                let entry = find_entry(&ztoc, name).unwrap();
                let mut out = Vec::new();
                let stats = extract_keeping(&mut Cursor::new(&blob), &ztoc, entry, &mut out, 0).unwrap();
                assert!(out == *content, "{format:?} {name}");
                let spans_bytes: u64 = (stats.first_span..=stats.last_span)
                    .map(|span| {
                        let (start, end) =
                            zinfo.compressed_range(span, ztoc.compressed_archive_size).unwrap();
                        end - start
                    })
                    .sum();
                // The writing pass may stop inside the last span, once the file is complete.
                assert!(stats.compressed_bytes_read > spans_bytes, "{format:?} {name}");
                assert!(stats.compressed_bytes_read <= 2 * spans_bytes, "{format:?} {name}");
                if stats.last_span == stats.first_span {
                    continue;
                }
                multi_span += 1;
                let (start, end) =
                    zinfo.compressed_range(stats.last_span, ztoc.compressed_archive_size).unwrap();
                let mut damaged = blob.clone();
                damaged[((start.get() + end.get()) / 2) as usize] ^= 0x40;
                out.clear();
                let error =
                    extract_keeping(&mut Cursor::new(&damaged), &ztoc, entry, &mut out, 0).unwrap_err();
                assert!(matches!(error, Error::SpanDigestMismatch { .. }), "{format:?} {name}: {error}");
                assert!(out.is_empty(), "{format:?} {name}: {} bytes written", out.len());
            }
        }
        assert!(multi_span >= 4, "files over several spans: {multi_span}");
    }
}
