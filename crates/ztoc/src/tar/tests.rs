//! Walker tests: hand-built archives for each Go behaviour, archives from the `tar` crate, and the rules_img corpus.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::*;

const MTIME: u64 = 1_700_000_000;

/// A header block built field by field; [`Block::bytes`] fills in the checksum.
#[derive(Clone)]
struct Block([u8; BLOCK_SIZE]);

impl Block {
    fn v7(name: &[u8], typeflag: u8, size: u64) -> Block {
        let mut block = Block([0; BLOCK_SIZE])
            .text(0..100, name)
            .octal(100..108, 0o644)
            .octal(108..116, 0)
            .octal(116..124, 0)
            .octal(124..136, size)
            .octal(136..148, MTIME);
        block.0[156] = typeflag;
        block
    }

    fn ustar(name: &[u8], typeflag: u8, size: u64) -> Block {
        Block::v7(name, typeflag, size)
            .text(257..263, b"ustar\0")
            .text(263..265, b"00")
            .text(265..297, b"root")
            .text(297..329, b"wheel")
            .octal(329..337, 0)
            .octal(337..345, 0)
    }

    fn gnu(name: &[u8], typeflag: u8, size: u64) -> Block {
        Block::ustar(name, typeflag, size).text(257..263, b"ustar ").text(263..265, b" \0")
    }

    /// Writes `bytes` at the start of `range` and NULs over the rest of it.
    fn text(mut self, range: Range<usize>, bytes: &[u8]) -> Block {
        assert!(bytes.len() <= range.len(), "field too small");
        self.0[range.clone()].fill(0);
        self.0[range.start..range.start + bytes.len()].copy_from_slice(bytes);
        self
    }

    /// Zero-padded octal with a NUL terminator, as Go's writer does.
    fn octal(self, range: Range<usize>, value: u64) -> Block {
        let width = range.len() - 1;
        self.text(range, format!("{value:0width$o}").as_bytes())
    }

    /// GNU base-256: two's complement, top bit of the first byte set.
    fn base256(mut self, range: Range<usize>, value: i64) -> Block {
        let field = &mut self.0[range];
        field.fill(if value < 0 { 0xff } else { 0 });
        let len = field.len();
        field[len - 8..].copy_from_slice(&value.to_be_bytes());
        field[0] |= 0x80;
        self
    }

    fn bytes(&self) -> [u8; BLOCK_SIZE] {
        let mut block = self.0;
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }
}

/// Go's `formatPAXRecord`.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3;
    let mut size = body_len + body_len.to_string().len();
    if size.to_string().len() + body_len != size {
        size = size.to_string().len() + body_len;
    }
    let mut record = format!("{size} ").into_bytes();
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    assert_eq!(record.len(), size);
    record
}

fn pax_data(records: &[(&str, &[u8])]) -> Vec<u8> {
    records.iter().flat_map(|(key, value)| pax_record(key.as_bytes(), value)).collect()
}

/// A tar stream assembled block by block.
#[derive(Default)]
struct Archive(Vec<u8>);

impl Archive {
    /// A header, its data and the padding to the next block.
    fn entry(mut self, block: Block, data: &[u8]) -> Archive {
        self.0.extend_from_slice(&block.bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(BLOCK_SIZE), 0);
        self
    }

    fn pax(self, records: &[(&str, &[u8])]) -> Archive {
        let data = pax_data(records);
        self.entry(Block::ustar(b"PaxHeaders.0/entry", b'x', data.len() as u64), &data)
    }

    fn raw(mut self, bytes: &[u8]) -> Archive {
        self.0.extend_from_slice(bytes);
        self
    }

    fn end(self) -> Vec<u8> {
        self.raw(&[0; 2 * BLOCK_SIZE]).0
    }
}

type Walked = Result<(Vec<FileMetadata>, u64), TarError>;

fn walk_chunked(data: &[u8], chunk: usize) -> Walked {
    let mut walker = TarWalker::new();
    for piece in data.chunks(chunk.max(1)) {
        walker.feed(piece)?;
    }
    walker.finish().map(|(entries, size)| (entries, size.get()))
}

