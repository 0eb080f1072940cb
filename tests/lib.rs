//! End-to-end tests of soci-indexer live in `tests.rs`; this library is empty.
