//! Random-access extraction through our own zTOCs returns every regular file of generated layers
//! byte for byte: the proof that checkpoints, windows, bits and span digests are right. Also `ztoc`
//! and `ztoc-info` at the edges of the format (span sizes, negative size fields).

use std::io::Cursor;

use testkit::{generate_layer, gzip, GzipOptions, LayerConfig, Rng};
use ztoc::extract::{extract_entry, find_entry, resolve_regular};
use ztoc::{build_ztoc, BuildOptions, EntryType, LayerFormat, DEFAULT_SPAN_SIZE};

use super::{os, run};

/// Builds the zTOC of `blob`, round-trips it through the codec, and extracts every file of `layer`.
fn check_every_file(blob: &[u8], layer: &testkit::GeneratedLayer, span_size: u64, label: &str) -> (u64, u64) {
    let options = BuildOptions { span_size, ..BuildOptions::new("soci-indexer tests") };
    let built = build_ztoc(blob, &options).unwrap_or_else(|e| panic!("{label}: {e}"));
    let ztoc = ztoc::codec::decode(&ztoc::codec::encode(&built)).unwrap();
    assert_eq!(ztoc, built, "{label}: codec round trip");
    assert_eq!(ztoc.compressed_archive_size.get(), blob.len() as u64);
    let mut smallest_read = u64::MAX;
    let mut files = 0;
    for (name, content) in &layer.files {
        let entry = find_entry(&ztoc, name).unwrap_or_else(|| panic!("{label}: {name} not in the zTOC"));
        assert_eq!(entry.entry_type, EntryType::Reg, "{label}: {name}");
        let mut out = Vec::new();
        let stats = extract_entry(&mut Cursor::new(blob), &ztoc, entry, &mut out)
            .unwrap_or_else(|e| panic!("{label}: extracting {name}: {e}"));
        assert!(
            out == *content,
            "{label}: {name} differs ({} bytes extracted, {} expected)",
            out.len(),
            content.len()
        );
        if !content.is_empty() {
            // Exactly the spans holding the file were read, nothing else.
            let expected_read: u64 = (stats.first_span..=stats.last_span)
                .map(|span| {
                    let (start, end) = ztoc
                        .compression_info
                        .zinfo
                        .compressed_range(span, ztoc.compressed_archive_size)
                        .unwrap();
                    end - start
                })
                .sum();
            assert_eq!(
                stats.compressed_bytes_read, expected_read,
                "{label}: {name} read more than its spans"
            );
            smallest_read = smallest_read.min(stats.compressed_bytes_read);
        }
        files += 1;
    }
    // Hard links resolve to their target's data.
    for entry in ztoc.toc.metadata.iter().filter(|e| e.entry_type == EntryType::Hardlink) {
        let target = resolve_regular(&ztoc, entry).unwrap();
        let expected = &layer.files.iter().rev().find(|(n, _)| n.as_bytes() == target.name).unwrap().1;
        let mut out = Vec::new();
        extract_entry(&mut Cursor::new(blob), &ztoc, target, &mut out).unwrap();
        assert_eq!(&out, expected, "{label}: hard link {}", String::from_utf8_lossy(&entry.name));
    }
    assert!(files > 0, "{label}: the layer has regular files");
    (smallest_read, ztoc.compression_info.zinfo.span_count() as u64)
}

#[test]
fn every_file_of_generated_gzip_layers_extracts_with_small_spans() {
    let mut rng = Rng::new(2026);
    for seed in 0..24u64 {
        let layer =
            generate_layer(seed, &LayerConfig { entries: 120, max_file_size: 96 * 1024, pax_percent: 25 });
        let options = GzipOptions {
            level: rng.below(10) as u32,
            members: 1 + rng.below(3) as usize,
            header_fields: rng.chance(30),
        };
        let blob = gzip(&layer.tar, &options);
        let label = format!("seed {seed} {options:?}");
        let (smallest_read, spans) = check_every_file(&blob, &layer, 4096, &label);
        assert!(spans > 2, "{label}: 4 KiB spans over {} bytes of tar give {spans} spans", layer.tar.len());
        assert!(
            smallest_read < blob.len() as u64,
            "{label}: some file is read without reading the whole layer ({smallest_read} of {})",
            blob.len()
        );
    }
}

#[test]
fn every_file_of_generated_plain_tar_layers_extracts() {
    for seed in 100..106u64 {
        let layer =
            generate_layer(seed, &LayerConfig { entries: 80, max_file_size: 64 * 1024, pax_percent: 25 });
        let options =
            BuildOptions { format: Some(LayerFormat::Tar), span_size: 4096, ..BuildOptions::new("t") };
        let ztoc = build_ztoc(&layer.tar[..], &options).unwrap();
        assert!(matches!(ztoc.compression_info.zinfo, ztoc::Zinfo::Tar(_)));
        check_every_file(&layer.tar, &layer, 4096, &format!("tar seed {seed}"));
    }
}

