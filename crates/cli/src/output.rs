//! Writing output files so that a failure never leaves a partial file behind.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes what `fill` produces to `path` atomically (a temp file in the same directory, renamed on
/// success), or to stdout when `path` is `-`.
pub fn write_atomically(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if crate::is_std_stream(path) {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        fill(&mut lock)?;
        return lock.flush().context("writing to stdout");
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".soci-indexer-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    {
        let mut writer = std::io::BufWriter::new(temp.as_file_mut());
        fill(&mut writer)?;
        writer.flush().with_context(|| format!("writing {}", path.display()))?;
    }
    temp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
