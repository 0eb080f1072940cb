//! The checkpointing gzip inflater: one pass over the compressed bytes that yields the uncompressed
//! stream, soci's checkpoints and the span digests.
//!
//! It is a push-based core: [`CheckpointingInflater::feed`] takes the next compressed bytes and hands
//! every piece of output to a callback; [`CheckpointingInflater::finish`] returns the zinfo. The rules
//! are those of soci's `generate_zinfo_from_fp` (zran.c):
//! * inflate with `Z_BLOCK`, so zlib stops at every deflate block boundary (and right after each gzip
//!   member header);
//! * at a boundary that is not inside the last block of a member, add a checkpoint when nothing was
//!   output yet or more than `span_size` bytes were output since the last checkpoint;
//! * a checkpoint records `in`, `out`, the unused bits of byte `in - 1` and the last 32 KiB of output;
//! * at the end of a member, if more bytes follow they must be another gzip member (multi-member gzip);
//!   the counters run on across members.
//!
//! Span digests are computed on the fly: span `i` covers the compressed bytes
//! `[in_i - (bits_i != 0), in_{i+1})` (the last span runs to the end of the blob), so the bytes are
//! hashed as they go by and never re-read.

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::offset::{CompressedOffset, UncompressedOffset};
use crate::zinfo::{GzipZinfo, WINDOW_SIZE};
use crate::zlib::{Flush, Inflater, ZlibError, WINDOW_BITS_AUTO, WINDOW_BITS_RAW};

/// Output produced per inflate call at most; the window history sits in front of it.
const OUTPUT_CHUNK: usize = 256 * 1024;

/// What a finished pass produced.
#[derive(Debug)]
pub(crate) struct InflateSummary {
    /// The checkpoints.
    pub zinfo: GzipZinfo,
    /// `sha256:<hex>` per span.
    pub span_digests: Vec<String>,
    /// Size of the compressed input.
    pub compressed_size: CompressedOffset,
}

/// Where the inflater is between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberState {
    /// Inside a member (its header, blocks or trailer).
    Inside,
    /// A member just ended; more input means another member.
    Ended,
}

/// The one-pass checkpointing inflater (see the module docs).
pub(crate) struct CheckpointingInflater {
    inflater: Inflater,
    span_size: u64,
    /// Compressed bytes consumed by zlib so far.
    total_in: u64,
    /// Uncompressed bytes produced so far.
    total_out: u64,
    /// `total_out` at the last checkpoint.
    last_checkpoint_out: u64,
    zinfo: GzipZinfo,
    /// `[window history | output chunk]`: the 32 KiB before `out_pos` are always the latest output.
    out: Box<[u8]>,
    out_pos: usize,
    state: MemberState,
    /// Members started so far.
    members: u64,
    /// `total_out` when the current member started (to tell trailing garbage from a truncated member).
    member_start_out: u64,
    /// Where the last complete member ended.
    last_member_end: u64,
    /// Hasher of the current span; `None` before the first checkpoint (the gzip header is in no span).
    span_hasher: Option<Sha256>,
    span_digests: Vec<String>,
    /// Compressed bytes fed so far (≥ `total_in`).
    total_fed: u64,
    /// Last byte of the previous `feed` call, for a span that starts one byte back.
    last_fed_byte: u8,
    /// `total_in` when the current member started.
    member_start_in: u64,
    /// Unused bits of the last byte when the last inflate call stopped at a block boundary.
    boundary_bits: Option<u8>,
}

/// A span digest as stored: `sha256:` and 64 hex digits, a length and a NUL.
const SPAN_DIGEST_SIZE: usize = 80;

/// How to rebuild the stream as it was before an inflate call, should the call fail with a lost message
/// (see `Inflater::replay`): cheaply at a member start or a block boundary, by a copy elsewhere.
enum CallStart {
    /// Nothing of the member consumed yet: a fresh stream.
    MemberStart,
    /// At a block boundary: a raw stream primed with `bits` of the byte before, with the member's last
    /// 32 KiB of output as its window.
    Boundary { bits: u8 },
    /// Inside a block or a header: a copy of the stream, if zlib could make one.
    Copy(Option<Inflater>),
}

