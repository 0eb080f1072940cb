//! Building a zTOC from a layer in one streaming pass.
//!
//! [`ZtocBuilder`] is the push-based core (feed bytes as they arrive, e.g. from an HTTP body);
//! [`build_ztoc`] is the thin adapter over any [`Read`].

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::gzip::CheckpointingInflater;
use crate::model::{first_overlap, CompressionInfo, Toc, Zinfo, Ztoc, DEFAULT_SPAN_SIZE, ZTOC_VERSION};
use crate::offset::CompressedOffset;
use crate::tar::{TarError, TarWalker};
use crate::zinfo::{TarZinfo, TAR_ZINFO_VERSION};

/// How a layer blob is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerFormat {
    /// gzip-compressed tar (one or more gzip members).
    Gzip,
    /// Plain, uncompressed tar.
    Tar,
}

impl LayerFormat {
    /// Tells the format from the first bytes of a blob: gzip magic, zstd magic (an error), else tar.
    pub fn detect(head: &[u8]) -> Result<LayerFormat, Error> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(LayerFormat::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Err(Error::Zstd)
        } else {
            Ok(LayerFormat::Tar)
        }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Uncompressed bytes between checkpoints (soci's default: 4 MiB).
    pub span_size: u64,
    /// Written into the zTOC's `build_tool_identifier`.
    pub build_tool_identifier: String,
    /// The layer's format, or `None` to detect it from the first bytes.
    pub format: Option<LayerFormat>,
}

impl BuildOptions {
    /// Options with soci's default span size and the given identifier.
    pub fn new(build_tool_identifier: impl Into<String>) -> BuildOptions {
        BuildOptions {
            span_size: DEFAULT_SPAN_SIZE,
            build_tool_identifier: build_tool_identifier.into(),
            format: None,
        }
    }
}

/// The decoder side of the builder, once the format is known.
enum Pass {
    /// Not enough bytes yet to tell the format.
    Detecting(Vec<u8>),
    /// A gzip layer.
    Gzip(Box<CheckpointingInflater>),
    /// A plain tar layer: fixed spans hashed over the raw bytes.
    Tar(TarSpans),
}

/// Span hashing for plain tar layers.
struct TarSpans {
    span_size: u64,
    total: u64,
    hasher: Sha256,
    digests: Vec<String>,
}

impl TarSpans {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.span_size - self.total % self.span_size;
            let take = room.min(data.len() as u64) as usize;
            self.hasher.update(&data[..take]);
            self.total += take as u64;
            data = &data[take..];
            if self.total % self.span_size == 0 {
                let hasher = std::mem::take(&mut self.hasher);
                self.digests.push(crate::digest_string(hasher));
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.total % self.span_size != 0 {
            self.digests.push(crate::digest_string(self.hasher));
        }
        self.digests
    }
}

/// A tar entry's encoded size in a zTOC, typically (a table, its name, and offsets).
const ENTRY_SIZE_ESTIMATE: u64 = 160;

/// Builds a zTOC from layer bytes pushed in pieces of any size.
pub struct ZtocBuilder {
    options: BuildOptions,
    pass: Pass,
    walker: TarWalker,
    fed: u64,
}

impl ZtocBuilder {
    /// A builder for one layer.
    pub fn new(options: BuildOptions) -> Result<ZtocBuilder, Error> {
        if options.span_size == 0 {
            return Err(Error::ZeroSpanSize);
        }
        if options.span_size > crate::MAX_SPAN_SIZE {
            // The zTOC stores it as an i64: a larger one would be written negative and never read back.
            return Err(Error::SpanSizeTooLarge(options.span_size));
        }
        let mut builder =
            ZtocBuilder { options, pass: Pass::Detecting(Vec::new()), walker: TarWalker::new(), fed: 0 };
        if let Some(format) = builder.options.format {
            builder.pass = builder.start(format)?;
        }
        Ok(builder)
    }

