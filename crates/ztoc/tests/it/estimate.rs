//! The builder's running estimate of the zTOC size, which callers bound to refuse gzip bombs.

use ztoc::{BuildOptions, ZtocBuilder};

fn estimate_and_actual(blob: &[u8], span_size: u64) -> (u64, u64) {
    let mut builder = ZtocBuilder::new(BuildOptions { span_size, ..BuildOptions::new("estimate") }).unwrap();
    let mut last = 0;
    for piece in blob.chunks(64 * 1024) {
        builder.feed(piece).unwrap();
        let now = builder.estimated_size();
        assert!(now >= last, "the estimate only grows");
        last = now;
    }
    let ztoc = builder.finish().unwrap();
    (last, ztoc::codec::encode(&ztoc).len() as u64)
}

#[test]
fn the_estimate_is_within_a_factor_of_two_of_the_real_size() {
    for (seed, span_size) in [(1u64, 32 * 1024), (2, 256 * 1024), (3, 4 << 20)] {
        let layer = testkit::generate_layer(
            seed,
            &testkit::LayerConfig { entries: 300, max_file_size: 128 * 1024, pax_percent: 10 },
        );
        let blob = testkit::gzip(&layer.tar, &testkit::GzipOptions::default());
        let (estimate, actual) = estimate_and_actual(&blob, span_size);
        assert!(
            estimate * 2 >= actual && estimate <= actual * 2,
            "seed {seed}: estimate {estimate}, actual {actual}"
        );
    }
}

#[test]
fn a_gzip_bomb_makes_a_ztoc_many_times_its_size_and_the_estimate_follows() {
    // 64 MiB of zeros in one file compress to about 64 KiB; checkpoints come at deflate block boundaries
    // (a block of zeros covers about 4 MiB), so with 64 KiB spans there are a few dozen windows.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(64 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "zeros", std::io::repeat(0).take_bytes(64 << 20)).unwrap();
    let tar = tar.into_inner().unwrap();
    let blob = testkit::gzip(&tar, &testkit::GzipOptions::default());
    assert!(blob.len() < 1 << 20, "{}", blob.len());
    let (estimate, actual) = estimate_and_actual(&blob, 64 * 1024);
    assert!(
        estimate > 256 << 10 && estimate > (blob.len() as u64) * 4,
        "{estimate} for a {} byte blob",
        blob.len()
    );
    assert!(estimate <= actual * 2 && estimate * 2 >= actual, "{estimate} vs {actual}");
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        self.take(n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}