/// Walks `data` in pieces of 1, 7, 512, 4096 bytes and whole, requires the same outcome from each.
fn walk(data: &[u8]) -> Walked {
    let whole = walk_chunked(data, data.len());
    for chunk in [1, 7, 511, 512, 513, 4096] {
        assert_eq!(walk_chunked(data, chunk), whole, "chunks of {chunk} bytes disagree with one piece");
    }
    whole
}

fn walk_ok(data: &[u8]) -> (Vec<FileMetadata>, u64) {
    walk(data).unwrap_or_else(|error| panic!("walk failed: {error}"))
}

fn names(entries: &[FileMetadata]) -> Vec<String> {
    entries.iter().map(|entry| lossy(&entry.name)).collect()
}

fn records(entry: &FileMetadata) -> Vec<(String, String)> {
    entry.pax_records.iter().map(|r| (lossy(&r.key), lossy(&r.value))).collect()
}

#[test]
fn plain_ustar_entries() {
    let data = Archive::default()
        .entry(Block::ustar(b"dir/", b'5', 0).octal(100..108, 0o755), b"")
        .entry(Block::ustar(b"dir/file", b'0', 5).octal(108..116, 1000).octal(116..124, 100), b"hello")
        .entry(Block::ustar(b"dir/link", b'2', 0).text(157..257, b"file"), b"")
        .entry(Block::ustar(b"dev", b'3', 0).octal(329..337, 1).octal(337..345, 3), b"")
        .end();
    let (entries, size) = walk_ok(&data);
    assert_eq!(size, 5 * 512 + 1024);
    assert_eq!(names(&entries), ["dir/", "dir/file", "dir/link", "dev"]);
    let file = &entries[1];
    assert_eq!(file.entry_type, EntryType::Reg);
    assert_eq!(file.uncompressed_offset, UncompressedOffset(1024));
    assert_eq!(file.uncompressed_size, 5);
    assert_eq!((file.uid, file.gid, file.mode), (1000, 100, 0o644));
    assert_eq!((file.uname.as_slice(), file.gname.as_slice()), (&b"root"[..], &b"wheel"[..]));
    assert_eq!(file.mod_time, "2023-11-14T22:13:20Z");
    assert!(file.pax_records.is_empty());
    assert_eq!(entries[0].mode, 0o755);
    assert_eq!(entries[0].entry_type, EntryType::Dir);
    assert_eq!(entries[2].linkname, b"file");
    assert_eq!(entries[2].uncompressed_offset, UncompressedOffset(2048));
    assert_eq!((entries[3].entry_type, entries[3].devmajor, entries[3].devminor), (EntryType::Char, 1, 3));
}

#[test]
fn ustar_prefix_is_joined() {
    let data = Archive::default().entry(Block::ustar(b"file.txt", b'0', 0).text(345..500, b"a/b"), b"").end();
    assert_eq!(names(&walk_ok(&data).0), ["a/b/file.txt"]);
}

#[test]
fn v7_header_has_no_owner_names_devices_or_prefix() {
    let data = Archive::default()
        .entry(
            Block::v7(b"old", b'0', 3)
                .text(265..297, b"root")
                .text(329..337, b"garbage!")
                .text(345..500, b"pre"),
            b"abc",
        )
        .end();
    let (entries, _) = walk_ok(&data);
    assert_eq!(names(&entries), ["old"]);
    assert!(entries[0].uname.is_empty());
    assert_eq!(entries[0].devmajor, 0);
}

#[test]
fn gnu_header_ignores_prefix_area() {
    let data = Archive::default().entry(Block::gnu(b"name", b'0', 0), b"").end();
    assert_eq!(names(&walk_ok(&data).0), ["name"]);
}

#[test]
fn nul_typeflag_is_reg_or_dir() {
    // A '\0' entry ending in "/" becomes a directory: header-only, so its size field is reported but no data follows.
    let data = Archive::default()
        .entry(Block::ustar(b"legacy-dir/", 0, 100), b"")
        .entry(Block::ustar(b"legacy-file", 0, 4), b"data")
        .end();
    let (entries, size) = walk_ok(&data);
    assert_eq!(names(&entries), ["legacy-dir/", "legacy-file"]);
    assert_eq!(entries[0].entry_type, EntryType::Dir);
    assert_eq!(entries[0].uncompressed_size, 100);
    assert_eq!(entries[1].entry_type, EntryType::Reg);
    assert_eq!(entries[1].uncompressed_offset, UncompressedOffset(1024));
    assert_eq!(size, 3 * 512 + 1024);
}

