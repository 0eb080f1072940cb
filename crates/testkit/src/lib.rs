//! Seeded generators of tar layers for soci-indexer's tests and benchmarks, and registry fixtures:
//! a real registry on loopback ([`registry`]), HTTP proxies in front of it ([`proxy`]), and moto's
//! AWS server for ECR's control plane ([`moto`]).
//!
//! The generators are deterministic in the seed, so a failing case can be replayed from its seed alone.

use std::io::Write;

pub mod image;
pub mod moto;
mod process;
pub mod proxy;
pub mod registry;

/// A small, fast, seedable PRNG (SplitMix64); good enough for test data, not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How big and how varied a generated layer is.
#[derive(Clone, Debug)]
pub struct LayerConfig {
    /// Number of entries to write (directories, files, links).
    pub entries: usize,
    /// Largest regular file, in bytes.
    pub max_file_size: usize,
    /// Percentage of files that get PAX records (xattrs, sub-second mtimes).
    pub pax_percent: u64,
}

impl Default for LayerConfig {
    fn default() -> LayerConfig {
        LayerConfig { entries: 200, max_file_size: 256 * 1024, pax_percent: 20 }
    }
}

/// A generated tar layer and the content of its regular files.
#[derive(Clone, Debug)]
pub struct GeneratedLayer {
    /// The uncompressed tar bytes.
    pub tar: Vec<u8>,
    /// Regular files in archive order: `(name as written in the tar, content)`.
    pub files: Vec<(String, Vec<u8>)>,
}

/// File content with a realistic mix of compressibility.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "layer",
        "span",
        "checkpoint",
        "zlib",
        "tar",
        "index",
        "fargate",
        "lazy",
        "load",
        "\n",
        "  ",
        "0x1f8b",
    ];
    let mut data = Vec::with_capacity(len);
    match rng.below(4) {
        0 => {
            // Incompressible: deflate falls back to stored blocks.
            while data.len() < len {
                data.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
        1 => data.resize(len, 0),
        _ => {
            while data.len() < len {
                data.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                if rng.chance(30) {
                    data.extend_from_slice(format!("{} ", rng.below(100_000)).as_bytes());
                }
            }
        }
    }
    data.truncate(len);
    data
}

fn name(rng: &mut Rng, dirs: &[String]) -> String {
    let parent = if dirs.is_empty() || rng.chance(20) {
        String::new()
    } else {
        dirs[rng.below(dirs.len() as u64) as usize].clone()
    };
    let stem_len = if rng.chance(5) { 120 + rng.below(60) } else { 3 + rng.below(12) };
    let stem: String = (0..stem_len).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
    format!("{parent}{stem}-{}", rng.below(1_000_000))
}

/// Generates a tar layer: directories, regular files of mixed size and content, symlinks, hard links,
/// GNU long names, ustar and GNU headers, and PAX records (xattrs, sub-second mtimes).
pub fn generate_layer(seed: u64, config: &LayerConfig) -> GeneratedLayer {
    let mut rng = Rng::new(seed);
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in 0..config.entries {
        let gnu = rng.chance(60);
        let mut header = if gnu { tar::Header::new_gnu() } else { tar::Header::new_ustar() };
        header.set_mtime(1_600_000_000 + rng.below(100_000_000));
        header.set_uid(rng.below(2000));
        header.set_gid(rng.below(2000));
        let kind = rng.below(100);
        let path = name(&mut rng, &dirs);
        if rng.chance(config.pax_percent) {
            let xattr = format!("value-{}", rng.below(1000));
            let mtime = format!("{}.{}", 1_600_000_000 + rng.below(100_000_000), rng.below(1_000_000_000));
            builder
                .append_pax_extensions([
                    ("SCHILY.xattr.user.generated", xattr.as_bytes()),
                    ("mtime", mtime.as_bytes()),
                ])
                .expect("write PAX header");
        }
        if kind < 12 {
            let dir = format!("{path}/");
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &dir, std::io::empty()).expect("append dir");
            dirs.push(dir);
        } else if kind < 22 && !files.is_empty() {
            let (entry_type, mode) =
                if kind < 18 { (tar::EntryType::Symlink, 0o777) } else { (tar::EntryType::Link, 0o644) };
            header.set_entry_type(entry_type);
            header.set_mode(mode);
            header.set_size(0);
            let target = files[rng.below(files.len() as u64) as usize].0.clone();
            builder.append_link(&mut header, &path, &target).expect("append link");
        } else {
            let size = match rng.below(10) {
                0 => 0,
                1..=5 => rng.below(4096) as usize,
                _ => rng.below(config.max_file_size as u64 + 1) as usize,
            };
            let data = content(&mut rng, size);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if rng.chance(10) { 0o4755 } else { 0o644 });
            header.set_size(size as u64);
            builder.append_data(&mut header, &path, &data[..]).expect("append file");
            files.push((path, data));
        }
    }
    let tar = builder.into_inner().expect("finish tar");
    GeneratedLayer { tar, files }
}