impl CheckpointingInflater {
    /// A pass that puts a checkpoint every `span_size` uncompressed bytes (at block granularity).
    pub(crate) fn new(span_size: u64) -> Result<CheckpointingInflater, Error> {
        if span_size == 0 {
            return Err(Error::ZeroSpanSize);
        }
        let inflater = Inflater::new(WINDOW_BITS_AUTO).map_err(|e| corrupt(0, e))?;
        Ok(CheckpointingInflater {
            inflater,
            span_size,
            total_in: 0,
            total_out: 0,
            last_checkpoint_out: 0,
            zinfo: GzipZinfo::new(span_size),
            out: vec![0u8; WINDOW_SIZE + OUTPUT_CHUNK].into_boxed_slice(),
            out_pos: WINDOW_SIZE,
            state: MemberState::Inside,
            members: 1,
            member_start_out: 0,
            last_member_end: 0,
            span_hasher: None,
            span_digests: Vec::new(),
            total_fed: 0,
            last_fed_byte: 0,
            member_start_in: 0,
            boundary_bits: None,
        })
    }

    /// Bytes the zTOC holds for this layer so far: checkpoint windows and span digests.
    pub(crate) fn ztoc_bytes(&self) -> u64 {
        (self.zinfo.as_blob().len() + self.span_digests.len() * SPAN_DIGEST_SIZE) as u64
    }

