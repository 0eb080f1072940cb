//! The zTOC writer: lays out a flatbuffer in exactly the order soci's Go builder does (`ztocToFlatbuffer`),
//! byte for byte, and takes a checkpoint blob it owns without holding it twice.

use flatbuffers::{Allocator, FlatBufferBuilder, TableFinishedWIPOffset, WIPOffset};

use super::{fb, fb_zinfo, ALGORITHM_GZIP, ALGORITHM_UNCOMPRESSED};
use crate::model::{FileMetadata, PaxRecord, Zinfo, Ztoc};
use crate::zinfo::TarZinfo;

/// Serializes the checkpoints of an uncompressed tar layer as soci does (`TarZinfo.Bytes`): a `TarZinfo`
/// flatbuffer with version, span size and size added in that order, zero values omitted.
pub fn write_tar_zinfo(zinfo: &TarZinfo) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let table = builder.start_table();
    builder.push_slot::<i32>(fb_zinfo::TarZinfo::VT_VERSION, zinfo.version, 0);
    builder.push_slot::<i64>(fb_zinfo::TarZinfo::VT_SPAN_SIZE, zinfo.span_size, 0);
    builder.push_slot::<i64>(fb_zinfo::TarZinfo::VT_SIZE, zinfo.size, 0);
    let table = builder.end_table(table);
    builder.finish_minimal(table);
    builder.finished_data().to_vec()
}

/// What `compression_info` says of the checkpoints: their bytes (the gzip blob as it is, or a
/// `TarZinfo` flatbuffer), how many spans they describe and the algorithm.
pub(super) struct CheckpointParts<'a> {
    bytes: CheckpointBytes<'a>,
    max_span_id: i32,
    algorithm: i8,
}

impl<'a> CheckpointParts<'a> {
    pub(super) fn new(bytes: CheckpointBytes<'a>, spans: usize, algorithm: i8) -> CheckpointParts<'a> {
        CheckpointParts { bytes, max_span_id: spans as i32 - 1, algorithm }
    }

    pub(super) fn of_tar(zinfo: &TarZinfo) -> CheckpointParts<'a> {
        let bytes = CheckpointBytes::Released(write_tar_zinfo(zinfo));
        CheckpointParts::new(bytes, zinfo.span_count(), ALGORITHM_UNCOMPRESSED)
    }
}

/// The checkpoints of `ztoc`, borrowed where they are stored as they are written (the gzip blob).
pub(super) fn checkpoint_parts(ztoc: &Ztoc) -> CheckpointParts<'_> {
    match &ztoc.compression_info.zinfo {
        Zinfo::Gzip(zinfo) => {
            CheckpointParts::new(CheckpointBytes::Borrowed(zinfo.as_blob()), zinfo.len(), ALGORITHM_GZIP)
        }
        Zinfo::Tar(zinfo) => CheckpointParts::of_tar(zinfo),
    }
}

/// The writer's view of a zTOC, its checkpoints given apart (they may be the model's or taken from it).
pub(super) fn ztoc_parts<'a>(
    ztoc: &'a Ztoc,
    checkpoints: CheckpointParts<'a>,
) -> ZtocParts<'a, FileMetadata> {
    ZtocParts {
        version: &ztoc.version,
        build_tool_identifier: &ztoc.build_tool_identifier,
        compressed_archive_size: ztoc.compressed_archive_size.get() as i64,
        uncompressed_archive_size: ztoc.uncompressed_archive_size.get() as i64,
        entries: &ztoc.toc.metadata,
        checkpoints: checkpoints.bytes,
        span_digests: &ztoc.compression_info.span_digests,
        max_span_id: checkpoints.max_span_id,
        compression_algorithm: checkpoints.algorithm,
    }
}

/// The bytes of `compression_info.checkpoints` as the writer gets them.
pub(super) enum CheckpointBytes<'a> {
    Borrowed(&'a [u8]),
    /// Owned by the writer, which frees them as it copies them.
    Released(Vec<u8>),
}

impl CheckpointBytes<'_> {
    fn len(&self) -> usize {
        match self {
            CheckpointBytes::Borrowed(bytes) => bytes.len(),
            CheckpointBytes::Released(bytes) => bytes.len(),
        }
    }
}

/// How much of a released checkpoint blob is copied before its memory is given back.
pub(super) const RELEASE_STEP: usize = 1 << 20;

/// Yields a blob's bytes last to first, the order the builder writes a vector in, and gives the memory
/// behind them back every [`RELEASE_STEP`] bytes (a shrinking `realloc` of a large block unmaps its tail,
/// with glibc and musl alike), so the blob shrinks as the flatbuffer grows (into pages that take memory
/// only as they are written: `pages.rs`).
pub(super) struct ReleasedFromBack {
    pub(super) bytes: Vec<u8>,
    /// Bytes already taken from the front (the builder takes none; the iterator contract wants it).
    pub(super) front: usize,
}

