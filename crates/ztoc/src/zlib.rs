//! The one place that calls zlib's C API (zlib-rs through `libz-rs-sys`).
//!
//! flate2's safe API cannot stop at deflate block boundaries, report the unused bits of the last byte,
//! prime those bits back, or preset a dictionary on a raw stream; soci's checkpoints need all four.
//! This module wraps the `z_stream` in a type whose safe methods uphold zlib's rules:
//! * the stream is heap-allocated and never moves after `inflateInit2_` (zlib keeps a back-pointer);
//! * `next_in`/`next_out` point into slices borrowed for the duration of one call only, and are
//!   cleared before the borrow ends, so no dangling pointer survives a call;
//! * `inflateEnd` runs exactly once, in `Drop`.
#![allow(unsafe_code)]

use libz_rs_sys as sys;

/// `windowBits` for "gzip or zlib header, detected automatically" (15 + 32), as soci uses.
pub(crate) const WINDOW_BITS_AUTO: i32 = 47;
/// `windowBits` for a raw deflate stream with a 32 KiB window.
pub(crate) const WINDOW_BITS_RAW: i32 = -15;

/// How far a call to [`Inflater::inflate`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Output bytes produced.
    pub produced: usize,
    /// Whether the end of the stream (member) was reached.
    pub stream_end: bool,
}

/// A zlib error with zlib's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZlibError {
    /// zlib's return code.
    pub code: i32,
    /// zlib's `msg`, or a description of the code.
    pub message: String,
    /// Input bytes of the failing call consumed before zlib stopped (0 for calls without input).
    pub consumed: usize,
}

/// What zlib-rs (0.6) says when its fast decoding loop finds an error: that loop records the real
/// message, then the state machine overwrites it with this one in the same call.
const LOST_MESSAGE: &str = "repeated call with bad state";
/// Input bytes per call in [`Inflater::replay`]: below zlib-rs's `INFLATE_FAST_MIN_HAVE` (15), so that
/// its fast loop never runs and the slow one reports what it finds.
const SLOW_PATH_INPUT: usize = 14;

/// Whether to stop at every deflate block boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Inflate as much as possible.
    None,
    /// Return at each block boundary (zlib's `Z_BLOCK`).
    Block,
}

/// An inflate stream.
pub(crate) struct Inflater {
    strm: Box<sys::z_stream>,
}

impl Inflater {
    /// A stream initialised with `window_bits` ([`WINDOW_BITS_AUTO`] or [`WINDOW_BITS_RAW`]).
    pub(crate) fn new(window_bits: i32) -> Result<Inflater, ZlibError> {
        let mut strm = Box::new(sys::z_stream::default());
        // SAFETY: `strm` is a valid, default-initialised z_stream (null allocators select the
        // built-in allocator); the version string and struct size are the library's own.
        let code = unsafe {
            sys::inflateInit2_(
                &mut *strm,
                window_bits,
                sys::zlibVersion(),
                std::mem::size_of::<sys::z_stream>() as i32,
            )
        };
        let mut inflater = Inflater { strm };
        if code != sys::Z_OK {
            let err = inflater.error(code);
            // Nothing was allocated: make Drop's inflateEnd a harmless no-op on a null state.
            inflater.strm.state = std::ptr::null_mut();
            return Err(err);
        }
        Ok(inflater)
    }

    /// Inflates from `input` into `output`; see [`Progress`].
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<Progress, ZlibError> {
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(output.len()).unwrap_or(u32::MAX);
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        let flush = match flush {
            Flush::None => sys::Z_NO_FLUSH,
            Flush::Block => sys::Z_BLOCK,
        };
        // SAFETY: next_in/next_out point to `avail_*` valid bytes of slices borrowed for this call;
        // the stream was initialised by inflateInit2_ and is pinned in its Box.
        let code = unsafe { sys::inflate(&mut *self.strm, flush) };
        let progress = Progress {
            consumed: (avail_in - self.strm.avail_in) as usize,
            produced: (avail_out - self.strm.avail_out) as usize,
            stream_end: code == sys::Z_STREAM_END,
        };
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        match code {
            sys::Z_OK | sys::Z_STREAM_END | sys::Z_BUF_ERROR => Ok(progress),
            sys::Z_NEED_DICT => Err(ZlibError {
                code,
                message: "stream needs a preset dictionary".into(),
                consumed: progress.consumed,
            }),
            _ => Err(ZlibError { consumed: progress.consumed, ..self.error(code) }),
        }
    }

