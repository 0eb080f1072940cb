//! `extract` checks every span a file needs against its digest before it writes the file's first byte:
//! a corrupt span, wherever it lies in the file, leaves the output untouched.

use std::io::Cursor;

use testkit::{generate_layer, gzip, GzipOptions, LayerConfig};
use ztoc::extract::{extract_entry, find_entry};
use ztoc::{build_ztoc, BuildOptions, Error, LayerFormat, Ztoc};

fn built(blob: &[u8], format: LayerFormat) -> Ztoc {
    let options = BuildOptions { span_size: 4096, format: Some(format), ..BuildOptions::new("test") };
    build_ztoc(blob, &options).unwrap()
}

#[test]
fn a_corrupt_last_span_leaves_the_output_empty() {
    let layer = generate_layer(31, &LayerConfig { entries: 30, max_file_size: 200_000, pax_percent: 0 });
    let gz = gzip(&layer.tar, &GzipOptions::default());
    for (blob, format) in [(gz, LayerFormat::Gzip), (layer.tar.clone(), LayerFormat::Tar)] {
        let mut checked = 0;
        let ztoc = built(&blob, format);
        let zinfo = &ztoc.compression_info.zinfo;
        // Files over two spans or more: corrupt the middle of their last span.
        for (name, content) in &layer.files {
            let entry = find_entry(&ztoc, name).unwrap();
            let (first, last) =
                zinfo.spans_holding(entry.uncompressed_offset, entry.uncompressed_size).unwrap();
            if last == first {
                continue;
            }
            let (start, end) = zinfo.compressed_range(last, ztoc.compressed_archive_size).unwrap();
            let mut damaged = blob.clone();
            damaged[((start.get() + end.get()) / 2) as usize] ^= 0x20;

            let mut out = Vec::new();
            let error = extract_entry(&mut Cursor::new(&damaged), &ztoc, entry, &mut out).unwrap_err();
            assert!(
                matches!(error, Error::SpanDigestMismatch { span, .. } if span == last),
                "{format:?} {name}: {error}"
            );
            assert!(
                out.is_empty(),
                "{format:?} {name}: {} bytes written before the corrupt span was found",
                out.len()
            );

            // The intact layer still extracts, reading each span once.
            out.clear();
            let stats = extract_entry(&mut Cursor::new(&blob), &ztoc, entry, &mut out).unwrap();
            assert!(out == *content, "{format:?} {name}");
            let spans_bytes: u64 = (first..=last)
                .map(|span| {
                    let (start, end) = zinfo.compressed_range(span, ztoc.compressed_archive_size).unwrap();
                    end - start
                })
                .sum();
            assert_eq!(stats.compressed_bytes_read, spans_bytes, "{format:?} {name}");
            checked += 1;
        }
        assert!(checked >= 2, "{format:?}: the layer has files over several spans ({checked})");
    }
}