    /// Feeds the next compressed bytes; each piece of uncompressed output goes to `on_output`.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        mut on_output: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let chunk_start = self.total_fed;
        // Bytes of `input` already added to a span hash (or skipped as gzip header).
        let mut hashed = 0usize;
        let mut pos = 0usize;
        while pos < input.len() {
            if self.state == MemberState::Ended {
                // More bytes after a complete member: they must be the next member.
                self.inflater.reset(WINDOW_BITS_AUTO).map_err(|e| corrupt(self.total_in, e))?;
                self.state = MemberState::Inside;
                self.members += 1;
                self.member_start_out = self.total_out;
                self.member_start_in = self.total_in;
                self.boundary_bits = None;
            }
            if self.out_pos == self.out.len() {
                // Keep the last 32 KiB as history in front of the next chunk of output.
                self.out.copy_within(self.out.len() - WINDOW_SIZE.., 0);
                self.out_pos = WINDOW_SIZE;
            }
            let start = self.call_start();
            let progress =
                match self.inflater.inflate(&input[pos..], &mut self.out[self.out_pos..], Flush::Block) {
                    Ok(progress) => progress,
                    Err(e) => {
                        let byte_before = if pos > 0 { input[pos - 1] } else { self.last_fed_byte };
                        return Err(self.inflate_error(e, start, &input[pos..], byte_before));
                    }
                };
            pos += progress.consumed;
            self.total_in += progress.consumed as u64;
            if progress.produced > 0 {
                let produced = &self.out[self.out_pos..self.out_pos + progress.produced];
                self.out_pos += progress.produced;
                self.total_out += progress.produced as u64;
                on_output(produced)?;
            }
            if progress.stream_end {
                self.state = MemberState::Ended;
                self.last_member_end = self.total_in;
                continue;
            }
            let data_type = self.inflater.data_type();
            let at_boundary = data_type & 128 != 0 && data_type & 64 == 0;
            self.boundary_bits = at_boundary.then_some((data_type & 7) as u8);
            if at_boundary
                && (self.total_out == 0 || self.total_out - self.last_checkpoint_out > self.span_size)
            {
                let bits = (data_type & 7) as u8;
                self.add_checkpoint(bits, input, chunk_start, &mut hashed);
                self.last_checkpoint_out = self.total_out;
            }
            if progress.consumed == 0 && progress.produced == 0 && !at_boundary {
                // zlib needs more input than this chunk holds (e.g. a header split across chunks).
                break;
            }
        }
        if let Some(hasher) = self.span_hasher.as_mut() {
            hasher.update(&input[hashed..]);
        }
        self.total_fed += input.len() as u64;
        if let Some(&last) = input.last() {
            self.last_fed_byte = last;
        }
        if pos < input.len() {
            // Only reachable if zlib stops consuming while input remains, which it does not do with
            // output space available; refuse rather than silently drop bytes.
            return Err(Error::CorruptGzip {
                offset: CompressedOffset(self.total_in),
                reason: "inflate stopped consuming input".into(),
            });
        }
        Ok(())
    }

    fn add_checkpoint(&mut self, bits: u8, input: &[u8], chunk_start: u64, hashed: &mut usize) {
        // Everything before `total_in` belongs to the span that ends here.
        let end_in_chunk = (self.total_in - chunk_start) as usize;
        if let Some(mut hasher) = self.span_hasher.take() {
            hasher.update(&input[*hashed..end_in_chunk]);
            self.span_digests.push(crate::digest_string(hasher));
        }
        let mut hasher = Sha256::new();
        if bits != 0 {
            // The new span starts one byte back: its first bits are in the last byte of the old one.
            let shared = if end_in_chunk > 0 { input[end_in_chunk - 1] } else { self.last_fed_byte };
            hasher.update([shared]);
        }
        self.span_hasher = Some(hasher);
        *hashed = end_in_chunk;
        let window = &self.out[self.out_pos - WINDOW_SIZE..self.out_pos];
        self.zinfo.push(
            CompressedOffset(self.total_in),
            UncompressedOffset(self.total_out),
            bits,
            [window, &[]],
        );
    }

    /// How the stream can be rebuilt as it is now, before the next inflate call.
    fn call_start(&mut self) -> CallStart {
        if self.total_in == self.member_start_in {
            CallStart::MemberStart
        } else if let Some(bits) = self.boundary_bits {
            CallStart::Boundary { bits }
        } else {
            CallStart::Copy(self.inflater.try_clone().ok())
        }
    }

    /// The error for a failed inflate call that started as `start` on `input` (the byte before it is
    /// `byte_before`): zlib's first message and the compressed offset where it stopped.
    fn inflate_error(&self, err: ZlibError, start: CallStart, input: &[u8], byte_before: u8) -> Error {
        if self.members > 1 && self.total_out == self.member_start_out {
            // The bytes after a complete member did not decode as a gzip member.
            return Error::TrailingData {
                offset: CompressedOffset(self.last_member_end),
                reason: err.message,
            };
        }
        let err = if Inflater::lost_message(&err) {
            self.replay(start, byte_before)
                .and_then(|mut replay| replay.replay(input, Flush::Block))
                .unwrap_or(err)
        } else {
            err
        };
        corrupt(self.total_in + err.consumed as u64, err)
    }

    /// The stream as it was when the failed call started.
    fn replay(&self, start: CallStart, byte_before: u8) -> Option<Inflater> {
        match start {
            CallStart::MemberStart => Inflater::new(WINDOW_BITS_AUTO).ok(),
            CallStart::Boundary { bits } => {
                let mut raw = Inflater::new(WINDOW_BITS_RAW).ok()?;
                if bits != 0 {
                    raw.prime(bits, byte_before >> (8 - bits)).ok()?;
                }
                // The window: the member's output so far, up to 32 KiB, which ends at `out_pos`.
                let history = (self.total_out - self.member_start_out).min(WINDOW_SIZE as u64) as usize;
                let window = &self.out[self.out_pos - history..self.out_pos];
                if !window.is_empty() {
                    raw.set_dictionary(window).ok()?;
                }
                Some(raw)
            }
            CallStart::Copy(copy) => copy,
        }
    }

    /// Ends the input: the zinfo, span digests and sizes, or an error if the stream is incomplete.
    pub(crate) fn finish(mut self) -> Result<InflateSummary, Error> {
        if self.state != MemberState::Ended {
            if self.members > 1 && self.total_out == self.member_start_out {
                return Err(Error::TrailingData {
                    offset: CompressedOffset(self.last_member_end),
                    reason: "incomplete gzip header".into(),
                });
            }
            return Err(Error::TruncatedGzip { offset: CompressedOffset(self.total_fed) });
        }
        if let Some(hasher) = self.span_hasher.take() {
            self.span_digests.push(crate::digest_string(hasher));
        }
        Ok(InflateSummary {
            zinfo: self.zinfo,
            span_digests: self.span_digests,
            compressed_size: CompressedOffset(self.total_fed),
        })
    }
}

