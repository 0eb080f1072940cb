//! Why something was not done: a layer left out, a tag not indexed, a tag or index kept. Each is an enum
//! whose `Display` is the text reports, logs and `--json` show (serialized as that string), so every
//! rule's wording lives here once and callers match on variants, not on text.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why a layer gets no zTOC although its content was never looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// zstd layers cannot be indexed by SOCI.
    Zstd,
    /// A foreign (non-distributable) layer: not ours to fetch.
    Foreign,
    /// A media type that is neither gzip nor tar.
    UnknownMediaType(String),
    /// Smaller than the minimum layer size: cheaper to pull whole.
    TooSmall {
        /// The layer's compressed size.
        size: u64,
        /// The minimum.
        min: u64,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Zstd => f.write_str("zstd layers cannot be indexed by SOCI"),
            SkipReason::Foreign => f.write_str("foreign (non-distributable) layer"),
            SkipReason::UnknownMediaType(media_type) => {
                write!(f, "not a gzip or tar layer media type ({media_type})")
            }
            SkipReason::TooSmall { size, min } => {
                write!(f, "smaller than the minimum layer size ({size} < {min} bytes)")
            }
        }
    }
}

/// Why a layer whose content was read gets no zTOC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnsupportedReason {
    /// An entry a zTOC cannot describe (a PAX global header, a sparse file): the tar reader's error.
    Content(ztoc::tar::TarError),
    /// The zTOC would grow past `--max-ztoc-size`.
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl fmt::Display for UnsupportedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsupportedReason::Content(error) => error.fmt(f),
            UnsupportedReason::TooLarge { limit } => write!(
                f,
                "its zTOC would be larger than {limit} bytes (the --max-ztoc-size limit): a gzip bomb, or a \
                 layer too big for this memory"
            ),
        }
    }
}

/// Why `sync` does not index a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagSkipReason {
    /// The tag is a v2 SOCI index tag (`<tag><suffix>`).
    SociOutput {
        /// The suffix it ends with.
        suffix: String,
    },
    /// The tag is a referrers fallback tag (`sha256-<hex>`), where v1 SOCI indexes are listed.
    ReferrersTag,
    /// No filter selects the tag.
    NoFilterMatches,
    /// The registry keeps the image archived and does not serve it.
    Archived,
    /// No layer of the image is eligible.
    NothingEligible,
    /// The tag moved while its image was indexed; the newer image's run binds it.
    Superseded {
        /// What the tag points at now, when known.
        by: Option<String>,
    },
    /// The tag's content can never be indexed (not an image, SOCI output by content): the error chain.
    Unindexable(String),
}

impl fmt::Display for TagSkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagSkipReason::SociOutput { suffix } => write!(f, "SOCI output (ends with {suffix})"),
            TagSkipReason::ReferrersTag => f.write_str("SOCI output (a referrers fallback tag)"),
            TagSkipReason::NoFilterMatches => f.write_str("matches no filter"),
            TagSkipReason::Archived => f.write_str(
                "archived: the registry keeps the image but does not serve it until it is restored (not \
                 indexed)",
            ),
            TagSkipReason::NothingEligible => f.write_str("nothing to index: no layer is eligible"),
            TagSkipReason::Superseded { by } => write!(
                f,
                "superseded: the tag moved to {} while it was indexed (that image's run binds it)",
                by.as_deref().unwrap_or("another image")
            ),
            TagSkipReason::Unindexable(error) => f.write_str(error),
        }
    }
}

/// Why SOCI output (a `<tag><suffix>`, a referrers tag, a replaced index) stays where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// The tag holds no image index with SOCI indexes: a user's tag that happens to end in the suffix.
    NotSociOutput,
    /// Other tags name the same image index, and a DELETE by digest would remove them too.
    IndexAlsoTagged {
        /// The image index.
        digest: String,
        /// The other tags.
        tags: Vec<String>,
    },
    /// A replaced index is still named by other tags (a user's promoted copy).
    ReplacedStillTagged {
        /// The replaced index.
        digest: String,
        /// The tags naming it.
        tags: Vec<String>,
    },
    /// v1: the image the referrers tag is for exists.
    SubjectExists,
    /// v1: the referrers tag is gone already.
    Gone,
    /// v1: the tag holds no OCI image index.
    NotReferrersIndex,
    /// v1: the referrers index lists no SOCI index.
    NoSociIndex,
    /// v1: other tags name the same referrers index.
    ReferrersIndexAlsoTagged {
        /// The other tags.
        tags: Vec<String>,
    },
    /// Re-checked before removal: the image was pushed again.
    ImageBack {
        /// The base tag (v2) or subject digest (v1).
        image: String,
    },
    /// Re-checked before removal: the tag points elsewhere now.
    TagMoved {
        /// The tag.
        tag: String,
        /// What it points at now.
        now: String,
        /// What it pointed at when removal was planned.
        was: String,
    },
    /// The registry refused to remove one tag alone.
    CannotUntag {
        /// The tag.
        tag: String,
    },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::NotSociOutput => {
                f.write_str("not SOCI output (no image index with SOCI indexes): a tag of its own")
            }
            KeepReason::IndexAlsoTagged { digest, tags } => write!(
                f,
                "its image index {digest} is also tagged {}: a DELETE by digest would remove that tag too, \
                 and this registry cannot remove one tag alone",
                tags.join(", ")
            ),
            KeepReason::ReplacedStillTagged { digest, tags } => {
                write!(f, "the replaced index {digest} is still tagged {}: left in place", tags.join(", "))
            }
            KeepReason::SubjectExists => f.write_str("its subject exists"),
            KeepReason::Gone => f.write_str("gone"),
            KeepReason::NotReferrersIndex => f.write_str("not a referrers index"),
            KeepReason::NoSociIndex => f.write_str("lists no SOCI index"),
            KeepReason::ReferrersIndexAlsoTagged { tags } => {
                write!(f, "its referrers index is also tagged {}", tags.join(", "))
            }
            KeepReason::ImageBack { image } => {
                write!(f, "superseded: {image} exists again (pushed while this ran)")
            }
            KeepReason::TagMoved { tag, now, was } => {
                write!(f, "superseded: {tag} moved to {now} while this ran (was {was})")
            }
            KeepReason::CannotUntag { tag } => write!(f, "the registry could not remove the tag {tag} alone"),
        }
    }
}

