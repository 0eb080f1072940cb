//! Checkpoints ("zinfo"): the gzip checkpoint blob and the fixed spans of uncompressed tar layers.
//!
//! The gzip blob layout is soci's `zinfo_to_blob` (v2): `i32 count, i64 span_size`, then per checkpoint
//! `i64 in, i64 out, u8 bits, [u8; 32768] window`, all little-endian and tightly packed. The blob is the
//! storage: checkpoints are appended to it as they are found, so the builder holds one copy only.

use crate::offset::{CompressedOffset, UncompressedOffset};

/// Size of the inflate window saved with every checkpoint.
pub const WINDOW_SIZE: usize = 32768;
/// `count` + `span_size`.
const HEADER_SIZE: usize = 4 + 8;
/// `in` + `out` + `bits` + window.
pub const PACKED_CHECKPOINT_SIZE: usize = 8 + 8 + 1 + WINDOW_SIZE;
/// The `TarZinfo` version soci writes.
pub const TAR_ZINFO_VERSION: i32 = 2;

/// Why a checkpoint blob could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZinfoError {
    /// The blob is shorter than its 12-byte header.
    #[error("checkpoint blob is {0} bytes, shorter than its 12-byte header")]
    TooShort(usize),
    /// The blob length matches neither a v2 nor a legacy v1 blob with the claimed count.
    #[error("checkpoint blob claims {count} checkpoints but is {len} bytes long")]
    BadLength {
        /// Claimed number of checkpoints.
        count: i32,
        /// Actual blob length.
        len: usize,
    },
    /// A checkpoint has more than 7 unused bits.
    #[error("checkpoint {index} has {bits} unused bits (at most 7 are possible)")]
    BadBits {
        /// Checkpoint index.
        index: usize,
        /// The stored value.
        bits: u8,
    },
    /// Checkpoint offsets go backwards.
    #[error("checkpoint {index} goes backwards (in {input}, out {output})")]
    NotMonotonic {
        /// Checkpoint index.
        index: usize,
        /// Its compressed offset.
        input: u64,
        /// Its uncompressed offset.
        output: u64,
    },
}

/// Why a question about spans (which span holds an offset, where a span starts or ends) has no answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpanError {
    /// The span index is not below the number of spans.
    #[error("span {index} does not exist: there are {count} span(s)")]
    NoSuchSpan {
        /// The requested span.
        index: usize,
        /// Number of spans.
        count: usize,
    },
    /// The offset precedes the first checkpoint, so no span holds it.
    #[error("uncompressed offset {offset} lies before the first span, which starts at {first}")]
    BeforeFirstSpan {
        /// The requested uncompressed offset.
        offset: u64,
        /// Uncompressed offset of the first checkpoint.
        first: u64,
    },
    /// The offset lies past the end of the last span (or there is no span at all).
    #[error("uncompressed offset {offset} lies past the last span, which ends at {end}")]
    PastLastSpan {
        /// The requested uncompressed offset.
        offset: u64,
        /// End of the last span (0 when there is none).
        end: u64,
    },
    /// A checkpoint at compressed offset 0 claims unused bits of the byte before it.
    #[error("span {index} would start before the layer: its checkpoint at compressed offset 0 has {bits} unused bits")]
    StartsBeforeLayer {
        /// The span.
        index: usize,
        /// The checkpoint's unused bits.
        bits: u8,
    },
    /// A span's compressed bytes are not inside the layer, or end before they start.
    #[error("span {index} covers compressed bytes [{start}, {end}), which is not inside the layer's {layer_size} bytes")]
    OutsideLayer {
        /// The span.
        index: usize,
        /// Where its bytes start.
        start: u64,
        /// Where its bytes end.
        end: u64,
        /// Size of the layer blob.
        layer_size: u64,
    },
    /// `start + len` does not fit in 64 bits.
    #[error("the byte range [{start}, +{len}) does not fit in 64 bits")]
    RangeOverflow {
        /// Start of the range.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// A plain tar layer's spans describe a tar of another size than the layer.
    #[error("the spans cover a tar of {tar_size} bytes, but the layer is {layer_size} bytes")]
    TarSizeMismatch {
        /// `TarZinfo.size`.
        tar_size: i64,
        /// Size of the layer blob.
        layer_size: u64,
    },
    /// A tar zinfo whose span size is not positive.
    #[error("span size {0} is not positive")]
    BadSpanSize(i64),
}