    fn start(&self, format: LayerFormat) -> Result<Pass, Error> {
        Ok(match format {
            LayerFormat::Gzip => Pass::Gzip(Box::new(CheckpointingInflater::new(self.options.span_size)?)),
            LayerFormat::Tar => Pass::Tar(TarSpans {
                span_size: self.options.span_size,
                total: 0,
                hasher: Sha256::new(),
                digests: Vec::new(),
            }),
        })
    }

    /// Compressed bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.fed
    }

    /// About how many bytes the zTOC would take if the layer ended now: checkpoints, span digests and
    /// entries (each counted at a typical encoded size). It only grows; callers bound it to refuse layers
    /// whose zTOC would not fit in memory (gzip bombs, millions of tiny files).
    pub fn estimated_size(&self) -> u64 {
        let checkpoints = match &self.pass {
            Pass::Gzip(inflater) => inflater.ztoc_bytes(),
            Pass::Detecting(_) | Pass::Tar(_) => 0,
        };
        checkpoints + self.walker.entry_count() as u64 * ENTRY_SIZE_ESTIMATE
    }

    /// Feeds the next bytes of the layer blob.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        self.fed += data.len() as u64;
        if let Pass::Detecting(head) = &mut self.pass {
            head.extend_from_slice(data);
            if head.len() < 4 {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.pass = self.start(LayerFormat::detect(&head)?)?;
            return self.feed_known(&head);
        }
        self.feed_known(data)
    }

    fn feed_known(&mut self, data: &[u8]) -> Result<(), Error> {
        let walker = &mut self.walker;
        match &mut self.pass {
            Pass::Detecting(_) => unreachable!("format is known"),
            Pass::Gzip(inflater) => inflater.feed(data, |out| {
                if !walker.is_done() {
                    walker.feed(out)?;
                }
                Ok(())
            }),
            Pass::Tar(spans) => {
                spans.feed(data);
                if !walker.is_done() {
                    walker.feed(data)?;
                }
                Ok(())
            }
        }
    }

    /// Ends the layer and returns its zTOC.
    pub fn finish(mut self) -> Result<Ztoc, Error> {
        if let Pass::Detecting(head) = &mut self.pass {
            let head = std::mem::take(head);
            self.pass = self.start(LayerFormat::detect(&head)?)?;
            self.feed_known(&head)?;
        }
        let (compressed_size, span_digests, zinfo) = match self.pass {
            Pass::Detecting(_) => unreachable!("format is known"),
            Pass::Gzip(inflater) => {
                let summary = inflater.finish()?;
                (summary.compressed_size, summary.span_digests, Zinfo::Gzip(summary.zinfo))
            }
            Pass::Tar(spans) => {
                let size = spans.total;
                let zinfo = TarZinfo {
                    version: TAR_ZINFO_VERSION,
                    span_size: spans.span_size as i64,
                    size: size as i64,
                };
                (CompressedOffset(size), spans.finish(), Zinfo::Tar(zinfo))
            }
        };
        let (metadata, uncompressed_archive_size) = self.walker.finish()?;
        // soci would write this zTOC and then fail to read it back; so would we.
        if let Some(overlap) = first_overlap(&metadata) {
            let previous = &metadata[overlap.previous];
            return Err(Error::Tar(TarError::SizeOverrunsNextEntry {
                name: String::from_utf8_lossy(&previous.name).into_owned(),
                data_offset: previous.uncompressed_offset.get(),
                size: previous.size_field(),
                next_offset: metadata[overlap.index].uncompressed_offset.get(),
            }));
        }
        Ok(Ztoc {
            version: ZTOC_VERSION.to_string(),
            build_tool_identifier: self.options.build_tool_identifier,
            compressed_archive_size: compressed_size,
            uncompressed_archive_size,
            toc: Toc { metadata },
            compression_info: CompressionInfo { span_digests, zinfo },
        })
    }
}

/// Reads a whole layer from `reader` and builds its zTOC; memory stays bounded by the zTOC itself.
pub fn build_ztoc(mut reader: impl Read, options: &BuildOptions) -> Result<Ztoc, Error> {
    let mut builder = ZtocBuilder::new(options.clone())?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        builder.feed(&buf[..n])?;
    }
    builder.finish()
}
