//! The referrers API: the index of manifests whose `subject` is a digest, merged across pages, or
//! `None` when the registry has no such API and callers fall back to the `sha256-<hex>` tag schema.

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tracing::debug;
use url::Url;

use crate::digest::validate_digest;
use crate::error::Resource;
use crate::manifests::strip_media_type_params;
use crate::response::{read_body, MAX_JSON_SIZE};
use crate::transport::{redact_url, resolve_location, Access};
use crate::{media_type, Client, Error, Repository};

/// Referrers pages followed through `Link: <...>; rel="next"`.
const MAX_REFERRERS_PAGES: usize = 64;

impl Client {
    /// The referrers of `digest` (an OCI image index), optionally filtered by artifact type, or `None`
    /// when the registry has no referrers API (404, 405, or an answer that is not an index): the caller
    /// then falls back to the `sha256-<hex>` tag schema. Paginated answers are merged into one index.
    /// The filter may or may not be applied by the registry: callers should filter again.
    pub async fn referrers(
        &self,
        repo: &Repository,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<Bytes>, Error> {
        validate_digest(digest)?;
        let mut url = self.api_url(repo, &format!("referrers/{digest}"))?;
        if let Some(artifact_type) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", artifact_type);
        }
        let first_url = redact_url(&url);
        let mut pages = Vec::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            if pages.len() == MAX_REFERRERS_PAGES {
                return Err(Error::InvalidResponse {
                    url: redact_url(&url),
                    reason: format!("more than {MAX_REFERRERS_PAGES} pages of referrers"),
                });
            }
            let page =
                self.with_retries(Error::is_retryable, |_| self.referrers_page(repo, digest, &url)).await?;
            let Some((bytes, link)) = page else { return Ok(None) };
            pages.push(bytes);
            next = link;
        }
        if pages.len() == 1 {
            return Ok(pages.pop());
        }
        merge_index_pages(&pages)
            .map(Some)
            .map_err(|reason| Error::InvalidResponse { url: first_url, reason })
    }

    /// One page of referrers and the URL of the next one, or `None` if the API is not supported.
    async fn referrers_page(
        &self,
        repo: &Repository,
        digest: &str,
        url: &Url,
    ) -> Result<Option<(Bytes, Option<Url>)>, Error> {
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
        let is_index = content_type.as_deref() == Some(media_type::OCI_INDEX)
            || serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
                v.get("mediaType").and_then(|m| m.as_str()) == Some(media_type::OCI_INDEX)
                    && v.get("manifests").is_some_and(|m| m.is_array())
            });
        if !is_index {
            debug!(repository = %repo, digest, content_type = ?content_type, "referrers answer is not an index");
            return Ok(None);
        }
        Ok(Some((bytes, next)))
    }
}

/// The `rel="next"` target of a `Link` header.
fn parse_next_link(value: &str) -> Option<String> {
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

fn merge_index_pages(pages: &[Bytes]) -> Result<Bytes, String> {
    let mut merged: Option<serde_json::Value> = None;
    for page in pages {
        let value: serde_json::Value =
            serde_json::from_slice(page).map_err(|e| format!("referrers page: {e}"))?;
        let manifests = value.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
        match merged.as_mut().and_then(|m| m.get_mut("manifests")).and_then(|m| m.as_array_mut()) {
            Some(all) => all.extend(manifests),
            None => merged = Some(value),
        }
    }
    let merged = merged.unwrap_or_default();
    serde_json::to_vec(&merged).map(Bytes::from).map_err(|e| e.to_string())
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
    fn index_pages_merge() {
        let a = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"1"}]}"#);
        let b = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[{"digest":"2"},{"digest":"3"}]}"#);
        let merged: serde_json::Value = serde_json::from_slice(&merge_index_pages(&[a, b]).unwrap()).unwrap();
        let digests: Vec<&str> =
            merged["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
        assert_eq!(digests, ["1", "2", "3"]);
        assert_eq!(merged["mediaType"], media_type::OCI_INDEX);
    }
}
