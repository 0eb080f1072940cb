//! SOCI indexes: what they are and how they are made.
//!
//! * [`oci`] and [`json`]: OCI/Docker manifests and indexes, written byte for byte as Go writes them;
//! * [`soci`]: the SOCI index manifest (v1 and v2);
//! * [`convert`]: the v2 binding, an OCI image index with annotated image manifests (`soci convert`);
//! * [`create`]: the pipeline image → eligible layers → zTOCs (streamed, concurrent) → index → push,
//!   over the [`Registry`] trait, so it knows nothing of HTTP.

pub mod convert;
pub mod create;
mod error;
pub mod json;
pub mod media;
pub mod oci;
mod registry;
pub mod soci;

pub use create::{create, CreateOptions, CreateReport, Observer};
pub use error::Error;
pub use registry::{BlobStream, FetchedManifest, PushedManifest, Registry, SourceError, SourceErrorKind};
pub use soci::IndexVersion;