impl Iterator for ReleasedFromBack {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.front)?;
        self.front += 1;
        Some(byte)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.bytes.len() - self.front;
        (left, Some(left))
    }
}

impl DoubleEndedIterator for ReleasedFromBack {
    fn next_back(&mut self) -> Option<u8> {
        if self.bytes.len() == self.front {
            return None;
        }
        let byte = self.bytes.pop();
        if self.bytes.capacity() - self.bytes.len() >= RELEASE_STEP {
            self.bytes.shrink_to_fit();
        }
        byte
    }
}

impl ExactSizeIterator for ReleasedFromBack {}

/// Everything the writer puts in a zTOC, as the plain values soci's `ztocToFlatbuffer` sees. The model
/// cannot express every such value (soci's own golden test has entries of type `""` and checkpoints that
/// are not a valid blob), so the writer works on this and [`encode`] maps the model onto it.
pub(super) struct ZtocParts<'a, E> {
    pub(super) version: &'a str,
    pub(super) build_tool_identifier: &'a str,
    pub(super) compressed_archive_size: i64,
    pub(super) uncompressed_archive_size: i64,
    pub(super) entries: &'a [E],
    pub(super) checkpoints: CheckpointBytes<'a>,
    pub(super) span_digests: &'a [String],
    pub(super) max_span_id: i32,
    /// Written only when it differs from Gzip, the schema default (Go drops a default-valued scalar).
    pub(super) compression_algorithm: i8,
}

/// One TOC entry as soci's `prepareMetadataOffset` sees it.
pub(super) struct EntryParts<'a> {
    pub(super) name: &'a [u8],
    pub(super) entry_type: &'a str,
    pub(super) uncompressed_offset: i64,
    pub(super) uncompressed_size: i64,
    pub(super) linkname: &'a [u8],
    pub(super) mode: i64,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) uname: &'a [u8],
    pub(super) gname: &'a [u8],
    pub(super) mod_time: &'a str,
    pub(super) devmajor: i64,
    pub(super) devminor: i64,
    pub(super) pax_records: &'a [PaxRecord],
}

/// Borrows an entry's fields for the writer (a trait rather than a collected `Vec<EntryParts>`, so that
/// writing half a million entries does not first copy them all).
pub(super) trait AsEntryParts {
    fn entry_parts(&self) -> EntryParts<'_>;
}

impl AsEntryParts for FileMetadata {
    fn entry_parts(&self) -> EntryParts<'_> {
        EntryParts {
            name: &self.name,
            entry_type: self.entry_type.as_str(),
            uncompressed_offset: self.uncompressed_offset.get() as i64,
            uncompressed_size: self.uncompressed_size as i64,
            linkname: &self.linkname,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            uname: &self.uname,
            gname: &self.gname,
            mod_time: &self.mod_time,
            devmajor: self.devmajor,
            devminor: self.devminor,
            pax_records: &self.pax_records,
        }
    }
}

/// Builds the zTOC flatbuffer in soci's order (the byte identity part of the repository's
/// `docs/soci-format.md`). Every string is created with `create_byte_string`, which lays out bytes
/// exactly like Go's `CreateString` (length, bytes, NUL).
pub(super) fn write_ztoc<E: AsEntryParts>(parts: ZtocParts<'_, E>) -> Vec<u8> {
    let builder = FlatBufferBuilder::with_capacity(estimated_size(&parts));
    // The builder fills its buffer from the back: move the data to the front in place rather than
    // copying it into a second buffer.
    let (mut buffer, start) = write_ztoc_in(parts, builder).collapse();
    buffer.drain(..start);
    buffer.shrink_to_fit();
    buffer
}

