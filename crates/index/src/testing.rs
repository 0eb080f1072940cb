//! An in-memory [`Registry`] for tests of the engine and of its callers (feature `testing`): manifests
//! by digest and tag, blobs by digest, a log of every push, failures on demand, and several
//! repositories of one registry (for mounts and copies between them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::media;
use crate::oci::{Descriptor, Manifest};
use crate::registry::{
    BlobStream, Deletion, FetchedManifest, Location, PushedManifest, Registry, SourceError, SourceErrorKind,
    TagTarget,
};

/// The registry host every [`MemoryRegistry`] reports.
pub const HOST: &str = "memory.test";

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

/// One repository of a registry in memory. Clones share their content (a test keeps one handle while
/// the code under test holds another); [`MemoryRegistry::repository`] opens a sibling repository.
#[derive(Clone, Debug)]
pub struct MemoryRegistry {
    state: Arc<State>,
    world: Arc<World>,
    name: String,
}

/// The repositories of one in-memory registry.
#[derive(Debug, Default)]
struct World {
    repositories: Mutex<HashMap<String, Arc<State>>>,
    no_mounts: AtomicBool,
    false_mounts: AtomicBool,
}

impl std::ops::Deref for MemoryRegistry {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

/// What one repository of a [`MemoryRegistry`] holds.
#[derive(Debug, Default)]
pub struct State {
    manifests: Mutex<HashMap<String, (String, Bytes)>>,
    tags: Mutex<HashMap<String, String>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    pushes: Mutex<Vec<String>>,
    broken_blobs: Mutex<Vec<String>>,
    hanging_blobs: Mutex<Vec<String>>,
    calls: AtomicUsize,
    mode: Mutex<Mode>,
    referrers_api: bool,
    deletes: bool,
    /// Removes one tag on `untag`, as ECR's `BatchDeleteImage` by tag does.
    untags: bool,
    /// Tags the listing leaves out (a registry whose tag list lags, or a tag pushed after the listing).
    unlisted: Mutex<Vec<String>>,
    /// References whose manifest pushes fail (a quota, a permission, a deadline).
    refused: Mutex<Vec<String>>,
    /// When each manifest was first stored (for listings of untagged manifests by age, as ECR's).
    stored_at: Mutex<HashMap<String, std::time::Instant>>,
    /// Reads of one reference held until this many have arrived (to force a race).
    gate: Mutex<Option<(String, Arc<tokio::sync::Barrier>, usize)>>,
}

fn error(kind: SourceErrorKind, message: &str) -> SourceError {
    SourceError::new(kind, false, message.to_string())
}

impl Default for MemoryRegistry {
    fn default() -> MemoryRegistry {
        MemoryRegistry::with_state(State::default())
    }
}

impl MemoryRegistry {
    /// An empty repository `app`, without a referrers API, refusing deletes, mounting blobs.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::default()
    }

    /// An empty repository with a referrers API (it answers pushes with `OCI-Subject`).
    pub fn with_referrers_api() -> MemoryRegistry {
        MemoryRegistry::with_state(State { referrers_api: true, ..State::default() })
    }

    /// An empty repository whose `delete_manifest` deletes.
    pub fn with_deletes() -> MemoryRegistry {
        MemoryRegistry::with_state(State { deletes: true, ..State::default() })
    }

    /// An empty repository that deletes as ECR does: a manifest DELETE by digest removes it and every
    /// tag pointing at it, and `untag` removes one tag only (`BatchDeleteImage` by `imageTag`).
    pub fn like_ecr() -> MemoryRegistry {
        MemoryRegistry::with_state(State { deletes: true, untags: true, ..State::default() })
    }

    fn with_state(state: State) -> MemoryRegistry {
        let state = Arc::new(state);
        let world = World::default();
        world.repositories.lock().unwrap().insert("app".into(), state.clone());
        MemoryRegistry { state, world: Arc::new(world), name: "app".into() }
    }

