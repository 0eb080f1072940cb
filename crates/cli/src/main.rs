//! soci-indexer CLI.
fn main() {}
