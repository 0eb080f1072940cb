//! The sample image the local demo pushes lives in `examples/`; the end-to-end tests are in
//! `crates/cli/tests/e2e`. This library is empty.
