//! Reading one file out of a layer by random access, as a lazy-loading consumer does: fetch only the
//! compressed spans that hold the file, check each span's digest, resume inflation at the span's
//! checkpoint and copy out the file's bytes.

use std::io::Write;
use std::ops::RangeInclusive;

use crate::error::Error;
use crate::model::{EntryType, FileMetadata, Zinfo, Ztoc};
use crate::offset::{CompressedOffset, UncompressedOffset};
pub use crate::spans::RandomAccess;
use crate::spans::{SpanFetcher, KEEP_LIMIT};
use crate::zinfo::{GzipZinfo, SpanError};
use crate::zlib::{Flush, Inflater, ZlibError, WINDOW_BITS_AUTO, WINDOW_BITS_RAW};

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

/// Hard links followed at most when resolving one entry: each names an earlier entry, so a chain ends,
/// but following one costs a scan of the TOC.
const HARD_LINK_HOPS: usize = 64;

/// The regular file whose data `entry` stands for: itself, or the target of a (chain of) hard links,
/// each naming an entry earlier in the archive (the last one of that name, as on extraction).
pub fn resolve_regular<'a>(ztoc: &'a Ztoc, entry: &'a FileMetadata) -> Result<&'a FileMetadata, Error> {
    let lossy = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
    let mut current = entry;
    for _ in 0..HARD_LINK_HOPS {
        match current.entry_type {
            EntryType::Reg => return Ok(current),
            EntryType::Hardlink => {
                let target = normalize(&current.linkname);
                let earlier = ztoc.toc.metadata.iter().take_while(|e| !std::ptr::eq(*e, current));
                current = match earlier.filter(|e| normalize(&e.name) == target).last() {
                    Some(found) => found,
                    None if target == normalize(&current.name) => {
                        return Err(Error::HardLinkLoop { name: lossy(&current.name) })
                    }
                    None => {
                        return Err(Error::HardLinkTargetMissing {
                            link: lossy(&current.name),
                            target: lossy(&current.linkname),
                        })
                    }
                };
            }
            other => return Err(Error::NotRegular { name: lossy(&entry.name), kind: other.as_str() }),
        }
    }
    Err(Error::HardLinkChainTooLong { name: lossy(&entry.name), limit: HARD_LINK_HOPS })
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
        let more = fetcher.for_each_piece(span, |mut at, mut piece| {
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
                    at += 1;
                }
                if span == first {
                    stream.inflater.set_dictionary(checkpoint.window).map_err(|e| corrupt(e.message))?;
                }
            }
            stream.feed(piece, out).map_err(|e| match e {
                FeedError::Zlib { consumed, error } => Error::CorruptGzip {
                    offset: CompressedOffset(at + consumed as u64),
                    reason: error.message,
                },
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
    /// zlib failed after `consumed` bytes of the data fed (its first message, replayed if it was lost).
    Zlib {
        consumed: usize,
        error: ZlibError,
    },
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
    fn feed(&mut self, data: &[u8], out: &mut (impl Write + ?Sized)) -> Result<(), FeedError> {
        let mut pos = 0;
        let zlib = |consumed: usize| move |error: ZlibError| FeedError::Zlib { consumed, error };
        while pos < data.len() && self.to_write > 0 {
            if self.trailer_to_skip > 0 {
                let n = self.trailer_to_skip.min(data.len() - pos);
                self.trailer_to_skip -= n;
                pos += n;
                if self.trailer_to_skip == 0 {
                    self.inflater.reset(WINDOW_BITS_AUTO).map_err(zlib(pos))?;
                }
                continue;
            }
            let want = if self.to_skip > 0 { self.to_skip } else { self.to_write };
            let room = want.min(self.scratch.len() as u64) as usize;
            // A copy to replay the call from, should zlib-rs lose its error message in it.
            let before = self.inflater.try_clone().ok();
            let progress = match self.inflater.inflate(&data[pos..], &mut self.scratch[..room], Flush::None) {
                Ok(progress) => progress,
                Err(error) => {
                    let error = match before {
                        Some(mut replay) if Inflater::lost_message(&error) => {
                            replay.replay(&data[pos..], Flush::None).unwrap_or(error)
                        }
                        _ => error,
                    };
                    return Err(FeedError::Zlib { consumed: pos + error.consumed, error });
                }
            };
            pos += progress.consumed;
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
                    self.inflater.reset(WINDOW_BITS_AUTO).map_err(zlib(pos))?;
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
        let more = fetcher.for_each_piece(span, |at, piece| {
            // Offsets in a plain tar layer are the same compressed and uncompressed.
            let piece_end = at + piece.len() as u64;
            let (from, to) = (start.max(at).min(piece_end), end.min(piece_end).max(at));
            out.write_all(&piece[(from - at) as usize..(to - at) as usize])?;
            Ok(piece_end < end)
        })?;
        if !more {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build_ztoc, BuildOptions, LayerFormat};
    use std::io::Cursor;

    fn hard_link_ztoc(links: &[(&str, &str)]) -> Ztoc {
        let layer = testkit::generate_layer(
            3,
            &testkit::LayerConfig { entries: 4, max_file_size: 100, pax_percent: 0 },
        );
        let mut ztoc = build_ztoc(&layer.tar[..], &BuildOptions::new("t")).unwrap();
        let file = ztoc.toc.metadata.iter().find(|e| e.entry_type == EntryType::Reg).unwrap().clone();
        ztoc.toc.metadata = vec![FileMetadata { name: b"f".to_vec(), ..file.clone() }];
        for (name, target) in links {
            ztoc.toc.metadata.push(FileMetadata {
                name: name.as_bytes().to_vec(),
                entry_type: EntryType::Hardlink,
                linkname: target.as_bytes().to_vec(),
                uncompressed_size: 0,
                ..file.clone()
            });
        }
        ztoc
    }

    fn resolve<'a>(ztoc: &'a Ztoc, name: &str) -> Result<&'a FileMetadata, Error> {
        resolve_regular(ztoc, find_entry(ztoc, name).unwrap())
    }

    #[test]
    fn hard_link_problems_name_the_link() {
        let ztoc = hard_link_ztoc(&[("self", "self"), ("ok", "f"), ("to-later", "later"), ("later", "f")]);
        let error = resolve(&ztoc, "self").unwrap_err();
        assert!(matches!(&error, Error::HardLinkLoop { name } if name == "self"), "{error}");
        assert!(error.to_string().contains("points to itself"), "{error}");
        assert_eq!(resolve(&ztoc, "ok").unwrap().name, b"f");
        let error = resolve(&ztoc, "to-later").unwrap_err();
        assert!(
            matches!(&error, Error::HardLinkTargetMissing { link, target } if link == "to-later" && target == "later"),
            "{error}"
        );
    }

    #[test]
    fn a_hard_link_chain_over_the_hop_limit_is_named() {
        let names: Vec<String> = (0..70).map(|i| format!("l{i}")).collect();
        let links: Vec<(&str, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), if i == 0 { "f" } else { &names[i - 1] }))
            .collect();
        let ztoc = hard_link_ztoc(&links);
        assert_eq!(resolve(&ztoc, "l62").unwrap().name, b"f", "63 links and the file: within the limit");
        let error = resolve(&ztoc, "l69").unwrap_err();
        assert!(
            matches!(&error, Error::HardLinkChainTooLong { name, limit: 64 } if name == "l69"),
            "{error}"
        );
    }

    /// Inflation that fails inside a span (whose digest matches: the zTOC was made for the damaged
    /// bytes) is reported with zlib's first message, at or after the damaged byte. Damage just after a
    /// gzip member starts gives distances past the member's start, which zlib-rs's fast loop finds.
    #[test]
    fn inflate_errors_name_zlibs_message_and_where_it_failed() {
        let text: String =
            (0..12_000).map(|i| format!("line {i}: span {} checkpoint {}\n", i * 7 % 1000, i % 13)).collect();
        let mut tar = ::tar::Builder::new(Vec::new());
        let mut header = ::tar::Header::new_ustar();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "text", text.as_bytes()).unwrap();
        let tar = tar.into_inner().unwrap();
        // Three gzip members, as testkit cuts them; where each starts.
        let member = tar.len().div_ceil(3);
        let starts: Vec<usize> = tar
            .chunks(member)
            .scan(0, |at, chunk| {
                let start = *at;
                *at += testkit::gzip(chunk, &testkit::GzipOptions::default()).len();
                Some(start)
            })
            .collect();
        let blob =
            testkit::gzip(&tar, &testkit::GzipOptions { members: 3, ..testkit::GzipOptions::default() });
        let options = BuildOptions { span_size: 65536, ..BuildOptions::new("t") };
        let ztoc = build_ztoc(&blob[..], &options).unwrap();
        let (entry, size) = (find_entry(&ztoc, "text").unwrap(), ztoc.compressed_archive_size);
        let mut messages = std::collections::BTreeSet::new();
        for at in starts[1..].iter().flat_map(|&start| (start + 40..start + 4000).step_by(41)) {
            let mut damaged = blob.clone();
            damaged[at] ^= 0xff;
            let mut ztoc = ztoc.clone();
            for span in 0..ztoc.compression_info.span_digests.len() {
                let (start, end) = ztoc.compression_info.zinfo.compressed_range(span, size).unwrap();
                ztoc.compression_info.span_digests[span] =
                    crate::sha256_digest(&damaged[start.get() as usize..end.get() as usize]);
            }
            match extract_entry(&mut Cursor::new(&damaged), &ztoc, entry, &mut Vec::new()) {
                Err(Error::CorruptGzip { offset, reason }) => {
                    assert_ne!(reason, "repeated call with bad state", "byte {at}");
                    assert!(offset.get() > at as u64, "byte {at}: reported at {offset}");
                    messages.insert(reason);
                }
                // The damage may decode into other bytes.
                Ok(_) | Err(Error::LayerMismatch(_)) => {}
                Err(other) => panic!("byte {at}: {other}"),
            }
        }
        assert!(messages.contains("invalid distance too far back"), "zlib's messages: {messages:?}");
    }

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