    /// Another repository of the same registry (created empty, with the same settings, on first use).
    pub fn repository(&self, name: &str) -> MemoryRegistry {
        let mut repositories = self.world.repositories.lock().unwrap();
        let state = repositories
            .entry(name.into())
            .or_insert_with(|| {
                Arc::new(State {
                    referrers_api: self.referrers_api,
                    deletes: self.deletes,
                    untags: self.untags,
                    ..State::default()
                })
            })
            .clone();
        MemoryRegistry { state, world: self.world.clone(), name: name.into() }
    }

    /// Makes the registry answer mount requests with an upload session, as one without mounts does.
    pub fn refuse_mounts(&self) {
        self.world.no_mounts.store(true, Ordering::SeqCst);
    }

    /// Makes the registry answer mount requests with 201 without mounting anything (a registry bug the
    /// cache must survive).
    pub fn claim_mounts_without_doing_them(&self) {
        self.world.false_mounts.store(true, Ordering::SeqCst);
    }

    fn sibling(&self, name: &str) -> Option<Arc<State>> {
        self.world.repositories.lock().unwrap().get(name).cloned()
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

    /// Removes a blob.
    pub fn remove_blob(&self, digest: &str) {
        self.blobs.lock().unwrap().remove(digest);
    }

    /// Stores a manifest under its digest (and under `tag` if given); returns the digest.
    pub fn insert_manifest(&self, tag: Option<&str>, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = ztoc::sha256_digest(&bytes);
        self.manifests.lock().unwrap().insert(digest.clone(), (media_type.into(), bytes));
        self.stored_at.lock().unwrap().entry(digest.clone()).or_insert_with(std::time::Instant::now);
        if let Some(tag) = tag {
            self.tags.lock().unwrap().insert(tag.into(), digest.clone());
        }
        digest
    }

    /// Holds the first `parties` reads of `reference` until all of them arrived: concurrent writers then
    /// all read the same old content, as in the worst interleaving of a read-modify-write.
    pub fn gate_reads(&self, reference: &str, parties: usize) {
        *self.gate.lock().unwrap() =
            Some((reference.into(), Arc::new(tokio::sync::Barrier::new(parties)), parties));
    }

    async fn pass_gate(&self, reference: &str) {
        let barrier = {
            let mut gate = self.gate.lock().unwrap();
            match gate.as_mut() {
                Some((gated, barrier, left)) if gated == reference && *left > 0 => {
                    *left -= 1;
                    Some(barrier.clone())
                }
                _ => None,
            }
        };
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
    }

    /// Stores an image given as `(digest, media type, bytes)` parts, as testkit's `TestImage` holds them:
    /// its blobs, its platform manifests by digest, and its root under `tag`; returns the root's digest.
    pub fn insert_image(
        &self,
        blobs: &[(String, String, Vec<u8>)],
        manifests: &[(String, String, Vec<u8>)],
        root: &(String, String, Vec<u8>),
        tag: &str,
    ) -> String {
        for (digest, _, bytes) in blobs {
            self.insert_blob(digest, bytes.clone());
        }
        for (_, media_type, bytes) in manifests {
            self.insert_manifest(None, media_type, bytes.clone());
        }
        self.insert_manifest(Some(tag), &root.1, root.2.clone())
    }

    /// Removes a tag (the manifest stays).
    pub fn remove_tag(&self, tag: &str) {
        self.tags.lock().unwrap().remove(tag);
    }

    /// Leaves `tag` out of every later tag listing, though it stays (a lagging listing, or a tag
    /// re-pushed just after the listing was read).
    pub fn leave_out_of_listing(&self, tag: &str) {
        self.unlisted.lock().unwrap().push(tag.into());
    }

    /// Makes every later manifest push to `reference` fail (retryable, as throttling past a deadline).
    pub fn refuse_pushes_to(&self, reference: &str) {
        self.refused.lock().unwrap().push(reference.into());
    }

    /// The digest `tag` points at, if it exists.
    pub fn tag(&self, tag: &str) -> Option<String> {
        self.tags.lock().unwrap().get(tag).cloned()
    }

    /// Makes the stream of this blob fail halfway, as a digest mismatch.
    pub fn break_blob(&self, digest: &str) {
        self.broken_blobs.lock().unwrap().push(digest.into());
    }

    /// Makes reads of this blob never answer (a layer too big for the time left).
    pub fn hang_blob(&self, digest: &str) {
        self.hanging_blobs.lock().unwrap().push(digest.into());
    }

    /// Every push so far: `blob <digest>`, `mount <digest>`, `manifest <digest>` or `tag <tag>`.
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

    /// The blob as a network delivers it: odd-sized chunks, or a failure halfway if broken.
    fn stream(&self, digest: &str) -> Result<BlobStream, SourceError> {
        let bytes = self.blob(digest).ok_or_else(|| error(SourceErrorKind::NotFound, "blob unknown"))?;
        let broken = self.broken_blobs.lock().unwrap().iter().any(|d| d == digest);
        let chunks: Vec<Result<Bytes, SourceError>> = if broken {
            vec![Ok(bytes.slice(..bytes.len() / 2)), Err(error(SourceErrorKind::Corrupt, "digest mismatch"))]
        } else {
            bytes.chunks(7919).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
        };
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    fn log(&self, push: String) {
        self.pushes.lock().unwrap().push(push);
    }

    async fn enter(&self) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Serve | Mode::PanicOnBlob => Ok(()),
            Mode::Fail { kind, retryable } => {
                Err(SourceError::new(kind, retryable, format!("injected {kind:?}")))
            }
            Mode::Hang => std::future::pending().await,
        }
    }
}