#[test]
fn header_only_types_skip_no_data() {
    // A hard link with a size field: Go skips nothing, soci records the size.
    let data = Archive::default()
        .entry(Block::ustar(b"hard", b'1', 700).text(157..257, b"target"), b"")
        .entry(Block::ustar(b"next", b'0', 0), b"")
        .end();
    let (entries, size) = walk_ok(&data);
    assert_eq!(entries[0].uncompressed_size, 700);
    assert_eq!(entries[0].entry_type, EntryType::Hardlink);
    assert_eq!(entries[1].uncompressed_offset, UncompressedOffset(1024));
    assert_eq!(size, 2048);
}

#[test]
fn pax_overrides_and_records() {
    let long_name = "p/".repeat(80) + "file";
    let data = Archive::default()
        .pax(&[
            ("path", long_name.as_bytes()),
            ("size", b"5"),
            ("mtime", b"1700000000.123456789"),
            ("atime", b"1700000001.5"),
            ("uid", b"70000"),
            ("gid", b"4294967297"),
            ("uname", b""),
            ("gname", b"staff"),
            ("SCHILY.xattr.user.comment", b"hi"),
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
        ])
        .entry(Block::ustar(b"short", b'0', 0), b"12345")
        .pax(&[("linkpath", b"/very/long/target"), ("mtime", b"-1.25")])
        .entry(Block::ustar(b"link", b'2', 0).text(157..257, b"short-target"), b"")
        .entry(Block::ustar(b"plain", b'0', 0), b"")
        .end();
    let (entries, size) = walk_ok(&data);
    assert_eq!(names(&entries), [long_name.as_str(), "link", "plain"]);

    let file = &entries[0];
    assert_eq!(file.uncompressed_offset, UncompressedOffset(3 * 512));
    assert_eq!(file.uncompressed_size, 5);
    assert_eq!(file.mod_time, "2023-11-14T22:13:20.123456789Z");
    assert_eq!((file.uid, file.gid), (70000, 1));
    // An empty PAX value does not override the header, but is still a record.
    assert_eq!(file.uname, b"root");
    assert_eq!(file.gname, b"staff");
    let keys: Vec<String> = records(file).into_iter().map(|(key, _)| key).collect();
    assert_eq!(
        keys,
        [
            "SCHILY.xattr.security.capability",
            "SCHILY.xattr.user.comment",
            "atime",
            "gid",
            "gname",
            "mtime",
            "path",
            "size",
            "uid",
            "uname"
        ]
    );
    assert_eq!(file.pax_records[0].value, b"\x01\x00\x00\x02");

    let link = &entries[1];
    assert_eq!(link.linkname, b"/very/long/target");
    assert_eq!(link.mod_time, "1969-12-31T23:59:58.75Z");
    assert_eq!(link.uncompressed_offset, UncompressedOffset(7 * 512));
    // Records belong to the next entry only.
    assert!(entries[2].pax_records.is_empty());
    assert_eq!(entries[2].mod_time, "2023-11-14T22:13:20Z");
    assert_eq!(size, 8 * 512 + 1024);
}

#[test]
fn a_later_pax_header_replaces_an_earlier_one() {
    let data = Archive::default()
        .pax(&[("path", b"first"), ("SCHILY.xattr.user.a", b"1")])
        .pax(&[("uid", b"5")])
        .entry(Block::ustar(b"name", b'0', 0), b"")
        .end();
    let (entries, _) = walk_ok(&data);
    assert_eq!(names(&entries), ["name"]);
    assert_eq!(records(&entries[0]), [("uid".to_string(), "5".to_string())]);
    assert_eq!(entries[0].uid, 5);
}

