//! Inside each crate, module dependencies point one way too: no circle of `crate::` imports between a
//! crate's top-level modules (a module's tests, after its `#[cfg(test)]`, may use anything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules are checked, from the workspace root.
const CRATES: [&str; 7] = [
    "crates/ztoc",
    "crates/index",
    "crates/registry",
    "crates/app",
    "crates/cli",
    "crates/testkit",
    "functions/index-on-push",
];

/// Module → the other top-level modules of the crate its non-test code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifiers after `crate::`, and inside `crate::{...}` groups, in `code`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').filter_map(|item| first_word(item.trim())));
        } else if let Some(word) = first_word(rest) {
            names.insert(word);
        }
    }
    names
}

fn first_word(text: &str) -> Option<String> {
    let word: String = text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!word.is_empty()).then_some(word)
}

fn module_graph(src: &Path) -> Graph {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src dir").flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            files.entry(name.clone()).or_default().push(path.clone());
            let mut nested = Vec::new();
            rust_files(&src.join(&name), &mut nested);
            files.entry(name).or_default().extend(nested);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut deps = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                deps.extend(named_modules(code).into_iter().filter(|m| m != module && modules.contains(m)));
            }
            (module.clone(), deps)
        })
        .collect()
}

/// One circle of `graph`, if it has any (`a -> b -> a`).
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_circle_of_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut circles = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate).join("src"));
        assert!(graph.len() > 2, "{krate}: modules found: {graph:?}");
        if let Some(found) = circle(&graph) {
            circles.push(format!("{krate}: {}", found.join(" -> ")));
        }
    }
    assert!(circles.is_empty(), "module circles:\n{}", circles.join("\n"));
}

#[test]
fn the_check_finds_a_circle() {
    assert_eq!(
        named_modules(
            "use crate::report::{State};\nuse crate::{media, oci::Index, Error};\nx(crate::soci::f)"
        ),
        ["Error", "media", "oci", "report", "soci"].map(String::from).into_iter().collect()
    );
    let graph = |edges: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph.entry(from.to_string()).or_default().insert(to.to_string());
            graph.entry(to.to_string()).or_default();
        }
        graph
    };
    assert_eq!(circle(&graph(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        circle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
    // A real crate with a circle put in: report naming sync again, as it once did.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut index = module_graph(&root.join("crates/index/src"));
    index.get_mut("report").unwrap().insert("sync".into());
    assert!(circle(&index).is_some_and(|c| c.contains(&"sync".to_owned())), "{index:?}");
}
