//! The request machinery under every operation: replayable requests, authentication rounds on 401
//! challenges, redirects followed by hand so that credentials never reach another origin, a
//! deadline on each request, and retries with backoff.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::{Method, StatusCode};
use tracing::{debug, Instrument as _};
use url::Url;

use crate::auth::{Authorization, Challenge, Credentials, TokenResponse};
use crate::error::{redact_url, transport_error};
use crate::limits::Deadline;
use crate::pace::ThrottleEvent;
use crate::response::{error_excerpt, read_body, retry_after_of, Sent, MAX_JSON_SIZE};
use crate::{Client, Error, Repository, Secret};

/// Redirects followed in a row before giving up.
const MAX_REDIRECTS: u32 = 5;
/// How many times one request re-authenticates after a 401 (fresh token, then fresh credentials).
const MAX_AUTH_ROUNDS: u32 = 2;

/// The access a request needs, which decides the token scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
}

impl Access {
    fn scope(self, repository: &str) -> String {
        match self {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
        }
    }
}

/// One logical request, replayable (for authentication rounds, redirects and retries).
pub(crate) struct Request<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) access: Access,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// Off for blob HEADs: a redirect already says the blob exists, and following it would HEAD a
    /// presigned GET URL, which S3 refuses.
    pub(crate) follow_redirects: bool,
}

/// The throttled answers of one operation: how long to wait before the next try, and when to stop.
pub(crate) struct ThrottleWait<'a> {
    client: &'a Client,
    started: tokio::time::Instant,
    times: u32,
}

