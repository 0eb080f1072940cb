//! The engine's integration tests, linked into one binary (one link instead of three, as in ripgrep).
//!
//! - `pipeline`: `create` from resolve to publish over the in-memory registry;
//! - `reuse`: the zTOC cache and cross-repository mounts;
//! - `lifecycle`: `status`, `sync` and `prune`;
//! - `safety`: what must never happen to a registry (deleting what others name, trusting a cache).

mod lifecycle;
mod pipeline;
mod reuse;
mod safety;
mod support;
