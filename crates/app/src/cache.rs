//! The CLI's zTOC cache: one small JSON file per key in a directory (by default
//! `$XDG_CACHE_HOME/soci-indexer`, else `~/.cache/soci-indexer`). Entries are written atomically
//! (temp file, then rename); an unreadable or foreign entry counts as a miss and is rewritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use index::cache::{BoxFuture, CacheError, CachedZtoc, ZtocCache};
use serde::{Deserialize, Serialize};

/// zTOC cache entries in a directory.
#[derive(Clone, Debug)]
pub struct FileCache {
    dir: PathBuf,
}

/// One file's content: the key is kept so a hash collision or a foreign file is never taken for a hit.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    #[serde(flatten)]
    value: CachedZtoc,
}

impl FileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> FileCache {
        FileCache { dir: dir.into() }
    }

    /// The default directory: `$XDG_CACHE_HOME/soci-indexer`, else `$HOME/.cache/soci-indexer`.
    pub fn default_dir() -> Option<PathBuf> {
        let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        non_empty("XDG_CACHE_HOME")
            .or_else(|| non_empty("HOME").map(|home| home.join(".cache")))
            .map(|base| base.join("soci-indexer"))
    }

    /// Where the entries live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        let name = ztoc::sha256_digest(key.as_bytes()).replace("sha256:", "");
        self.dir.join("ztoc").join(format!("{name}.json"))
    }

    fn read(&self, key: &str) -> Result<Option<CachedZtoc>, CacheError> {
        let bytes = match std::fs::read(self.path(key)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError(Box::new(e))),
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) if entry.key == key => Ok(Some(entry.value)),
            _ => {
                tracing::debug!(path = %self.path(key).display(), "unreadable zTOC cache entry ignored");
                Ok(None)
            }
        }
    }

    fn write(&self, key: &str, value: &CachedZtoc) -> Result<(), CacheError> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.dir);
        let io = |e: std::io::Error| CacheError(format!("{}: {e}", dir.display()).into());
        std::fs::create_dir_all(dir).map_err(io)?;
        let entry = Entry { key: key.into(), value: value.clone() };
        let bytes = serde_json::to_vec(&entry).map_err(|e| CacheError(Box::new(e)))?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

impl ZtocCache for FileCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<CachedZtoc>, CacheError>> {
        // Small files on a local disk: reading them inline is cheaper than a thread hop.
        Box::pin(std::future::ready(self.read(key)))
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a CachedZtoc) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(std::future::ready(self.write(key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(repository: &str) -> CachedZtoc {
        CachedZtoc {
            ztoc_digest: "sha256:aa".into(),
            ztoc_size: 12,
            registry: "r.example".into(),
            repository: repository.into(),
        }
    }

    #[tokio::test]
    async fn entries_round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(dir.path());
        assert_eq!(cache.get("k").await.unwrap(), None);
        cache.put("k", &value("a")).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(value("a")));
        cache.put("k", &value("b")).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(value("b")));
        assert_eq!(cache.get("other").await.unwrap(), None);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("ztoc")).unwrap().collect();
        assert_eq!(files.len(), 1, "no temp files left: {files:?}");
    }

    #[tokio::test]
    async fn a_corrupt_or_foreign_entry_is_a_miss_and_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(dir.path());
        cache.put("k", &value("a")).await.unwrap();
        std::fs::write(cache.path("k"), b"{not json").unwrap();
        assert_eq!(cache.get("k").await.unwrap(), None);
        let foreign = serde_json::to_vec(&Entry { key: "another key".into(), value: value("x") }).unwrap();
        std::fs::write(cache.path("k"), foreign).unwrap();
        assert_eq!(cache.get("k").await.unwrap(), None);
        cache.put("k", &value("c")).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(value("c")));
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_a_cache_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let cache = FileCache::new(&file);
        assert!(cache.put("k", &value("a")).await.is_err());
    }
}