#[test]
fn gnu_long_name_and_link() {
    let long_name = "n".repeat(150);
    let long_link = "l".repeat(120);
    let mut name_data = long_name.clone().into_bytes();
    name_data.push(0);
    let data = Archive::default()
        .entry(Block::gnu(b"././@LongLink", b'L', name_data.len() as u64), &name_data)
        .entry(Block::gnu(b"././@LongLink", b'K', long_link.len() as u64), long_link.as_bytes())
        .entry(Block::gnu(b"truncated-name", b'2', 0).text(157..257, b"truncated-link"), b"")
        .entry(Block::gnu(b"after", b'0', 1), b"x")
        .end();
    let (entries, size) = walk_ok(&data);
    assert_eq!(names(&entries), [long_name.as_str(), "after"]);
    assert_eq!(entries[0].linkname, long_link.as_bytes());
    assert!(entries[0].pax_records.is_empty());
    assert_eq!(entries[0].uncompressed_offset, UncompressedOffset(5 * 512));
    assert_eq!(entries[1].uncompressed_offset, UncompressedOffset(6 * 512));
    assert_eq!(size, 7 * 512 + 1024);
}

#[test]
fn empty_gnu_long_name_keeps_the_header_name() {
    let data = Archive::default()
        .entry(Block::gnu(b"././@LongLink", b'L', 1), b"\0")
        .entry(Block::gnu(b"header-name", b'0', 0), b"")
        .end();
    assert_eq!(names(&walk_ok(&data).0), ["header-name"]);
}

#[test]
fn base256_numbers() {
    let data = Archive::default()
        .entry(
            Block::gnu(b"big", b'0', 0)
                .base256(124..136, 600)
                .base256(108..116, 3_000_000_000)
                .base256(136..148, -1),
            &[7; 600],
        )
        .entry(Block::gnu(b"next", b'0', 0), b"")
        .end();
    let (entries, size) = walk_ok(&data);
    assert_eq!(entries[0].uncompressed_size, 600);
    assert_eq!(entries[0].uid, 3_000_000_000);
    assert_eq!(entries[0].mod_time, "1969-12-31T23:59:59Z");
    assert_eq!(entries[1].uncompressed_offset, UncompressedOffset(4 * 512));
    assert_eq!(size, 4 * 512 + 1024);
}

#[test]
fn end_of_archive_variants() {
    let body = Archive::default().entry(Block::ustar(b"f", b'0', 3), b"abc").0;

    // Two zero blocks.
    let (entries, size) = walk_ok(&Archive(body.clone()).end());
    assert_eq!((entries.len(), size), (1, 2048));

    // One zero block, then the stream ends: Go counts the zero block.
    let (_, size) = walk_ok(&Archive(body.clone()).raw(&[0; 512]).0);
    assert_eq!(size, 1536);

    // No end marker.
    let (entries, size) = walk_ok(&body);
    assert_eq!((entries.len(), size), (1, 1024));

    // The stream ends inside the padding after the data: Go's tryReadFull reports io.EOF, a clean end.
    let (_, size) = walk_ok(&body[..512 + 3 + 100]);
    assert_eq!(size, 615);
    let (_, size) = walk_ok(&body[..512 + 3]);
    assert_eq!(size, 515);

    // Empty stream.
    assert_eq!(walk_ok(b""), (Vec::new(), 0));

    // Record padding after the end marker is not counted, and not read.
    let mut padded = Archive(body.clone()).end();
    padded.extend_from_slice(&[0xAA; 8192]);
    let (_, size) = walk_ok(&padded);
    assert_eq!(size, 2048);
}

#[test]
fn is_done_after_two_zero_blocks() {
    let data = Archive::default().entry(Block::ustar(b"f", b'0', 0), b"").end();
    let mut walker = TarWalker::new();
    walker.feed(&data[..1024]).unwrap();
    assert!(!walker.is_done());
    walker.feed(&data[1024..1500]).unwrap();
    assert!(!walker.is_done());
    walker.feed(&data[1500..]).unwrap();
    assert!(walker.is_done());
    walker.feed(b"garbage after the archive").unwrap();
    let (entries, size) = walker.finish().unwrap();
    assert_eq!((entries.len(), size.get()), (1, 1536));
}

