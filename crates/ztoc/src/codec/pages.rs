//! The buffer [`super::encode_owned`] builds a zTOC in: an anonymous memory mapping, whose pages read as
//! zero and take memory only once written.
//!
//! Why not a `Vec`: the builder wants its whole buffer, zeroed, before the first byte, and a zeroed `Vec`
//! comes from `calloc`. glibc's leaves fresh pages untouched, but the musl that the static release
//! binaries link writes zeros through the whole block, so an 80 MiB zTOC would take 80 MiB before the
//! checkpoint blob is copied in, and the blob (freed as it is copied) and the buffer would both be whole
//! at once: twice the zTOC. A mapping behaves alike under every C library.

use std::fmt;
use std::ops::{Deref, DerefMut};

use memmap2::MmapMut;

/// Zeroed memory that is paid for as it is written.
pub(super) struct ZeroPages(MmapMut);

impl ZeroPages {
    /// `len` zero bytes (at least one: a mapping cannot be empty).
    pub(super) fn new(len: usize) -> ZeroPages {
        // Like a `Vec` that cannot allocate, a mapping the system refuses ends the program.
        let map = MmapMut::map_anon(len.max(1))
            .unwrap_or_else(|e| panic!("cannot map {len} bytes of memory for a zTOC: {e}"));
        ZeroPages(map)
    }
}

impl Deref for ZeroPages {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for ZeroPages {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

// SAFETY: the builder relies on two things, both kept: `len` is the length of the slice the buffer
// derefs to, and `grow_downwards` makes the buffer longer with the old bytes moved to its end.
#[allow(unsafe_code)]
unsafe impl flatbuffers::Allocator for ZeroPages {
    type Error = std::convert::Infallible;

    fn grow_downwards(&mut self) -> Result<(), Self::Error> {
        // Rare: the buffer is made as large as the zTOC is estimated to be.
        let old = self.0.len();
        let mut grown = ZeroPages::new(old * 2);
        let at = grown.len() - old;
        grown[at..].copy_from_slice(&self.0);
        *self = grown;
        Ok(())
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A zTOC's bytes as [`super::encode_owned`] wrote them, where the builder left them: at the end of its
/// buffer (copying them out would hold them twice). Derefs to the bytes.
pub struct EncodedZtoc {
    pages: ZeroPages,
    start: usize,
}

impl EncodedZtoc {
    pub(super) fn new(pages: ZeroPages, start: usize) -> EncodedZtoc {
        EncodedZtoc { pages, start }
    }
}

impl Deref for EncodedZtoc {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.pages[self.start..]
    }
}

impl AsRef<[u8]> for EncodedZtoc {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for EncodedZtoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedZtoc({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use flatbuffers::Allocator;

    use super::*;

    #[test]
    fn growing_keeps_the_bytes_at_the_end_and_zeroes_the_rest() {
        let mut pages = ZeroPages::new(3);
        assert_eq!(&pages[..], [0, 0, 0]);
        pages.copy_from_slice(&[1, 2, 3]);
        pages.grow_downwards().unwrap();
        assert_eq!(Allocator::len(&pages), 6);
        assert_eq!(&pages[..], [0, 0, 0, 1, 2, 3]);
        assert_eq!(&ZeroPages::new(0)[..], [0], "a mapping is never empty");
    }
}
