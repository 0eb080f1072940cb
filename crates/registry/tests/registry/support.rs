//! Shared helpers: clients with tiny retry delays, generated content, pushing a small image.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use registry::{
    media_type, sha256_digest, Anonymous, BlobStream, Client, ClientConfig, CredentialSource, Credentials,
    Error, Repository, RetryPolicy, StaticCredentials,
};

/// Fast retries: 4 attempts, at most a few milliseconds apart.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(20),
        throttle_base_delay: Duration::from_millis(2),
        throttle_max_delay: Duration::from_millis(20),
        throttle_budget: Duration::from_secs(2),
    }
}

pub fn config(max_attempts: u32) -> ClientConfig {
    ClientConfig {
        plain_http: true,
        retry: fast_retry(max_attempts),
        read_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

pub fn anonymous_client() -> Client {
    Client::new(config(4), Arc::new(Anonymous)).unwrap()
}

pub fn client_with(credentials: Arc<dyn CredentialSource>, max_attempts: u32) -> Client {
    Client::new(config(max_attempts), credentials).unwrap()
}

pub fn basic_client(user: &str, password: &str) -> Client {
    client_with(Arc::new(StaticCredentials(Credentials::new(user, password))), 4)
}

pub fn repo(host: &str, name: &str) -> Repository {
    Repository::new(host, name).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = testkit::Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Reads a blob stream to its end: the bytes, the number of chunks, or the first error.
pub async fn collect(mut stream: BlobStream) -> Result<(Vec<u8>, usize), Error> {
    let mut out = Vec::new();
    let mut chunks = 0;
    while let Some(item) = stream.next().await {
        out.extend_from_slice(&item?);
        chunks += 1;
    }
    Ok((out, chunks))
}

/// Reads a blob stream whose stored bytes (`stored`) no longer match `digest`: every byte must arrive, in
/// order, and only then the `DigestMismatch` naming both digests, with nothing after it.
pub async fn assert_mismatch_after_every_byte(mut stream: BlobStream, digest: &str, stored: &[u8]) {
    let mut received = Vec::new();
    let mut last_error = None;
    while let Some(item) = stream.next().await {
        assert!(last_error.is_none(), "nothing may follow the error");
        match item {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(error) => last_error = Some(error),
        }
    }
    assert!(received == stored, "every byte, in order, before the verdict");
    match last_error {
        Some(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, digest);
            assert_eq!(actual, sha256_digest(stored));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

/// A pushed single-layer OCI image.
pub struct PushedImage {
    pub manifest: Bytes,
    pub manifest_digest: String,
    pub layer: Bytes,
    pub layer_digest: String,
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len() })
}

/// Pushes a config, a layer of `layer_size` random bytes and an OCI manifest tagged `tag`.
pub async fn push_image(
    client: &Client,
    repo: &Repository,
    tag: &str,
    layer_size: usize,
    seed: u64,
) -> PushedImage {
    let config = Bytes::from(format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#));
    let layer = random_bytes(layer_size, seed);
    client.push_blob(repo, &sha256_digest(&config), config.clone()).await.unwrap();
    client.push_blob(repo, &sha256_digest(&layer), layer.clone()).await.unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
    });
    let manifest = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap());
    let put = client.put_manifest(repo, tag, media_type::OCI_MANIFEST, manifest.clone()).await.unwrap();
    assert_eq!(put.digest, sha256_digest(&manifest));
    PushedImage { manifest_digest: put.digest, manifest, layer_digest: sha256_digest(&layer), layer }
}

/// The file holding a blob in distribution's filesystem storage.
pub fn blob_data_path(storage: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}
