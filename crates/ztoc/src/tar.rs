//! A push-based tar walker that decodes headers exactly as Go's `archive/tar` reader does.
//!
//! soci builds its table of contents by calling `tar.Reader.Next()` until `io.EOF`, never reading file data, with
//! a position tracker underneath. [`TarWalker`] replays that loop on bytes pushed in pieces of any size: it keeps
//! one 512-byte block, the data of at most one PAX or GNU long-name header (1 MiB at most, Go's
//! `maxSpecialFileSize`), and skips file data by counting.
//!
//! What Go does and this walker reproduces:
//! * end of archive: two zero blocks; or the stream ending cleanly at a header boundary, after one zero block, or
//!   anywhere in the padding after an entry's data (Go reads padding with `tryReadFull`, which reports `io.EOF`);
//! * header decoding per format (V7, USTAR/PAX, GNU, STAR), checksums, base-256 numbers, prefix joining;
//! * `x` headers (the last one before an entry wins), GNU `L`/`K` long names, `mergePAX` overrides, `'\0'` typeflags;
//! * soci's rules on top: only typeflags `0`–`6` can be indexed; PAX GNU sparse files are rejected here because
//!   Go reports their expanded size, which makes the zTOC unreadable.

mod goparse;
mod header;
mod pax;
mod time;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::model::{EntryType, FileMetadata, PaxRecord};
use crate::offset::UncompressedOffset;
use header::{HeaderProblem, RawHeader, BLOCK_SIZE};
use pax::PaxRecords;

pub use time::format_mod_time;

/// The largest PAX or GNU long-name header data Go reads (`maxSpecialFileSize`).
const MAX_SPECIAL_FILE_SIZE: u64 = 1 << 20;

