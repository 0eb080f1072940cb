//! Fetching the compressed spans a file needs. Every one of them is read and checked against its digest
//! before any is used, so that a corrupt span is reported before the first byte of the file is written.
//!
//! Memory stays bounded: the spans are kept from the checking pass to the writing pass only while
//! their total stays within a limit; beyond it, a span is hashed piece by piece while checking and read
//! again (and checked again) while writing. Typical files take one or two spans of a few MiB and are
//! read once; a file of hundreds of MiB is read twice rather than held in memory.

use std::io::{Read, Seek, SeekFrom};
use std::ops::RangeInclusive;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::model::Zinfo;
use crate::offset::CompressedOffset;

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

/// Compressed bytes of spans kept in memory between the two passes, at most.
pub(crate) const KEEP_LIMIT: u64 = 32 << 20;
/// Bytes read at a time from a span that is not kept.
const PIECE: u64 = 256 << 10;

/// Reads spans of one layer blob, checked against their digests.
pub(crate) struct SpanFetcher<'a, B> {
    blob: &'a mut B,
    zinfo: &'a Zinfo,
    layer_size: CompressedOffset,
    digests: &'a [String],
    /// Compressed bytes read from the blob so far.
    pub(crate) bytes_read: u64,
    /// The spans checked by [`verify`](Self::verify), starting at `first`; `None` when not kept.
    kept: Vec<Option<Vec<u8>>>,
    first: usize,
}

impl<'a, B: RandomAccess> SpanFetcher<'a, B> {
    /// A fetcher over `blob`, whose spans were checked to lie inside it ([`Zinfo::check_fits`]).
    pub(crate) fn new(
        blob: &'a mut B,
        zinfo: &'a Zinfo,
        layer_size: CompressedOffset,
        digests: &'a [String],
    ) -> SpanFetcher<'a, B> {
        SpanFetcher { blob, zinfo, layer_size, digests, bytes_read: 0, kept: Vec::new(), first: 0 }
    }

    /// Size of the layer blob.
    pub(crate) fn layer_size(&self) -> CompressedOffset {
        self.layer_size
    }

    /// Reads and checks every span of `spans`, keeping them in memory while their total is at most
    /// `keep_limit` bytes.
    pub(crate) fn verify(&mut self, spans: RangeInclusive<usize>, keep_limit: u64) -> Result<(), Error> {
        self.first = *spans.start();
        self.kept.clear();
        let mut kept_bytes = 0u64;
        for span in spans {
            let (start, end) = self.zinfo.compressed_range(span, self.layer_size)?;
            let keep = kept_bytes + (end - start) <= keep_limit;
            let mut bytes = Vec::new();
            self.read_checked(span, |piece| {
                if keep {
                    bytes.extend_from_slice(piece);
                }
                Ok(true)
            })?;
            if keep {
                kept_bytes += end - start;
            }
            self.kept.push(keep.then_some(bytes));
        }
        Ok(())
    }

    /// Hands the bytes of span `span` (checked by [`verify`](Self::verify)), in order and possibly in
    /// pieces, to `use_piece(blob offset, bytes)` until it returns `false`.
    pub(crate) fn for_each_piece(
        &mut self,
        span: usize,
        mut use_piece: impl FnMut(u64, &[u8]) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let (start, _) = self.zinfo.compressed_range(span, self.layer_size)?;
        match span.checked_sub(self.first).and_then(|index| self.kept.get_mut(index)) {
            Some(Some(bytes)) => {
                let bytes = std::mem::take(bytes);
                use_piece(start.get(), &bytes)
            }
            // Read again, and checked again: the blob may have changed since `verify`.
            _ => {
                let mut at = start.get();
                self.read_checked(span, |piece| {
                    let more = use_piece(at, piece)?;
                    at += piece.len() as u64;
                    Ok(more)
                })
            }
        }
    }

    /// Reads span `span` piece by piece into `use_piece` (until it returns `false`), then checks the
    /// span's digest if every piece was read.
    fn read_checked(
        &mut self,
        span: usize,
        mut use_piece: impl FnMut(&[u8]) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let (start, end) = self.zinfo.compressed_range(span, self.layer_size)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; (end - start).min(PIECE) as usize];
        let mut at = start.get();
        while at < end.get() {
            let piece = &mut buf[..(end.get() - at).min(PIECE) as usize];
            self.blob.read_exact_at(at, piece)?;
            self.bytes_read += piece.len() as u64;
            at += piece.len() as u64;
            hasher.update(&*piece);
            if !use_piece(piece)? {
                return Ok(false);
            }
        }
        let actual = crate::digest_string(hasher);
        let expected = &self.digests[span];
        if actual != *expected {
            return Err(Error::SpanDigestMismatch { span, expected: expected.clone(), actual });
        }
        Ok(true)
    }
}
