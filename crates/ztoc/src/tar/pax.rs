//! PAX extended headers: record parsing (`parsePAX`, `parsePAXRecord`), times (`parsePAXTime`) and the
//! merge into a header (`mergePAX`), as Go's `archive/tar` does them.

use std::collections::BTreeMap;

use super::goparse::parse_int;
use super::header::RawHeader;

/// The records of one `x` header. A `BTreeMap` gives Go's map semantics (a later record for the same key wins)
/// and soci's bytewise key order (`sort.Strings`) when iterated.
pub(super) type PaxRecords = BTreeMap<Vec<u8>, Vec<u8>>;

const GNU_SPARSE_OFFSET: &[u8] = b"GNU.sparse.offset";
const GNU_SPARSE_NUMBYTES: &[u8] = b"GNU.sparse.numbytes";
const GNU_SPARSE_MAP: &[u8] = b"GNU.sparse.map";
const GNU_SPARSE_MAJOR: &[u8] = b"GNU.sparse.major";
const GNU_SPARSE_MINOR: &[u8] = b"GNU.sparse.minor";
const GNU_SPARSE_NAME: &[u8] = b"GNU.sparse.name";

/// Why the data of an `x` header is not a valid list of records (Go returns `ErrHeader` for all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PaxProblem {
    /// No space after the length.
    MissingLength,
    /// The length is not a decimal number, is below 5, or runs past the end of the data.
    BadLength,
    /// The record does not end in a newline where its length says.
    MissingNewline,
    /// No `=` between key and value.
    MissingEquals,
    /// Empty key, NUL in the key, or NUL in a `path`/`linkpath`/`uname`/`gname` value.
    InvalidRecord,
    /// `GNU.sparse.offset` and `GNU.sparse.numbytes` out of order, or a value containing a comma.
    BadSparseRecord,
}

impl PaxProblem {
    /// A short explanation for error messages.
    pub(super) fn describe(self) -> &'static str {
        match self {
            PaxProblem::MissingLength => "a record has no space after its length",
            PaxProblem::BadLength => "a record length is not a decimal number between 5 and the bytes left",
            PaxProblem::MissingNewline => "a record does not end in a newline where its length says",
            PaxProblem::MissingEquals => "a record has no '=' between key and value",
            PaxProblem::InvalidRecord => {
                "a record has an empty key, a NUL in its key, or a NUL in a path/linkpath/uname/gname value"
            }
            PaxProblem::BadSparseRecord => {
                "GNU.sparse.offset/numbytes records are out of order or contain a comma"
            }
        }
    }
}

/// One parsed record and the data after it.
struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    rest: &'a [u8],
}

/// One `"%d %s=%s\n"` record at the start of `s` (`parsePAXRecord`).
fn parse_record(s: &[u8]) -> Result<Record<'_>, PaxProblem> {
    let space = s.iter().position(|&c| c == b' ').ok_or(PaxProblem::MissingLength)?;
    let (length_text, rest) = (&s[..space], &s[space + 1..]);
    let length = parse_int(length_text).ok_or(PaxProblem::BadLength)?;
    if length < 5 || length > s.len() as i64 {
        return Err(PaxProblem::BadLength);
    }
    // The length counts the digits and the space too; what is left covers the record up to its newline.
    let in_rest = length - (length_text.len() as i64 + 1);
    if in_rest <= 0 {
        return Err(PaxProblem::BadLength);
    }
    let in_rest = in_rest as usize;
    let (record, remainder) = rest.split_at(in_rest.min(rest.len()));
    let (newline, record) = record.split_last().ok_or(PaxProblem::BadLength)?;
    if *newline != b'\n' {
        return Err(PaxProblem::MissingNewline);
    }
    let equals = record.iter().position(|&c| c == b'=').ok_or(PaxProblem::MissingEquals)?;
    let (key, value) = (&record[..equals], &record[equals + 1..]);
    let has_nul = |b: &[u8]| b.contains(&0);
    let valid = !key.is_empty()
        && match key {
            b"path" | b"linkpath" | b"uname" | b"gname" => !has_nul(value),
            _ => !has_nul(key),
        };
    if !valid {
        return Err(PaxProblem::InvalidRecord);
    }
    Ok(Record { key, value, rest: remainder })
}

