//! An in-memory [`Registry`] for tests of the engine and of its callers (feature `testing`): manifests
//! by digest and tag, blobs by digest, a log of every push, and failures on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::media;
use crate::oci::{Descriptor, Manifest};
use crate::registry::{BlobStream, FetchedManifest, PushedManifest, Registry, SourceError, SourceErrorKind};

/// What every call does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answer from memory.
    #[default]
    Serve,
    /// Fail every call with this kind.
    Fail {
        /// The failure's kind.
        kind: SourceErrorKind,
        /// Whether it says a retry may help.
        retryable: bool,
    },
    /// Never answer.
    Hang,
    /// Panic in `get_blob` (a bug in a layer task, as the engine must survive it).
    PanicOnBlob,
}

/// A registry in memory, for one repository. Clones share their content (a test keeps one handle
/// while the code under test holds another).
#[derive(Clone, Debug, Default)]
pub struct MemoryRegistry {
    state: std::sync::Arc<State>,
}

impl std::ops::Deref for MemoryRegistry {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

/// What a [`MemoryRegistry`] holds.
#[derive(Debug, Default)]
pub struct State {
    manifests: Mutex<HashMap<String, (String, Bytes)>>,
    tags: Mutex<HashMap<String, String>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    pushes: Mutex<Vec<String>>,
    broken_blobs: Mutex<Vec<String>>,
    calls: AtomicUsize,
    mode: Mutex<Mode>,
    referrers_api: bool,
    deletes: bool,
}

fn error(kind: SourceErrorKind, message: &str) -> SourceError {
    SourceError::new(kind, false, message.to_string())
}

impl MemoryRegistry {
    /// An empty registry without a referrers API that refuses deletes.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::default()
    }

    /// An empty registry with a referrers API (it answers pushes with `OCI-Subject`).
    pub fn with_referrers_api() -> MemoryRegistry {
        MemoryRegistry { state: std::sync::Arc::new(State { referrers_api: true, ..State::default() }) }
    }

    /// An empty registry whose `delete_manifest` deletes.
    pub fn with_deletes() -> MemoryRegistry {
        MemoryRegistry { state: std::sync::Arc::new(State { deletes: true, ..State::default() }) }
    }
}

impl State {
    /// Sets what every later call does.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stores a blob.
    pub fn insert_blob(&self, digest: &str, bytes: impl Into<Bytes>) {
        self.blobs.lock().unwrap().insert(digest.into(), bytes.into());
    }

    /// Stores a manifest under its digest (and under `tag` if given); returns the digest.
    pub fn insert_manifest(&self, tag: Option<&str>, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = ztoc::sha256_digest(&bytes);
        self.manifests.lock().unwrap().insert(digest.clone(), (media_type.into(), bytes));
        if let Some(tag) = tag {
            self.tags.lock().unwrap().insert(tag.into(), digest.clone());
        }
        digest
    }

    /// Removes a tag (the manifest stays).
    pub fn remove_tag(&self, tag: &str) {
        self.tags.lock().unwrap().remove(tag);
    }

    /// Makes the stream of this blob fail halfway, as a digest mismatch.
    pub fn break_blob(&self, digest: &str) {
        self.broken_blobs.lock().unwrap().push(digest.into());
    }

    /// Every push so far: `blob <digest>`, `manifest <digest>` or `tag <tag>`.
    pub fn pushes(&self) -> Vec<String> {
        self.pushes.lock().unwrap().clone()
    }

    /// Calls made so far (of any operation).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// A manifest by tag or digest: media type and bytes.
    pub fn manifest(&self, reference: &str) -> Option<(String, Bytes)> {
        let digest =
            self.tags.lock().unwrap().get(reference).cloned().unwrap_or_else(|| reference.to_string());
        self.manifests.lock().unwrap().get(&digest).cloned()
    }

    /// A blob by digest.
    pub fn blob(&self, digest: &str) -> Option<Bytes> {
        self.blobs.lock().unwrap().get(digest).cloned()
    }

    async fn enter(&self) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Serve => Ok(()),
            Mode::Fail { kind, retryable } => {
                Err(SourceError::new(kind, retryable, format!("injected {kind:?}")))
            }
            Mode::Hang => std::future::pending().await,
            Mode::PanicOnBlob => Ok(()),
        }
    }
}

impl Registry for MemoryRegistry {
    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        self.enter().await?;
        Ok(self.manifest(reference).map(|(media_type, bytes)| FetchedManifest {
            media_type,
            digest: ztoc::sha256_digest(&bytes),
            bytes,
        }))
    }

    async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, SourceError> {
        self.enter().await?;
        if *self.mode.lock().unwrap() == Mode::PanicOnBlob {
            panic!("injected panic reading {}", descriptor.digest);
        }
        let bytes =
            self.blob(&descriptor.digest).ok_or_else(|| error(SourceErrorKind::NotFound, "blob unknown"))?;
        let broken = self.broken_blobs.lock().unwrap().contains(&descriptor.digest);
        let chunks: Vec<Result<Bytes, SourceError>> = if broken {
            vec![Ok(bytes.slice(..bytes.len() / 2)), Err(error(SourceErrorKind::Corrupt, "digest mismatch"))]
        } else {
            // Odd-sized chunks, as a network delivers them.
            bytes.chunks(7919).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
        };
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        self.enter().await?;
        self.blob(&descriptor.digest).ok_or_else(|| error(SourceErrorKind::NotFound, "blob unknown"))
    }

    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        self.enter().await?;
        assert_eq!(ztoc::sha256_digest(&bytes), digest, "a pushed blob matches its digest");
        self.pushes.lock().unwrap().push(format!("blob {digest}"));
        self.insert_blob(digest, bytes);
        Ok(())
    }

    async fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest, SourceError> {
        self.enter().await?;
        let subject =
            serde_json::from_slice::<Manifest>(&bytes).ok().and_then(|m| m.subject).map(|s| s.digest);
        let tag = (!reference.starts_with("sha256:")).then_some(reference);
        let digest = self.insert_manifest(tag, media_type, bytes);
        match tag {
            Some(tag) => self.pushes.lock().unwrap().push(format!("tag {tag}")),
            None => {
                assert_eq!(reference, digest, "a manifest pushed by digest matches it");
                self.pushes.lock().unwrap().push(format!("manifest {digest}"));
            }
        }
        Ok(PushedManifest { digest, oci_subject: if self.referrers_api { subject } else { None } })
    }

    async fn referrers(
        &self,
        digest: &str,
        artifact_type: &str,
    ) -> Result<Option<Vec<Descriptor>>, SourceError> {
        self.enter().await?;
        if !self.referrers_api {
            return Ok(None);
        }
        let manifests = self.manifests.lock().unwrap();
        let referrers = manifests.iter().filter_map(|(d, (_, bytes))| {
            let manifest: Manifest = serde_json::from_slice(bytes).ok()?;
            (manifest.subject?.digest == digest && manifest.config.media_type == artifact_type).then(|| {
                Descriptor {
                    media_type: media::OCI_MANIFEST.into(),
                    digest: d.clone(),
                    size: bytes.len() as i64,
                    artifact_type: artifact_type.into(),
                    ..Descriptor::default()
                }
            })
        });
        Ok(Some(referrers.collect()))
    }

    async fn delete_manifest(&self, digest: &str) -> Result<bool, SourceError> {
        self.enter().await?;
        if !self.deletes {
            return Ok(false);
        }
        self.manifests.lock().unwrap().remove(digest);
        self.tags.lock().unwrap().retain(|_, d| d != digest);
        Ok(true)
    }
}