/// Why the tar stream cannot be indexed. Offsets are positions in the uncompressed tar stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header block's checksum is not octal or matches neither the unsigned nor the signed byte sum.
    #[error("invalid tar header at offset {offset}{}: bad checksum", entry_suffix(.name))]
    BadChecksum {
        /// Start of the header block.
        offset: u64,
        /// The block's `name` field, if not empty.
        name: Option<String>,
    },
    /// A numeric header field is neither valid octal nor a base-256 number that fits in 64 bits.
    #[error("invalid tar header at offset {offset}{}: the {field} field is not a valid number", entry_suffix(.name))]
    InvalidNumber {
        /// Start of the header block.
        offset: u64,
        /// The entry name from the block.
        name: Option<String>,
        /// Which field.
        field: &'static str,
    },
    /// A zero block is followed by a block that is not all zeros.
    #[error(
        "invalid tar stream: the block at offset {offset} follows a zero block but is not zero \
         (an archive ends with two zero blocks)"
    )]
    DataAfterZeroBlock {
        /// Start of the non-zero block.
        offset: u64,
    },
    /// The stream ends inside a header block.
    #[error(
        "the tar stream is truncated: it ends {received} bytes into the header block at offset {offset}"
    )]
    TruncatedHeader {
        /// Start of the incomplete header block.
        offset: u64,
        /// Bytes of the block present.
        received: usize,
    },
    /// The stream ends inside the data of an entry, or of a PAX or GNU long-name header.
    #[error("the tar stream is truncated: it ends at offset {offset}{}, {missing} bytes short", inside(.name))]
    TruncatedData {
        /// End of the stream.
        offset: u64,
        /// The entry (or PAX/long-name header) whose data is cut.
        name: Option<String>,
        /// Data bytes missing.
        missing: u64,
    },
    /// An entry that has a data section declares a negative size.
    #[error("invalid tar header at offset {offset}{}: negative size {size}", entry_suffix(.name))]
    NegativeSize {
        /// Start of the entry's header block.
        offset: u64,
        /// Entry name.
        name: Option<String>,
        /// The size, after PAX `size` was applied.
        size: i64,
    },
    /// The data of a PAX `x` header is not a valid list of `"%d %s=%s\n"` records.
    #[error("invalid PAX header at offset {offset}{}: {reason}", entry_suffix(.name))]
    InvalidPaxHeader {
        /// Start of the `x` header block.
        offset: u64,
        /// The `x` header's own name.
        name: Option<String>,
        /// What is wrong.
        reason: &'static str,
    },
    /// A PAX `uid`, `gid`, `size`, `mtime`, `atime` or `ctime` record is not a valid number.
    #[error("invalid PAX record {key:?}={value:?} for the tar entry at offset {offset}{}", entry_suffix(.name))]
    InvalidPaxValue {
        /// Start of the entry's header block.
        offset: u64,
        /// Entry name from its header block.
        name: Option<String>,
        /// Record key.
        key: String,
        /// Record value.
        value: String,
    },
    /// A PAX or GNU long-name header holds more than 1 MiB, Go's limit (`ErrFieldTooLong`).
    #[error(
        "tar header at offset {offset}{} (typeflag {}) has {size} bytes of data; Go reads at most 1 MiB",
        entry_suffix(.name),
        typeflag_text(*.typeflag)
    )]
    SpecialFileTooLong {
        /// Start of the header block.
        offset: u64,
        /// The header's own name.
        name: Option<String>,
        /// `x`, `L` or `K`.
        typeflag: u8,
        /// Its size field.
        size: i64,
    },
    /// An entry whose typeflag soci cannot index (anything but `0`–`6`, e.g. a PAX global header `g`, an old GNU
    /// sparse file `S`, or `7`): soci fails the whole layer.
    #[error(
        "tar entry {name:?} at offset {offset} has typeflag {} ({}); soci cannot index a layer containing it",
        typeflag_text(*.typeflag),
        typeflag_meaning(*.typeflag)
    )]
    UnsupportedEntry {
        /// Start of the entry's header block.
        offset: u64,
        /// Entry name as Go reports it.
        name: String,
        /// The typeflag.
        typeflag: u8,
    },
    /// A header-only entry (directory, link, device, FIFO) whose size field runs past where the next entry's
    /// data starts: soci writes the field as it is, and its own reader then rejects the zTOC.
    #[error(
        "tar entry {name:?} (data at offset {data_offset}) has size field {size}, which runs past the data \
         of the next entry (at offset {next_offset}); soci-snapshotter cannot read a zTOC with it"
    )]
    SizeOverrunsNextEntry {
        /// Entry name.
        name: String,
        /// Where its data would start.
        data_offset: u64,
        /// Its size field.
        size: i64,
        /// Where the next entry's data starts.
        next_offset: u64,
    },
    /// A PAX GNU sparse file (`GNU.sparse.*` records): Go reports its expanded size, which does not match the data
    /// stored in the layer, so a soci zTOC for the layer cannot be read.
    #[error(
        "tar entry {name:?} at offset {offset} is a GNU sparse file (GNU.sparse.* PAX records); \
         soci cannot index a layer containing it"
    )]
    SparseEntry {
        /// Start of the entry's header block.
        offset: u64,
        /// Entry name (`GNU.sparse.name` when present, as Go reports it).
        name: String,
    },
}

fn entry_suffix(name: &Option<String>) -> String {
    name.as_ref().map_or_else(String::new, |name| format!(" (entry {name:?})"))
}

fn inside(name: &Option<String>) -> String {
    name.as_ref().map_or_else(String::new, |name| format!(" inside the data of {name:?}"))
}

fn typeflag_text(typeflag: u8) -> String {
    if typeflag.is_ascii_graphic() {
        format!("'{}'", char::from(typeflag))
    } else {
        format!("0x{typeflag:02x}")
    }
}

fn typeflag_meaning(typeflag: u8) -> &'static str {
    match typeflag {
        b'g' => "PAX global header",
        b'S' => "old GNU sparse file",
        b'7' => "contiguous file",
        b'V' => "GNU volume header",
        b'M' => "GNU multi-volume continuation",
        b'D' => "GNU dump directory",
        b'N' => "old GNU long name",
        _ => "unknown entry type",
    }
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn lossy_nonempty(name: &[u8]) -> Option<String> {
    (!name.is_empty()).then(|| lossy(name))
}