impl Registry for MemoryRegistry {
    fn location(&self) -> Location {
        Location { registry: HOST.into(), repository: self.name.clone() }
    }

    async fn list_tags(&self) -> Result<Vec<String>, SourceError> {
        self.enter().await?;
        let unlisted = self.unlisted.lock().unwrap().clone();
        let mut tags: Vec<String> =
            self.tags.lock().unwrap().keys().filter(|t| !unlisted.contains(t)).cloned().collect();
        tags.sort();
        Ok(tags)
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, SourceError> {
        self.enter().await?;
        Ok(self.blob(digest).is_some())
    }

    async fn mount_blob(&self, digest: &str, from_repository: &str) -> Result<bool, SourceError> {
        self.enter().await?;
        if self.world.no_mounts.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if self.world.false_mounts.load(Ordering::SeqCst) {
            return Ok(true);
        }
        let Some(bytes) = self.sibling(from_repository).and_then(|source| source.blob(digest)) else {
            return Ok(false);
        };
        self.log(format!("mount {digest} from {from_repository}"));
        self.insert_blob(digest, bytes);
        Ok(true)
    }

    async fn get_blob_from(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<BlobStream, SourceError> {
        self.enter().await?;
        let source =
            self.sibling(repository).ok_or_else(|| error(SourceErrorKind::NotFound, "repository unknown"))?;
        source.stream(&descriptor.digest)
    }

    async fn get_manifest(&self, reference: &str) -> Result<Option<FetchedManifest>, SourceError> {
        self.enter().await?;
        // Read first, then wait: gated readers all see what was there before any of them writes.
        let found = self.manifest(reference);
        self.pass_gate(reference).await;
        Ok(found.map(|(media_type, bytes)| FetchedManifest {
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
        if self.hanging_blobs.lock().unwrap().contains(&descriptor.digest) {
            std::future::pending::<()>().await;
        }
        self.stream(&descriptor.digest)
    }

    async fn get_blob_bytes(&self, descriptor: &Descriptor) -> Result<Bytes, SourceError> {
        self.enter().await?;
        self.blob(&descriptor.digest).ok_or_else(|| error(SourceErrorKind::NotFound, "blob unknown"))
    }

    async fn push_blob(&self, digest: &str, bytes: Bytes) -> Result<(), SourceError> {
        self.enter().await?;
        assert_eq!(ztoc::sha256_digest(&bytes), digest, "a pushed blob matches its digest");
        self.log(format!("blob {digest}"));
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
        if self.refused.lock().unwrap().iter().any(|r| r == reference) {
            return Err(SourceError::new(
                SourceErrorKind::Other,
                true,
                format!("injected: push to {reference} refused"),
            ));
        }
        let subject =
            serde_json::from_slice::<Manifest>(&bytes).ok().and_then(|m| m.subject).map(|s| s.digest);
        let tag = (!reference.starts_with("sha256:")).then_some(reference);
        let digest = self.insert_manifest(tag, media_type, bytes);
        match tag {
            Some(tag) => self.log(format!("tag {tag}")),
            None => {
                assert_eq!(reference, digest, "a manifest pushed by digest matches it");
                self.log(format!("manifest {digest}"));
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

    async fn delete_manifest(&self, digest: &str) -> Result<Deletion, SourceError> {
        self.enter().await?;
        if !self.deletes {
            return Ok(Deletion::Refused);
        }
        if self.manifests.lock().unwrap().remove(digest).is_none() {
            return Ok(Deletion::AlreadyGone);
        }
        // As in distribution and ECR: every tag of the digest goes with it.
        self.tags.lock().unwrap().retain(|_, d| d != digest);
        self.log(format!("delete {digest}"));
        Ok(Deletion::Deleted)
    }

    async fn resolve_tag(&self, tag: &str) -> Result<Option<TagTarget>, SourceError> {
        self.enter().await?;
        let Some(digest) = self.tag(tag) else { return Ok(None) };
        let media_type =
            self.manifests.lock().unwrap().get(&digest).map(|(media_type, _)| media_type.clone());
        Ok(Some(TagTarget { tag: tag.into(), digest, media_type }))
    }

    fn can_untag(&self) -> bool {
        self.untags
    }

    async fn untagged_manifests(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Option<Vec<String>>, SourceError> {
        self.enter().await?;
        let tagged: Vec<String> = self.tags.lock().unwrap().values().cloned().collect();
        let stored_at = self.stored_at.lock().unwrap();
        let mut untagged: Vec<String> = self
            .manifests
            .lock()
            .unwrap()
            .keys()
            .filter(|d| !tagged.contains(d) && stored_at.get(*d).is_some_and(|at| at.elapsed() >= older_than))
            .cloned()
            .collect();
        untagged.sort();
        Ok(Some(untagged))
    }

    async fn untag(&self, tag: &str) -> Result<bool, SourceError> {
        self.enter().await?;
        if !self.untags {
            return Ok(false);
        }
        self.tags.lock().unwrap().remove(tag);
        self.log(format!("untag {tag}"));
        Ok(true)
    }
}

/// A zTOC cache in memory that can be made to fail.
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, crate::cache::CachedZtoc>>,
    failing: AtomicBool,
}

impl MemoryCache {
    /// Makes every later call fail (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every entry, by key.
    pub fn entries(&self) -> HashMap<String, crate::cache::CachedZtoc> {
        self.entries.lock().unwrap().clone()
    }

    fn check(&self) -> Result<(), crate::cache::CacheError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(crate::cache::CacheError("injected cache failure".into()));
        }
        Ok(())
    }
}

impl crate::cache::ZtocCache for MemoryCache {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> crate::cache::BoxFuture<'a, Result<Option<crate::cache::CachedZtoc>, crate::cache::CacheError>> {
        Box::pin(async move {
            self.check()?;
            Ok(self.entries.lock().unwrap().get(key).cloned())
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a crate::cache::CachedZtoc,
    ) -> crate::cache::BoxFuture<'a, Result<(), crate::cache::CacheError>> {
        Box::pin(async move {
            self.check()?;
            self.entries.lock().unwrap().insert(key.into(), value.clone());
            Ok(())
        })
    }
}
