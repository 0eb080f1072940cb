//! A push-based tar walker that decodes headers exactly as Go's `archive/tar` reader does.
//! (Placeholder: being written.)

use crate::model::FileMetadata;
use crate::offset::UncompressedOffset;

/// Why the tar stream cannot be indexed.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Placeholder.
    #[error("tar walker not written yet")]
    Unimplemented,
}

/// Walks a tar stream fed in arbitrary pieces and records one [`FileMetadata`] per entry.
#[derive(Debug, Default)]
pub struct TarWalker {}

impl TarWalker {
    /// A walker at the start of a tar stream.
    pub fn new() -> TarWalker {
        TarWalker {}
    }

    /// Feeds the next bytes of the uncompressed tar stream.
    pub fn feed(&mut self, _data: &[u8]) -> Result<(), TarError> {
        Err(TarError::Unimplemented)
    }

    /// Whether Go's reader would have stopped reading (end of archive seen): further bytes are ignored.
    pub fn is_done(&self) -> bool {
        false
    }

    /// Ends the stream: the entries and `uncompressed_archive_size` as Go's reader counts it.
    pub fn finish(self) -> Result<(Vec<FileMetadata>, UncompressedOffset), TarError> {
        Err(TarError::Unimplemented)
    }
}