/// Bytes from `size` up to the next block boundary (Go's `blockPadding`).
fn block_padding(size: u64) -> u64 {
    size.wrapping_neg() % BLOCK_SIZE as u64
}

/// Which meta header's data is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpecialKind {
    /// `x`: PAX records for the next entry.
    Pax,
    /// `L`: GNU long name for the next entry.
    LongName,
    /// `K`: GNU long link target for the next entry.
    LongLink,
}

/// The data of an `x`, `L` or `K` header being collected.
#[derive(Debug)]
struct SpecialFile {
    kind: SpecialKind,
    typeflag: u8,
    header_offset: u64,
    name: Vec<u8>,
    size: u64,
    content: Vec<u8>,
}

impl SpecialFile {
    /// Go reads `min(size, maxSpecialFileSize + 1)` bytes, then fails if it got more than the limit.
    fn wanted(&self) -> u64 {
        self.size.min(MAX_SPECIAL_FILE_SIZE + 1)
    }
}

#[derive(Debug)]
enum State {
    /// Reading a header block; `after_zero_block` once one all-zero block has been read.
    Header { after_zero_block: bool },
    /// Skipping the data of the last entry, then `padding` bytes.
    Data { remaining: u64, padding: u64 },
    /// Reading the data of an `x`, `L` or `K` header.
    Special(SpecialFile),
    /// Skipping block padding. The stream may end here: Go reads padding with `tryReadFull`, whose `io.EOF`
    /// ends the archive.
    Padding { remaining: u64 },
    /// Go's `Next()` returned `io.EOF`; later bytes are not read.
    Done,
    /// An error was reported.
    Failed,
}

/// What the meta headers before an entry said about it (the locals of Go's `Reader.next`).
#[derive(Debug, Default)]
struct Pending {
    pax: Option<PaxRecords>,
    long_name: Vec<u8>,
    long_link: Vec<u8>,
}

/// Walks a tar stream fed in arbitrary pieces and records one [`FileMetadata`] per entry, as soci does with Go's
/// `tar.Reader`.
pub struct TarWalker {
    /// Bytes consumed so far: what soci's position tracker under the `tar.Reader` counts.
    pos: u64,
    state: State,
    block: Box<[u8; BLOCK_SIZE]>,
    block_len: usize,
    pending: Pending,
    entries: Vec<FileMetadata>,
    failure: Option<TarError>,
}

impl Default for TarWalker {
    fn default() -> Self {
        TarWalker::new()
    }
}

impl fmt::Debug for TarWalker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarWalker")
            .field("pos", &self.pos)
            .field("state", &self.state)
            .field("block_len", &self.block_len)
            .field("pending", &self.pending)
            .field("entries", &self.entries.len())
            .field("failure", &self.failure)
            .finish()
    }
}

impl TarWalker {
    /// A walker at the start of a tar stream.
    pub fn new() -> TarWalker {
        TarWalker {
            pos: 0,
            state: State::Header { after_zero_block: false },
            block: Box::new([0; BLOCK_SIZE]),
            block_len: 0,
            pending: Pending::default(),
            entries: Vec::new(),
            failure: None,
        }
    }

