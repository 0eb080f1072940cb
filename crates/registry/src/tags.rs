//! Tag listing (`GET /v2/<name>/tags/list`), paginated with `n`/`last` and followed through the
//! `Link: <...>; rel="next"` header.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::error::redact_url;
use crate::error::Resource;
use crate::referrers::parse_next_link;
use crate::response::read_body;
use crate::transport::{resolve_location, Access};
use crate::{Client, Error, Repository};

/// Tags asked for per page.
const PAGE_SIZE: usize = 1000;
/// The most pages followed (a million tags): a registry that links pages in a loop is an error.
const MAX_PAGES: usize = 1000;
/// The largest page read.
const MAX_PAGE_BYTES: usize = 16 << 20;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Client {
    /// Every tag of `repo`, in the registry's order (lexical for distribution); empty for a repository
    /// without tags. A repository that does not exist is `NotFound`.
    pub async fn list_tags(&self, repo: &Repository) -> Result<Vec<String>, Error> {
        self.list_tags_paged(repo, PAGE_SIZE).await
    }

    /// [`Client::list_tags`], asking for `page_size` tags per page.
    pub async fn list_tags_paged(&self, repo: &Repository, page_size: usize) -> Result<Vec<String>, Error> {
        let page_size = page_size.max(1);
        let mut url = self.api_url(repo, "tags/list")?;
        url.query_pairs_mut().append_pair("n", &page_size.to_string());
        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        let mut requested = HashSet::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            if requested.len() == MAX_PAGES {
                return Err(Error::InvalidResponse {
                    url: redact_url(&url),
                    reason: format!("more than {MAX_PAGES} pages of tags"),
                });
            }
            requested.insert(url.to_string());
            let (page, link) = self.with_retries(Error::is_retryable, |_| self.tags_page(repo, &url)).await?;
            let full = page.len() >= page_size;
            // The page's greatest tag: where the next page starts (tags are listed in lexical order).
            let greatest = page.iter().max().cloned();
            let fresh: Vec<String> = page.into_iter().filter(|t| seen.insert(t.clone())).collect();
            if fresh.is_empty() {
                break;
            }
            tags.extend(fresh);
            // distribution 2.8 may link to a page already read: then continue after the greatest tag.
            next = link
                .filter(|link| !requested.contains(link.as_str()))
                .or_else(|| full.then(|| with_last(&url, greatest.as_deref()?)).flatten())
                .filter(|next| !requested.contains(next.as_str()));
        }
        Ok(tags)
    }

    async fn tags_page(&self, repo: &Repository, url: &Url) -> Result<(Vec<String>, Option<Url>), Error> {
        let request = self.request(repo, Access::Pull, Method::GET, url.clone());
        let sent = self.send(&request).await?;
        if sent.status() != StatusCode::OK {
            return Err(sent.into_error(repo, Resource::Repository, "").await);
        }
        let next = sent.header(reqwest::header::LINK.as_str()).and_then(parse_next_link).and_then(|link| {
            let next = resolve_location(&sent.url, &link).ok()?;
            (next.origin() == sent.url.origin()).then_some(next)
        });
        let page_url = sent.url.clone();
        let bytes = read_body(sent.response, MAX_PAGE_BYTES, &page_url).await?;
        let page: Page = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
            url: redact_url(&page_url),
            reason: format!("tags list is not valid JSON: {e}"),
        })?;
        Ok((page.tags.unwrap_or_default(), next))
    }
}

/// `url` with its `last` parameter set to `tag`.
fn with_last(url: &Url, tag: &str) -> Option<Url> {
    let mut next = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "last")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    next.query_pairs_mut().clear().extend_pairs(kept).append_pair("last", tag);
    Some(next)
}