impl<'a> ThrottleWait<'a> {
    pub(crate) fn new(client: &'a Client) -> ThrottleWait<'a> {
        ThrottleWait { client, started: tokio::time::Instant::now(), times: 0 }
    }

    /// Waits after the throttled answer `error`, or returns [`Error::Throttled`] when the wait would
    /// run past the deadline (or the throttle budget).
    pub(crate) async fn wait(&mut self, error: Error) -> Result<(), Error> {
        self.times += 1;
        let policy = self.client.retry_policy();
        let delay = policy.throttle_delay(self.times, error.retry_after());
        let now = tokio::time::Instant::now();
        let until = self.client.deadline().unwrap_or(self.started + policy.throttle_budget);
        let event = ThrottleEvent {
            registry: error.registry_host().unwrap_or_default(),
            status: error.status().unwrap_or(429),
            retry_in: delay,
            times: self.times,
        };
        if now + delay >= until {
            self.client.note_throttled(&ThrottleEvent { retry_in: Duration::ZERO, ..event });
            return Err(Error::Throttled {
                times: self.times,
                waited: now - self.started,
                last: Box::new(error),
            });
        }
        self.client.note_throttled(&event);
        debug!(times = self.times, ?delay, error = %error, "throttled, waiting");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

impl Client {
    /// `http(s)://<api host>/v2/<name>/<suffix>`.
    pub(crate) fn api_url(&self, repo: &Repository, suffix: &str) -> Result<Url, Error> {
        let url = format!("{}/v2/{}/{suffix}", self.registry_base(repo), repo.name());
        Url::parse(&url)
            .map_err(|e| Error::InvalidReference { input: repo.to_string(), reason: e.to_string() })
    }

    fn registry_base(&self, repo: &Repository) -> String {
        let scheme = if self.config().plain_http { "http" } else { "https" };
        format!("{scheme}://{}", repo.api_host())
    }

    pub(crate) fn request<'a>(
        &self,
        repo: &'a Repository,
        access: Access,
        method: Method,
        url: Url,
    ) -> Request<'a> {
        Request { repo, access, method, url, headers: HeaderMap::new(), body: None, follow_redirects: true }
    }

    /// Runs `op` until it succeeds, fails with an error `should_retry` rejects, or the policy's attempts
    /// are spent (fewer for timeouts: see [`crate::ClientConfig::timeout_attempts`]), sleeping with
    /// backoff (or as told by `Retry-After`) in between. Throttled answers do not count against the
    /// attempts: they are retried with the throttle backoff until the handle's deadline (or for the
    /// policy's `throttle_budget`), then fail as [`Error::Throttled`].
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        should_retry: fn(&Error) -> bool,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.retry_policy();
        let mut attempt = 1;
        let mut throttle = ThrottleWait::new(self);
        loop {
            // The span puts the attempt number on every request event of this attempt.
            match op(attempt).instrument(tracing::debug_span!("attempt", attempt)).await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_throttled_answer() && should_retry(&error) => {
                    throttle.wait(error).await?
                }
                Err(error) if should_retry(&error) && attempt < self.max_attempts(&error) => {
                    let delay = policy.delay(attempt, error.retry_after());
                    debug!(attempt, ?delay, error = %error, "transient failure, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) if attempt > 1 && should_retry(&error) => {
                    return Err(Error::RetriesExhausted { attempts: attempt, last: Box::new(error) })
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// How many attempts an operation failing with `error` gets.
    pub(crate) fn max_attempts(&self, error: &Error) -> u32 {
        let max_attempts = self.retry_policy().max_attempts.max(1);
        if error.is_timeout() {
            max_attempts.min(self.config().timeout_attempts.max(1))
        } else {
            max_attempts
        }
    }

    /// Sends a request, authenticating on 401 challenges from the registry (bearer token or basic)
    /// and following redirects. Returns whatever status the registry finally answers, with the
    /// request's deadline attached for the reader of its body.
    pub(crate) async fn send(&self, request: &Request<'_>) -> Result<Sent, Error> {
        let registry = request.repo.registry();
        let scope = request.access.scope(request.repo.name());
        let deadline = self.deadline_for(request.body.as_ref().map_or(0, |b| b.len() as u64));
        let mut round = 0;
        loop {
            let authorization = self.auth_cache().authorization(registry, &scope);
            let sent = self.send_following_redirects(request, authorization.as_ref(), deadline).await?;
            if sent.status() != StatusCode::UNAUTHORIZED || !sent.from_registry || round == MAX_AUTH_ROUNDS {
                return Ok(sent);
            }
            round += 1;
            if authorization.is_some() {
                // What we sent was rejected: an expired token, or credentials that changed.
                self.auth_cache().invalidate(registry, &scope);
                self.credential_source().invalidate(registry);
            }
            let challenges: Vec<Challenge> = sent.challenges().collect();
            if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                let credentials = self.credentials(registry).await?;
                let (token, expires_in) =
                    self.fetch_token(registry, bearer, &scope, credentials.as_ref(), deadline).await?;
                self.auth_cache().set_bearer(registry, &scope, &token, expires_in, credentials.is_some());
            } else if challenges.iter().any(|c| c.scheme == "basic") {
                let Some(credentials) = self.credentials(registry).await? else {
                    let credentials_sent = sent.credentials_sent;
                    return Err(Error::Unauthorized { registry: registry.to_owned(), credentials_sent });
                };
                self.auth_cache().set_basic(registry, credentials.basic_header());
            } else {
                // No challenge we can answer: let the caller report the 401.
                return Ok(sent);
            }
        }
    }

    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        self.credential_source().credentials(registry).await
    }

    /// Gets a bearer token from the challenge's realm, for `scope` (and the challenge's own scope, if
    /// it names another), with basic credentials when there are some, within the deadline of the
    /// request that needs it.
    async fn fetch_token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scope: &str,
        credentials: Option<&Credentials>,
        deadline: Deadline,
    ) -> Result<(Secret, Option<u64>), Error> {
        let url = token_url(registry, challenge, scope)?;
        let mut builder = self.http().get(url.clone());
        if let Some(credentials) = credentials {
            builder = builder.header(AUTHORIZATION, credentials.basic_header());
        }
        let sending = async { builder.send().await.map_err(|e| transport_error(&Method::GET, &url, e)) };
        let mut response = deadline.run(&Method::GET, &url, sending).await?;
        deadline.attach(&mut response);
        let status = response.status();
        debug!(method = "GET", url = %redact_url(&url), status = status.as_u16(), "token request");
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Error::Unauthorized {
                    registry: registry.to_owned(),
                    credentials_sent: credentials.is_some(),
                })
            }
            _ => {
                let retry_after = retry_after_of(&response);
                let body = error_excerpt(response, true).await;
                return Err(Error::Http {
                    method: "GET".into(),
                    url: redact_url(&url),
                    status: status.as_u16(),
                    body,
                    retry_after,
                });
            }
        }
        let bytes = read_body(response, MAX_JSON_SIZE, &url).await?;
        let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
            url: redact_url(&url),
            reason: format!("token response is not JSON: {e}"),
        })?;
        let expires_in = parsed.expires_in;
        let token = parsed.into_token().ok_or_else(|| Error::InvalidResponse {
            url: redact_url(&url),
            reason: "token response has neither `token` nor `access_token`".into(),
        })?;
        Ok((token, expires_in))
    }

    /// One request, following redirects by hand: Authorization goes only to the registry's own
    /// origin (a presigned S3 URL must not get it), other headers (Range, Accept) go everywhere.
    async fn send_following_redirects(
        &self,
        request: &Request<'_>,
        authorization: Option<&Authorization>,
        deadline: Deadline,
    ) -> Result<Sent, Error> {
        let registry_origin = request.url.origin();
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut body = request.body.clone();
        for hop in 0..=MAX_REDIRECTS {
            let from_registry = url.origin() == registry_origin;
            let mut builder =
                self.http().request(method.clone(), url.clone()).headers(request.headers.clone());
            let authorized = from_registry && authorization.is_some();
            if let (true, Some(authorization)) = (authorized, authorization) {
                builder = builder.header(AUTHORIZATION, authorization.header.clone());
            }
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let sending = async { builder.send().await.map_err(|e| transport_error(&method, &url, e)) };
            let mut response = deadline.run(&method, &url, sending).await?;
            deadline.attach(&mut response);
            let status = response.status();
            debug!(
                method = %method,
                url = %redact_url(&url),
                status = status.as_u16(),
                hop,
                authorized,
                "registry request"
            );
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            if let (true, true, Some(location)) = (request.follow_redirects, is_redirect(status), location) {
                let next = resolve_location(&url, location)?;
                if status == StatusCode::SEE_OTHER
                    || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                        && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                }
                url = next;
                continue;
            }
            let credentials_sent = authorized && authorization.is_some_and(|a| a.with_credentials);
            return Ok(Sent { response, url, method, credentials_sent, from_registry });
        }
        Err(Error::TooManyRedirects { url: redact_url(&url), max: MAX_REDIRECTS })
    }
}