#[test]
fn every_file_extracts_with_the_default_span_size() {
    // Big files so that 4 MiB spans split the layer into several spans and files cross span ends.
    for (seed, level) in [(7u64, 6u32), (8, 1), (9, 9)] {
        let layer =
            generate_layer(seed, &LayerConfig { entries: 40, max_file_size: 3 << 20, pax_percent: 10 });
        let blob =
            gzip(&layer.tar, &GzipOptions { level, members: 1 + (seed as usize % 2), header_fields: false });
        let label = format!("seed {seed} level {level}");
        let (_, spans) = check_every_file(&blob, &layer, DEFAULT_SPAN_SIZE, &label);
        assert!(spans >= 2, "{label}: {} bytes of tar give {spans} spans", layer.tar.len());
    }
}

/// `tar` with hard links appended: `(name, target)` pairs, in order.
fn with_hard_links(tar: &[u8], links: &[(&str, &str)]) -> Vec<u8> {
    // The tar crate ends an archive with two zero blocks and no record padding: append before them.
    let body = tar.len() - 1024;
    assert!(tar[body..].iter().all(|&b| b == 0), "the archive ends with its two zero blocks");
    let mut builder = tar::Builder::new(tar[..body].to_vec());
    for (name, target) in links {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Link);
        header.set_mode(0o644);
        header.set_size(0);
        builder.append_link(&mut header, name, target).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn cli_extract_writes_the_file_and_follows_hard_links() {
    let layer = generate_layer(42, &LayerConfig { entries: 150, max_file_size: 200 * 1024, pax_percent: 20 });
    let (name, content) = layer.files.iter().max_by_key(|(_, c)| c.len()).unwrap();
    // A link to the largest file, a link to that link, and a link to itself.
    let tar = with_hard_links(
        &layer.tar,
        &[("links/first", name), ("links/second", "links/first"), ("links/self", "links/self")],
    );
    let dir = tempfile::tempdir().unwrap();
    let blob_path = dir.path().join("layer.tar.gz");
    std::fs::write(&blob_path, gzip(&tar, &GzipOptions::default())).unwrap();
    let ztoc_path = dir.path().join("layer.ztoc");
    let built = run(&[
        os("ztoc"),
        blob_path.as_os_str(),
        os("-o"),
        ztoc_path.as_os_str(),
        os("--span-size"),
        os("8192"),
    ]);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let ztoc = ztoc::codec::decode(&std::fs::read(&ztoc_path).unwrap()).unwrap();
    let entry = find_entry(&ztoc, name).unwrap();
    let (first, last) = ztoc
        .compression_info
        .zinfo
        .spans_holding(entry.uncompressed_offset, entry.uncompressed_size)
        .unwrap();
    assert!(last > first, "{name} ({} bytes) lies over several spans", content.len());

    let extract = |path: &str, to: Option<&std::path::Path>| {
        let mut args = vec![os("extract"), blob_path.as_os_str(), ztoc_path.as_os_str(), os(path)];
        if let Some(to) = to {
            args.extend([os("-o"), to.as_os_str()]);
        }
        run(&args)
    };
    let out = dir.path().join("out");
    for path in [format!("./{name}"), "./links/second".to_owned()] {
        let extracted = extract(&path, Some(&out));
        assert!(extracted.status.success(), "{path}: {}", String::from_utf8_lossy(&extracted.stderr));
        assert!(std::fs::read(&out).unwrap() == *content, "{path}: the bytes of {name}");
        let stderr = String::from_utf8_lossy(&extracted.stderr);
        assert!(stderr.contains(&format!("extracted {} bytes of {name}", content.len())), "{path}: {stderr}");
        std::fs::remove_file(&out).unwrap();
    }

    // To stdout by default, through a link or not.
    for path in [name.as_str(), "links/first"] {
        let to_stdout = extract(path, None);
        assert!(to_stdout.status.success(), "{path}: {}", String::from_utf8_lossy(&to_stdout.stderr));
        assert!(to_stdout.stdout == *content, "{path}: the bytes of {name}");
    }

    let looping = extract("links/self", Some(&out));
    super::assert_fails_with(&looping, &["hard link \"links/self\" points to itself"]);
    assert!(!out.exists(), "no output for a link to itself");
}

// `ztoc` and `ztoc-info` at the edges of the format, and extraction through what they write.

/// A gzip layer: a symlink whose base-256 size field says -1, then a regular file.
fn layer_with_a_negative_size() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_path("link").unwrap();
    link.set_link_name("file").unwrap();
    link.set_mode(0o777);
    link.as_mut_bytes()[124..136].copy_from_slice(&[0xff; 12]);
    link.set_cksum();
    builder.append(&link, &b""[..]).unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_path("file").unwrap();
    file.set_size(5);
    file.set_mode(0o644);
    file.set_cksum();
    builder.append(&file, &b"hello"[..]).unwrap();
    gzip(&builder.into_inner().unwrap(), &GzipOptions::default())
}