/// Parses the data of an `x` (or `g`) header (`parsePAX`). GNU sparse 0.0 `offset`/`numbytes` pairs are
/// gathered into one `GNU.sparse.map` record, as Go does.
pub(super) fn parse_records(mut data: &[u8]) -> Result<PaxRecords, PaxProblem> {
    let mut records = PaxRecords::new();
    let mut sparse_map: Vec<&[u8]> = Vec::new();
    while !data.is_empty() {
        let Record { key, value, rest } = parse_record(data)?;
        data = rest;
        if key == GNU_SPARSE_OFFSET || key == GNU_SPARSE_NUMBYTES {
            let expected = if sparse_map.len() % 2 == 0 { GNU_SPARSE_OFFSET } else { GNU_SPARSE_NUMBYTES };
            if key != expected || value.contains(&b',') {
                return Err(PaxProblem::BadSparseRecord);
            }
            sparse_map.push(value);
        } else {
            records.insert(key.to_vec(), value.to_vec());
        }
    }
    if !sparse_map.is_empty() {
        records.insert(GNU_SPARSE_MAP.to_vec(), sparse_map.join(&b","[..]));
    }
    Ok(records)
}

/// `parsePAXTime`: `"%d"` or `"%d.%d"` seconds, as the `(secs, nsecs)` pair Go passes to `time.Unix`.
/// Sub-second digits beyond nine are dropped; a leading `-` makes the fraction count backwards.
pub(super) fn parse_time(s: &[u8]) -> Option<(i64, i64)> {
    let (secs_text, frac_text) = match s.iter().position(|&c| c == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &[][..]),
    };
    let secs = parse_int(secs_text)?;
    if frac_text.is_empty() {
        return Some((secs, 0));
    }
    if !frac_text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let nanos = frac_text
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(9)
        .fold(0i64, |acc, &digit| acc * 10 + i64::from(digit - b'0'));
    if secs_text.first() == Some(&b'-') {
        Some((secs, -nanos))
    } else {
        Some((secs, nanos))
    }
}

/// A header after `mergePAX`: the raw header fields with non-empty PAX values applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Merged {
    pub header: RawHeader,
    /// Modification time as `time.Unix(secs, nanos)` arguments.
    pub mtime: (i64, i64),
}

/// A PAX record whose value Go's `mergePAX` cannot parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BadValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// `mergePAX`: overrides header fields with the non-empty values of the well-known keys. `atime` and `ctime` are
/// not recorded by soci but must still parse.
pub(super) fn merge(mut header: RawHeader, records: &PaxRecords) -> Result<Merged, BadValue> {
    let mut mtime = (header.mtime, 0);
    for (key, value) in records {
        if value.is_empty() {
            continue;
        }
        let bad = || BadValue { key: key.clone(), value: value.clone() };
        match key.as_slice() {
            b"path" => header.name = value.clone(),
            b"linkpath" => header.linkname = value.clone(),
            b"uname" => header.uname = value.clone(),
            b"gname" => header.gname = value.clone(),
            b"uid" => header.uid = parse_int(value).ok_or_else(bad)?,
            b"gid" => header.gid = parse_int(value).ok_or_else(bad)?,
            b"size" => header.size = parse_int(value).ok_or_else(bad)?,
            b"mtime" => mtime = parse_time(value).ok_or_else(bad)?,
            b"atime" | b"ctime" => {
                parse_time(value).ok_or_else(bad)?;
            }
            _ => {}
        }
    }
    Ok(Merged { header, mtime })
}

/// Whether Go's `readGNUSparsePAXHeaders` treats the entry as a PAX GNU sparse file (0.0, 0.1 or 1.0).
/// Unknown versions are read as regular files, as Go does.
pub(super) fn is_gnu_sparse(records: &PaxRecords) -> bool {
    let get = |key: &[u8]| records.get(key).map_or(&[][..], Vec::as_slice);
    match (get(GNU_SPARSE_MAJOR), get(GNU_SPARSE_MINOR)) {
        (b"0", b"0" | b"1") | (b"1", b"0") => true,
        (b"", b"") => !get(GNU_SPARSE_MAP).is_empty(),
        _ => false,
    }
}

