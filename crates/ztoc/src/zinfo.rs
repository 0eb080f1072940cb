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
    /// Where this checkpoint's span starts in the compressed blob (one byte earlier when `bits != 0`).
    pub fn span_start(&self) -> CompressedOffset {
        CompressedOffset(self.input.get() - u64::from(self.bits != 0))
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
        for index in 0..self.len() {
            let cp = self.checkpoint(index);
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

    /// Checkpoint `index`; panics if out of range.
    pub fn checkpoint(&self, index: usize) -> Checkpoint<'_> {
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
        (0..self.len()).map(|i| self.checkpoint(i))
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

    /// The index of the span holding uncompressed offset `offset` (soci's `pt_index_from_ucmp_offset`).
    pub fn span_of(&self, offset: UncompressedOffset) -> usize {
        let mut span = 0;
        while span + 1 < self.len() && self.checkpoint(span + 1).output <= offset {
            span += 1;
        }
        span
    }

    /// Compressed byte range `[start, end)` covered by span `index` (the digest range).
    pub fn span_range(
        &self,
        index: usize,
        compressed_size: CompressedOffset,
    ) -> (CompressedOffset, CompressedOffset) {
        let start = self.checkpoint(index).span_start();
        let end = if index + 1 == self.len() { compressed_size } else { self.checkpoint(index + 1).input };
        (start, end)
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

    /// Byte range `[start, end)` of span `index`.
    pub fn span_range(&self, index: usize) -> (u64, u64) {
        let span = self.span_size as u64;
        let start = index as u64 * span;
        (start, (start + span).min(self.size as u64))
    }
}
