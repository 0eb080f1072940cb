//! The engine's integration tests, linked into one binary (one link instead of three, as in ripgrep).
//!
//! - `pipeline`: `create` from resolve to publish over the in-memory registry;
//! - `reuse`: the zTOC cache and cross-repository mounts;
//! - `lifecycle`: `status`, `sync` and `prune`.

mod lifecycle;
mod pipeline;
mod reuse;
mod support;
