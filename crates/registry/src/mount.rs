//! Cross-repository blob mounts (`POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`): a blob
//! another repository of the registry has becomes this repository's without being sent again.

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use tracing::debug;

use crate::digest::validate_digest;
use crate::error::Resource;
use crate::transport::{resolve_location, Access};
use crate::{Client, Error, Repository};

impl Client {
    /// Mounts blob `digest` from repository `from` (same registry) into `repo`. `Ok(true)`: mounted.
    /// `Ok(false)`: the registry answered with an upload session instead (it does not mount, or `from`
    /// lacks the blob, or the credentials cannot read `from`); the session is cancelled and the caller
    /// copies the blob.
    pub async fn mount_blob(&self, repo: &Repository, digest: &str, from: &str) -> Result<bool, Error> {
        validate_digest(digest)?;
        Repository::new(repo.registry(), from)?;
        self.with_retries(Error::is_retryable, |_| self.mount_once(repo, digest, from)).await
    }

    async fn mount_once(&self, repo: &Repository, digest: &str, from: &str) -> Result<bool, Error> {
        let mut url = self.api_url(repo, "blobs/uploads/")?;
        url.query_pairs_mut().append_pair("mount", digest).append_pair("from", from);
        let mut request = self.request(repo, Access::Push, Method::POST, url);
        request.body = Some(bytes::Bytes::new());
        let sent = self.send(&request).await?;
        match sent.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session we will not use: cancel it (best effort, it expires anyway).
                if let Some(location) = sent.header(LOCATION.as_str()) {
                    if let Ok(session) = resolve_location(&sent.url, location) {
                        let cancel = self.request(repo, Access::Push, Method::DELETE, session);
                        if let Err(e) = self.send(&cancel).await {
                            debug!(error = %e, "cancelling an unused upload session failed");
                        }
                    }
                }
                Ok(false)
            }
            _ => Err(sent.into_error(repo, Resource::Repository, digest).await),
        }
    }
}
