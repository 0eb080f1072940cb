//! Size fields of header-only entries, judged by soci-snapshotter's own code: `toc_builder.go`
//! (`metadataFromTarReader`) stores `hdr.Size` as it is, negative included, and `ztoc_marshaler.go`
//! (`flatbufferToTOC`) accepts any size as long as, sorted by offset, no entry starts before
//! `AlignToTarBlock(previous offset + previous size)`. We write and read exactly what soci does, and
//! refuse to write a zTOC that soci's reader would reject.

use std::io::Cursor;

use ztoc::codec::{decode, encode, DecodeError};
use ztoc::extract::{extract_entry, find_entry, resolve_regular};
use ztoc::tar::TarError;
use ztoc::{build_ztoc, BuildOptions, Error, LayerFormat, Ztoc, MAX_SPAN_SIZE};

/// One tar entry to write: name, typeflag, data, the raw 12-byte size field (`None`: the data's
/// length in octal) and PAX records.
struct Entry<'a> {
    name: &'a str,
    typeflag: u8,
    data: &'a [u8],
    size_field: Option<[u8; 12]>,
    pax: &'a [(&'a str, &'a [u8])],
    link: &'a str,
}

/// Base-256 (GNU) encoding of a signed size, as Go's `formatNumeric` writes it.
fn base256(value: i64) -> [u8; 12] {
    let mut field = [if value < 0 { 0xff } else { 0 }; 12];
    field[4..].copy_from_slice(&value.to_be_bytes());
    field[0] |= 0x80;
    field
}

fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        if !entry.pax.is_empty() {
            builder.append_pax_extensions(entry.pax.iter().copied()).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_path(entry.name).unwrap();
        header.set_entry_type(tar::EntryType::new(entry.typeflag));
        header.set_mode(0o755);
        header.set_mtime(1_700_000_000);
        header.set_size(entry.data.len() as u64);
        if !entry.link.is_empty() {
            header.set_link_name(entry.link).unwrap();
        }
        if let Some(field) = entry.size_field {
            header.as_mut_bytes()[124..136].copy_from_slice(&field);
        }
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn entry<'a>(name: &'a str, typeflag: u8) -> Entry<'a> {
    Entry { name, typeflag, data: b"", size_field: None, pax: &[], link: "" }
}

fn build(layer: &[u8], format: LayerFormat) -> Result<Ztoc, Error> {
    let options = BuildOptions { span_size: 1024, format: Some(format), ..BuildOptions::new("test") };
    build_ztoc(layer, &options)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    testkit::gzip(data, &testkit::GzipOptions::default())
}

#[test]
fn negative_sizes_of_header_only_entries_are_written_and_read_as_soci_does() {
    let layer = tar(&[
        Entry { size_field: Some(base256(-1)), ..entry("dir/", b'5') },
        Entry { size_field: Some(base256(-4096)), link: "file", ..entry("sym", b'2') },
        Entry { pax: &[("size", b"-3")], link: "file", ..entry("pax-sym", b'2') },
        Entry { data: b"hello, soci", ..entry("file", b'0') },
        Entry { size_field: Some(base256(i64::MIN)), link: "file", ..entry("hard", b'1') },
        Entry { data: b"tail", ..entry("last", b'0') },
    ]);
    for (blob, format) in [(gzip(&layer), LayerFormat::Gzip), (layer.clone(), LayerFormat::Tar)] {
        let built = build(&blob, format).unwrap();
        let bytes = encode(&built);
        let decoded =
            decode(&bytes).unwrap_or_else(|e| panic!("{format:?}: we cannot read our own zTOC: {e}"));
        assert_eq!(decoded, built, "{format:?}");
        assert!(encode(&decoded) == bytes, "{format:?}: re-encoding changes the bytes");

        // The fields hold `int64(hdr.Size)`, as in soci's zTOC.
        let sizes: Vec<(&[u8], i64)> =
            decoded.toc.metadata.iter().map(|e| (&e.name[..], e.size_field())).collect();
        assert_eq!(
            sizes,
            [
                (&b"dir/"[..], -1),
                (b"sym", -4096),
                (b"pax-sym", -3),
                (b"file", 11),
                (b"hard", i64::MIN),
                (b"last", 4)
            ]
        );

        // Everything else still works through such a zTOC.
        for (name, content) in [("hard", &b"hello, soci"[..]), ("last", b"tail")] {
            let entry = resolve_regular(&decoded, find_entry(&decoded, name).unwrap()).unwrap();
            let mut out = Vec::new();
            extract_entry(&mut Cursor::new(&blob), &decoded, entry, &mut out).unwrap();
            assert_eq!(out, content, "{format:?} {name}");
        }
        let dir = find_entry(&decoded, "dir").unwrap();
        assert!(matches!(resolve_regular(&decoded, dir), Err(Error::NotRegular { kind: "dir", .. })));
    }
}

#[test]
fn a_size_field_that_runs_over_the_next_header_is_refused_as_soci_refuses_it() {
    // A directory whose size field says 513 bytes: soci writes it, then its reader rejects the zTOC
    // (the next entry starts 512 bytes later, before AlignToTarBlock(offset + 513)).
    let over = tar(&[
        Entry { size_field: Some(base256(513)), ..entry("dir/", b'5') },
        Entry { data: b"x", ..entry("file", b'0') },
    ]);
    let error = build(&gzip(&over), LayerFormat::Gzip).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Tar(TarError::SizeOverrunsNextEntry { name, data_offset: 512, size: 513, next_offset: 1024 })
                if name == "dir/"
        ),
        "{error}"
    );

    // 512 bytes still end at the next header: soci reads that back, and so do we.
    let fits = tar(&[
        Entry { size_field: Some(base256(512)), ..entry("dir/", b'5') },
        Entry { data: b"x", ..entry("file", b'0') },
    ]);
    let ztoc = build(&gzip(&fits), LayerFormat::Gzip).unwrap();
    assert_eq!(decode(&encode(&ztoc)).unwrap(), ztoc);

    // The reader applies soci's rule to zTOCs from anywhere, in offset order.
    let mut overlapping = ztoc.clone();
    overlapping.toc.metadata[0].uncompressed_size = 513;
    assert_eq!(
        decode(&encode(&overlapping)),
        Err(DecodeError::EntryOverlap { index: 1, offset: 1024, previous_end: 1536 })
    );
    let mut reordered = ztoc.clone();
    reordered.toc.metadata.reverse();
    assert_eq!(decode(&encode(&reordered)).unwrap(), reordered, "stored order does not matter");
}

#[test]
fn span_sizes_the_format_cannot_hold_are_refused() {
    let layer = tar(&[Entry { data: b"x", ..entry("file", b'0') }]);
    for (blob, format) in [(gzip(&layer), LayerFormat::Gzip), (layer.clone(), LayerFormat::Tar)] {
        for span_size in [MAX_SPAN_SIZE + 1, u64::MAX] {
            let options = BuildOptions { span_size, format: Some(format), ..BuildOptions::new("test") };
            assert!(
                matches!(build_ztoc(&blob[..], &options), Err(Error::SpanSizeTooLarge(size)) if size == span_size)
            );
        }
        let options =
            BuildOptions { span_size: MAX_SPAN_SIZE, format: Some(format), ..BuildOptions::new("test") };
        let ztoc = build_ztoc(&blob[..], &options).unwrap();
        let decoded = decode(&encode(&ztoc)).unwrap();
        assert_eq!(decoded.compression_info.zinfo.span_size(), MAX_SPAN_SIZE, "{format:?}");
        assert_eq!(decoded.compression_info.zinfo.span_count(), 1, "{format:?}");
    }
}
