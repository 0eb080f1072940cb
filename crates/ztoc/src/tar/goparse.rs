//! Go's `strconv.ParseUint` / `strconv.ParseInt` for explicit bases, and the `archive/tar` field parsers built on them.
//!
//! Only success or failure matters to the tar reader (every failure becomes `ErrHeader`), so errors carry no detail.

/// Go's `strconv.ParseUint(s, base, 64)` for `base` 8 or 10: at least one digit, no sign, no underscores
/// (those are only accepted with base 0), no overflow.
pub(super) fn parse_uint(s: &[u8], base: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &c in s {
        let digit = char::from(c).to_digit(36)?;
        if digit >= base {
            return None;
        }
        value = value.checked_mul(u64::from(base))?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// Go's `strconv.ParseInt(s, 10, 64)`: an optional `+` or `-`, then decimal digits, within `i64`.
pub(super) fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'+', rest)) => (false, rest),
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits, 10)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `parser.parseString`: the bytes up to the first NUL, or all of them.
pub(super) fn parse_string(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(end) => &b[..end],
        None => b,
    }
}

/// `parser.parseOctal`: trims NULs and spaces on both ends, stops at an inner NUL, then parses octal.
/// An empty field is 0. The result is the `uint64` reinterpreted as `int64`, as Go does.
pub(super) fn parse_octal(b: &[u8]) -> Option<i64> {
    let is_pad = |c: &u8| *c == b' ' || *c == 0;
    let start = b.iter().position(|c| !is_pad(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_pad(c)).map_or(start, |last| last + 1);
    let trimmed = b.get(start..end).unwrap_or_default();
    if trimmed.is_empty() {
        return Some(0);
    }
    parse_uint(parse_string(trimmed), 8).map(|v| v as i64)
}

/// `parser.parseNumeric`: base-256 (GNU binary, two's complement, when the top bit of the first byte is set)
/// or octal. Fails when the value does not fit in an `int64`.
pub(super) fn parse_numeric(b: &[u8]) -> Option<i64> {
    let Some(&first) = b.first() else {
        return parse_octal(b);
    };
    if first & 0x80 == 0 {
        return parse_octal(b);
    }
    // Negative numbers are read through the identity -a-1 == !a: invert every byte, read the magnitude.
    let invert: u8 = if first & 0x40 != 0 { 0xff } else { 0x00 };
    let mut x: u64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        let mut c = byte ^ invert;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return None;
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 != 0 {
        return None;
    }
    let value = x as i64;
    Some(if invert == 0xff { !value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_uint_matches_go() {
        assert_eq!(parse_uint(b"777", 8), Some(0o777));
        assert_eq!(parse_uint(b"8", 8), None);
        assert_eq!(parse_uint(b"", 8), None);
        assert_eq!(parse_uint(b"+1", 8), None);
        assert_eq!(parse_uint(b"1_0", 10), None);
        assert_eq!(parse_uint(b"18446744073709551615", 10), Some(u64::MAX));
        assert_eq!(parse_uint(b"18446744073709551616", 10), None);
        assert_eq!(parse_uint(b"1a", 10), None);
    }

    #[test]
    fn parse_int_matches_go() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"+42"), Some(42));
        assert_eq!(parse_int(b"-42"), Some(-42));
        assert_eq!(parse_int(b"007"), Some(7));
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"+"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b" 1"), None);
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"-9223372036854775809"), None);
        assert_eq!(parse_int(b"--1"), None);
    }

    #[test]
    fn parse_octal_trims_like_go() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"   644 \0"), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"        "), Some(0));
        assert_eq!(parse_octal(b"12\x0034"), Some(0o12));
        assert_eq!(parse_octal(b"12 34"), None);
        assert_eq!(parse_octal(b"0000009\0"), None);
        assert_eq!(parse_octal(b"x"), None);
        // Go reinterprets the uint64 as int64 without an error.
        assert_eq!(parse_octal(b"1777777777777777777777"), Some(-1));
        assert_eq!(parse_octal(b"2000000000000000000000"), None);
    }

    #[test]
    fn parse_numeric_base256() {
        let mut positive = [0u8; 12];
        positive[0] = 0x80;
        positive[8..].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(parse_numeric(&positive), Some(0x1234_5678));

        let mut minus_one = [0xffu8; 12];
        assert_eq!(parse_numeric(&minus_one), Some(-1));
        minus_one[11] = 0xfe;
        assert_eq!(parse_numeric(&minus_one), Some(-2));

        // 8 bytes: 0x80 then 7 bytes, always fits.
        let mut eight = [0xffu8; 8];
        eight[0] = 0x80;
        assert_eq!(parse_numeric(&eight), Some(0x00ff_ffff_ffff_ffff));

        // A 12-byte field whose magnitude needs more than 63 bits overflows.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[3] = 0x01;
        assert_eq!(parse_numeric(&big), None);
        let mut max = [0u8; 12];
        max[0] = 0x80;
        max[4] = 0x7f;
        max[5..].fill(0xff);
        assert_eq!(parse_numeric(&max), Some(i64::MAX));
        max[4] = 0x80;
        max[5..].fill(0);
        assert_eq!(parse_numeric(&max), None);

        // Negative: -2^63 is representable as the inversion of 2^63-1.
        let mut min = [0xffu8; 12];
        min[4] = 0x80;
        min[5..].fill(0);
        assert_eq!(parse_numeric(&min), Some(i64::MIN));

        assert_eq!(parse_numeric(b""), Some(0));
    }
}
