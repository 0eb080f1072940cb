//! End-to-end tests of soci-indexer: the CLI and the crates together, on the soci-made corpus and
//! on generated layers.

mod e2e;