/// [`write_ztoc`] into `builder`'s buffer, which it returns finished (the data at its end).
pub(super) fn write_ztoc_in<'fbb, E: AsEntryParts, A: Allocator>(
    parts: ZtocParts<'_, E>,
    mut builder: FlatBufferBuilder<'fbb, A>,
) -> FlatBufferBuilder<'fbb, A> {
    let version = builder.create_byte_string(parts.version.as_bytes());
    let build_tool_identifier = builder.create_byte_string(parts.build_tool_identifier.as_bytes());

    // Go builds the entries last to first (their strings and tables land in the buffer in that order),
    // then makes the vector of their offsets in entry order.
    let mut entry_offsets = Vec::with_capacity(parts.entries.len());
    let mut xattr_offsets = Vec::new();
    for entry in parts.entries.iter().rev() {
        entry_offsets.push(write_entry(&mut builder, &entry.entry_parts(), &mut xattr_offsets));
    }
    entry_offsets.reverse();
    let metadata = write_offset_vector(&mut builder, &entry_offsets);
    drop(entry_offsets);
    let toc = builder.start_table();
    builder.push_slot_always(fb::TOC::VT_METADATA, metadata);
    let toc = builder.end_table(toc);

    // `create_vector_from_iter` lays out the same bytes as `create_vector`, one byte at a time.
    let checkpoints = match parts.checkpoints {
        CheckpointBytes::Borrowed(bytes) => builder.create_vector(bytes),
        CheckpointBytes::Released(bytes) => {
            builder.create_vector_from_iter(ReleasedFromBack { bytes, front: 0 })
        }
    };
    let digest_offsets: Vec<_> =
        parts.span_digests.iter().map(|digest| builder.create_byte_string(digest.as_bytes())).collect();
    builder.start_vector::<WIPOffset<&[u8]>>(digest_offsets.len());
    for offset in digest_offsets.iter().rev() {
        builder.push(*offset);
    }
    let span_digests = builder.end_vector::<WIPOffset<&[u8]>>(digest_offsets.len());

    let info = builder.start_table();
    builder.push_slot::<i32>(fb::CompressionInfo::VT_MAX_SPAN_ID, parts.max_span_id, 0);
    builder.push_slot_always(fb::CompressionInfo::VT_SPAN_DIGESTS, span_digests);
    builder.push_slot_always(fb::CompressionInfo::VT_CHECKPOINTS, checkpoints);
    builder.push_slot::<i8>(
        fb::CompressionInfo::VT_COMPRESSION_ALGORITHM,
        parts.compression_algorithm,
        ALGORITHM_GZIP,
    );
    let info = builder.end_table(info);

    let root = builder.start_table();
    builder.push_slot_always(fb::Ztoc::VT_VERSION, version);
    builder.push_slot_always(fb::Ztoc::VT_BUILD_TOOL_IDENTIFIER, build_tool_identifier);
    builder.push_slot_always(fb::Ztoc::VT_TOC, toc);
    builder.push_slot::<i64>(fb::Ztoc::VT_COMPRESSED_ARCHIVE_SIZE, parts.compressed_archive_size, 0);
    builder.push_slot::<i64>(fb::Ztoc::VT_UNCOMPRESSED_ARCHIVE_SIZE, parts.uncompressed_archive_size, 0);
    builder.push_slot_always(fb::Ztoc::VT_COMPRESSION_INFO, info);
    let root = builder.end_table(root);
    builder.finish_minimal(root);
    builder
}

/// One `FileMetadata` table with its strings and PAX records (`prepareMetadataOffset`).
fn write_entry<A: Allocator>(
    builder: &mut FlatBufferBuilder<'_, A>,
    entry: &EntryParts<'_>,
    xattr_offsets: &mut Vec<WIPOffset<TableFinishedWIPOffset>>,
) -> WIPOffset<TableFinishedWIPOffset> {
    let name = builder.create_byte_string(entry.name);
    let entry_type = builder.create_byte_string(entry.entry_type.as_bytes());
    let linkname = builder.create_byte_string(entry.linkname);
    let uname = builder.create_byte_string(entry.uname);
    let gname = builder.create_byte_string(entry.gname);
    let mod_time = builder.create_byte_string(entry.mod_time.as_bytes());

    xattr_offsets.clear();
    for record in entry.pax_records {
        let key = builder.create_byte_string(&record.key);
        let value = builder.create_byte_string(&record.value);
        let xattr = builder.start_table();
        builder.push_slot_always(fb::Xattr::VT_KEY, key);
        builder.push_slot_always(fb::Xattr::VT_VALUE, value);
        xattr_offsets.push(builder.end_table(xattr));
    }
    // An entry without PAX records still gets its (empty) vector.
    let xattrs = write_offset_vector(builder, xattr_offsets);

    let table = builder.start_table();
    builder.push_slot_always(fb::FileMetadata::VT_NAME, name);
    builder.push_slot_always(fb::FileMetadata::VT_TYPE_, entry_type);
    builder.push_slot::<i64>(fb::FileMetadata::VT_UNCOMPRESSED_OFFSET, entry.uncompressed_offset, 0);
    builder.push_slot::<i64>(fb::FileMetadata::VT_UNCOMPRESSED_SIZE, entry.uncompressed_size, 0);
    builder.push_slot_always(fb::FileMetadata::VT_LINKNAME, linkname);
    builder.push_slot::<i64>(fb::FileMetadata::VT_MODE, entry.mode, 0);
    builder.push_slot::<u32>(fb::FileMetadata::VT_UID, entry.uid, 0);
    builder.push_slot::<u32>(fb::FileMetadata::VT_GID, entry.gid, 0);
    builder.push_slot_always(fb::FileMetadata::VT_UNAME, uname);
    builder.push_slot_always(fb::FileMetadata::VT_GNAME, gname);
    builder.push_slot_always(fb::FileMetadata::VT_MOD_TIME, mod_time);
    builder.push_slot::<i64>(fb::FileMetadata::VT_DEVMAJOR, entry.devmajor, 0);
    builder.push_slot::<i64>(fb::FileMetadata::VT_DEVMINOR, entry.devminor, 0);
    builder.push_slot_always(fb::FileMetadata::VT_XATTRS, xattrs);
    builder.end_table(table)
}