/// Where a span starts: its checkpoint for a gzip layer, its first byte for a plain tar layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanStart {
    /// Compressed offset of the checkpoint (gzip: the first full byte after the block boundary).
    pub compressed: CompressedOffset,
    /// Uncompressed offset where the span's data starts.
    pub uncompressed: UncompressedOffset,
    /// Unused bits of the byte before `compressed` (gzip only).
    pub bits: Option<u8>,
}

/// One checkpoint, borrowed from the blob.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint<'a> {
    /// Compressed offset of the first full byte after the block boundary.
    pub input: CompressedOffset,
    /// Uncompressed offset of the block boundary.
    pub output: UncompressedOffset,
    /// Unused bits (0..=7) of byte `input - 1` that belong to the next block.
    pub bits: u8,
    /// The 32 KiB of output that precede `output`, oldest first, zero-filled at the front.
    pub window: &'a [u8],
}

impl Checkpoint<'_> {
    /// Where this checkpoint's span starts in the compressed blob (one byte earlier when `bits != 0`);
    /// `None` when that byte would lie before the blob.
    pub fn span_start(&self) -> Option<CompressedOffset> {
        self.input.get().checked_sub(u64::from(self.bits != 0)).map(CompressedOffset)
    }
}

/// The checkpoints of a gzip layer, stored as soci's v2 blob.
#[derive(Clone, PartialEq, Eq)]
pub struct GzipZinfo {
    blob: Vec<u8>,
}

impl std::fmt::Debug for GzipZinfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipZinfo")
            .field("span_size", &self.span_size())
            .field("checkpoints", &self.len())
            .finish()
    }
}

impl GzipZinfo {
    /// An empty zinfo for the given span size.
    pub fn new(span_size: u64) -> GzipZinfo {
        let mut blob = Vec::with_capacity(HEADER_SIZE + 8 * PACKED_CHECKPOINT_SIZE);
        blob.extend_from_slice(&0i32.to_le_bytes());
        blob.extend_from_slice(&(span_size as i64).to_le_bytes());
        GzipZinfo { blob }
    }

    /// Reads a blob as stored in a zTOC; a legacy v1 blob (checkpoint 0 not stored) is upgraded to v2.
    pub fn from_blob(blob: Vec<u8>) -> Result<GzipZinfo, ZinfoError> {
        if blob.len() < HEADER_SIZE {
            return Err(ZinfoError::TooShort(blob.len()));
        }
        let count = i32::from_le_bytes(blob[0..4].try_into().expect("4 bytes"));
        let claimed = i128::from(count) * PACKED_CHECKPOINT_SIZE as i128 + HEADER_SIZE as i128;
        let len = blob.len() as i128;
        let zinfo = if count >= 0 && claimed == len {
            GzipZinfo { blob }
        } else if count >= 1 && claimed - PACKED_CHECKPOINT_SIZE as i128 == len {
            // v1 did not store checkpoint 0 and assumed a plain 10-byte gzip header.
            let mut upgraded = Vec::with_capacity(blob.len() + PACKED_CHECKPOINT_SIZE);
            upgraded.extend_from_slice(&blob[..HEADER_SIZE]);
            upgraded.extend_from_slice(&10i64.to_le_bytes());
            upgraded.extend_from_slice(&0i64.to_le_bytes());
            upgraded.push(0);
            upgraded.resize(upgraded.len() + WINDOW_SIZE, 0);
            upgraded.extend_from_slice(&blob[HEADER_SIZE..]);
            GzipZinfo { blob: upgraded }
        } else {
            return Err(ZinfoError::BadLength { count, len: blob.len() });
        };
        zinfo.validate()?;
        Ok(zinfo)
    }

