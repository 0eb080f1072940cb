//! The soci-made zTOCs of the rules_img corpus, read through the public API and checked against the
//! layers they were built from.

use sha2::{Digest, Sha256};
use std::path::Path;
use ztoc::codec::{decode, encode};
use ztoc::{Zinfo, ZTOC_VERSION};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rules_img");

#[derive(serde::Deserialize)]
struct Vector {
    name: String,
    input: String,
    span: u64,
}

fn vectors() -> Vec<Vector> {
    let manifest = std::fs::read(Path::new(CORPUS).join("manifest.json")).expect("read manifest.json");
    serde_json::from_slice(&manifest).expect("parse manifest.json")
}

#[test]
fn every_ztoc_re_encodes_to_its_bytes() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 27);
    for vector in &vectors {
        let bytes =
            std::fs::read(Path::new(CORPUS).join(format!("{}.ztoc", vector.name))).expect("read zTOC");
        let ztoc = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        assert!(encode(&ztoc) == bytes, "{}: re-encoding changed the bytes", vector.name);
    }
}

#[test]
fn every_ztoc_describes_its_layer() {
    for vector in vectors() {
        let name = &vector.name;
        let ztoc = decode(&std::fs::read(Path::new(CORPUS).join(format!("{name}.ztoc"))).expect("read zTOC"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let layer = std::fs::read(Path::new(CORPUS).join(&vector.input)).expect("read layer");

        assert_eq!(ztoc.version, ZTOC_VERSION, "{name}");
        assert_eq!(ztoc.build_tool_identifier, "soci-oracle", "{name}");
        assert_eq!(ztoc.compressed_archive_size.get(), layer.len() as u64, "{name}");
        let Zinfo::Gzip(zinfo) = &ztoc.compression_info.zinfo else { panic!("{name}: not a gzip zTOC") };
        assert_eq!(zinfo.span_size(), vector.span, "{name}");

        let info = &ztoc.compression_info;
        assert_eq!(info.span_digests.len(), zinfo.len(), "{name}");
        for (span, digest) in info.span_digests.iter().enumerate() {
            let (start, end) = zinfo.span_range(span, ztoc.compressed_archive_size).unwrap();
            let bytes = &layer[start.get() as usize..end.get() as usize];
            assert_eq!(
                *digest,
                format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
                "{name} span {span}"
            );
        }

        // Entries come in archive order, each one's data inside the archive.
        let entries = &ztoc.toc.metadata;
        assert!(
            entries.windows(2).all(|pair| pair[0].uncompressed_offset < pair[1].uncompressed_offset),
            "{name}"
        );
        for entry in entries {
            assert!(
                entry.uncompressed_offset.get() + entry.uncompressed_size
                    <= ztoc.uncompressed_archive_size.get()
            );
        }
    }
}

/// The main contract: our builder, given soci's layer, span size and identifier, writes soci's bytes,
/// however the layer's bytes arrive (one piece, 16 KiB reads as soci's C code does, or odd sizes).
#[test]
fn builder_writes_every_ztoc_byte_for_byte() {
    for vector in vectors() {
        let layer = std::fs::read(Path::new(CORPUS).join(&vector.input)).expect("read layer");
        let expected = std::fs::read(Path::new(CORPUS).join(format!("{}.ztoc", vector.name))).expect("read");
        let options = ztoc::BuildOptions { span_size: vector.span, ..ztoc::BuildOptions::new("soci-oracle") };
        for chunk in [layer.len().max(1), 1 << 14, 3, 1] {
            let mut builder = ztoc::ZtocBuilder::new(options.clone()).unwrap();
            for piece in layer.chunks(chunk) {
                builder.feed(piece).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
            }
            let built = builder.finish().unwrap_or_else(|e| panic!("{}: {e}", vector.name));
            let bytes = encode(&built);
            assert!(
                bytes == expected,
                "{} (chunk {chunk}): {} bytes, soci wrote {}",
                vector.name,
                bytes.len(),
                expected.len()
            );
        }
    }
}

/// Plain tar layers get soci's `TarZinfo`: fixed spans over the raw bytes, digests per span.
#[test]
fn plain_tar_layers_get_fixed_spans() {
    let layer = std::fs::read(Path::new(CORPUS).join("many-l6.tar.gz")).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&layer[..]), &mut tar).unwrap();
    let span = 4096u64;
    let options = ztoc::BuildOptions { span_size: span, ..ztoc::BuildOptions::new("t") };
    let built = ztoc::build_ztoc(&tar[..], &options).unwrap();
    let Zinfo::Tar(zinfo) = built.compression_info.zinfo else { panic!("a tar layer gets a TarZinfo") };
    assert_eq!((zinfo.version, zinfo.span_size, zinfo.size), (2, span as i64, tar.len() as i64));
    let spans = tar.len().div_ceil(span as usize);
    assert_eq!(built.compression_info.span_digests.len(), spans);
    for (i, digest) in built.compression_info.span_digests.iter().enumerate() {
        let chunk = &tar[i * span as usize..((i + 1) * span as usize).min(tar.len())];
        assert_eq!(digest, &format!("sha256:{:x}", Sha256::digest(chunk)));
    }
    // The table of contents is the same as for the gzip layer soci indexed.
    let soci = decode(&std::fs::read(Path::new(CORPUS).join("many-l6-s4096.ztoc")).unwrap()).unwrap();
    assert_eq!(built.toc, soci.toc);
    assert_eq!(built.uncompressed_archive_size, soci.uncompressed_archive_size);
    assert_eq!(built.compressed_archive_size.get(), tar.len() as u64);
    assert_eq!(decode(&encode(&built)).unwrap(), built);
}
