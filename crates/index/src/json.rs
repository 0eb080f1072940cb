//! JSON bytes exactly as Go's `encoding/json` writes them: compact, struct fields in declaration order,
//! map keys sorted, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c` etc.
//!
//! The SOCI index manifests and re-serialized image manifests are content-addressed, so any byte of
//! difference from soci's output is a different digest.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};

/// Compact output (the trait's defaults) plus Go's HTML-safe escapes.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Go (1.22+) writes \b, \f, \n, \r, \t, \" and \\ short, and other control characters as \u00XX.
        let bytes: Vec<u8> = match escape {
            CharEscape::Quote => b"\\\"".to_vec(),
            CharEscape::ReverseSolidus => b"\\\\".to_vec(),
            CharEscape::LineFeed => b"\\n".to_vec(),
            CharEscape::CarriageReturn => b"\\r".to_vec(),
            CharEscape::Tab => b"\\t".to_vec(),
            CharEscape::Solidus => b"/".to_vec(),
            CharEscape::Backspace => b"\\b".to_vec(),
            CharEscape::FormFeed => b"\\f".to_vec(),
            CharEscape::AsciiControl(byte) => format!("\\u{byte:04x}").into_bytes(),
        };
        writer.write_all(&bytes)
    }
}

/// Serializes `value` as Go's `json.Marshal` would.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut serializer).expect("serializing to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn escapes_like_go() {
        let mut map = BTreeMap::new();
        map.insert("b", "x<y>&z\u{2028}\n\t\"\\\u{1}\u{8}");
        map.insert("a", "plain/slash");
        assert_eq!(
            String::from_utf8(to_go_json(&map)).unwrap(),
            r#"{"a":"plain/slash","b":"x\u003cy\u003e\u0026z\u2028\n\t\"\\\u0001\b"}"#
        );
    }
}
