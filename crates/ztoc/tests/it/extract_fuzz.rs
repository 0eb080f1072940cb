//! `extract` on zTOCs that `decode` accepts but that do not describe the layer: real zTOCs of generated
//! layers with their checkpoints, spans, sizes and entries mutated, and hand-built ones. Every run must
//! end in `Ok` with the entry's bytes or in a named error: no panic, no abort, no read past the blob and
//! no allocation larger than the blob itself (every span we may read lies inside it).

// The watching global allocator below is the one unsafe part: it forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use testkit::{generate_layer, gzip, GzipOptions, LayerConfig, Rng};
use ztoc::codec::{decode, encode};
use ztoc::extract::extract_entry;
use ztoc::zinfo::{GzipZinfo, TarZinfo, PACKED_CHECKPOINT_SIZE, WINDOW_SIZE};
use ztoc::{
    build_ztoc, BuildOptions, CompressedOffset, EntryType, Error, FileMetadata, LayerFormat,
    UncompressedOffset, Zinfo, Ztoc,
};

/// The system allocator, refusing any single allocation over 1 GiB (so that a bug shows up as a clean
/// abort rather than as a machine thrashing) and recording the largest one made while tracking is on.
struct Watching;

/// Allocations above this are refused.
const REFUSE_OVER: usize = 1 << 30;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with a null pointer.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_OVER {
            return std::ptr::null_mut();
        }
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSE_OVER {
            return std::ptr::null_mut();
        }
        note(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// What one extraction did.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    ok: usize,
    errors: std::collections::BTreeMap<String, usize>,
}

/// Bytes of the extraction machinery itself (inflate window and scratch buffers), besides spans.
const OWN_BUFFERS: usize = 1 << 20;

/// Extracts `entry` with `ztoc` from `blob` and checks the outcome.
fn extract_checked(blob: &[u8], ztoc: &Ztoc, entry: &FileMetadata, tally: &mut Tally, case: &str) {
    let mut out = Vec::new();
    LARGEST.with(|largest| largest.set(0));
    TRACKING.with(|tracking| tracking.set(true));
    let result = extract_entry(&mut Cursor::new(blob), ztoc, entry, &mut out);
    TRACKING.with(|tracking| tracking.set(false));
    let largest = LARGEST.with(Cell::get);
    // The output vector grows to the entry's size when extraction succeeds; nothing else may be bigger
    // than the blob.
    let allowed = blob.len() + OWN_BUFFERS + if result.is_ok() { 2 * out.len() } else { 0 };
    assert!(largest <= allowed, "{case}: allocated {largest} bytes for a {}-byte blob", blob.len());
    tally.runs += 1;
    match result {
        Ok(stats) => {
            assert_eq!(out.len() as u64, stats.bytes_written, "{case}");
            assert_eq!(stats.bytes_written, entry.uncompressed_size, "{case}");
            tally.ok += 1;
        }
        Err(Error::Io(e)) => panic!("{case}: an I/O error means a read outside the blob: {e}"),
        Err(error) => {
            let name = format!("{error:?}");
            let variant = name.split(['(', ' ', '{']).next().unwrap_or_default().to_owned();
            *tally.errors.entry(variant).or_default() += 1;
        }
    }
}

/// Encodes and decodes `ztoc` (only what `decode` accepts is interesting), then extracts up to 12
/// regular files with data.
fn run_case(blob: &[u8], ztoc: &Ztoc, tally: &mut Tally, case: &str) -> bool {
    let Ok(decoded) = decode(&encode(ztoc)) else { return false };
    let with_data =
        decoded.toc.metadata.iter().filter(|e| e.entry_type == EntryType::Reg && e.uncompressed_size > 0);
    for entry in with_data.take(12) {
        extract_checked(blob, &decoded, entry, tally, case);
    }
    true
}

fn gzip_blob(ztoc: &Ztoc) -> Vec<u8> {
    match &ztoc.compression_info.zinfo {
        Zinfo::Gzip(zinfo) => zinfo.as_blob().to_vec(),
        Zinfo::Tar(_) => unreachable!("gzip zTOC"),
    }
}

