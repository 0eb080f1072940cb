//! Seeded generators of tar layers for tests and benchmarks.
