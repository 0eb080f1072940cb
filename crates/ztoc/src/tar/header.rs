//! Decoding of one 512-byte header block, as Go's `tar.Reader.readHeader` does after the zero-block checks.

use super::goparse::{parse_numeric, parse_octal, parse_string};

/// Size of a tar block.
pub(super) const BLOCK_SIZE: usize = 512;

/// The header formats Go tells apart by magic (`block.getFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// No recognised magic: no user/group names, no device numbers, no prefix.
    V7,
    /// `"ustar\0"` magic (Go's `FormatUSTAR | FormatPAX`): 155-byte prefix.
    Ustar,
    /// `"ustar \0"` magic with `" \0"` version: atime/ctime where the prefix would be.
    Gnu,
    /// `"ustar\0"` magic plus the `"tar\0"` trailer: 131-byte prefix, then atime/ctime.
    Star,
}

/// Why a non-zero block is not a usable header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeaderProblem {
    /// The stored checksum is not octal, or matches neither the unsigned nor the signed byte sum.
    BadChecksum,
    /// A numeric field Go parses for this format is neither valid octal nor in-range base-256.
    BadNumber(&'static str),
}

/// The fields of one header block as Go's `readHeader` fills `tar.Header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RawHeader {
    pub typeflag: u8,
    /// `name`, or `prefix + "/" + name` when the format has a non-empty prefix.
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub size: i64,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub mtime: i64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub devmajor: i64,
    pub devminor: i64,
}

/// Byte ranges of the header fields (`headerV7`, `headerUSTAR`, `headerGNU`, `headerSTAR` in Go's `format.go`).
mod field {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..263;
    pub const VERSION: Range<usize> = 263..265;
    pub const UNAME: Range<usize> = 265..297;
    pub const GNAME: Range<usize> = 297..329;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const USTAR_PREFIX: Range<usize> = 345..500;
    pub const GNU_ATIME: Range<usize> = 345..357;
    pub const GNU_CTIME: Range<usize> = 357..369;
    pub const STAR_PREFIX: Range<usize> = 345..476;
    pub const STAR_ATIME: Range<usize> = 476..488;
    pub const STAR_CTIME: Range<usize> = 488..500;
    pub const STAR_TRAILER: Range<usize> = 508..512;
}

/// The raw `name` field up to its first NUL, for error messages about blocks that cannot be decoded.
pub(super) fn apparent_name(block: &[u8; BLOCK_SIZE]) -> &[u8] {
    parse_string(&block[field::NAME])
}

/// Whether a typeflag has no data section whatever its size field says (Go's `isHeaderOnlyType`).
pub(super) fn is_header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

/// The unsigned and signed byte sums of the block with the checksum field read as spaces (`computeChecksum`).
fn checksums(block: &[u8; BLOCK_SIZE]) -> (i64, i64) {
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (i, &byte) in block.iter().enumerate() {
        let c = if field::CHKSUM.contains(&i) { b' ' } else { byte };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    (unsigned, signed)
}

/// Verifies the checksum and guesses the format from the magic values, as `block.getFormat` does.
fn format_of(block: &[u8; BLOCK_SIZE]) -> Result<Format, HeaderProblem> {
    let stored = parse_octal(&block[field::CHKSUM]).ok_or(HeaderProblem::BadChecksum)?;
    let (unsigned, signed) = checksums(block);
    if stored != unsigned && stored != signed {
        return Err(HeaderProblem::BadChecksum);
    }
    let magic = &block[field::MAGIC];
    Ok(if magic == b"ustar\0" && &block[field::STAR_TRAILER] == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && &block[field::VERSION] == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    })
}