#[test]
fn a_stream_ending_after_a_pax_header_is_a_clean_end() {
    // Go's next() loops back after the x header and reads the padding / next header with io.EOF.
    let body = Archive::default().entry(Block::ustar(b"f", b'0', 0), b"").pax(&[("path", b"never")]).0;
    let (entries, size) = walk_ok(&body);
    assert_eq!(names(&entries), ["f"]);
    assert_eq!(size, body.len() as u64);
    let data_end = 1024 + pax_record(b"path", b"never").len();
    let (_, size) = walk_ok(&body[..data_end]);
    assert_eq!(size, data_end as u64);
}

#[test]
fn truncation_errors() {
    let body = Archive::default().entry(Block::ustar(b"f", b'0', 600), &[1; 600]).end();
    assert_eq!(walk(&body[..100]), Err(TarError::TruncatedHeader { offset: 0, received: 100 }));
    assert_eq!(
        walk(&body[..512 + 10]),
        Err(TarError::TruncatedData { offset: 522, name: Some("f".into()), missing: 590 })
    );
    // After one zero block, a partial block is ErrUnexpectedEOF, even if it is all zeros.
    assert_eq!(walk(&body[..1536 + 512 + 5]), Err(TarError::TruncatedHeader { offset: 2048, received: 5 }));

    let pax = Archive::default().pax(&[("path", b"abc")]).0;
    assert_eq!(
        walk(&pax[..515]),
        Err(TarError::TruncatedData { offset: 515, name: Some("PaxHeaders.0/entry".into()), missing: 9 })
    );
}

#[test]
fn header_errors() {
    let good = Block::ustar(b"file", b'0', 0).bytes();
    let mut bad_checksum = good;
    bad_checksum[0] = b'F';
    assert_eq!(
        walk(&Archive::default().raw(&bad_checksum).end()),
        Err(TarError::BadChecksum { offset: 0, name: Some("File".into()) })
    );

    let zero_then_data = Archive::default().raw(&[0; 512]).raw(&good).end();
    assert_eq!(walk(&zero_then_data), Err(TarError::DataAfterZeroBlock { offset: 512 }));

    let bad_number =
        Archive::default().entry(Block::ustar(b"file", b'0', 0).text(108..116, b"12x"), b"").end();
    assert_eq!(
        walk(&bad_number),
        Err(TarError::InvalidNumber { offset: 0, name: Some("file".into()), field: "uid" })
    );

    let overflow = Archive::default()
        .entry(Block::gnu(b"file", b'0', 0).base256(124..136, 0).text(127..128, b"\x01"), b"");
    assert!(matches!(walk(&overflow.end()), Err(TarError::InvalidNumber { field: "size", .. })));
}

#[test]
fn negative_sizes() {
    let data = Archive::default().entry(Block::gnu(b"neg", b'0', 0).base256(124..136, -1), b"").end();
    assert_eq!(walk(&data), Err(TarError::NegativeSize { offset: 0, name: Some("neg".into()), size: -1 }));
    // Header-only types may have any size field.
    let data = Archive::default().entry(Block::gnu(b"sym", b'2', 0).base256(124..136, -1), b"").end();
    assert_eq!(walk_ok(&data).0[0].uncompressed_size, u64::MAX);
    // PAX size applies before the check.
    let data = Archive::default().pax(&[("size", b"-5")]).entry(Block::ustar(b"f", b'0', 0), b"").end();
    assert_eq!(walk(&data), Err(TarError::NegativeSize { offset: 1024, name: Some("f".into()), size: -5 }));
}

#[test]
fn pax_errors() {
    let data = Archive::default()
        .entry(Block::ustar(b"PaxHeaders/bad", b'x', 10), b"10 path=ab")
        .entry(Block::ustar(b"f", b'0', 0), b"")
        .end();
    assert!(matches!(
        walk(&data),
        Err(TarError::InvalidPaxHeader { offset: 0, ref name, .. }) if name.as_deref() == Some("PaxHeaders/bad")
    ));

    for (key, value) in
        [("uid", "abc"), ("gid", "1.5"), ("size", "9223372036854775808"), ("mtime", "1.x"), ("ctime", ".1")]
    {
        let data =
            Archive::default().pax(&[(key, value.as_bytes())]).entry(Block::ustar(b"f", b'0', 0), b"").end();
        assert_eq!(
            walk(&data),
            Err(TarError::InvalidPaxValue {
                offset: 1024,
                name: Some("f".into()),
                key: key.into(),
                value: value.into()
            })
        );
    }

    // Empty values are skipped by mergePAX, so they never fail to parse.
    let data =
        Archive::default().pax(&[("uid", b""), ("mtime", b"")]).entry(Block::ustar(b"f", b'0', 0), b"").end();
    let (entries, _) = walk_ok(&data);
    assert_eq!(entries[0].mod_time, "2023-11-14T22:13:20Z");
    assert_eq!(records(&entries[0]).len(), 2);
}