    fn validate(&self) -> Result<(), ZinfoError> {
        let mut previous: Option<Checkpoint<'_>> = None;
        for (index, cp) in self.checkpoints().enumerate() {
            if cp.bits > 7 {
                return Err(ZinfoError::BadBits { index, bits: cp.bits });
            }
            if let Some(prev) = previous {
                if cp.input < prev.input || cp.output < prev.output {
                    return Err(ZinfoError::NotMonotonic {
                        index,
                        input: cp.input.get(),
                        output: cp.output.get(),
                    });
                }
            }
            previous = Some(cp);
        }
        Ok(())
    }

    /// The blob bytes as stored in `compression_info.checkpoints`.
    pub fn as_blob(&self) -> &[u8] {
        &self.blob
    }

    /// The blob, given up (the encoder frees it as it copies it into the zTOC).
    pub(crate) fn into_blob(self) -> Vec<u8> {
        self.blob
    }

    /// Number of checkpoints.
    pub fn len(&self) -> usize {
        (self.blob.len() - HEADER_SIZE) / PACKED_CHECKPOINT_SIZE
    }

    /// Whether there is no checkpoint (never the case for a built zinfo).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The span size requested at build time.
    pub fn span_size(&self) -> u64 {
        i64::from_le_bytes(self.blob[4..12].try_into().expect("8 bytes")) as u64
    }

    /// Checkpoint `index`.
    pub fn checkpoint(&self, index: usize) -> Result<Checkpoint<'_>, SpanError> {
        if index >= self.len() {
            return Err(SpanError::NoSuchSpan { index, count: self.len() });
        }
        Ok(self.checkpoint_at(index))
    }

    /// Checkpoint `index`, known to be below [`len`](Self::len).
    fn checkpoint_at(&self, index: usize) -> Checkpoint<'_> {
        let at = HEADER_SIZE + index * PACKED_CHECKPOINT_SIZE;
        let raw = &self.blob[at..at + PACKED_CHECKPOINT_SIZE];
        Checkpoint {
            input: CompressedOffset(u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"))),
            output: UncompressedOffset(u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"))),
            bits: raw[16],
            window: &raw[17..],
        }
    }

    /// All checkpoints in order.
    pub fn checkpoints(&self) -> impl ExactSizeIterator<Item = Checkpoint<'_>> + '_ {
        (0..self.len()).map(|i| self.checkpoint_at(i))
    }

    /// Appends a checkpoint whose window is given as up to two slices (oldest first) totalling 32 KiB.
    pub fn push(
        &mut self,
        input: CompressedOffset,
        output: UncompressedOffset,
        bits: u8,
        window: [&[u8]; 2],
    ) {
        debug_assert_eq!(window[0].len() + window[1].len(), WINDOW_SIZE);
        self.blob.extend_from_slice(&input.get().to_le_bytes());
        self.blob.extend_from_slice(&output.get().to_le_bytes());
        self.blob.push(bits);
        self.blob.extend_from_slice(window[0]);
        self.blob.extend_from_slice(window[1]);
        let count = self.len() as i32;
        self.blob[0..4].copy_from_slice(&count.to_le_bytes());
    }

    /// The index of the span holding uncompressed offset `offset`: the last checkpoint at or before it,
    /// as soci's `pt_index_from_ucmp_offset` finds it.
    pub fn span_of(&self, offset: UncompressedOffset) -> Result<usize, SpanError> {
        let first =
            self.checkpoint(0).map_err(|_| SpanError::PastLastSpan { offset: offset.get(), end: 0 })?;
        if first.output > offset {
            return Err(SpanError::BeforeFirstSpan { offset: offset.get(), first: first.output.get() });
        }
        // Outputs never decrease (checked when a blob is read), so the checkpoints at or before
        // `offset` are a prefix; the span is its last one.
        let (mut low, mut high) = (0, self.len());
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.checkpoint_at(mid).output <= offset {
                low = mid;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }

    /// Compressed byte range `[start, end)` of span `index` (what its digest covers), checked to lie
    /// inside a layer of `layer_size` bytes.
    pub fn span_range(
        &self,
        index: usize,
        layer_size: CompressedOffset,
    ) -> Result<(CompressedOffset, CompressedOffset), SpanError> {
        let checkpoint = self.checkpoint(index)?;
        let start =
            checkpoint.span_start().ok_or(SpanError::StartsBeforeLayer { index, bits: checkpoint.bits })?;
        let end = match self.checkpoint(index + 1) {
            Ok(next) => next.input,
            Err(_) => layer_size,
        };
        // A span that starts one byte back must hold that byte: its checkpoint lies inside it.
        if checkpoint.input > end || end > layer_size {
            return Err(SpanError::OutsideLayer {
                index,
                start: start.get(),
                end: end.get(),
                layer_size: layer_size.get(),
            });
        }
        Ok((start, end))
    }
}

/// The zinfo of an uncompressed tar layer: spans of fixed size over the raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarZinfo {
    /// Always [`TAR_ZINFO_VERSION`] when written by soci.
    pub version: i32,
    /// Span size in bytes.
    pub span_size: i64,
    /// Size of the tar file.
    pub size: i64,
}