/// A vector of table offsets in the given order; like Go, it prepends them last to first.
pub(super) fn write_offset_vector<'fbb, A: Allocator>(
    builder: &mut FlatBufferBuilder<'fbb, A>,
    offsets: &[WIPOffset<TableFinishedWIPOffset>],
) -> WIPOffset<flatbuffers::Vector<'fbb, WIPOffset<TableFinishedWIPOffset>>> {
    builder.start_vector::<WIPOffset<TableFinishedWIPOffset>>(offsets.len());
    for offset in offsets.iter().rev() {
        builder.push(*offset);
    }
    builder.end_vector::<WIPOffset<TableFinishedWIPOffset>>(offsets.len())
}

/// Room in [`estimated_size`] for the root offset; the Ztoc, TOC and CompressionInfo tables; vector
/// lengths and padding; and the few distinct vtables (each is written only once).
pub(super) const ESTIMATE_SLACK: usize = 16 << 10;

/// The encoded size, give or take a few bytes of vtables and padding, so that the builder allocates
/// once instead of doubling, and copying, its buffer as a big zTOC grows.
pub(super) fn estimated_size<E: AsEntryParts>(parts: &ZtocParts<'_, E>) -> usize {
    /// Length prefix, then the bytes and a NUL padded to 4.
    fn string(len: usize) -> usize {
        4 + (len + 1).next_multiple_of(4)
    }
    /// A `FileMetadata` table: soffset and 7 offsets, the non-zero scalars, up to 4 bytes of padding
    /// before each group of longs (offset and size, mode, devices), and its slot in the metadata vector.
    fn file_metadata(entry: &EntryParts<'_>) -> usize {
        let longs =
            [entry.uncompressed_offset, entry.uncompressed_size, entry.mode, entry.devmajor, entry.devminor];
        let long_groups = [&longs[0..2], &longs[2..3], &longs[3..5]];
        4 + 7 * 4
            + 8 * longs.iter().filter(|&&value| value != 0).count()
            + 4 * long_groups.iter().filter(|group| group.iter().any(|&value| value != 0)).count()
            + 4 * [entry.uid, entry.gid].iter().filter(|&&value| value != 0).count()
            + 4
    }
    /// An `Xattr` table (soffset, 2 offsets) and its slot in the xattrs vector.
    const XATTR: usize = 4 + 2 * 4 + 4;
    let mut size = ESTIMATE_SLACK
        + string(parts.version.len())
        + string(parts.build_tool_identifier.len())
        + parts.checkpoints.len()
        + parts.span_digests.iter().map(|digest| string(digest.len()) + 4).sum::<usize>();
    for entry in parts.entries {
        let entry = entry.entry_parts();
        size += file_metadata(&entry)
            + [
                entry.name,
                entry.entry_type.as_bytes(),
                entry.linkname,
                entry.uname,
                entry.gname,
                entry.mod_time.as_bytes(),
            ]
            .iter()
            .map(|field| string(field.len()))
            .sum::<usize>()
            + 4
            + entry
                .pax_records
                .iter()
                .map(|record| XATTR + string(record.key.len()) + string(record.value.len()))
                .sum::<usize>();
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_bytes_come_last_first_and_from_the_front_alike() {
        let bytes: Vec<u8> = (0..3 * RELEASE_STEP + 5).map(|i| (i % 251) as u8).collect();
        let mut reversed: Vec<u8> = ReleasedFromBack { bytes: bytes.clone(), front: 0 }.rev().collect();
        reversed.reverse();
        assert!(reversed == bytes);
        let mut both = ReleasedFromBack { bytes: vec![1, 2, 3, 4], front: 0 };
        assert_eq!((both.next(), both.next_back(), both.len()), (Some(1), Some(4), 2));
        assert_eq!(
            (both.next_back(), both.next(), both.next(), both.next_back()),
            (Some(3), Some(2), None, None)
        );
    }
}