#[test]
fn special_files_over_one_mebibyte_fail() {
    let big = vec![b'a'; (1 << 20) + 1];
    let data = Archive::default().entry(Block::gnu(b"././@LongLink", b'L', big.len() as u64), &big).end();
    let expected = TarError::SpecialFileTooLong {
        offset: 0,
        name: Some("././@LongLink".into()),
        typeflag: b'L',
        size: big.len() as i64,
    };
    for chunk in [4096, data.len()] {
        assert_eq!(walk_chunked(&data, chunk), Err(expected.clone()));
    }
    // Exactly 1 MiB is allowed.
    let name = vec![b'a'; 1 << 20];
    let data = Archive::default()
        .entry(Block::gnu(b"././@LongLink", b'L', name.len() as u64), &name)
        .entry(Block::gnu(b"short", b'0', 0), b"")
        .end();
    let (entries, _) = walk_chunked(&data, 65536).unwrap();
    assert_eq!(entries[0].name, name);
}

#[test]
fn unsupported_typeflags() {
    let global = Archive::default()
        .entry(Block::ustar(b"f", b'0', 0), b"")
        .entry(Block::ustar(b"GlobalHead.0.0", b'g', 0), b"")
        .end();
    let error = walk(&global).unwrap_err();
    assert_eq!(
        error,
        TarError::UnsupportedEntry { offset: 512, name: "GlobalHead.0.0".into(), typeflag: b'g' }
    );
    let message = error.to_string();
    assert!(
        message.contains("GlobalHead.0.0")
            && message.contains("'g'")
            && message.contains("soci cannot index")
    );

    let sparse = Archive::default().entry(Block::gnu(b"sparse", b'S', 0), b"").end();
    assert_eq!(
        walk(&sparse),
        Err(TarError::UnsupportedEntry { offset: 0, name: "sparse".into(), typeflag: b'S' })
    );

    // The name in the error is the one Go reports, after PAX and long names.
    let contiguous =
        Archive::default().pax(&[("path", b"real/name")]).entry(Block::ustar(b"c", b'7', 0), b"").end();
    assert_eq!(
        walk(&contiguous),
        Err(TarError::UnsupportedEntry { offset: 1024, name: "real/name".into(), typeflag: b'7' })
    );
}

