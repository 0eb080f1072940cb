//! End-to-end tests of soci-indexer.
