//! The zTOC data model: what soci-snapshotter's `ztoc.fbs` holds, in Rust types.
//!
//! Tar-derived strings (names, link targets, user names, PAX records) are kept as raw bytes: Go writes
//! them as they are in the tar, and xattr values such as `security.capability` are binary.

use crate::offset::{CompressedOffset, UncompressedOffset};
pub use crate::zinfo::Zinfo;

/// The zTOC format version soci-snapshotter writes (`Version09`).
pub const ZTOC_VERSION: &str = "0.9";

/// The default span size: 4 MiB of uncompressed data between checkpoints, as in soci.
pub const DEFAULT_SPAN_SIZE: u64 = 1 << 22;

/// A zTOC: the table of contents of one layer plus what is needed to inflate it from the middle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ztoc {
    /// Format version, `"0.9"` for everything soci writes today.
    pub version: String,
    /// Identifies the tool that built the zTOC (soci's CLI writes `AWS SOCI CLI v0.2`).
    pub build_tool_identifier: String,
    /// Size of the whole layer blob.
    pub compressed_archive_size: CompressedOffset,
    /// Bytes Go's `tar.Reader` had consumed when it reported the end of the archive.
    pub uncompressed_archive_size: UncompressedOffset,
    /// One entry per tar entry, in archive order.
    pub toc: Toc,
    /// Span digests and checkpoints.
    pub compression_info: CompressionInfo,
}

/// The table of contents: one [`FileMetadata`] per tar entry, in archive order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Toc {
    /// The entries, in archive order.
    pub metadata: Vec<FileMetadata>,
}

/// The kind of a tar entry, as soci names it (`getType` in soci's `toc_builder.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// Regular file (`'0'`, or NUL without a trailing slash).
    Reg,
    /// Hard link (`'1'`).
    Hardlink,
    /// Symbolic link (`'2'`).
    Symlink,
    /// Character device (`'3'`).
    Char,
    /// Block device (`'4'`).
    Block,
    /// Directory (`'5'`).
    Dir,
    /// Named pipe (`'6'`).
    Fifo,
}

impl EntryType {
    /// The string soci stores in the `type` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryType::Reg => "reg",
            EntryType::Hardlink => "hardlink",
            EntryType::Symlink => "symlink",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Dir => "dir",
            EntryType::Fifo => "fifo",
        }
    }

    /// Parses the `type` field of a stored zTOC.
    pub fn from_name(name: &str) -> Option<EntryType> {
        Some(match name {
            "reg" => EntryType::Reg,
            "hardlink" => EntryType::Hardlink,
            "symlink" => EntryType::Symlink,
            "char" => EntryType::Char,
            "block" => EntryType::Block,
            "dir" => EntryType::Dir,
            "fifo" => EntryType::Fifo,
            _ => return None,
        })
    }

    /// Maps a tar typeflag (after Go's `'\0'` normalisation) to the soci type, `None` if soci rejects it.
    pub const fn from_typeflag(flag: u8) -> Option<EntryType> {
        Some(match flag {
            b'0' => EntryType::Reg,
            b'1' => EntryType::Hardlink,
            b'2' => EntryType::Symlink,
            b'3' => EntryType::Char,
            b'4' => EntryType::Block,
            b'5' => EntryType::Dir,
            b'6' => EntryType::Fifo,
            _ => return None,
        })
    }
}

/// One tar entry as soci records it (`FileMetadata` in `ztoc.fbs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMetadata {
    /// `hdr.Name` exactly as Go decodes it (ustar prefix, PAX `path` and GNU long names applied, not cleaned).
    pub name: Vec<u8>,
    /// The entry type.
    pub entry_type: EntryType,
    /// Position of the first data byte, just past this entry's header block(s).
    pub uncompressed_offset: UncompressedOffset,
    /// `hdr.Size` (PAX `size` applied); header-only types keep the header's value, and a negative one
    /// keeps the bits of Go's `int64` (see [`size_field`](Self::size_field)).
    pub uncompressed_size: u64,
    /// Link target for hard and symbolic links.
    pub linkname: Vec<u8>,
    /// The raw numeric mode field.
    pub mode: i64,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Owner user name.
    pub uname: Vec<u8>,
    /// Owner group name.
    pub gname: Vec<u8>,
    /// Modification time as Go's `time.MarshalText` writes it (RFC 3339, sub-seconds trimmed), `""` if out of range.
    pub mod_time: String,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// All PAX records of the entry, sorted by key (the schema calls them `xattrs`).
    pub pax_records: Vec<PaxRecord>,
}

impl FileMetadata {
    /// The size field as stored (`int64(hdr.Size)`): negative for a header-only entry whose tar header
    /// says so.
    pub fn size_field(&self) -> i64 {
        self.uncompressed_size as i64
    }
}

/// Where soci's reader expects the header after an entry at data offset `offset` with size field `size`:
/// `AlignToTarBlock(offset + size)` in Go's wrapping `int64` arithmetic.
fn next_tar_header(offset: u64, size: i64) -> i64 {
    let end = (offset as i64).wrapping_add(size);
    // Go's `%` truncates like Rust's: a negative end is left as it is.
    match end % 512 {
        remainder if remainder > 0 => end.wrapping_add(512 - remainder),
        _ => end,
    }
}

/// An entry that starts before soci's reader expects it (see [`first_overlap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overlap {
    /// Index of the entry before it in offset order, whose size field runs too far.
    pub previous: usize,
    /// Index of the entry.
    pub index: usize,
    /// `AlignToTarBlock(offset + size)` of the previous entry.
    pub previous_end: i64,
}

/// soci's check on a TOC it reads back (`flatbufferToTOC`, `ErrInvalidTOCEntry`): sorted by offset, each
/// entry must start at or after `AlignToTarBlock(offset + size)` of the one before it. Offsets must fit
/// in an `i64`.
pub(crate) fn first_overlap(entries: &[FileMetadata]) -> Option<Overlap> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    // Already sorted for every TOC we build; the sort is then a linear pass.
    order.sort_by_key(|&index| entries[index].uncompressed_offset);
    let mut previous: Option<(usize, i64)> = None;
    for index in order {
        let entry = &entries[index];
        let offset = entry.uncompressed_offset.get();
        if let Some((previous, previous_end)) = previous {
            if previous_end > offset as i64 {
                return Some(Overlap { previous, index, previous_end });
            }
        }
        previous = Some((index, next_tar_header(offset, entry.size_field())));
    }
    None
}

/// One PAX record: key and value as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PaxRecord {
    /// Record key, e.g. `path` or `SCHILY.xattr.user.comment`.
    pub key: Vec<u8>,
    /// Record value, possibly binary.
    pub value: Vec<u8>,
}

/// The compression part of a zTOC: one digest per span and the checkpoints to resume inflation at each span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionInfo {
    /// `"sha256:<hex>"` of each span's compressed bytes.
    pub span_digests: Vec<String>,
    /// The checkpoints.
    pub zinfo: Zinfo,
}

impl CompressionInfo {
    /// `max_span_id` as stored: number of spans − 1.
    pub fn max_span_id(&self) -> i32 {
        self.zinfo.span_count() as i32 - 1
    }
}