fn corrupt(offset: u64, err: ZlibError) -> Error {
    Error::CorruptGzip { offset: CompressedOffset(offset), reason: err.message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rules_img")
    }

    fn run(data: &[u8], span: u64, chunk: usize) -> Result<(InflateSummary, Vec<u8>), Error> {
        let mut inflater = CheckpointingInflater::new(span)?;
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            inflater.feed(piece, |o| {
                out.extend_from_slice(o);
                Ok(())
            })?;
        }
        Ok((inflater.finish()?, out))
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The checkpoint blob and span digests soci wrote appear verbatim in its zTOCs.
    #[test]
    fn checkpoints_and_digests_match_the_soci_corpus() {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(corpus_dir().join("manifest.json")).unwrap()).unwrap();
        let mut checked = 0;
        for case in manifest.as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let layer = std::fs::read(corpus_dir().join(case["input"].as_str().unwrap())).unwrap();
            let ztoc = std::fs::read(corpus_dir().join(format!("{name}.ztoc"))).unwrap();
            let span = case["span"].as_u64().unwrap();
            for chunk in [1 << 14, 1, 4093] {
                let (summary, _) = run(&layer, span, chunk).unwrap();
                assert!(
                    contains(&ztoc, summary.zinfo.as_blob()),
                    "{name}: checkpoint blob differs (chunk {chunk})"
                );
                assert_eq!(summary.span_digests.len(), summary.zinfo.len(), "{name}");
                for digest in &summary.span_digests {
                    assert!(
                        contains(&ztoc, digest.as_bytes()),
                        "{name}: digest {digest} not in the soci zTOC"
                    );
                }
                assert_eq!(summary.compressed_size.get(), layer.len() as u64);
            }
            checked += 1;
        }
        assert_eq!(checked, 27);
    }

    #[test]
    fn output_is_the_whole_multi_member_stream() {
        let layer = std::fs::read(corpus_dir().join("multi-text.tar.gz")).unwrap();
        let mut expected = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&layer[..]), &mut expected)
            .unwrap();
        let (summary, out) = run(&layer, 65536, 1000).unwrap();
        assert_eq!(out, expected);
        assert!(summary.zinfo.len() > 1, "a 64 KiB span over this layer gives several checkpoints");
    }

    #[test]
    fn truncated_stream_is_reported_as_truncated() {
        let layer = std::fs::read(corpus_dir().join("text-l6.tar.gz")).unwrap();
        for cut in [1, 11, layer.len() / 2, layer.len() - 1] {
            let err = run(&layer[..cut], 4096, 4096).unwrap_err();
            assert!(matches!(err, Error::TruncatedGzip { .. }), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn trailing_garbage_is_named() {
        let mut layer = std::fs::read(corpus_dir().join("single.tar.gz")).unwrap();
        let end = layer.len() as u64;
        for garbage in [&b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"[..], b"x", b"\x1f\x8b"] {
            layer.truncate(end as usize);
            layer.extend_from_slice(garbage);
            match run(&layer, 4096, 1 << 14).unwrap_err() {
                Error::TrailingData { offset, .. } => assert_eq!(offset.get(), end),
                other => panic!("garbage {garbage:?}: expected TrailingData, got {other}"),
            }
        }
    }

    /// One flipped byte is reported with zlib's own first message, at or after the byte, however the
    /// input is cut into pieces (zlib-rs's fast path loses its message; see `zlib::Inflater::replay`).
    #[test]
    fn a_corrupt_byte_is_reported_with_zlibs_message_where_it_fails() {
        let layer = testkit::generate_layer(
            5,
            &testkit::LayerConfig { entries: 40, max_file_size: 16 * 1024, pax_percent: 10 },
        );
        let blob = testkit::gzip(&layer.tar, &testkit::GzipOptions::default());
        let mut messages = std::collections::BTreeSet::new();
        let mut reported = 0;
        for (round, at) in (20..blob.len() - 8).step_by(blob.len() / 300).enumerate() {
            let mut bad = blob.clone();
            bad[at] ^= 0xff;
            // Small pieces start most inflate calls inside a block, where the stream is copied to replay
            // a failed call; they are slow, so only some rounds use them.
            let small = if round % 8 == 0 { 97 } else { 4093 };
            for chunk in [blob.len(), small] {
                // The flip may also decode into a bad tar header, or go unnoticed by zlib until the
                // trailer's check: only zlib's reports are looked at.
                if let Err(Error::CorruptGzip { offset, reason }) = run(&bad, 8192, chunk) {
                    assert_ne!(reason, "repeated call with bad state", "byte {at}, chunks of {chunk}");
                    assert!(offset.get() > at as u64, "byte {at}: reported at {offset}, before the byte");
                    messages.insert(reason);
                    reported += 1;
                }
            }
        }
        assert!(reported > 20, "{reported} corrupt bytes reported by zlib");
        assert!(messages.len() >= 3, "several distinct zlib messages: {messages:?}");
    }

    #[test]
    fn corrupt_deflate_data_is_an_error() {
        let mut layer = std::fs::read(corpus_dir().join("text-l6.tar.gz")).unwrap();
        for b in &mut layer[100..140] {
            *b ^= 0x5a;
        }
        let err = run(&layer, 4096, 1 << 14).unwrap_err();
        assert!(matches!(err, Error::CorruptGzip { .. }), "{err}");
    }
}
