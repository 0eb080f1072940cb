//! An OCI distribution client, the only part of soci-indexer that speaks HTTP.
//!
//! It reads manifests (exact bytes, digest-verified), streams blobs (large ones as parallel ranges
//! reassembled in order; resuming broken downloads and verifying their sha256) within one budget of
//! connections, reads blob ranges, uploads blobs and manifests, and queries the referrers
//! API. It authenticates anonymously, with basic credentials or with bearer tokens obtained from the
//! registry's challenge; follows redirects itself so that credentials never reach another origin
//! (ECR redirects blob downloads to presigned S3 URLs); gives every request a deadline and blob
//! bodies a minimum throughput; and retries transient failures with jittered exponential backoff.
//!
//! ```no_run
//! # async fn demo() -> Result<(), registry::Error> {
//! use std::sync::Arc;
//! use registry::{Anonymous, Client, ClientConfig, Reference};
//!
//! let reference = Reference::parse("localhost:5000/app:latest")?;
//! let client = Client::new(ClientConfig { plain_http: true, ..ClientConfig::default() }, Arc::new(Anonymous))?;
//! let manifest = client.get_manifest(&reference.to_repository(), reference.manifest_reference()).await?;
//! println!("{} {}", manifest.media_type, manifest.digest);
//! # Ok(()) }
//! ```

mod auth;
mod blobs;
mod client;
mod digest;
mod download;
mod error;
mod limits;
mod manifests;
mod mount;
mod opened;
mod pace;
mod ranged;
mod reference;
mod referrers;
mod response;
mod resume;
mod retry;
mod tags;
mod transport;

pub use auth::{Anonymous, BoxFuture, CredentialSource, Credentials, Secret, StaticCredentials};
pub use blobs::PushedBlob;
pub use client::{Client, ClientConfig, RangedReads, DEFAULT_MAX_CONNECTIONS};
pub use digest::{is_valid_tag, sha256_digest, validate_digest, TAG_RULE};
pub use download::BlobStream;
pub use error::{Error, Resource};
pub use manifests::{Deletion, Manifest, ManifestInfo, PutManifest};
pub use pace::{ThrottleEvent, ThrottleObserver};
pub use reference::{Reference, Repository};
pub use referrers::Referrer;
pub use retry::RetryPolicy;

/// Media types of the manifests and indexes this client reads.
pub mod media_type {
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// A Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// A Docker manifest list (multi-platform).
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

    /// Every manifest media type [`crate::Client::get_manifest`] accepts.
    pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

    /// The `Accept` header of manifest requests.
    pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
        application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json";
}
