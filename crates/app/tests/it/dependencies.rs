//! The workspace's layering, checked over `cargo metadata`: dependencies point one way.
//!
//! * `soci-ztoc` (the byte-level core) depends on no workspace crate and on nothing async or HTTP;
//! * `soci-index` (the engine) depends on `soci-ztoc` alone in the workspace, on no HTTP crate, and on
//!   tokio only for tasks, synchronisation and timers;
//! * `soci-registry` (the HTTP client) depends on no workspace crate.
//!
//! Normal and build dependencies count, optional ones included; dev-dependencies (test support) do not.

use std::process::Command;

use serde_json::{json, Value};

/// Crates that mean async I/O.
const ASYNC: [&str; 6] = ["tokio", "futures", "futures-util", "async-trait", "async-stream", "mio"];
/// Crates that mean HTTP.
const HTTP: [&str; 7] = ["reqwest", "hyper", "hyper-util", "http", "http-body-util", "h2", "url"];
/// What the engine may use of tokio.
const ENGINE_TOKIO_FEATURES: [&str; 3] = ["rt", "sync", "time"];

/// Every rule broken by the packages described in `metadata`, one line each.
fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let workspace: Vec<String> =
        packages.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect();
    let mut found = Vec::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default();
        let deps = package["dependencies"].as_array().cloned().unwrap_or_default();
        for dep in deps.iter().filter(|d| d["kind"].is_null() || d["kind"] == "build") {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let in_workspace = workspace.iter().any(|w| w == dep_name);
            let broken = match name {
                "soci-ztoc" if in_workspace => Some("the zTOC core depends on no workspace crate"),
                "soci-ztoc" if ASYNC.contains(&dep_name) || HTTP.contains(&dep_name) => {
                    Some("the zTOC core is sans-IO: no async or HTTP crate")
                }
                "soci-index" if in_workspace && dep_name != "soci-ztoc" => {
                    Some("the engine depends on soci-ztoc alone in the workspace")
                }
                "soci-index" if HTTP.contains(&dep_name) => {
                    Some("the engine works over traits: no HTTP crate")
                }
                "soci-index" if dep_name == "tokio" && !engine_tokio_is_lean(dep) => {
                    Some("the engine uses tokio for tasks, sync and timers only (default-features = false, rt, sync, time)")
                }
                "soci-registry" if in_workspace => Some("the registry client depends on no workspace crate"),
                _ => None,
            };
            if let Some(rule) = broken {
                found.push(format!("{name} -> {dep_name}: {rule}"));
            }
        }
    }
    found
}

fn engine_tokio_is_lean(dep: &Value) -> bool {
    let features = dep["features"].as_array().cloned().unwrap_or_default();
    dep["uses_default_features"] == false
        && features.iter().all(|f| f.as_str().is_some_and(|f| ENGINE_TOKIO_FEATURES.contains(&f)))
}

fn workspace_metadata() -> Value {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn the_workspace_keeps_its_layering() {
    let metadata = workspace_metadata();
    let names: Vec<&str> =
        metadata["packages"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    for expected in ["soci-ztoc", "soci-index", "soci-registry", "soci-app"] {
        assert!(names.contains(&expected), "{expected} is a workspace package: {names:?}");
    }
    let found = violations(&metadata);
    assert!(found.is_empty(), "layering rules broken:\n{}", found.join("\n"));
}

/// The same check on the real metadata with one forbidden dependency added, for each rule.
#[test]
fn every_forbidden_dependency_is_reported() {
    let cases = [
        ("soci-ztoc", json!({"name": "soci-index", "kind": null, "optional": false})),
        ("soci-ztoc", json!({"name": "tokio", "kind": null, "optional": true})),
        ("soci-ztoc", json!({"name": "hyper", "kind": "build", "optional": false})),
        ("soci-index", json!({"name": "soci-registry", "kind": null, "optional": true})),
        ("soci-index", json!({"name": "reqwest", "kind": null, "optional": false})),
        (
            "soci-index",
            json!({"name": "tokio", "kind": null, "optional": false, "uses_default_features": true, "features": []}),
        ),
        (
            "soci-index",
            json!({"name": "tokio", "kind": null, "optional": false, "uses_default_features": false, "features": ["net"]}),
        ),
        ("soci-registry", json!({"name": "soci-index", "kind": null, "optional": true})),
        ("soci-registry", json!({"name": "soci-ztoc", "kind": null, "optional": false})),
    ];
    for (package, dependency) in cases {
        let mut metadata = workspace_metadata();
        let entry = metadata["packages"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["name"] == package)
            .unwrap_or_else(|| panic!("{package} in the workspace"));
        entry["dependencies"].as_array_mut().unwrap().push(dependency.clone());
        let found = violations(&metadata);
        assert_eq!(found.len(), 1, "{package} + {dependency}: {found:?}");
        assert!(found[0].starts_with(&format!("{package} -> ")), "{found:?}");
    }
    // Test support may depend on anything.
    let mut metadata = workspace_metadata();
    let ztoc =
        metadata["packages"].as_array_mut().unwrap().iter_mut().find(|p| p["name"] == "soci-ztoc").unwrap();
    ztoc["dependencies"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tokio", "kind": "dev", "optional": false}));
    assert!(violations(&metadata).is_empty());
}