/// The token endpoint of a bearer challenge, asked for `scope` (and the challenge's own scope, if it
/// names another).
fn token_url(registry: &str, challenge: &Challenge, scope: &str) -> Result<Url, Error> {
    let realm = challenge.param("realm").unwrap_or_default();
    let mut url =
        Url::parse(realm).ok().filter(|u| matches!(u.scheme(), "http" | "https")).ok_or_else(|| {
            Error::InvalidResponse {
                url: registry.to_owned(),
                reason: format!("bearer challenge with an unusable realm {realm:?}"),
            }
        })?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = challenge.param("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", scope);
        if let Some(other) = challenge.param("scope").filter(|s| *s != scope) {
            query.append_pair("scope", other);
        }
    }
    Ok(url)
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// Resolves a `Location` (absolute, or relative to the URL that sent it) keeping its query: upload
/// locations carry their state there.
pub(crate) fn resolve_location(base: &Url, location: &str) -> Result<Url, Error> {
    let url = base.join(location).map_err(|e| Error::InvalidResponse {
        url: redact_url(base),
        reason: format!("unusable Location header: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidResponse {
            url: redact_url(base),
            reason: format!("Location with unsupported scheme {:?}", url.scheme()),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution() {
        let base = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        let cases = [
            (
                "/v2/a/b/blobs/uploads/uuid?_state=xyz",
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid?_state=xyz",
            ),
            ("uuid", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid"),
            (
                "https://uploads.example.com/put/uuid?sig=1&x=2",
                "https://uploads.example.com/put/uuid?sig=1&x=2",
            ),
        ];
        for (location, expected) in cases {
            assert_eq!(resolve_location(&base, location).unwrap().as_str(), expected, "{location}");
        }
        let mut put = resolve_location(&base, "/v2/a/b/blobs/uploads/uuid?_state=xyz").unwrap();
        put.query_pairs_mut().append_pair("digest", "sha256:00");
        assert_eq!(
            put.as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid?_state=xyz&digest=sha256%3A00"
        );
        assert!(resolve_location(&base, "ftp://x/y").is_err());
    }

    #[test]
    fn urls_are_redacted() {
        let url = Url::parse("https://user:pw@bucket.s3.amazonaws.com/key/blob?X-Amz-Signature=secret#frag")
            .unwrap();
        assert_eq!(redact_url(&url), "https://bucket.s3.amazonaws.com/key/blob");
    }

    #[test]
    fn scopes() {
        assert_eq!(Access::Pull.scope("a/b"), "repository:a/b:pull");
        assert_eq!(Access::Push.scope("a/b"), "repository:a/b:pull,push");
    }
}