#[test]
fn pax_sparse_files_are_rejected() {
    let v1 = Archive::default()
        .pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"real-sparse"),
            ("GNU.sparse.realsize", b"1048576"),
        ])
        .entry(Block::ustar(b"GNUSparseFile.0/real-sparse", b'0', 512), &[b'\n'; 512])
        .end();
    let error = walk(&v1).unwrap_err();
    assert_eq!(error, TarError::SparseEntry { offset: 1024, name: "real-sparse".into() });
    assert!(error.to_string().contains("sparse"));

    let v0 = Archive::default()
        .pax(&[
            ("GNU.sparse.size", b"100"),
            ("GNU.sparse.numblocks", b"1"),
            ("GNU.sparse.offset", b"0"),
            ("GNU.sparse.numbytes", b"10"),
        ])
        .entry(Block::ustar(b"s", b'0', 10), &[1; 10])
        .end();
    assert_eq!(walk(&v0), Err(TarError::SparseEntry { offset: 1024, name: "s".into() }));

    // Go reads an unknown sparse version as a regular file; its records are kept.
    let unknown = Archive::default()
        .pax(&[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0")])
        .entry(Block::ustar(b"odd", b'0', 1), b"x")
        .end();
    let (entries, _) = walk_ok(&unknown);
    assert_eq!(records(&entries[0]).len(), 2);
}

#[test]
fn errors_are_sticky() {
    let data = Archive::default().raw(&[0; 512]).raw(&Block::ustar(b"f", b'0', 0).bytes()).end();
    let mut walker = TarWalker::new();
    let first = walker.feed(&data).unwrap_err();
    assert_eq!(walker.feed(b"more").unwrap_err(), first);
    assert_eq!(walker.finish().unwrap_err(), first);
}

#[test]
fn offsets_match_the_tar_crate() {
    fn add(
        builder: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o640);
        header.set_mtime(MTIME);
        match link {
            Some(target) => builder.append_link(&mut header, name, target).unwrap(),
            None => builder.append_data(&mut header, name, data).unwrap(),
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    add(&mut builder, "top/", tar::EntryType::Directory, b"", None);
    add(&mut builder, &"long/".repeat(40), tar::EntryType::Directory, b"", None);
    add(&mut builder, "top/a", tar::EntryType::Regular, &[5; 1000], None);
    add(&mut builder, "top/b", tar::EntryType::Regular, &[6; 512], None);
    add(&mut builder, "top/sym", tar::EntryType::Symlink, b"", Some(&"t".repeat(300)));
    add(&mut builder, &("x".repeat(200) + "/file"), tar::EntryType::Regular, b"hello", None);
    add(&mut builder, "top/hard", tar::EntryType::Link, b"", Some("top/a"));
    builder.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])]).unwrap();
    add(&mut builder, "top/xattr", tar::EntryType::Regular, b"data", None);
    let data = builder.into_inner().unwrap();

    let (entries, size) = walk_ok(&data);
    let mut archive = tar::Archive::new(&data[..]);
    /// Name, data offset, size and link target.
    type Summary = (Vec<u8>, u64, u64, Option<Vec<u8>>);
    let theirs: Vec<Summary> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.path_bytes().into_owned(),
                entry.raw_file_position(),
                entry.size(),
                entry.link_name_bytes().map(|link| link.into_owned()),
            )
        })
        .collect();
    let ours: Vec<Summary> = entries
        .iter()
        .map(|entry| {
            let link = (!entry.linkname.is_empty()).then(|| entry.linkname.clone());
            (entry.name.clone(), entry.uncompressed_offset.get(), entry.uncompressed_size, link)
        })
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(size, data.len() as u64);
    assert_eq!(records(entries.last().unwrap()), [("SCHILY.xattr.user.k".to_string(), "v".to_string())]);
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rules_img")
}

fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(file).read_to_end(&mut out).unwrap();
    out
}

/// `(name, input)` of every vector in the corpus manifest.
fn corpus_vectors() -> Vec<(String, String)> {
    let manifest = std::fs::read(corpus_dir().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    manifest
        .as_array()
        .unwrap()
        .iter()
        .map(|vector| {
            (vector["name"].as_str().unwrap().to_string(), vector["input"].as_str().unwrap().to_string())
        })
        .collect()
}

fn walk_corpus_layer(tar: &[u8]) -> (Vec<FileMetadata>, u64) {
    let whole = walk_chunked(tar, tar.len()).unwrap();
    let chunks: &[usize] = if tar.len() < 200_000 { &[1, 7, 512, 65536] } else { &[4093, 65536, 262144] };
    for &chunk in chunks {
        assert_eq!(walk_chunked(tar, chunk).as_ref(), Ok(&whole), "chunks of {chunk} bytes");
    }
    whole
}

#[test]
fn corpus_layers_walk_like_the_tar_crate() {
    for (name, input) in corpus_vectors() {
        let tar = gunzip(&corpus_dir().join(&input));
        let (entries, size) = walk_corpus_layer(&tar);
        // Go's writer emits no record padding, so the archive ends with the two zero blocks.
        assert_eq!(size, tar.len() as u64, "{name}");
        let mut archive = tar::Archive::new(&tar[..]);
        let theirs: Vec<(Vec<u8>, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (entry.path_bytes().into_owned(), entry.raw_file_position())
            })
            .collect();
        let ours: Vec<(Vec<u8>, u64)> =
            entries.iter().map(|entry| (entry.name.clone(), entry.uncompressed_offset.get())).collect();
        assert_eq!(ours, theirs, "{name}");
    }
}

