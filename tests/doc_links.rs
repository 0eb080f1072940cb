//! Every relative link in `README.md` and `docs/*.md` resolves to a file of this repository, and every
//! `#anchor` to a heading of the file it names; no link, and no mention of a path, leaves the repository
//! (such as `../shared/`, a directory beside it that a clone does not have).
//!
//! std only: links are found with a small scanner that knows what these documents use (inline links
//! `[text](target)`, images `![alt](target)`, reference definitions `[label]: target`), and skips code
//! blocks and code spans. Anchors are GitHub's heading slugs.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The repository root (this crate is `tests/`, one level down).
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .canonicalize()
        .expect("the repository root exists")
}

/// `README.md` and every `docs/*.md`, relative to `root`.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
                .filter_map(|path| path.strip_prefix(root).ok().map(Path::to_path_buf))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    files.extend(docs);
    files
}

/// A link found in a document: its 1-based line and its target as written.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    line: usize,
    target: String,
}

/// The text of `line` without its code spans (`` `...` ``, any number of backticks).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        let after = &rest[start + ticks..];
        match after.find(fence) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                // An unclosed run of backticks is literal text.
                out.push_str(fence);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether a line opens or closes a fenced code block.
fn is_fence(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("```") || trimmed.starts_with("~~~")
}

/// Every link of a Markdown document, outside code blocks and code spans.
fn links(markdown: &str) -> Vec<Link> {
    let mut found = Vec::new();
    let mut in_code_block = false;
    for (index, raw) in markdown.lines().enumerate() {
        if is_fence(raw) {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        let line = without_code_spans(raw);
        // Reference definitions: `[label]: target`.
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(close) = trimmed.find("]:") {
                let target = trimmed[close + 2..].split_whitespace().next().unwrap_or("");
                if !target.is_empty() {
                    found.push(Link { line: index + 1, target: target.to_owned() });
                }
            }
        }
        // Inline links and images: `](target)` or `](target "title")`.
        let mut rest = line.as_str();
        while let Some(open) = rest.find("](") {
            let after = &rest[open + 2..];
            let Some(close) = after.find(')') else { break };
            let inside = after[..close].trim();
            let target = inside.split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if !target.is_empty() {
                found.push(Link { line: index + 1, target: target.to_owned() });
            }
            rest = &after[close + 1..];
        }
    }
    found
}

/// Whether a target names something outside the repository by scheme (`https:`, `mailto:`, ...).
fn is_external(target: &str) -> bool {
    let scheme_end = target.find(':');
    let path_start = target.find(['/', '#']);
    match (scheme_end, path_start) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

/// GitHub's anchor for a heading: lowercase, spaces to `-`, everything but letters, digits, `-` and `_`
/// dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown document's headings, with GitHub's `-1`, `-2` for repeated ones.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut in_code_block = false;
    for line in markdown.lines() {
        if is_fence(line) {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#');
        if !text.starts_with(' ') {
            continue;
        }
        let base = slug(&text.replace('`', ""));
        let mut anchor = base.clone();
        let mut n = 0;
        while found.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        found.insert(anchor);
    }
    found
}

/// `path` with `.` and `..` resolved lexically, or `None` if a `..` climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every problem with the links of `files` (relative to `root`), one line each.
fn check(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(root.join(file)) {
            Ok(text) => text,
            Err(error) => {
                problems.push(format!("{}: cannot be read: {error}", file.display()));
                continue;
            }
        };
        for (index, line) in text.lines().enumerate() {
            if line.contains("../shared/") {
                problems.push(format!(
                    "{}:{}: names a path outside the repository (../shared/)",
                    file.display(),
                    index + 1
                ));
            }
        }
        let directory = file.parent().unwrap_or(Path::new(""));
        for link in links(&text) {
            let at = format!("{}:{}: {}", file.display(), link.line, link.target);
            if is_external(&link.target) {
                continue;
            }
            let (path_part, anchor) = match link.target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.target.as_str(), None),
            };
            let target_file = if path_part.is_empty() {
                file.clone()
            } else if path_part.starts_with('/') {
                problems.push(format!("{at}: absolute path (use a path relative to the document)"));
                continue;
            } else {
                match normalize(&directory.join(path_part)) {
                    Some(path) => path,
                    None => {
                        problems.push(format!("{at}: leaves the repository"));
                        continue;
                    }
                }
            };
            let on_disk = root.join(&target_file);
            if !on_disk.exists() {
                problems.push(format!("{at}: no such file {}", target_file.display()));
                continue;
            }
            match on_disk.canonicalize() {
                Ok(real) if real.starts_with(root) => {}
                _ => {
                    problems.push(format!("{at}: leaves the repository"));
                    continue;
                }
            }
            if let Some(anchor) = anchor.filter(|a| !a.is_empty()) {
                if target_file.extension().is_some_and(|ext| ext == "md") {
                    let target_text = std::fs::read_to_string(&on_disk).unwrap_or_default();
                    if !anchors(&target_text).contains(anchor) {
                        problems.push(format!("{at}: no heading #{anchor} in {}", target_file.display()));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_in_the_documentation_resolves_inside_the_repository() {
    let root = repository_root();
    let files = documents(&root);
    assert!(files.len() > 1, "README.md and docs/*.md: found {files:?}");
    let problems = check(&root, &files);
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_reports_missing_files_anchors_and_escapes() {
    let root = std::env::temp_dir().join(format!("soci-doc-links-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("docs")).unwrap();
    let root = root.canonicalize().unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Title\n\n## The `sync` verb (v2)\n\n[ok](docs/a.md#a-heading) [self](#the-sync-verb-v2) \
         [web](https://example.com/x)\n[gone](docs/missing.md) [bad anchor](docs/a.md#nope)\n\
         [out](../shared/docs/soci-format.md) ![img](docs/a.md)\n\n```\n[in code](nowhere.md)\n```\n\
         `[span](nowhere.md)`\n\n[ref]: docs/also-missing.md\n",
    )
    .unwrap();
    std::fs::write(root.join("docs/a.md"), "# A heading\n\n[up](../README.md#title) [here](a.md)\n").unwrap();
    let files = documents(&root);
    let problems = check(&root, &files);
    std::fs::remove_dir_all(&root).unwrap();
    let expected = [
        "README.md:6: docs/missing.md: no such file docs/missing.md",
        "README.md:6: docs/a.md#nope: no heading #nope in docs/a.md",
        "README.md:7: names a path outside the repository (../shared/)",
        "README.md:7: ../shared/docs/soci-format.md: leaves the repository",
        "README.md:14: docs/also-missing.md: no such file docs/also-missing.md",
    ];
    let mut got = problems.clone();
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "problems: {problems:#?}");
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Deploy on AWS (index-on-push)"), "deploy-on-aws-index-on-push");
    assert_eq!(slug("The zTOC cache (DynamoDB)"), "the-ztoc-cache-dynamodb");
    assert_eq!(slug("The reconcile (backfill and cleanup)"), "the-reconcile-backfill-and-cleanup");
    assert_eq!(slug("1. zTOC, byte for byte"), "1-ztoc-byte-for-byte");
    let repeated = anchors("# Usage\n## Usage\n");
    assert!(repeated.contains("usage") && repeated.contains("usage-1"));
}