    /// Whether `error` came from zlib-rs's fast loop, whose own message was lost (see [`LOST_MESSAGE`]).
    pub(crate) fn lost_message(error: &ZlibError) -> bool {
        error.code == sys::Z_DATA_ERROR && error.message == LOST_MESSAGE
    }

    /// Inflates `input` a few bytes at a time, discarding the output, until zlib fails: the error with
    /// zlib's real message and the input consumed before it. Called on a copy of the stream as it was
    /// before a call that failed with a lost message; `None` if the input decodes after all.
    pub(crate) fn replay(&mut self, input: &[u8], flush: Flush) -> Option<ZlibError> {
        let mut output = [0u8; 1024];
        let mut consumed = 0;
        while consumed < input.len() {
            let piece = &input[consumed..input.len().min(consumed + SLOW_PATH_INPUT)];
            match self.inflate(piece, &mut output, flush) {
                Ok(progress) if progress.stream_end => return None,
                Ok(progress) => consumed += progress.consumed,
                Err(error) => return Some(ZlibError { consumed: consumed + error.consumed, ..error }),
            }
        }
        None
    }

    /// An independent copy of the stream in its current state (zlib's `inflateCopy`).
    pub(crate) fn try_clone(&mut self) -> Result<Inflater, ZlibError> {
        let mut strm = Box::new(sys::z_stream::default());
        // zlib-rs refuses to copy a stream without an output pointer: lend it an empty one.
        let mut no_output = [0u8; 1];
        self.strm.next_out = no_output.as_mut_ptr();
        self.strm.avail_out = 0;
        // SAFETY: `self.strm` is an initialised stream pinned in its Box, with no input and an empty
        // output; `strm` is a fresh stream that inflateCopy overwrites (state, window, allocator).
        let code = unsafe { sys::inflateCopy(&mut *strm, &*self.strm) };
        self.strm.next_out = std::ptr::null_mut();
        strm.next_out = std::ptr::null_mut();
        let mut copy = Inflater { strm };
        if code != sys::Z_OK {
            let err = copy.error(code);
            // The copy owns nothing (on failure it may still point at our state): never end it.
            copy.strm.state = std::ptr::null_mut();
            return Err(err);
        }
        Ok(copy)
    }

    /// zlib's `data_type` after the last call: bit 7 = at a block boundary, bit 6 = in the last
    /// block, bits 0–2 = unused bits of the last consumed byte.
    pub(crate) fn data_type(&self) -> i32 {
        self.strm.data_type
    }

    /// Resets the stream to read a new stream with `window_bits`, keeping allocations.
    pub(crate) fn reset(&mut self, window_bits: i32) -> Result<(), ZlibError> {
        // SAFETY: the stream is initialised.
        let code = unsafe { sys::inflateReset2(&mut *self.strm, window_bits) };
        self.check(code)
    }

    /// Inserts `bits` (1..=7) low bits of `value` into the input bit buffer.
    pub(crate) fn prime(&mut self, bits: u8, value: u8) -> Result<(), ZlibError> {
        // SAFETY: the stream is initialised.
        let code = unsafe { sys::inflatePrime(&mut *self.strm, i32::from(bits), i32::from(value)) };
        self.check(code)
    }

    /// Presets the 32 KiB history window of a raw stream.
    pub(crate) fn set_dictionary(&mut self, dictionary: &[u8]) -> Result<(), ZlibError> {
        let len = u32::try_from(dictionary.len()).unwrap_or(u32::MAX);
        // SAFETY: the pointer and length describe a live slice; zlib copies it before returning.
        let code = unsafe { sys::inflateSetDictionary(&mut *self.strm, dictionary.as_ptr(), len) };
        self.check(code)
    }

