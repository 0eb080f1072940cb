//! Bad input gets a named error, exit code 1, no panic and no partial output file.

use testkit::{generate_layer, gzip, GzipOptions, LayerConfig};

use super::{assert_fails_with, corpus_dir, os, run};

fn layer_bytes() -> Vec<u8> {
    gzip(
        &generate_layer(5, &LayerConfig { entries: 60, ..LayerConfig::default() }).tar,
        &GzipOptions::default(),
    )
}

/// Runs `ztoc` on `blob` and checks the error and that no output file (or temp file) is left.
fn ztoc_fails(blob: &[u8], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    std::fs::write(&layer, blob).unwrap();
    let out = dir.path().join("out.ztoc");
    let output = run(&[os("ztoc"), layer.as_os_str(), os("-o"), out.as_os_str()]);
    assert_fails_with(&output, needles);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("layer")], "no partial output is left behind");
}

#[test]
fn truncated_gzip_is_named() {
    let blob = layer_bytes();
    ztoc_fails(&blob[..blob.len() / 2], &["truncated"]);
    ztoc_fails(&blob[..blob.len() - 3], &["truncated"]);
}

#[test]
fn corrupt_gzip_is_named() {
    // A wrong CRC in the trailer: the deflate data decodes, the integrity check does not.
    let mut blob = layer_bytes();
    let crc = blob.len() - 8;
    blob[crc] ^= 0xff;
    ztoc_fails(&blob, &["corrupt gzip data", "incorrect data check"]);
    // Garbage in the middle of the deflate data is caught too (by zlib or, if it still decodes, by
    // the tar walker, whichever sees it first in the stream).
    let mut blob = layer_bytes();
    let mid = blob.len() / 3;
    for b in &mut blob[mid..mid + 64] {
        *b = !*b;
    }
    ztoc_fails(&blob, &["cannot index layer"]);
}

#[test]
fn data_after_the_last_member_is_named() {
    let mut blob = layer_bytes();
    blob.extend_from_slice(&[0u8; 512]);
    ztoc_fails(&blob, &["not another gzip member"]);
}

#[test]
fn zstd_layers_are_refused() {
    ztoc_fails(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0], &["zstd"]);
}

/// A one-entry tar built by hand: 512-byte header (checksum filled in) + data + end marker.
fn tar_with(typeflag: u8, name: &str, corrupt_checksum: bool) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(b"00000000000");
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = typeflag;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum::<u32>() + u32::from(corrupt_checksum);
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

#[test]
fn bad_tar_checksum_is_named() {
    let tar = tar_with(b'0', "file", true);
    ztoc_fails(&gzip(&tar, &GzipOptions::default()), &["checksum"]);
}

#[test]
fn typeflags_soci_cannot_represent_name_the_entry() {
    for (flag, name) in [(b'g', "pax_global_header"), (b'S', "old-sparse-file")] {
        let tar = tar_with(flag, name, false);
        ztoc_fails(&gzip(&tar, &GzipOptions::default()), &[name, "cannot"]);
    }
}

#[test]
fn extract_refuses_a_ztoc_of_another_layer() {
    let dir = tempfile::tempdir().unwrap();
    let ztoc = corpus_dir().join("text-l6-s4096.ztoc");
    let other_layer = corpus_dir().join("text-l9.tar.gz");
    let decoded = ztoc::codec::decode(&std::fs::read(&ztoc).unwrap()).unwrap();
    let entry = decoded.toc.metadata.iter().find(|e| e.uncompressed_size > 0).expect("a file with data");
    let name = String::from_utf8_lossy(&entry.name).into_owned();
    let out = dir.path().join("out");
    let output = run(&[
        os("extract"),
        other_layer.as_os_str(),
        ztoc.as_os_str(),
        os(&name),
        os("-o"),
        out.as_os_str(),
    ]);
    assert_fails_with(&output, &["does not belong to this layer"]);
    assert!(!out.exists(), "no partial output");
}

#[test]
fn extract_detects_a_corrupt_span() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus_dir().join("text-l6.tar.gz");
    let mut blob = std::fs::read(&source).unwrap();
    let ztoc_path = corpus_dir().join("text-l6-s4096.ztoc");
    let ztoc = ztoc::codec::decode(&std::fs::read(&ztoc_path).unwrap()).unwrap();
    let entry = ztoc.toc.metadata.iter().find(|e| e.uncompressed_size > 0).expect("a file with data");
    let ztoc::Zinfo::Gzip(zinfo) = &ztoc.compression_info.zinfo else { panic!("gzip corpus") };
    let span = zinfo.span_of(entry.uncompressed_offset).unwrap();
    let (start, end) = zinfo.span_range(span, ztoc.compressed_archive_size).unwrap();
    let victim = ((start.get() + end.get()) / 2) as usize;
    blob[victim] ^= 0x01;
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, &blob).unwrap();
    let out = dir.path().join("out");
    let name = String::from_utf8_lossy(&entry.name).into_owned();
    let output =
        run(&[os("extract"), layer.as_os_str(), ztoc_path.as_os_str(), os(&name), os("-o"), out.as_os_str()]);
    assert_fails_with(&output, &[&format!("span {span} is corrupt")]);
    assert!(!out.exists(), "no partial output");
}

#[test]
fn missing_entry_and_non_ztoc_are_named() {
    let layer = corpus_dir().join("single.tar.gz");
    let ztoc = corpus_dir().join("single.ztoc");
    assert_fails_with(
        &run(&[os("extract"), layer.as_os_str(), ztoc.as_os_str(), os("no/such/file")]),
        &["no entry named"],
    );
    assert_fails_with(&run(&[os("ztoc-info"), layer.as_os_str()]), &["not a valid zTOC"]);
    assert_fails_with(
        &run(&[os("ztoc"), os("/nonexistent/layer"), os("-o"), os("x")]),
        &["cannot open layer"],
    );
}

/// Logs asked for with SOCI_INDEXER_LOG are plain text when stderr is not a terminal, and the error
/// names each cause once.
#[test]
fn logs_are_plain_and_errors_say_each_cause_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = closed.local_addr().unwrap().to_string();
    drop(closed);
    let output = super::cli()
        .env("SOCI_INDEXER_LOG", "debug")
        .args(["create", &format!("{host}/app:1"), "--plain-http"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DEBUG"), "debug logs were asked for: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes in a pipe: {stderr:?}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).expect("an error line");
    let parts: Vec<&str> = error.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(part), "{part:?} said twice in {error}");
    }
    assert!(error.contains("Connection refused"), "{error}");
}