/// Each reason is serialized as its text.
macro_rules! serialize_as_text {
    ($($reason:ty),*) => {$(
        impl Serialize for $reason {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}
serialize_as_text!(SkipReason, UnsupportedReason, TagSkipReason, KeepReason);

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are what users, logs and `--json` consumers saw before the reasons were typed.
    #[test]
    fn each_reason_reads_as_before() {
        let tags = || vec!["prod".to_owned(), "stable".to_owned()];
        let cases: Vec<(String, &str)> = vec![
            (SkipReason::Zstd.to_string(), "zstd layers cannot be indexed by SOCI"),
            (SkipReason::Foreign.to_string(), "foreign (non-distributable) layer"),
            (
                SkipReason::UnknownMediaType("x/y".into()).to_string(),
                "not a gzip or tar layer media type (x/y)",
            ),
            (
                SkipReason::TooSmall { size: 5, min: 10 }.to_string(),
                "smaller than the minimum layer size (5 < 10 bytes)",
            ),
            (
                UnsupportedReason::TooLarge { limit: 262144 }.to_string(),
                "its zTOC would be larger than 262144 bytes (the --max-ztoc-size limit): a gzip bomb, or a \
                 layer too big for this memory",
            ),
            (
                TagSkipReason::SociOutput { suffix: "-soci".into() }.to_string(),
                "SOCI output (ends with -soci)",
            ),
            (TagSkipReason::ReferrersTag.to_string(), "SOCI output (a referrers fallback tag)"),
            (TagSkipReason::NoFilterMatches.to_string(), "matches no filter"),
            (
                TagSkipReason::Archived.to_string(),
                "archived: the registry keeps the image but does not serve it until it is restored (not \
                 indexed)",
            ),
            (TagSkipReason::NothingEligible.to_string(), "nothing to index: no layer is eligible"),
            (
                TagSkipReason::Superseded { by: Some("sha256:ab".into()) }.to_string(),
                "superseded: the tag moved to sha256:ab while it was indexed (that image's run binds it)",
            ),
            (
                TagSkipReason::Superseded { by: None }.to_string(),
                "superseded: the tag moved to another image while it was indexed (that image's run binds it)",
            ),
            (TagSkipReason::Unindexable("not an image".into()).to_string(), "not an image"),
            (
                KeepReason::NotSociOutput.to_string(),
                "not SOCI output (no image index with SOCI indexes): a tag of its own",
            ),
            (
                KeepReason::IndexAlsoTagged { digest: "sha256:ab".into(), tags: tags() }.to_string(),
                "its image index sha256:ab is also tagged prod, stable: a DELETE by digest would remove that \
                 tag too, and this registry cannot remove one tag alone",
            ),
            (
                KeepReason::ReplacedStillTagged { digest: "sha256:ab".into(), tags: tags() }.to_string(),
                "the replaced index sha256:ab is still tagged prod, stable: left in place",
            ),
            (KeepReason::SubjectExists.to_string(), "its subject exists"),
            (KeepReason::Gone.to_string(), "gone"),
            (KeepReason::NotReferrersIndex.to_string(), "not a referrers index"),
            (KeepReason::NoSociIndex.to_string(), "lists no SOCI index"),
            (
                KeepReason::ReferrersIndexAlsoTagged { tags: tags() }.to_string(),
                "its referrers index is also tagged prod, stable",
            ),
            (
                KeepReason::ImageBack { image: "app:v1".into() }.to_string(),
                "superseded: app:v1 exists again (pushed while this ran)",
            ),
            (
                KeepReason::TagMoved {
                    tag: "v1-soci".into(),
                    now: "sha256:cd".into(),
                    was: "sha256:ab".into(),
                }
                .to_string(),
                "superseded: v1-soci moved to sha256:cd while this ran (was sha256:ab)",
            ),
            (
                KeepReason::CannotUntag { tag: "v1-soci".into() }.to_string(),
                "the registry could not remove the tag v1-soci alone",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text, expected);
        }
        let json = serde_json::to_string(&KeepReason::Gone).unwrap();
        assert_eq!(json, "\"gone\"");
    }
}