impl TarZinfo {
    /// Number of spans: `ceil(size / span_size)` (soci's `MaxSpanID + 1`).
    pub fn span_count(&self) -> usize {
        if self.span_size <= 0 || self.size <= 0 {
            return 0;
        }
        // Written without `size + span_size` so that no stored value can overflow.
        let (size, span) = (self.size as u64, self.span_size as u64);
        (size / span + u64::from(size % span != 0)) as usize
    }

    /// Span size as unsigned.
    pub fn span_size(&self) -> u64 {
        self.span_size.max(0) as u64
    }

    /// The span size, which must be positive for any span arithmetic.
    fn positive_span_size(&self) -> Result<u64, SpanError> {
        u64::try_from(self.span_size)
            .ok()
            .filter(|&span| span > 0)
            .ok_or(SpanError::BadSpanSize(self.span_size))
    }

    /// The index of the span holding byte `offset` of the tar; the end of the tar belongs to the last
    /// span (an empty entry may sit there when the tar has no end-of-archive blocks).
    pub fn span_of(&self, offset: UncompressedOffset) -> Result<usize, SpanError> {
        let span_size = self.positive_span_size()?;
        let size = self.size.max(0) as u64;
        let count = self.span_count() as u64;
        if offset.get() > size || count == 0 {
            return Err(SpanError::PastLastSpan { offset: offset.get(), end: size });
        }
        Ok((offset.get() / span_size).min(count - 1) as usize)
    }

    /// Byte range `[start, end)` of span `index`.
    pub fn span_range(&self, index: usize) -> Result<(u64, u64), SpanError> {
        let span = self.positive_span_size()?;
        if index >= self.span_count() {
            return Err(SpanError::NoSuchSpan { index, count: self.span_count() });
        }
        // `index < ceil(size / span)`, so `index * span < size`: no overflow.
        let start = index as u64 * span;
        Ok((start, start.saturating_add(span).min(self.size as u64)))
    }
}

/// The checkpoints of a layer, by compression algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Zinfo {
    /// A gzip layer: zlib checkpoints with 32 KiB windows.
    Gzip(GzipZinfo),
    /// An uncompressed tar layer: fixed-size spans.
    Tar(TarZinfo),
}

impl Zinfo {
    /// Number of spans (= number of checkpoints).
    pub fn span_count(&self) -> usize {
        match self {
            Zinfo::Gzip(z) => z.len(),
            Zinfo::Tar(t) => t.span_count(),
        }
    }

