//! The zTOC flatbuffers codec. (Placeholder: being written.)

use crate::model::Ztoc;

/// Why bytes are not a readable zTOC.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Placeholder.
    #[error("codec not written yet")]
    Unimplemented,
}

/// Serializes a zTOC exactly as soci-snapshotter does.
pub fn encode(_ztoc: &Ztoc) -> Vec<u8> {
    unimplemented!("codec")
}

/// Reads a zTOC.
pub fn decode(_bytes: &[u8]) -> Result<Ztoc, DecodeError> {
    Err(DecodeError::Unimplemented)
}
