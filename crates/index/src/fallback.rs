//! The referrers tag schema (OCI distribution 1.1): registries without a referrers API list the
//! referrers of `sha256:<hex>` in an image index tagged `sha256-<hex>`. v1 SOCI indexes are found there
//! (`status`), added there (`publish`) and removed from there (`prune`).

use crate::error::{registry_error, Error};
use crate::oci::Index;
use crate::registry::{Registry, SourceErrorKind};
use crate::resolve::parse;

/// The referrers tag schema's tag for `digest`: `sha256-<hex>`.
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The referrers index under the fallback tag of `digest` (empty when there is none).
pub async fn fallback_referrers<R: Registry>(registry: &R, digest: &str) -> Result<Index, Error> {
    let tag = fallback_tag(digest);
    match registry.get_manifest(&tag).await {
        Ok(Some(fetched)) => parse(&fetched.digest, &fetched.bytes),
        Ok(None) => Ok(Index::default()),
        Err(e) if e.kind == SourceErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(registry_error(format!("fetching referrers tag {tag}"))(e)),
    }
}

/// The subject digest of a referrers fallback tag (`sha256-<64 lowercase hex>`: digests are written in
/// lowercase hex, so `sha256-ABC…` is a tag of someone else's). The one check of what such a tag is.
pub fn fallback_subject(tag: &str) -> Option<String> {
    let hex = tag.strip_prefix("sha256-")?;
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (hex.len() == 64 && hex.bytes().all(lower_hex)).then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_tags_are_sha256_and_64_lowercase_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(fallback_subject(&format!("sha256-{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(fallback_tag(&format!("sha256:{hex}")), format!("sha256-{hex}"));
        for not_one in
            [format!("sha256-{}", hex.to_uppercase()), format!("sha256-{}", &hex[1..]), "sha256-".into()]
        {
            assert_eq!(fallback_subject(&not_one), None, "{not_one}");
        }
    }
}