/// Field `field` (0 = in, 1 = out) of checkpoint `index` in a raw checkpoint blob.
fn set_checkpoint(blob: &mut [u8], index: usize, field: usize, value: u64) {
    let at = 12 + index * PACKED_CHECKPOINT_SIZE + 8 * field;
    blob[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn set_bits(blob: &mut [u8], index: usize, bits: u8) {
    blob[12 + index * PACKED_CHECKPOINT_SIZE + 16] = bits;
}

fn with_gzip_blob(ztoc: &Ztoc, blob: Vec<u8>) -> Option<Ztoc> {
    let zinfo = GzipZinfo::from_blob(blob).ok()?;
    let mut ztoc = ztoc.clone();
    ztoc.compression_info.span_digests.resize(zinfo.len(), "sha256:00".into());
    ztoc.compression_info.zinfo = Zinfo::Gzip(zinfo);
    Some(ztoc)
}

/// A number that is often at an edge: 0, 1, near the layer size, near 2^40, 2^62 or `i64::MAX`.
fn edgy(rng: &mut Rng, near: u64) -> u64 {
    let base = match rng.below(6) {
        0 => 0,
        1 => near,
        2 => 1 << 40,
        3 => 1 << 62,
        4 => i64::MAX as u64,
        _ => rng.below(near.max(1) * 2),
    };
    let delta = rng.below(3);
    if rng.chance(50) {
        base.saturating_sub(delta)
    } else {
        base.saturating_add(delta).min(i64::MAX as u64)
    }
}

/// One random mutation of a gzip zTOC.
fn mutate_gzip(rng: &mut Rng, ztoc: &Ztoc, layer_size: u64) -> Option<Ztoc> {
    let mut blob = gzip_blob(ztoc);
    let count = (blob.len() - 12) / PACKED_CHECKPOINT_SIZE;
    let index = rng.below(count as u64) as usize;
    match rng.below(7) {
        // One checkpoint's input or output anywhere (decode keeps them monotonic).
        0 => set_checkpoint(&mut blob, index, rng.below(2) as usize, edgy(rng, layer_size)),
        // Huge but monotonic inputs from some checkpoint on.
        1 => {
            for (step, later) in (index..count).enumerate() {
                set_checkpoint(&mut blob, later, 0, (1 << 40) + step as u64 * (1 << 38));
            }
        }
        // Unused bits on a checkpoint at input 0, or at the very end of the layer.
        2 => {
            let input = if rng.chance(50) { 0 } else { layer_size + rng.below(2) };
            set_checkpoint(&mut blob, count - 1, 0, input);
            set_bits(&mut blob, count - 1, 1 + rng.below(7) as u8);
            if input == 0 {
                for earlier in 0..count {
                    set_checkpoint(&mut blob, earlier, 0, 0);
                }
            }
        }
        // A checkpoint whose output lies past the data it should hold.
        3 => {
            for later in index..count {
                let output =
                    u64::from_le_bytes(blob[12 + later * PACKED_CHECKPOINT_SIZE + 8..][..8].try_into().ok()?);
                set_checkpoint(&mut blob, later, 1, output + 1 + rng.below(100_000));
            }
        }
        // Fewer checkpoints, none at all included.
        4 => {
            let keep = rng.below(count as u64) as usize;
            blob.truncate(12 + keep * PACKED_CHECKPOINT_SIZE);
            blob[0..4].copy_from_slice(&(keep as i32).to_le_bytes());
        }
        // A damaged window or bits.
        5 => {
            let at = 12 + index * PACKED_CHECKPOINT_SIZE + 17 + rng.below(WINDOW_SIZE as u64) as usize;
            blob[at] ^= 0xff;
            set_bits(&mut blob, index, rng.below(8) as u8);
        }
        // Checkpoints shifted by a few bytes.
        _ => {
            let shift = 1 + rng.below(5);
            for later in index..count {
                let input =
                    u64::from_le_bytes(blob[12 + later * PACKED_CHECKPOINT_SIZE..][..8].try_into().ok()?);
                set_checkpoint(&mut blob, later, 0, input + shift);
            }
        }
    }
    with_gzip_blob(ztoc, blob)
}

/// Gives every span that lies inside `blob` its true digest, so that extraction gets past the digest
/// check and into inflation from mutated checkpoints.
fn redigest(ztoc: &mut Ztoc, blob: &[u8]) {
    let size = CompressedOffset(blob.len() as u64);
    for span in 0..ztoc.compression_info.span_digests.len() {
        if let Ok((start, end)) = ztoc.compression_info.zinfo.compressed_range(span, size) {
            ztoc.compression_info.span_digests[span] =
                ztoc::sha256_digest(&blob[start.get() as usize..end.get() as usize]);
        }
    }
}

/// One random mutation of a plain tar zTOC.
fn mutate_tar(rng: &mut Rng, ztoc: &Ztoc, layer_size: u64) -> Ztoc {
    let mut ztoc = ztoc.clone();
    let Zinfo::Tar(zinfo) = &mut ztoc.compression_info.zinfo else { unreachable!("tar zTOC") };
    match rng.below(3) {
        0 => zinfo.span_size = edgy(rng, layer_size).max(1) as i64,
        1 => zinfo.size = edgy(rng, layer_size) as i64,
        _ => {
            zinfo.span_size = edgy(rng, layer_size).max(1) as i64;
            zinfo.size = edgy(rng, layer_size) as i64;
        }
    }
    let spans = ztoc.compression_info.zinfo.span_count();
    ztoc.compression_info.span_digests.resize(spans.min(1 << 16), "sha256:00".into());
    ztoc
}

/// One random mutation of what every zTOC has: sizes and entries.
fn mutate_common(rng: &mut Rng, ztoc: &mut Ztoc, layer_size: u64) {
    let entries = ztoc.toc.metadata.len() as u64;
    match rng.below(4) {
        0 => {
            ztoc.uncompressed_archive_size =
                UncompressedOffset(edgy(rng, ztoc.uncompressed_archive_size.get()))
        }
        1 => {
            let entry = &mut ztoc.toc.metadata[rng.below(entries) as usize];
            entry.entry_type = EntryType::Reg;
            entry.uncompressed_offset = UncompressedOffset(edgy(rng, layer_size));
        }
        2 => {
            let entry = &mut ztoc.toc.metadata[rng.below(entries) as usize];
            entry.entry_type = EntryType::Reg;
            entry.uncompressed_size = edgy(rng, layer_size);
        }
        _ => ztoc.compressed_archive_size = CompressedOffset(edgy(rng, layer_size)),
    }
}

fn built(blob: &[u8], format: LayerFormat) -> Ztoc {
    let options = BuildOptions { span_size: 4096, format: Some(format), ..BuildOptions::new("fuzz") };
    build_ztoc(blob, &options).expect("generated layers index")
}

#[test]
fn extract_survives_mutated_real_ztocs() {
    let layer = generate_layer(77, &LayerConfig { entries: 50, max_file_size: 30_000, pax_percent: 10 });
    let gz = gzip(&layer.tar, &GzipOptions { level: 6, members: 2, header_fields: false });
    let gzip_ztoc = built(&gz, LayerFormat::Gzip);
    let tar_ztoc = built(&layer.tar, LayerFormat::Tar);
    let mut rng = Rng::new(0x5eed);
    let mut tally = Tally::default();
    let mut decoded = 0;
    for round in 0..400 {
        let (blob, mut ztoc) = if round % 3 == 2 {
            (&layer.tar, mutate_tar(&mut rng, &tar_ztoc, layer.tar.len() as u64))
        } else {
            let Some(ztoc) = mutate_gzip(&mut rng, &gzip_ztoc, gz.len() as u64) else { continue };
            (&gz, ztoc)
        };
        if rng.chance(30) {
            mutate_common(&mut rng, &mut ztoc, blob.len() as u64);
        }
        if rng.chance(60) {
            redigest(&mut ztoc, blob);
        }
        decoded += usize::from(run_case(blob, &ztoc, &mut tally, &format!("round {round}")));
    }
    // The mutations mostly keep the zTOC decodable, and reach extraction in many ways.
    assert!(decoded > 250, "only {decoded} mutated zTOCs decoded");
    assert!(tally.runs > 1000, "{tally:?}");
    assert!(tally.errors.len() >= 4, "the mutations reach several checks: {tally:?}");
    eprintln!("{tally:?}");
}

/// The zTOCs of issue 12: each used to panic or abort in `extract`.
#[test]
fn extract_refuses_hand_built_ztocs_that_do_not_fit_the_layer() {
    let layer = generate_layer(78, &LayerConfig { entries: 40, max_file_size: 60_000, pax_percent: 0 });
    let gz = gzip(&layer.tar, &GzipOptions { level: 1, ..GzipOptions::default() });
    let gzip_ztoc = built(&gz, LayerFormat::Gzip);
    let tar_ztoc = built(&layer.tar, LayerFormat::Tar);
    let mut cases: Vec<(&str, &[u8], Ztoc)> = Vec::new();

    // A plain tar zTOC whose single span is 2^40 bytes long.
    let mut huge_span = tar_ztoc.clone();
    huge_span.compression_info.zinfo =
        Zinfo::Tar(TarZinfo { version: 2, span_size: 1 << 40, size: (1 << 40) - 7 });
    huge_span.compression_info.span_digests.truncate(1);
    cases.push(("tar span of 2^40 bytes", &layer.tar, huge_span));

    // A plain tar zTOC whose spans describe a shorter tar than the layer.
    let mut short = tar_ztoc.clone();
    let Zinfo::Tar(zinfo) = &mut short.compression_info.zinfo else { unreachable!("tar zTOC") };
    zinfo.size -= 1000;
    short.compression_info.span_digests.truncate(short.compression_info.zinfo.span_count());
    cases.push(("tar shorter than the layer", &layer.tar, short));

    // Checkpoints with huge, monotonic inputs.
    let mut blob = gzip_blob(&gzip_ztoc);
    let count = (blob.len() - 12) / PACKED_CHECKPOINT_SIZE;
    for index in 1..count {
        set_checkpoint(&mut blob, index, 0, (1 << 40) + (index as u64) * (1 << 30));
    }
    cases.push(("huge checkpoint inputs", &gz, with_gzip_blob(&gzip_ztoc, blob).unwrap()));

    // No checkpoints at all.
    let mut none = gzip_ztoc.clone();
    none.compression_info.zinfo = Zinfo::Gzip(GzipZinfo::new(4096));
    none.compression_info.span_digests.clear();
    cases.push(("no checkpoints", &gz, none));

    // Input 0 with unused bits.
    let mut blob = gzip_blob(&gzip_ztoc);
    set_checkpoint(&mut blob, 0, 0, 0);
    set_bits(&mut blob, 0, 5);
    cases.push(("bits at input 0", &gz, with_gzip_blob(&gzip_ztoc, blob).unwrap()));

    // A last checkpoint with bits just past the end of the layer (an empty span), holding the last file.
    let mut blob = gzip_blob(&gzip_ztoc);
    let last_file = gzip_ztoc.toc.metadata.iter().rfind(|e| e.uncompressed_size > 0).unwrap();
    set_checkpoint(&mut blob, count - 1, 0, gz.len() as u64 + 1);
    set_checkpoint(&mut blob, count - 1, 1, last_file.uncompressed_offset.get());
    set_bits(&mut blob, count - 1, 3);
    cases.push(("bits past the end", &gz, with_gzip_blob(&gzip_ztoc, blob).unwrap()));

    // The first checkpoint's output beyond every entry's offset.
    let mut blob = gzip_blob(&gzip_ztoc);
    for index in 0..count {
        set_checkpoint(&mut blob, index, 1, (1 << 30) + index as u64);
    }
    cases.push(("outputs past the entries", &gz, with_gzip_blob(&gzip_ztoc, blob).unwrap()));

    for (case, blob, mut ztoc) in cases {
        // With the stored digests, then with digests that match whatever the spans now cover.
        for pass in ["stored digests", "true digests"] {
            let mut tally = Tally::default();
            assert!(run_case(blob, &ztoc, &mut tally, case), "{case}: decode accepts it");
            assert!(tally.runs > 3, "{case}, {pass}: {tally:?}");
            assert_eq!(
                tally.ok, 0,
                "{case}, {pass}: nothing extracts through a zTOC that does not fit: {tally:?}"
            );
            redigest(&mut ztoc, blob);
        }
    }
}
