//! sha256 digests: computing, validating, and checking tags.

use sha2::{Digest as _, Sha256};

use crate::Error;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    digest_string(Sha256::digest(bytes))
}

/// `sha256:<hex>` of a finished hash.
fn digest_string(hash: impl AsRef<[u8]>) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// `Err(DigestMismatch)` unless content that hashed to `actual` is the content `expected` names.
pub(crate) fn check_digest(expected: &str, actual: &str) -> Result<(), Error> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch { expected: expected.to_owned(), actual: actual.to_owned() })
    }
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits, the only form this client
/// can verify.
pub fn validate_digest(digest: &str) -> Result<(), Error> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if valid {
        Ok(())
    } else {
        Err(Error::UnsupportedDigest { digest: digest.to_owned() })
    }
}

/// Whether `reference` (the part after `:` or `@` of an image reference) is a digest rather than a
/// tag: tags cannot contain `:`.
pub(crate) fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

/// What the distribution spec allows a tag to be, `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub const TAG_RULE: &str = "a tag is 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'";

/// Whether `tag` follows the distribution grammar ([`TAG_RULE`]), which also keeps it safe to paste into
/// a URL path. The one check of a tag's grammar.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    first_ok && rest_ok && tag.len() <= 128
}

/// [`is_valid_tag`], as an error naming the tag.
pub(crate) fn validate_tag(tag: &str) -> Result<(), Error> {
    if is_valid_tag(tag) {
        Ok(())
    } else {
        Err(Error::InvalidReference { input: tag.to_owned(), reason: TAG_RULE.into() })
    }
}

/// Checks a manifest reference (a tag or a digest).
pub(crate) fn validate_manifest_reference(reference: &str) -> Result<(), Error> {
    if is_digest(reference) {
        validate_digest(reference)
    } else {
        validate_tag(reference)
    }
}

/// An incremental sha256 with a byte count, for streamed blobs.
#[derive(Clone, Default)]
pub(crate) struct DigestCounter {
    hasher: Sha256,
    len: u64,
}

impl DigestCounter {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn finish(self) -> String {
        digest_string(self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digest_validation() {
        validate_digest(&sha256_digest(b"x")).unwrap();
        for bad in [
            "sha256:abc",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            "",
        ] {
            assert!(matches!(validate_digest(bad), Err(Error::UnsupportedDigest { .. })), "{bad}");
        }
    }

    #[test]
    fn tag_validation() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            validate_tag(good).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a?b", "a b", &"t".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counter_matches_one_shot_digest() {
        let mut counter = DigestCounter::default();
        counter.update(b"hello ");
        counter.update(b"world");
        assert_eq!(counter.len(), 11);
        assert_eq!(counter.finish(), sha256_digest(b"hello world"));
    }
}