    /// The span size the zinfo was built with.
    pub fn span_size(&self) -> u64 {
        match self {
            Zinfo::Gzip(z) => z.span_size(),
            Zinfo::Tar(t) => t.span_size(),
        }
    }

    /// The index of the span holding uncompressed offset `offset`.
    pub fn span_of(&self, offset: UncompressedOffset) -> Result<usize, SpanError> {
        match self {
            Zinfo::Gzip(z) => z.span_of(offset),
            Zinfo::Tar(t) => t.span_of(offset),
        }
    }

    /// The first and last (inclusive) spans holding the `len` bytes at `start`; an empty range is held
    /// by the span of `start`.
    pub fn spans_holding(&self, start: UncompressedOffset, len: u64) -> Result<(usize, usize), SpanError> {
        let last = start
            .get()
            .checked_add(len.saturating_sub(1))
            .ok_or(SpanError::RangeOverflow { start: start.get(), len })?;
        Ok((self.span_of(start)?, self.span_of(UncompressedOffset(last))?))
    }

    /// Where span `index` starts.
    pub fn span_start(&self, index: usize) -> Result<SpanStart, SpanError> {
        Ok(match self {
            Zinfo::Gzip(z) => {
                let checkpoint = z.checkpoint(index)?;
                SpanStart {
                    compressed: checkpoint.input,
                    uncompressed: checkpoint.output,
                    bits: Some(checkpoint.bits),
                }
            }
            Zinfo::Tar(t) => {
                let (start, _) = t.span_range(index)?;
                SpanStart {
                    compressed: CompressedOffset(start),
                    uncompressed: UncompressedOffset(start),
                    bits: None,
                }
            }
        })
    }

    /// Checks that every span lies inside a layer of `layer_size` bytes (for a plain tar, that the spans
    /// cover exactly the layer), so that no later question about a span can point outside the layer.
    pub fn check_fits(&self, layer_size: CompressedOffset) -> Result<(), SpanError> {
        if let Zinfo::Tar(t) = self {
            t.positive_span_size()?;
            if u64::try_from(t.size).ok() != Some(layer_size.get()) {
                return Err(SpanError::TarSizeMismatch { tar_size: t.size, layer_size: layer_size.get() });
            }
        }
        (0..self.span_count()).try_for_each(|index| self.compressed_range(index, layer_size).map(drop))
    }

