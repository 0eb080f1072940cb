//! The zTOC crate's integration tests, linked into one binary (one link instead of five, as in ripgrep).
//!
//! - `corpus`: soci-made zTOCs of the rules_img corpus, read through the public API;
//! - `estimate`: the builder's running size estimate, which bounds gzip bombs;
//! - `extract_fuzz`, `extract_verify`: `extract` on mutated zTOCs and corrupt spans;
//! - `sizes`: size fields of header-only entries, as soci-snapshotter reads them.

mod corpus;
mod estimate;
mod extract_fuzz;
mod extract_verify;
mod sizes;
