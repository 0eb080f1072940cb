//! The CLI rebuilds every soci-made zTOC of the corpus byte for byte.

use super::{corpus_dir, os, run};

#[test]
fn cli_rebuilds_every_corpus_ztoc_byte_for_byte() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus_dir().join("manifest.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in manifest.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let layer = corpus_dir().join(case["input"].as_str().unwrap());
        let span = case["span"].as_u64().unwrap().to_string();
        let out = dir.path().join(format!("{name}.ztoc"));
        let output = run(&[
            os("ztoc"),
            layer.as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--span-size"),
            os(&span),
            os("--build-tool-identifier"),
            os("soci-oracle"),
        ]);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let expected = std::fs::read(corpus_dir().join(format!("{name}.ztoc"))).unwrap();
        let actual = std::fs::read(&out).unwrap();
        assert!(actual == expected, "{name}: {} bytes written, soci wrote {}", actual.len(), expected.len());
        let summary = String::from_utf8_lossy(&output.stderr);
        assert!(
            summary.contains(&ztoc::sha256_digest(&expected)),
            "{name}: summary names the digest: {summary}"
        );
        checked += 1;
    }
    assert_eq!(checked, 27);
}

#[test]
fn stdin_and_file_input_give_the_same_ztoc() {
    let layer = corpus_dir().join("many-l6.tar.gz");
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("file.ztoc");
    let from_stdin = dir.path().join("stdin.ztoc");
    assert!(run(&[os("ztoc"), layer.as_os_str(), os("-o"), from_file.as_os_str()]).status.success());
    let status = std::process::Command::new(super::binary())
        .args([os("ztoc"), os("-"), os("-o"), from_stdin.as_os_str()])
        .stdin(std::fs::File::open(&layer).unwrap())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(std::fs::read(&from_file).unwrap(), std::fs::read(&from_stdin).unwrap());
}

#[test]
fn ztoc_info_lists_entries_spans_and_pax_records() {
    let ztoc_path = corpus_dir().join("meta.ztoc");
    let output = run(&[os("ztoc-info"), ztoc_path.as_os_str(), os("--json")]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["version"], "0.9");
    assert_eq!(info["build_tool"], "soci-oracle");
    assert_eq!(info["compressed_archive_size"], 588);
    assert_eq!(info["uncompressed_archive_size"], 11264);
    assert_eq!(info["num_spans"], info["spans"].as_array().unwrap().len());
    let files = info["files"].as_array().unwrap();
    let xattrs = files.iter().find(|f| f["filename"] == "d/withxattrs").expect("d/withxattrs listed");
    assert_eq!(xattrs["type"], "reg");
    assert_eq!(xattrs["offset"], 6144);
    assert_eq!(xattrs["size"], 3);
    assert_eq!(xattrs["pax_records"]["SCHILY.xattr.user.comment"], "hi");
    let chardev = files.iter().find(|f| f["filename"] == "d/chardev").expect("d/chardev listed");
    assert_eq!(chardev["device"], serde_json::json!([1, 3]));

    let text = run(&[os("ztoc-info"), ztoc_path.as_os_str()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("d/withxattrs") && text.contains("SCHILY.xattr.user.comment"), "{text}");
}
