//! Reading responses: small bodies with a size limit, and the [`Error`] for an unexpected answer,
//! with a log-safe summary of what the server said.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::auth::{parse_www_authenticate, Challenge};
use crate::digest::is_digest;
use crate::error::{is_retryable_status, Resource};
use crate::error::{redact_url, transport_error};
use crate::limits::Deadline;
use crate::retry::parse_retry_after;
use crate::{Error, Repository};

/// Referrers pages and token responses are small JSON documents too.
pub(crate) const MAX_JSON_SIZE: usize = 8 * 1024 * 1024;
/// How much of an error body ends up in an error message.
const ERROR_BODY_EXCERPT: usize = 300;

/// A response, with where it finally came from.
pub(crate) struct Sent {
    pub(crate) response: reqwest::Response,
    /// The URL that answered, after redirects.
    pub(crate) url: Url,
    pub(crate) method: Method,
    /// Whether credentials (or a token obtained with them) were offered to the registry.
    pub(crate) credentials_sent: bool,
    /// Whether `url` is the registry itself (not a redirect target such as S3).
    pub(crate) from_registry: bool,
}

impl Sent {
    pub(crate) fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }

    /// A 404 or 405 from the registry itself: how it answers an operation or optional API it does not
    /// support, or an object it does not have.
    pub(crate) fn is_missing_or_not_allowed(&self) -> bool {
        self.from_registry && matches!(self.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
    }

    /// The challenges of the response's `WWW-Authenticate` headers.
    pub(crate) fn challenges(&self) -> impl Iterator<Item = Challenge> + '_ {
        self.response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
    }
}

impl Sent {
    /// The error for an unexpected answer about `what` (`reference` names it; empty for the
    /// repository), with what the registry said about it.
    pub(crate) async fn into_error(self, repo: &Repository, what: Resource, reference: &str) -> Error {
        let status = self.status().as_u16();
        let url = redact_url(&self.url);
        let method = self.method.to_string();
        let retry_after = retry_after_of(&self.response);
        let registry = repo.registry().to_owned();
        if status == 401 && self.from_registry {
            // A token that authenticated but does not grant the scope: a permission problem.
            let insufficient_scope =
                self.challenges().any(|c| c.param("error") == Some("insufficient_scope"));
            if insufficient_scope && self.credentials_sent {
                let detail = "insufficient_scope".to_owned();
                return Error::Denied { registry, repository: repo.name().to_owned(), detail };
            }
            return Error::Unauthorized { registry, credentials_sent: self.credentials_sent };
        }
        let from_registry = self.from_registry;
        let body = error_excerpt(self.response, from_registry).await;
        match status {
            403 if from_registry => {
                Error::Denied { registry, repository: repo.name().to_owned(), detail: body }
            }
            404 if from_registry => not_found(repo, what, reference, &body),
            400 if from_registry && body.contains("TAG_INVALID") && body.contains("immutable") => {
                Error::TagImmutable { reference: format!("{repo}:{reference}"), detail: body }
            }
            _ => Error::Http {
                method,
                url,
                status,
                body,
                retry_after: retry_after.filter(|_| is_retryable_status(status)),
            },
        }
    }
}

/// A 404 from the registry, naming the repository, upload or `what` its error code points at.
fn not_found(repo: &Repository, what: Resource, reference: &str, body: &str) -> Error {
    let what = if body.contains("NAME_UNKNOWN") {
        Resource::Repository
    } else if body.contains("BLOB_UPLOAD_UNKNOWN") {
        Resource::Upload
    } else {
        what
    };
    let reference = match (what, reference) {
        (Resource::Repository, _) | (_, "") => repo.to_string(),
        (_, r) if is_digest(r) => format!("{repo}@{r}"),
        (_, r) => format!("{repo}:{r}"),
    };
    Error::NotFound { what, reference }
}

/// Reads a whole (small) body, refusing more than `limit` bytes, within the deadline of the request
/// that got `response`.
pub(crate) async fn read_body(response: reqwest::Response, limit: usize, url: &Url) -> Result<Bytes, Error> {
    match Deadline::of(&response) {
        Some(deadline) => deadline.run(&Method::GET, url, read_all(response, limit, url)).await,
        None => read_all(response, limit, url).await,
    }
}

async fn read_all(mut response: reqwest::Response, limit: usize, url: &Url) -> Result<Bytes, Error> {
    let too_big = || Error::InvalidResponse {
        url: redact_url(url),
        reason: format!("response larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(too_big());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&Method::GET, url, e))? {
        if buf.len() + chunk.len() > limit {
            return Err(too_big());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

pub(crate) fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// A short, log-safe summary of an error body: the registry's error codes and messages, or the start
/// of its text. Bodies from other origins (S3) only give their `<Code>`: they may echo request details.
/// What arrives before the request's deadline is all there is.
pub(crate) async fn error_excerpt(response: reqwest::Response, from_registry: bool) -> String {
    let mut response = response;
    let deadline = Deadline::of(&response).map(Deadline::at);
    let mut raw = Vec::new();
    while raw.len() < 16 * 1024 {
        let chunk = match deadline {
            Some(at) => tokio::time::timeout_at(at, response.chunk()).await.ok(),
            None => Some(response.chunk().await),
        };
        match chunk {
            Some(Ok(Some(chunk))) => raw.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&raw);
    if !from_registry {
        return xml_element(&text, "Code").map(str::to_owned).unwrap_or_default();
    }
    #[derive(serde::Deserialize)]
    struct RegistryErrors {
        errors: Vec<RegistryError>,
    }
    #[derive(serde::Deserialize)]
    struct RegistryError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let summary = match serde_json::from_str::<RegistryErrors>(&text) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed
            .errors
            .iter()
            .map(|e| if e.message.is_empty() { e.code.clone() } else { format!("{}: {}", e.code, e.message) })
            .collect::<Vec<_>>()
            .join("; "),
        _ => text.trim().to_owned(),
    };
    let mut excerpt: String =
        summary.chars().map(|c| if c.is_control() { ' ' } else { c }).take(ERROR_BODY_EXCERPT).collect();
    if summary.chars().count() > ERROR_BODY_EXCERPT {
        excerpt.push('…');
    }
    excerpt
}

fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_code() {
        let body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message><X-Amz-Signature>s</X-Amz-Signature></Error>";
        assert_eq!(xml_element(body, "Code"), Some("AccessDenied"));
        assert_eq!(xml_element("no xml", "Code"), None);
    }
}
