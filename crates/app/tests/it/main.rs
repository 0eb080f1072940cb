//! The composition layer's integration tests, linked into one binary (as in ripgrep).
//!
//! - `dependencies`: the workspace's crates depend on each other in one direction only;
//! - `modules`: so do the modules inside each crate (no circles);
//! - `ranged`: the engine reading a layer in parallel ranges through the HTTP client, against docker-registry.

mod dependencies;
mod modules;
mod ranged;