#[test]
fn corpus_meta_layer() {
    let tar = gunzip(&corpus_dir().join("meta.tar.gz"));
    let (entries, size) = walk_corpus_layer(&tar);
    assert_eq!(size, 11264);
    let find = |name: &str| entries.iter().find(|entry| entry.name == name.as_bytes()).unwrap();
    assert_eq!(entries[0].name, b"d/");
    let xattrs = find("d/withxattrs");
    assert_eq!((xattrs.uncompressed_offset.get(), xattrs.uncompressed_size, xattrs.mode), (6144, 3, 0o644));
    assert_eq!(
        records(xattrs),
        [
            ("SCHILY.xattr.security.selinux".to_string(), "unconfined_u".to_string()),
            ("SCHILY.xattr.user.comment".to_string(), "hi".to_string())
        ]
    );
    let hard = find("d/link-hard");
    assert_eq!(
        (hard.entry_type, hard.uncompressed_offset.get(), hard.linkname.as_slice()),
        (EntryType::Hardlink, 3072, &b"d/regular"[..])
    );
    let chardev = find("d/chardev");
    assert_eq!((chardev.entry_type, chardev.devmajor, chardev.devminor), (EntryType::Char, 1, 3));
    let regular = find("d/regular");
    assert_eq!((regular.uid, regular.gid, regular.mode), (1000, 1000, 0o4755));
    assert_eq!(
        (regular.uname.as_slice(), regular.mod_time.as_str()),
        (&b"alice"[..], "2009-02-13T23:31:30Z")
    );
}

/// Every corpus layer gives exactly the entries and size of the zTOC soci built for it.
#[test]
fn corpus_layers_match_soci_ztocs() {
    for (name, input) in corpus_vectors() {
        let tar = gunzip(&corpus_dir().join(&input));
        let (entries, size) = walk_corpus_layer(&tar);
        let ztoc_bytes = std::fs::read(corpus_dir().join(format!("{name}.ztoc"))).unwrap();
        let ztoc = crate::codec::decode(&ztoc_bytes).unwrap_or_else(|e| panic!("{name}.ztoc: {e}"));
        assert_eq!(size, ztoc.uncompressed_archive_size.get(), "{name}: uncompressed_archive_size");
        assert_eq!(entries.len(), ztoc.toc.metadata.len(), "{name}: entry count");
        for (ours, soci) in entries.iter().zip(&ztoc.toc.metadata) {
            assert_eq!(ours, soci, "{name}: entry {:?}", lossy(&soci.name));
        }
    }
}

/// Random field corruption with valid checksums: the walker must never panic, and chunking must not matter.
#[test]
fn corrupted_headers_never_panic() {
    let long_name = b"n".repeat(130);
    let pax = pax_data(&[("path", b"pax/name"), ("mtime", b"-3.5")]);
    let pieces: Vec<(Block, Vec<u8>)> = vec![
        (Block::ustar(b"PaxHeaders.0/a", b'x', pax.len() as u64), pax),
        (Block::ustar(b"a", b'0', 3), b"abc".to_vec()),
        (Block::gnu(b"././@LongLink", b'L', long_name.len() as u64), long_name),
        (Block::gnu(b"short", b'0', 0).base256(124..136, 700), vec![1; 700]),
        (Block::ustar(b"dir/", 0, 0), Vec::new()),
        (Block::v7(b"v7", b'2', 0), Vec::new()),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..1000 {
        let mut archive = Archive::default();
        for (block, data) in &pieces {
            let mut block = block.clone();
            let mut data = data.clone();
            for _ in 0..next() % 4 {
                let at = (next() % BLOCK_SIZE as u64) as usize;
                block.0[at] = next() as u8;
            }
            if !data.is_empty() && next() % 4 == 0 {
                let at = (next() % data.len() as u64) as usize;
                data[at] = next() as u8;
            }
            // Keep the declared size consistent with the data unless the size field itself was hit.
            archive = archive.entry(block, &data);
        }
        let data = archive.end();
        let cut = if next() % 3 == 0 { (next() % data.len() as u64) as usize } else { data.len() };
        let _ = walk(&data[..cut]);
    }
}
