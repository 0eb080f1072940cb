//! The referrers API: the manifests whose `subject` is a digest, as one typed list across pages, or
//! `None` when the registry has no such API and callers fall back to the `sha256-<hex>` tag schema.

use std::collections::BTreeMap;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Deserializer};
use tracing::debug;
use url::Url;

use crate::digest::validate_digest;
use crate::error::redact_url;
use crate::error::Resource;
use crate::manifests::strip_media_type_params;
use crate::response::{read_body, MAX_JSON_SIZE};
use crate::transport::{resolve_location, Access};
use crate::{media_type, Client, Error, Repository};

/// Referrers pages followed through `Link: <...>; rel="next"`.
const MAX_REFERRERS_PAGES: usize = 64;

/// One entry of a referrers answer: a manifest whose `subject` is the digest asked about.
///
/// Fields the registry leaves out are empty (as Go reads them), so that one sloppy entry does not
/// hide the others; callers check what they rely on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Referrer {
    /// The referrer's media type (an image manifest, usually).
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The referrer's digest.
    #[serde(default)]
    pub digest: String,
    /// The referrer's size in bytes.
    #[serde(default)]
    pub size: u64,
    /// The referrer's artifact type (its `artifactType`, or else its config's media type).
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    /// The referrer's annotations.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One page of a referrers answer: an OCI image index.
#[derive(Deserialize)]
struct Page {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    manifests: Vec<Referrer>,
}

/// `null` (Go's nil slices and maps) reads as empty.
fn null_as_empty<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

impl Client {
    /// The referrers of `digest`, optionally filtered by artifact type, or `None` when the registry has
    /// no referrers API (404, 405, or an answer that is not an index): the caller then falls back to
    /// the `sha256-<hex>` tag schema. Paginated answers come back as one list, in the registry's order.
    /// The filter may or may not be applied by the registry: callers should filter again.
    pub async fn referrers(
        &self,
        repo: &Repository,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Referrer>>, Error> {
        validate_digest(digest)?;
        let mut url = self.api_url(repo, &format!("referrers/{digest}"))?;
        if let Some(artifact_type) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", artifact_type);
        }
        let mut referrers = Vec::new();
        let mut pages = 0;
        let mut next = Some(url);
        while let Some(url) = next.take() {
            if pages == MAX_REFERRERS_PAGES {
                return Err(Error::InvalidResponse {
                    url: redact_url(&url),
                    reason: format!("more than {MAX_REFERRERS_PAGES} pages of referrers"),
                });
            }
            let page =
                self.with_retries(Error::is_retryable, |_| self.referrers_page(repo, digest, &url)).await?;
            let Some((page, link)) = page else { return Ok(None) };
            referrers.extend(page);
            pages += 1;
            next = link;
        }
        Ok(Some(referrers))
    }

    /// One page of referrers and the URL of the next one, or `None` if the API is not supported.
    async fn referrers_page(
        &self,
        repo: &Repository,
        digest: &str,
        url: &Url,
    ) -> Result<Option<(Vec<Referrer>, Option<Url>)>, Error> {
        let mut request = self.request(repo, Access::Pull, Method::GET, url.clone());
        request.headers.insert(ACCEPT, HeaderValue::from_static(media_type::OCI_INDEX));
        let sent = self.send(&request).await?;
        match sent.status() {
            StatusCode::OK => {}
            _ if sent.is_missing_or_not_allowed() => {
                debug!(repository = %repo, digest, status = sent.status().as_u16(), "no referrers API");
                return Ok(None);
            }
            _ => return Err(sent.into_error(repo, Resource::Manifest, digest).await),
        }
        let content_type = sent.header(CONTENT_TYPE.as_str()).map(strip_media_type_params);
        let next = sent.header(reqwest::header::LINK.as_str()).and_then(parse_next_link).and_then(|link| {
            let next = resolve_location(&sent.url, &link).ok()?;
            // Only follow pagination on the registry itself: the link comes from the registry.
            (next.origin() == sent.url.origin()).then_some(next)
        });
        let page_url = sent.url.clone();
        let bytes = read_body(sent.response, MAX_JSON_SIZE, &page_url).await?;
        let parsed = serde_json::from_slice::<Page>(&bytes);
        let declared_index = content_type.as_deref() == Some(media_type::OCI_INDEX);
        match parsed {
            Ok(page) if declared_index || page.media_type.as_deref() == Some(media_type::OCI_INDEX) => {
                Ok(Some((page.manifests, next)))
            }
            Err(e) if declared_index => Err(Error::InvalidResponse {
                url: redact_url(&page_url),
                reason: format!("referrers page is not a valid OCI index: {e}"),
            }),
            // A catch-all answer (an HTML page, some other JSON): no referrers API here.
            _ => {
                debug!(repository = %repo, digest, ?content_type, "referrers answer is not an index");
                Ok(None)
            }
        }
    }
}

/// The `rel="next"` target of a `Link` header.
pub(crate) fn parse_next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            })
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header() {
        assert_eq!(
            parse_next_link(r#"</v2/a/referrers/sha256:1?n=10&last=x>; rel="next""#).as_deref(),
            Some("/v2/a/referrers/sha256:1?n=10&last=x")
        );
        assert_eq!(
            parse_next_link(r#"<https://a/b>; rel="prev", <https://a/c>; rel=next"#).as_deref(),
            Some("https://a/c")
        );
        assert_eq!(parse_next_link("garbage"), None);
    }

    #[test]
    fn pages_parse_leniently() {
        let page: Page = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
                {"digest":"sha256:1","annotations":null},
                {"mediaType":"m","digest":"sha256:2","size":9,"artifactType":"t","annotations":{"k":"v"}}]}"#,
        )
        .unwrap();
        assert_eq!(page.media_type.as_deref(), Some(media_type::OCI_INDEX));
        assert_eq!(page.manifests[0], Referrer { digest: "sha256:1".into(), ..Referrer::default() });
        let second = Referrer {
            media_type: "m".into(),
            digest: "sha256:2".into(),
            size: 9,
            artifact_type: Some("t".into()),
            annotations: [("k".to_owned(), "v".to_owned())].into(),
        };
        assert_eq!(page.manifests[1], second);
        let nil: Page = serde_json::from_str(r#"{"schemaVersion":2,"manifests":null}"#).unwrap();
        assert!(nil.manifests.is_empty() && nil.media_type.is_none());
        assert!(serde_json::from_str::<Page>(r#"{"manifests":[{"size":-1}]}"#).is_err());
    }
}
