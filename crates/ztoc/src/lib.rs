//! Build, encode, decode and read through SOCI zTOCs.
//!
//! A zTOC is the table of contents of one container image layer plus the zlib checkpoints that let a
//! reader inflate any span of the layer without reading what comes before it. This crate is pure and
//! synchronous: bytes in, zTOC out; no network and no async runtime.
//!
//! * [`build`] streams a layer (gzip or plain tar) once and returns its [`Ztoc`];
//! * [`codec`] writes the exact flatbuffer bytes soci-snapshotter writes, and reads zTOCs back;
//! * [`extract`] reads one file out of a layer by random access, as a lazy-loading consumer does.

pub mod build;
pub mod codec;
mod error;
pub mod extract;
mod gzip;
mod model;
mod offset;
mod spans;
pub mod tar;
pub mod zinfo;
mod zlib;

pub use build::{build_ztoc, BuildOptions, LayerFormat, ZtocBuilder};
pub use error::Error;
pub use model::{
    CompressionInfo, EntryType, FileMetadata, PaxRecord, Toc, Zinfo, Ztoc, DEFAULT_SPAN_SIZE, ZTOC_VERSION,
};
pub use offset::{CompressedOffset, UncompressedOffset};

/// The largest span size a zTOC can hold: the format stores it as a signed 64-bit integer.
pub const MAX_SPAN_SIZE: u64 = i64::MAX as u64;

/// The OCI digest string (`sha256:<hex>`) of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    digest_string(sha2::Sha256::new_with_prefix(bytes))
}

/// The OCI digest string (`sha256:<hex>`) of what `hasher` has seen (span digests are hashed as the
/// bytes go by).
pub(crate) fn digest_string(hasher: sha2::Sha256) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", hasher.finalize())
}