#[test]
fn span_sizes_the_format_cannot_hold_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, layer_with_a_negative_size()).unwrap();
    let out = dir.path().join("out.ztoc");
    for too_big in ["9223372036854775808", "18446744073709551615"] {
        let output =
            run(&[os("ztoc"), layer.as_os_str(), os("-o"), out.as_os_str(), os("--span-size"), os(too_big)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
        assert!(stderr.contains("--span-size") && stderr.contains(too_big), "{stderr}");
        assert!(!out.exists(), "nothing written");
    }
    let largest = i64::MAX.to_string();
    let output =
        run(&[os("ztoc"), layer.as_os_str(), os("-o"), out.as_os_str(), os("--span-size"), os(&largest)]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ztoc = ztoc::codec::decode(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(ztoc.compression_info.zinfo.span_size(), ztoc::MAX_SPAN_SIZE);
}

#[test]
fn ztoc_info_reads_a_negative_size_as_soci_stores_it() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar.gz");
    std::fs::write(&layer, layer_with_a_negative_size()).unwrap();
    let out = dir.path().join("out.ztoc");
    let built = run(&[os("ztoc"), layer.as_os_str(), os("-o"), out.as_os_str()]);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let info = run(&[os("ztoc-info"), out.as_os_str(), os("--json")]);
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let report: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["filename"], "link");
    assert_eq!(files[0]["size"], -1);
    assert_eq!((&files[0]["start_span"], &files[0]["end_span"]), (&0.into(), &0.into()));
    assert_eq!((&files[1]["filename"], &files[1]["size"]), (&"file".into(), &5.into()));

    let extracted = run(&[os("extract"), layer.as_os_str(), out.as_os_str(), os("file")]);
    assert!(extracted.status.success(), "{}", String::from_utf8_lossy(&extracted.stderr));
    assert_eq!(extracted.stdout, b"hello");
}

#[test]
fn cli_extract_to_stdout_writes_nothing_when_a_later_span_is_corrupt() {
    let layer = generate_layer(43, &LayerConfig { entries: 20, max_file_size: 300_000, pax_percent: 0 });
    let blob = gzip(&layer.tar, &GzipOptions::default());
    let options = BuildOptions { span_size: 8192, ..BuildOptions::new("soci-indexer tests") };
    let ztoc = build_ztoc(&blob[..], &options).unwrap();
    let zinfo = &ztoc.compression_info.zinfo;
    // The file over the most spans; its last span gets a flipped byte.
    let (name, entry, (first, last)) = layer
        .files
        .iter()
        .map(|(name, _)| {
            let entry = find_entry(&ztoc, name).unwrap();
            (name, entry, zinfo.spans_holding(entry.uncompressed_offset, entry.uncompressed_size).unwrap())
        })
        .max_by_key(|(_, _, (first, last))| last - first)
        .unwrap();
    assert!(last > first + 1, "{name} lies over three spans or more");
    let (start, end) = zinfo.compressed_range(last, ztoc.compressed_archive_size).unwrap();
    let mut damaged = blob.clone();
    damaged[((start.get() + end.get()) / 2) as usize] ^= 0x01;

    let dir = tempfile::tempdir().unwrap();
    let blob_path = dir.path().join("layer.tar.gz");
    std::fs::write(&blob_path, &damaged).unwrap();
    let ztoc_path = dir.path().join("layer.ztoc");
    std::fs::write(&ztoc_path, ztoc::codec::encode(&ztoc)).unwrap();
    let output = run(&[os("extract"), blob_path.as_os_str(), ztoc_path.as_os_str(), os(name)]);
    super::assert_fails_with(&output, &[&format!("span {last} is corrupt")]);
    assert!(
        output.stdout.is_empty(),
        "{} bytes of {} ({} bytes) reached stdout before the corrupt span was found",
        output.stdout.len(),
        String::from_utf8_lossy(&entry.name),
        entry.uncompressed_size
    );
}
