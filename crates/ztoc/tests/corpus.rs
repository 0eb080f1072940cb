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
            let (start, end) = zinfo.span_range(span, ztoc.compressed_archive_size);
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