/// A ustar header block for an entry named `name` of `size` bytes and type `typeflag` (b'0' a file,
/// b'g' a PAX global header, ...), with its checksum: for layers that need an entry the generator does
/// not make (soci cannot index a PAX global header; a file of zeros makes a gzip bomb).
pub fn tar_header(name: &str, size: u64, typeflag: u8) -> [u8; 512] {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    header[156] = typeflag;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    header
}

/// gzip options for [`gzip`].
#[derive(Clone, Debug)]
pub struct GzipOptions {
    /// Compression level 0..=9.
    pub level: u32,
    /// Number of gzip members to split the data into (like pigz/mgzip output).
    pub members: usize,
    /// Write the optional FNAME, FCOMMENT and FEXTRA header fields.
    pub header_fields: bool,
}

impl Default for GzipOptions {
    fn default() -> GzipOptions {
        GzipOptions { level: 6, members: 1, header_fields: false }
    }
}

/// Compresses `data` with gzip.
pub fn gzip(data: &[u8], options: &GzipOptions) -> Vec<u8> {
    let members = options.members.max(1);
    let piece = data.len().div_ceil(members).max(1);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut chunks: Vec<&[u8]> = data.chunks(piece).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for chunk in chunks {
        let mut builder = flate2::GzBuilder::new();
        if options.header_fields {
            builder =
                builder.filename("layer.tar").comment("generated by soci-testkit").extra(vec![1, 2, 3, 4]);
        }
        let mut encoder = builder.write(Vec::new(), flate2::Compression::new(options.level));
        encoder.write_all(chunk).expect("compress");
        out.extend_from_slice(&encoder.finish().expect("finish gzip member"));
    }
    out
}

/// Writes a tar of the regular files, directories and symlinks under `roots` (sorted, not following
/// links) to `out`, stopping before the file that would take the file data past `limit` bytes.
/// Benchmarks use it to make a realistic layer out of this machine's `/usr`. Returns the data bytes.
pub fn tar_host_tree(roots: &[&std::path::Path], limit: u64, out: impl Write) -> std::io::Result<u64> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut total = 0u64;
    let mut stack: Vec<std::path::PathBuf> = roots.iter().rev().map(|p| p.to_path_buf()).collect();
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(_) => continue,
        };
        let name = path.strip_prefix("/").unwrap_or(&path).to_path_buf();
        if meta.is_dir() {
            builder.append_dir(&name, &path)?;
            let mut children: Vec<_> = match std::fs::read_dir(&path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(_) => continue,
            };
            children.sort();
            stack.extend(children.into_iter().rev());
        } else if meta.is_file() || meta.file_type().is_symlink() {
            if total + meta.len() > limit {
                break;
            }
            // Unreadable files are skipped, as a layer build would not see them either.
            if builder.append_path_with_name(&path, &name).is_ok() {
                total += meta.len();
            }
        }
    }
    builder.into_inner()?.flush()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_in_the_seed() {
        let config = LayerConfig { entries: 50, ..LayerConfig::default() };
        let a = generate_layer(7, &config);
        let b = generate_layer(7, &config);
        let c = generate_layer(8, &config);
        assert_eq!(a.tar, b.tar);
        assert_ne!(a.tar, c.tar);
        assert!(!a.files.is_empty());
    }

    #[test]
    fn every_member_of_a_multi_member_gzip_decodes_to_the_input() {
        let data = generate_layer(3, &LayerConfig { entries: 30, ..LayerConfig::default() }).tar;
        let compressed = gzip(&data, &GzipOptions { level: 1, members: 3, header_fields: true });
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&compressed[..]), &mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
        assert!(compressed.windows(2).filter(|w| w == &[0x1f, 0x8b]).count() >= 3);
    }
}