/// Decodes a header block that is not all zeros. Fails where Go's `readHeader` returns `ErrHeader`.
pub(super) fn decode(block: &[u8; BLOCK_SIZE]) -> Result<RawHeader, HeaderProblem> {
    let format = format_of(block)?;
    let number = |name: &'static str, range: std::ops::Range<usize>| {
        parse_numeric(&block[range]).ok_or(HeaderProblem::BadNumber(name))
    };
    let text = |range: std::ops::Range<usize>| parse_string(&block[range]).to_vec();

    let mut header = RawHeader {
        typeflag: block[field::TYPEFLAG],
        name: text(field::NAME),
        linkname: text(field::LINKNAME),
        size: number("size", field::SIZE)?,
        mode: number("mode", field::MODE)?,
        uid: number("uid", field::UID)?,
        gid: number("gid", field::GID)?,
        mtime: number("mtime", field::MTIME)?,
        uname: Vec::new(),
        gname: Vec::new(),
        devmajor: 0,
        devminor: 0,
    };
    if format == Format::V7 {
        return Ok(header);
    }

    header.uname = text(field::UNAME);
    header.gname = text(field::GNAME);
    header.devmajor = number("devmajor", field::DEVMAJOR)?;
    header.devminor = number("devminor", field::DEVMINOR)?;
    let prefix: &[u8] = match format {
        Format::V7 => &[],
        Format::Ustar => parse_string(&block[field::USTAR_PREFIX]),
        Format::Star => {
            number("atime", field::STAR_ATIME)?;
            number("ctime", field::STAR_CTIME)?;
            parse_string(&block[field::STAR_PREFIX])
        }
        Format::Gnu => {
            // Go before 1.8 wrote a USTAR prefix into GNU headers, over atime/ctime. Go still reads such
            // files: when a non-empty atime or ctime does not parse, the field is taken as a prefix if it is ASCII.
            let unparsable = |range: std::ops::Range<usize>| {
                let time = &block[range];
                time.first().is_some_and(|&c| c != 0) && parse_numeric(time).is_none()
            };
            if unparsable(field::GNU_ATIME) || unparsable(field::GNU_CTIME) {
                let candidate = parse_string(&block[field::USTAR_PREFIX]);
                if candidate.is_ascii() {
                    candidate
                } else {
                    &[]
                }
            } else {
                &[]
            }
        }
    };
    if !prefix.is_empty() {
        let mut joined = Vec::with_capacity(prefix.len() + 1 + header.name.len());
        joined.extend_from_slice(prefix);
        joined.push(b'/');
        joined.extend_from_slice(&header.name);
        header.name = joined;
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_checksum(mut block: [u8; BLOCK_SIZE]) -> [u8; BLOCK_SIZE] {
        let (unsigned, _) = checksums(&block);
        block[field::CHKSUM].copy_from_slice(format!("{unsigned:06o}\0 ").as_bytes());
        block
    }

    fn ustar_block(name: &[u8], prefix: &[u8]) -> [u8; BLOCK_SIZE] {
        let mut block = [0u8; BLOCK_SIZE];
        block[..name.len()].copy_from_slice(name);
        block[field::MODE].copy_from_slice(b"0000644\0");
        block[field::SIZE].copy_from_slice(b"00000000012\0");
        block[field::TYPEFLAG] = b'0';
        block[field::MAGIC].copy_from_slice(b"ustar\0");
        block[field::VERSION].copy_from_slice(b"00");
        block[345..345 + prefix.len()].copy_from_slice(prefix);
        block
    }

    #[test]
    fn ustar_prefix_is_joined() {
        let header = decode(&with_checksum(ustar_block(b"file", b"some/dir"))).unwrap();
        assert_eq!(header.name, b"some/dir/file");
        assert_eq!(header.size, 0o12);
        assert_eq!(header.mode, 0o644);
    }

    #[test]
    fn v7_ignores_ustar_fields() {
        let mut block = ustar_block(b"file", b"prefix");
        block[field::MAGIC].fill(0);
        block[field::UNAME][..4].copy_from_slice(b"root");
        block[field::DEVMAJOR].copy_from_slice(b"garbage!");
        let header = decode(&with_checksum(block)).unwrap();
        assert_eq!(header.name, b"file");
        assert!(header.uname.is_empty());
        assert_eq!(header.devmajor, 0);
    }

    #[test]
    fn star_prefix_is_131_bytes() {
        let mut block = ustar_block(b"file", &[b'p'; 140]);
        block[field::STAR_ATIME].fill(0);
        block[field::STAR_CTIME].fill(0);
        block[field::STAR_TRAILER].copy_from_slice(b"tar\0");
        let header = decode(&with_checksum(block)).unwrap();
        let mut expected = vec![b'p'; 131];
        expected.extend_from_slice(b"/file");
        assert_eq!(header.name, expected);
    }

    #[test]
    fn gnu_has_no_prefix_unless_times_are_garbage() {
        let mut block = ustar_block(b"file", b"");
        block[field::MAGIC].copy_from_slice(b"ustar ");
        block[field::VERSION].copy_from_slice(b" \0");
        block[field::GNU_ATIME].copy_from_slice(b"00000000001\0");
        assert_eq!(decode(&with_checksum(block)).unwrap().name, b"file");
        // A pre-Go 1.8 writer put a prefix there: not octal, so Go reads it as a prefix.
        block[field::USTAR_PREFIX].fill(0);
        block[345..350].copy_from_slice(b"older");
        assert_eq!(decode(&with_checksum(block)).unwrap().name, b"older/file");
        // Non-ASCII garbage is dropped rather than used as a prefix.
        block[345] = 0xff;
        assert_eq!(decode(&with_checksum(block)).unwrap().name, b"file");
    }

    #[test]
    fn signed_checksum_is_accepted() {
        let mut block = ustar_block(b"caf\xc3\xa9", b"");
        let (_, signed) = checksums(&block);
        block[field::CHKSUM].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert_eq!(decode(&block).unwrap().name, b"caf\xc3\xa9");
    }

    #[test]
    fn bad_checksum_and_bad_numbers() {
        let mut block = with_checksum(ustar_block(b"file", b""));
        block[0] = b'g';
        assert_eq!(decode(&block), Err(HeaderProblem::BadChecksum));
        let mut block = ustar_block(b"file", b"");
        block[field::UID].copy_from_slice(b"0000009\0");
        assert_eq!(decode(&with_checksum(block)), Err(HeaderProblem::BadNumber("uid")));
        let mut block = ustar_block(b"file", b"");
        block[field::DEVMINOR].copy_from_slice(b"zz\0\0\0\0\0\0");
        assert_eq!(decode(&with_checksum(block)), Err(HeaderProblem::BadNumber("devminor")));
        let mut block = ustar_block(b"file", b"");
        block[field::CHKSUM].copy_from_slice(b"nonsense");
        assert_eq!(decode(&block), Err(HeaderProblem::BadChecksum));
    }
}