    fn check(&self, code: i32) -> Result<(), ZlibError> {
        if code == sys::Z_OK {
            Ok(())
        } else {
            Err(self.error(code))
        }
    }

    fn error(&self, code: i32) -> ZlibError {
        let message = if self.strm.msg.is_null() {
            match code {
                sys::Z_DATA_ERROR => "invalid compressed data".to_string(),
                sys::Z_MEM_ERROR => "out of memory".to_string(),
                sys::Z_STREAM_ERROR => "invalid stream state".to_string(),
                sys::Z_VERSION_ERROR => "zlib version mismatch".to_string(),
                other => format!("zlib error {other}"),
            }
        } else {
            // SAFETY: zlib sets `msg` to a static NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(self.strm.msg) }.to_string_lossy().into_owned()
        };
        ZlibError { code, message, consumed: 0 }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        if !self.strm.state.is_null() {
            // SAFETY: the stream was initialised and is ended exactly once.
            unsafe { sys::inflateEnd(&mut *self.strm) };
        }
    }
}

// SAFETY: the z_stream owns its state exclusively and holds no thread-bound data; the raw pointers
// in it are only set for the duration of one `&mut self` call.
unsafe impl Send for Inflater {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn inflates_a_gzip_stream_and_reports_block_boundaries() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let compressed = gzip(&data);
        let mut inflater = Inflater::new(WINDOW_BITS_AUTO).unwrap();
        let mut out = vec![0u8; data.len()];
        let (mut pos_in, mut pos_out, mut boundaries) = (0, 0, 0);
        loop {
            let p = inflater.inflate(&compressed[pos_in..], &mut out[pos_out..], Flush::Block).unwrap();
            pos_in += p.consumed;
            pos_out += p.produced;
            if p.stream_end {
                break;
            }
            if inflater.data_type() & 128 != 0 {
                boundaries += 1;
            }
        }
        assert_eq!(out, data);
        assert_eq!(pos_in, compressed.len());
        assert!(boundaries >= 1, "the boundary after the gzip header is always reported");
    }

    #[test]
    fn corrupt_data_is_an_error_with_zlibs_message() {
        let mut compressed = gzip(b"hello hello hello");
        compressed[12] ^= 0xff;
        compressed[13] ^= 0xff;
        let mut inflater = Inflater::new(WINDOW_BITS_AUTO).unwrap();
        let mut out = vec![0u8; 64];
        let err = inflater.inflate(&compressed, &mut out, Flush::None).unwrap_err();
        assert_eq!(err.code, sys::Z_DATA_ERROR);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn a_copy_carries_on_like_the_original() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 97) as u8).collect();
        let compressed = gzip(&data);
        let mut inflater = Inflater::new(WINDOW_BITS_AUTO).unwrap();
        let mut head = vec![0u8; 40_000];
        let first = inflater.inflate(&compressed[..500], &mut head, Flush::None).unwrap();
        let mut copy = inflater.try_clone().unwrap();
        let mut rests = Vec::new();
        for stream in [&mut inflater, &mut copy] {
            let mut rest = vec![0u8; data.len()];
            let p = stream.inflate(&compressed[first.consumed..], &mut rest, Flush::None).unwrap();
            assert!(p.stream_end);
            rest.truncate(p.produced);
            rests.push(rest);
        }
        assert_eq!(rests[0], rests[1]);
        assert_eq!([&head[..first.produced], &rests[0][..]].concat(), data);
    }

    #[test]
    fn raw_stream_resumes_with_a_dictionary() {
        // A raw deflate stream that references a preset dictionary decodes only with it.
        let dict = b"the quick brown fox jumps over the lazy dog";
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        c.set_dictionary(dict).unwrap();
        let mut compressed = Vec::with_capacity(128);
        c.compress_vec(dict, &mut compressed, flate2::FlushCompress::Finish).unwrap();
        let mut inflater = Inflater::new(WINDOW_BITS_RAW).unwrap();
        inflater.set_dictionary(dict).unwrap();
        let mut out = vec![0u8; 128];
        let p = inflater.inflate(&compressed, &mut out, Flush::None).unwrap();
        assert!(p.stream_end);
        assert_eq!(&out[..p.produced], dict);
    }
}
