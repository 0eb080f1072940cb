//! The crate's error type.

use crate::codec::DecodeError;
use crate::offset::CompressedOffset;
use crate::tar::TarError;
use crate::zinfo::{SpanError, ZinfoError};

/// Everything that can go wrong while building or reading through a zTOC.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the layer or writing output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The gzip stream is corrupt.
    #[error("corrupt gzip data near compressed offset {offset}: {reason}")]
    CorruptGzip {
        /// Compressed bytes consumed when the error was found.
        offset: CompressedOffset,
        /// zlib's message.
        reason: String,
    },
    /// The gzip stream ends before its last member is complete.
    #[error("the gzip stream is truncated: it ends at byte {offset} inside a gzip member")]
    TruncatedGzip {
        /// Size of the input.
        offset: CompressedOffset,
    },
    /// Bytes after the last gzip member that are not another gzip member.
    #[error("the bytes after the gzip member ending at byte {offset} are not another gzip member ({reason}); soci cannot index a layer with trailing data")]
    TrailingData {
        /// Where the last complete member ends.
        offset: CompressedOffset,
        /// What zlib said about the bytes that follow.
        reason: String,
    },
    /// The layer is zstd-compressed, which SOCI cannot index.
    #[error("the layer is zstd-compressed; SOCI zTOCs support only gzip and uncompressed tar layers")]
    Zstd,
    /// The span size is zero.
    #[error("span size must be at least 1 byte")]
    ZeroSpanSize,
    /// The span size does not fit the format (a signed 64-bit integer).
    #[error("span size {0} is too large: a zTOC holds at most {max}", max = crate::MAX_SPAN_SIZE)]
    SpanSizeTooLarge(u64),
    /// The tar stream cannot be indexed.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// Bytes that are not a readable zTOC.
    #[error("not a valid zTOC: {0}")]
    Decode(#[from] DecodeError),
    /// A checkpoint blob is malformed.
    #[error("invalid checkpoints: {0}")]
    Zinfo(#[from] ZinfoError),
    /// The zTOC's spans cannot serve a request (an offset outside them, a span outside the layer).
    #[error("the zTOC's spans do not fit: {0}")]
    Span(#[from] SpanError),
    /// The zTOC was built for another layer.
    #[error("the zTOC does not belong to this layer: {0}")]
    LayerMismatch(String),
    /// A span's compressed bytes do not match the digest in the zTOC.
    #[error("span {span} is corrupt: its sha256 is {actual}, the zTOC says {expected}")]
    SpanDigestMismatch {
        /// Span index.
        span: usize,
        /// Digest stored in the zTOC.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },
    /// No entry of that name in the zTOC.
    #[error("no entry named {0:?} in the zTOC")]
    NotFound(String),
    /// A hard link names itself, with no earlier entry of that name.
    #[error("hard link {name:?} points to itself")]
    HardLinkLoop {
        /// The link's name.
        name: String,
    },
    /// A hard link names no earlier entry of the archive.
    #[error("hard link {link:?} points to {target:?}, which is not an earlier entry of the layer")]
    HardLinkTargetMissing {
        /// The link's name.
        link: String,
        /// The name it points to.
        target: String,
    },
    /// Resolving an entry takes more hard links than the limit.
    #[error("{name:?} leads through a chain of more than {limit} hard links")]
    HardLinkChainTooLong {
        /// The entry being resolved.
        name: String,
        /// The most links followed.
        limit: usize,
    },
    /// The entry exists but has no data to extract.
    #[error("{name:?} is a {kind}, not a regular file")]
    NotRegular {
        /// Entry name.
        name: String,
        /// Its type.
        kind: &'static str,
    },
}