    /// Compressed byte range `[start, end)` of span `index` (what its digest covers) in a layer of
    /// `layer_size` bytes.
    pub fn compressed_range(
        &self,
        index: usize,
        layer_size: CompressedOffset,
    ) -> Result<(CompressedOffset, CompressedOffset), SpanError> {
        match self {
            Zinfo::Gzip(z) => z.span_range(index, layer_size),
            Zinfo::Tar(t) => {
                let (start, end) = t.span_range(index)?;
                if end > layer_size.get() {
                    return Err(SpanError::OutsideLayer { index, start, end, layer_size: layer_size.get() });
                }
                Ok((CompressedOffset(start), CompressedOffset(end)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build_ztoc, BuildOptions, LayerFormat};

    fn gzip_zinfo(checkpoints: &[(u64, u64, u8)]) -> GzipZinfo {
        let mut zinfo = GzipZinfo::new(4096);
        let window = vec![0u8; WINDOW_SIZE];
        for &(input, output, bits) in checkpoints {
            zinfo.push(CompressedOffset(input), UncompressedOffset(output), bits, [&window, &[]]);
        }
        zinfo
    }

    #[test]
    fn gzip_span_questions_without_an_answer_are_errors() {
        let empty = Zinfo::Gzip(GzipZinfo::new(4096));
        assert_eq!(empty.span_of(UncompressedOffset(0)), Err(SpanError::PastLastSpan { offset: 0, end: 0 }));
        assert_eq!(empty.span_start(0), Err(SpanError::NoSuchSpan { index: 0, count: 0 }));
        assert_eq!(
            empty.compressed_range(0, CompressedOffset(100)),
            Err(SpanError::NoSuchSpan { index: 0, count: 0 })
        );

        let late_start = Zinfo::Gzip(gzip_zinfo(&[(10, 100, 0), (50, 9000, 0)]));
        assert_eq!(
            late_start.span_of(UncompressedOffset(99)),
            Err(SpanError::BeforeFirstSpan { offset: 99, first: 100 })
        );
        assert_eq!(late_start.spans_holding(UncompressedOffset(100), 9000), Ok((0, 1)));
        assert_eq!(
            late_start.compressed_range(0, CompressedOffset(40)),
            Err(SpanError::OutsideLayer { index: 0, start: 10, end: 50, layer_size: 40 })
        );

        let bits_at_zero = Zinfo::Gzip(gzip_zinfo(&[(0, 0, 3)]));
        assert_eq!(
            bits_at_zero.compressed_range(0, CompressedOffset(10)),
            Err(SpanError::StartsBeforeLayer { index: 0, bits: 3 })
        );
        assert_eq!(
            late_start.spans_holding(UncompressedOffset(200), u64::MAX),
            Err(SpanError::RangeOverflow { start: 200, len: u64::MAX })
        );
    }

    #[test]
    fn gzip_span_of_takes_the_last_checkpoint_at_or_before_the_offset() {
        // Duplicate outputs (empty leading blocks) resolve to the last of them, as in soci's C code.
        let zinfo = gzip_zinfo(&[(10, 0, 0), (12, 0, 1), (40, 5000, 2), (90, 12000, 0)]);
        let expected = [(0, 1), (4999, 1), (5000, 2), (11999, 2), (12000, 3), (u64::MAX, 3)];
        for (offset, span) in expected {
            assert_eq!(zinfo.span_of(UncompressedOffset(offset)), Ok(span), "offset {offset}");
        }
        assert_eq!(
            zinfo.span_range(1, CompressedOffset(100)),
            Ok((CompressedOffset(11), CompressedOffset(40)))
        );
        assert_eq!(
            zinfo.span_range(3, CompressedOffset(100)),
            Ok((CompressedOffset(90), CompressedOffset(100)))
        );
    }

    #[test]
    fn tar_span_arithmetic() {
        let zinfo = Zinfo::Tar(TarZinfo { version: TAR_ZINFO_VERSION, span_size: 1024, size: 3000 });
        assert_eq!(zinfo.span_of(UncompressedOffset(2999)), Ok(2));
        assert_eq!(zinfo.span_of(UncompressedOffset(3000)), Ok(2), "the end belongs to the last span");
        assert_eq!(
            zinfo.span_of(UncompressedOffset(3001)),
            Err(SpanError::PastLastSpan { offset: 3001, end: 3000 })
        );
        assert_eq!(
            zinfo.compressed_range(2, CompressedOffset(3000)),
            Ok((CompressedOffset(2048), CompressedOffset(3000)))
        );
        assert_eq!(
            zinfo.compressed_range(3, CompressedOffset(3000)),
            Err(SpanError::NoSuchSpan { index: 3, count: 3 })
        );
        assert_eq!(
            zinfo.compressed_range(2, CompressedOffset(2500)),
            Err(SpanError::OutsideLayer { index: 2, start: 2048, end: 3000, layer_size: 2500 })
        );
        assert_eq!(
            zinfo.span_start(1),
            Ok(SpanStart {
                compressed: CompressedOffset(1024),
                uncompressed: UncompressedOffset(1024),
                bits: None
            })
        );
        let huge = TarZinfo { version: TAR_ZINFO_VERSION, span_size: i64::MAX, size: i64::MAX };
        assert_eq!(huge.span_range(0), Ok((0, i64::MAX as u64)));
        for span_size in [0, -1] {
            let bad = Zinfo::Tar(TarZinfo { version: TAR_ZINFO_VERSION, span_size, size: 3000 });
            assert_eq!(bad.span_of(UncompressedOffset(0)), Err(SpanError::BadSpanSize(span_size)));
        }
    }

    #[test]
    fn check_fits_refuses_spans_outside_the_layer() {
        let tar = |span_size, size| Zinfo::Tar(TarZinfo { version: TAR_ZINFO_VERSION, span_size, size });
        assert_eq!(tar(1024, 3000).check_fits(CompressedOffset(3000)), Ok(()));
        assert_eq!(
            tar(1 << 40, 3000).check_fits(CompressedOffset(2999)),
            Err(SpanError::TarSizeMismatch { tar_size: 3000, layer_size: 2999 })
        );
        assert_eq!(tar(0, 3000).check_fits(CompressedOffset(3000)), Err(SpanError::BadSpanSize(0)));

        let gzip = |checkpoints: &[(u64, u64, u8)]| Zinfo::Gzip(gzip_zinfo(checkpoints));
        assert_eq!(gzip(&[(10, 0, 0), (40, 5000, 3)]).check_fits(CompressedOffset(100)), Ok(()));
        // A last checkpoint with bits one byte past the end would make an empty span that must hold a byte.
        assert_eq!(
            gzip(&[(10, 0, 0), (101, 5000, 3)]).check_fits(CompressedOffset(100)),
            Err(SpanError::OutsideLayer { index: 0, start: 10, end: 101, layer_size: 100 })
        );
        assert_eq!(
            gzip(&[(101, 0, 3)]).check_fits(CompressedOffset(100)),
            Err(SpanError::OutsideLayer { index: 0, start: 100, end: 100, layer_size: 100 })
        );
        assert_eq!(gzip(&[]).check_fits(CompressedOffset(0)), Ok(()), "no span, nothing outside");
    }

    /// The spans `spans_holding` names are exactly those whose uncompressed data meets the entry's.
    #[test]
    fn spans_holding_agrees_with_the_span_starts_on_built_ztocs() {
        let layer = testkit::generate_layer(
            11,
            &testkit::LayerConfig { entries: 60, max_file_size: 40_000, pax_percent: 10 },
        );
        let gzip = testkit::gzip(&layer.tar, &testkit::GzipOptions::default());
        for (blob, format) in [(&gzip, LayerFormat::Gzip), (&layer.tar, LayerFormat::Tar)] {
            let options = BuildOptions { span_size: 4096, format: Some(format), ..BuildOptions::new("t") };
            let ztoc = build_ztoc(&blob[..], &options).unwrap();
            let zinfo = &ztoc.compression_info.zinfo;
            let starts: Vec<u64> =
                (0..zinfo.span_count()).map(|i| zinfo.span_start(i).unwrap().uncompressed.get()).collect();
            assert!(starts.len() > 5, "{format:?}: small spans give many spans");
            let mut checked = 0;
            for entry in ztoc.toc.metadata.iter().filter(|e| e.uncompressed_size > 0) {
                let (first, last) =
                    zinfo.spans_holding(entry.uncompressed_offset, entry.uncompressed_size).unwrap();
                let (start, end) = (
                    entry.uncompressed_offset.get(),
                    entry.uncompressed_offset.get() + entry.uncompressed_size,
                );
                let holding: Vec<usize> = (0..starts.len())
                    .filter(|&i| starts[i] < end && starts.get(i + 1).is_none_or(|&next| next > start))
                    .collect();
                assert_eq!((first, last), (holding[0], *holding.last().unwrap()), "{format:?}");
                let (span_start, span_end) =
                    zinfo.compressed_range(last, ztoc.compressed_archive_size).unwrap();
                assert!(span_start < span_end && span_end.get() <= blob.len() as u64);
                checked += 1;
            }
            assert!(checked > 20, "{format:?}");
        }
    }
}