    /// Feeds the next bytes of the uncompressed tar stream. After an error every call returns that error; after
    /// the end of the archive ([`is_done`](Self::is_done)) bytes are ignored.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        if let Some(error) = &self.failure {
            return Err(error.clone());
        }
        while !data.is_empty() {
            let consumed = match &mut self.state {
                State::Done | State::Failed => return Ok(()),
                State::Data { remaining, .. } | State::Padding { remaining } => {
                    let n = (*remaining).min(data.len() as u64);
                    *remaining -= n;
                    n as usize
                }
                State::Header { .. } => {
                    let n = (BLOCK_SIZE - self.block_len).min(data.len());
                    self.block[self.block_len..self.block_len + n].copy_from_slice(&data[..n]);
                    self.block_len += n;
                    n
                }
                State::Special(special) => {
                    let missing = special.wanted() - special.content.len() as u64;
                    let n = missing.min(data.len() as u64) as usize;
                    special.content.extend_from_slice(&data[..n]);
                    n
                }
            };
            self.pos += consumed as u64;
            data = &data[consumed..];
            if let Err(error) = self.advance() {
                self.state = State::Failed;
                self.failure = Some(error.clone());
                return Err(error);
            }
        }
        Ok(())
    }

    /// Entries read so far.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether Go's `Next()` has returned `io.EOF` (end of archive seen): further bytes are ignored.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Ends the stream: the entries, and `uncompressed_archive_size` as soci counts it (the bytes Go's reader had
    /// consumed when `Next()` returned `io.EOF`).
    pub fn finish(self) -> Result<(Vec<FileMetadata>, UncompressedOffset), TarError> {
        if let Some(error) = self.failure {
            return Err(error);
        }
        match self.state {
            State::Header { .. } if self.block_len > 0 => Err(TarError::TruncatedHeader {
                offset: self.pos - self.block_len as u64,
                received: self.block_len,
            }),
            State::Data { remaining, .. } => Err(TarError::TruncatedData {
                offset: self.pos,
                name: self.entries.last().map(|entry| lossy(&entry.name)),
                missing: remaining,
            }),
            State::Special(special) => Err(TarError::TruncatedData {
                offset: self.pos,
                name: lossy_nonempty(&special.name),
                missing: special.size - special.content.len() as u64,
            }),
            State::Header { .. } | State::Padding { .. } | State::Done | State::Failed => {
                Ok((self.entries, UncompressedOffset(self.pos)))
            }
        }
    }

    /// Moves past every state whose bytes are all in, until one needs more input.
    fn advance(&mut self) -> Result<(), TarError> {
        loop {
            match &mut self.state {
                State::Data { remaining: 0, padding } => self.state = State::Padding { remaining: *padding },
                State::Padding { remaining: 0 } => self.state = State::Header { after_zero_block: false },
                State::Header { after_zero_block } if self.block_len == BLOCK_SIZE => {
                    let after_zero_block = *after_zero_block;
                    self.block_len = 0;
                    self.on_block(after_zero_block)?;
                }
                State::Special(special) if special.content.len() as u64 == special.wanted() => {
                    let State::Special(special) = std::mem::replace(&mut self.state, State::Failed) else {
                        unreachable!("matched above")
                    };
                    self.on_special_data(special)?;
                }
                _ => return Ok(()),
            }
        }
    }

    /// A full block at a header position (Go's `readHeader`, then the start of the loop body in `Reader.next`).
    fn on_block(&mut self, after_zero_block: bool) -> Result<(), TarError> {
        let offset = self.pos - BLOCK_SIZE as u64;
        if self.block.iter().all(|&b| b == 0) {
            self.state =
                if after_zero_block { State::Done } else { State::Header { after_zero_block: true } };
            return Ok(());
        }
        if after_zero_block {
            return Err(TarError::DataAfterZeroBlock { offset });
        }
        let header = header::decode(&self.block).map_err(|problem| {
            let name = lossy_nonempty(header::apparent_name(&self.block));
            match problem {
                HeaderProblem::BadChecksum => TarError::BadChecksum { offset, name },
                HeaderProblem::BadNumber(field) => TarError::InvalidNumber { offset, name, field },
            }
        })?;

        // Go's first handleRegularFile, before it looks at the typeflag.
        let size = data_size(&header).ok_or_else(|| TarError::NegativeSize {
            offset,
            name: lossy_nonempty(&header.name),
            size: header.size,
        })?;
        let special_kind = match header.typeflag {
            b'x' => Some(SpecialKind::Pax),
            b'L' => Some(SpecialKind::LongName),
            b'K' => Some(SpecialKind::LongLink),
            // Go returns a global header as an entry; soci then rejects its typeflag.
            b'g' => {
                return Err(TarError::UnsupportedEntry { offset, name: lossy(&header.name), typeflag: b'g' });
            }
            _ => None,
        };
        match special_kind {
            Some(kind) => {
                self.state = State::Special(SpecialFile {
                    kind,
                    typeflag: header.typeflag,
                    header_offset: offset,
                    name: header.name,
                    size,
                    content: Vec::new(),
                });
                Ok(())
            }
            None => self.on_entry(header, offset),
        }
    }

    /// The data of an `x`, `L` or `K` header is in: record what it says about the next entry.
    fn on_special_data(&mut self, special: SpecialFile) -> Result<(), TarError> {
        if special.content.len() as u64 > MAX_SPECIAL_FILE_SIZE {
            return Err(TarError::SpecialFileTooLong {
                offset: special.header_offset,
                name: lossy_nonempty(&special.name),
                typeflag: special.typeflag,
                size: special.size as i64,
            });
        }
        match special.kind {
            SpecialKind::Pax => {
                let records =
                    pax::parse_records(&special.content).map_err(|problem| TarError::InvalidPaxHeader {
                        offset: special.header_offset,
                        name: lossy_nonempty(&special.name),
                        reason: problem.describe(),
                    })?;
                // Each `x` header replaces the records of an earlier one, as in Go.
                self.pending.pax = Some(records);
            }
            SpecialKind::LongName => {
                self.pending.long_name = goparse::parse_string(&special.content).to_vec()
            }
            SpecialKind::LongLink => {
                self.pending.long_link = goparse::parse_string(&special.content).to_vec()
            }
        }
        self.state = State::Padding { remaining: block_padding(special.size) };
        Ok(())
    }

    /// A header that is not a meta header: what Go's `Next()` returns, then soci's checks on it.
    fn on_entry(&mut self, header: RawHeader, offset: u64) -> Result<(), TarError> {
        let pending = std::mem::take(&mut self.pending);
        let records = pending.pax.unwrap_or_default();
        let header_name = lossy_nonempty(&header.name);
        let merged = pax::merge(header, &records).map_err(|bad| TarError::InvalidPaxValue {
            offset,
            name: header_name,
            key: lossy(&bad.key),
            value: lossy(&bad.value),
        })?;
        let mut header = merged.header;
        if !pending.long_name.is_empty() {
            header.name = pending.long_name;
        }
        if !pending.long_link.is_empty() {
            header.linkname = pending.long_link;
        }
        if header.typeflag == 0 {
            // Legacy archives mark directories with a trailing slash.
            header.typeflag = if header.name.ends_with(b"/") { b'5' } else { b'0' };
        }
        let size = data_size(&header).ok_or_else(|| TarError::NegativeSize {
            offset,
            name: lossy_nonempty(&header.name),
            size: header.size,
        })?;
        let Some(entry_type) = EntryType::from_typeflag(header.typeflag) else {
            return Err(TarError::UnsupportedEntry {
                offset,
                name: lossy(&header.name),
                typeflag: header.typeflag,
            });
        };
        if pax::is_gnu_sparse(&records) {
            let name = pax::gnu_sparse_name(&records).unwrap_or(&header.name);
            return Err(TarError::SparseEntry { offset, name: lossy(name) });
        }

        self.entries.push(FileMetadata {
            name: header.name,
            entry_type,
            uncompressed_offset: UncompressedOffset(self.pos),
            // Header-only types keep their size field; a negative one is stored with the same bits as Go's int64.
            uncompressed_size: header.size as u64,
            linkname: header.linkname,
            mode: header.mode,
            // soci stores uint32(hdr.Uid) of Go's int.
            uid: header.uid as u32,
            gid: header.gid as u32,
            uname: header.uname,
            gname: header.gname,
            mod_time: format_mod_time(merged.mtime.0, merged.mtime.1),
            devmajor: header.devmajor,
            devminor: header.devminor,
            pax_records: records.into_iter().map(|(key, value)| PaxRecord { key, value }).collect(),
        });
        self.state = State::Data { remaining: size, padding: block_padding(size) };
        Ok(())
    }
}

/// The bytes of data that follow a header (Go's `handleRegularFile`): none for header-only types whatever the
/// size field says; `None` when the size is negative.
fn data_size(header: &RawHeader) -> Option<u64> {
    if header::is_header_only(header.typeflag) {
        Some(0)
    } else {
        u64::try_from(header.size).ok()
    }
}