/// The real name of a PAX sparse file (`GNU.sparse.name`), which Go puts in `hdr.Name`.
pub(super) fn gnu_sparse_name(records: &PaxRecords) -> Option<&[u8]> {
    records.get(GNU_SPARSE_NAME).map(Vec::as_slice).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `formatPAXRecord`.
    fn record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut size = body.len() + body.len().to_string().len();
        if size.to_string().len() + body.len() != size {
            size = size.to_string().len() + body.len();
        }
        let rec = format!("{size}{body}");
        assert_eq!(rec.len(), size);
        rec
    }

    #[test]
    fn parses_records_and_keeps_the_last_duplicate() {
        let data =
            format!("{}{}{}", record("path", "a"), record("SCHILY.xattr.user.x", ""), record("path", "b"));
        let records = parse_records(data.as_bytes()).unwrap();
        assert_eq!(records.get(&b"path"[..]).unwrap(), b"b");
        assert_eq!(records.get(&b"SCHILY.xattr.user.x"[..]).unwrap(), b"");
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn value_may_contain_equals_and_newlines() {
        let data = "14 k=a=b\nc\x00dd\n";
        let records = parse_records(data.as_bytes()).unwrap();
        assert_eq!(records.get(&b"k"[..]).unwrap(), b"a=b\nc\x00dd");
    }

    #[test]
    fn rejects_what_go_rejects() {
        let cases: &[(&[u8], PaxProblem)] = &[
            (b"13", PaxProblem::MissingLength),
            (b"x3 path=a\n", PaxProblem::BadLength),
            (b"4 a=\n", PaxProblem::BadLength),
            (b"99 path=a\n", PaxProblem::BadLength),
            (b"10 path=ab", PaxProblem::MissingNewline),
            (b"9 patha\n\n", PaxProblem::MissingEquals),
            (b"6 =ab\n", PaxProblem::InvalidRecord),
            (b"11 path=a\x00\n", PaxProblem::InvalidRecord),
            (b"8 k\x00=ab\n", PaxProblem::InvalidRecord),
            (b"-10 path=a\n", PaxProblem::BadLength),
            (b"1 path=a\n", PaxProblem::BadLength),
            (b"00005 abc\n", PaxProblem::BadLength),
        ];
        for (data, problem) in cases {
            assert_eq!(parse_records(data), Err(*problem), "{:?}", String::from_utf8_lossy(data));
        }
        // A NUL in a value of another key is fine.
        assert!(parse_records(b"9 k=a\x00bc\n").is_ok());
        // A "+" length is a valid Go ParseInt.
        assert!(parse_records(b"+11 path=a\n").is_ok());
    }

    #[test]
    fn sparse_0_0_records_become_a_map() {
        let data = format!(
            "{}{}{}{}",
            record("GNU.sparse.offset", "0"),
            record("GNU.sparse.numbytes", "5"),
            record("GNU.sparse.offset", "10"),
            record("GNU.sparse.numbytes", "2")
        );
        let records = parse_records(data.as_bytes()).unwrap();
        assert_eq!(records.get(GNU_SPARSE_MAP).unwrap(), b"0,5,10,2");
        assert!(is_gnu_sparse(&records));
        let bad = format!("{}{}", record("GNU.sparse.numbytes", "5"), record("GNU.sparse.offset", "0"));
        assert_eq!(parse_records(bad.as_bytes()), Err(PaxProblem::BadSparseRecord));
        let comma = record("GNU.sparse.offset", "0,1");
        assert_eq!(parse_records(comma.as_bytes()), Err(PaxProblem::BadSparseRecord));
    }

    #[test]
    fn sparse_detection_follows_go() {
        let records = |pairs: &[(&str, &str)]| -> PaxRecords {
            pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
        };
        assert!(is_gnu_sparse(&records(&[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0")])));
        assert!(is_gnu_sparse(&records(&[("GNU.sparse.major", "0"), ("GNU.sparse.minor", "1")])));
        assert!(!is_gnu_sparse(&records(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")])));
        assert!(!is_gnu_sparse(&records(&[("GNU.sparse.major", "1"), ("GNU.sparse.map", "0,1")])));
        assert!(is_gnu_sparse(&records(&[("GNU.sparse.map", "0,1")])));
        assert!(!is_gnu_sparse(&records(&[("GNU.sparse.size", "10")])));
        assert!(!is_gnu_sparse(&records(&[("GNU.sparse.realsize", "10")])));
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_time(b"1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_time(b"-1.25"), Some((-1, -250_000_000)));
        assert_eq!(parse_time(b"-0.5"), Some((0, -500_000_000)));
        assert_eq!(parse_time(b"1."), Some((1, 0)));
        assert_eq!(parse_time(b".5"), None);
        assert_eq!(parse_time(b"1.5.5"), None);
        assert_eq!(parse_time(b"1.-5"), None);
        assert_eq!(parse_time(b"1e3"), None);
        assert_eq!(parse_time(b"+7.000000001"), Some((7, 1)));
    }
}
