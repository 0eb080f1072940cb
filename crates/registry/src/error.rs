//! The errors of every registry operation.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use url::Url;

/// What a request was about, to name it in a [`Error::NotFound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A manifest or index, by tag or digest.
    Manifest,
    /// A blob (layer, config, zTOC), by digest.
    Blob,
    /// The repository itself (the registry's `NAME_UNKNOWN`).
    Repository,
    /// An upload session (its `Location` expired or was dropped).
    Upload,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Manifest => "manifest",
            Resource::Blob => "blob",
            Resource::Repository => "repository",
            Resource::Upload => "blob upload",
        })
    }
}

/// Everything that can go wrong talking to a registry.
///
/// No variant ever holds a credential, a token or a query string: URLs are stored without their query
/// (S3 presigned URLs carry their signature there).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry has no such manifest, blob or repository (404).
    #[error("{what} not found: {reference}")]
    NotFound {
        /// What was looked for.
        what: Resource,
        /// `registry/repository` plus the tag or digest that was asked for.
        reference: String,
    },

    /// The registry still answered 401 after authenticating (or could not authenticate at all).
    ///
    /// The message says what happened only: the binaries add how to fix it (flags, IAM permissions).
    #[error(
        "{registry}: unauthorized (401): {}",
        if *credentials_sent {
            "the registry rejected the credentials"
        } else {
            "the registry requires credentials"
        }
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// Whether credentials were offered (wrong credentials) or not (missing credentials).
        credentials_sent: bool,
    },

    /// The tag exists and the repository does not let tags move (ECR's IMMUTABLE tag setting answers
    /// `400 TAG_INVALID` "... cannot be overwritten because the repository is immutable").
    #[error(
        "{reference}: the tag exists and cannot be overwritten: the repository's tags are immutable{}",
        fmt_detail(detail)
    )]
    TagImmutable {
        /// `registry/repository:tag`.
        reference: String,
        /// The registry's explanation (an excerpt of its error body).
        detail: String,
    },

    /// The registry authenticated us but refused the operation (403, or 401 `insufficient_scope`).
    #[error(
        "{registry}: access to {repository} denied{}: the credentials lack the permission for this \
         operation (pulling needs read access, pushing write access)",
        fmt_detail(detail)
    )]
    Denied {
        /// The registry host.
        registry: String,
        /// The repository name.
        repository: String,
        /// The registry's explanation, if any (an excerpt of its error body).
        detail: String,
    },

    /// A manifest's media type is not an image manifest or index this client understands.
    #[error(
        "unsupported manifest media type {media_type:?}: expected an OCI or Docker v2 image manifest or \
         index (Docker schema 1 images must be converted first)"
    )]
    UnsupportedMediaType {
        /// The media type the registry sent.
        media_type: String,
    },

    /// Content did not hash to the digest it was fetched or pushed by.
    #[error("digest mismatch: expected {expected}, got {actual} (corrupted transfer or wrong content)")]
    DigestMismatch {
        /// The digest that was asked for.
        expected: String,
        /// The sha256 of the bytes actually received (or given).
        actual: String,
    },

    /// A blob had a different size than its descriptor says.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob digest.
        digest: String,
        /// The size from the descriptor.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },

    /// A digest this client cannot verify (only `sha256:` with 64 lowercase hex digits is supported).
    #[error("unsupported or malformed digest {digest:?}: expected sha256:<64 lowercase hex digits>")]
    UnsupportedDigest {
        /// The digest as given.
        digest: String,
    },

    /// An image reference, tag or repository name that does not parse.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The input as given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Any other unexpected HTTP status.
    #[error("{method} {url}: HTTP {status}{}", fmt_detail(body))]
    Http {
        /// The request method.
        method: String,
        /// The URL, without its query string.
        url: String,
        /// The status code.
        status: u16,
        /// An excerpt of the response body (registry error JSON), possibly empty.
        body: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },

    /// The request did not complete: connection refused or reset, timeout, TLS failure, cut body.
    #[error("{method} {url}: {source}")]
    Transport {
        /// The request method.
        method: String,
        /// The URL, without its query string.
        url: String,
        /// The underlying error (stripped of its URL).
        #[source]
        source: reqwest::Error,
    },

    /// A request (and the body of its answer) did not complete within its deadline.
    #[error("{method} {url}: no complete answer within {limit:?}")]
    DeadlineExceeded {
        /// The request method.
        method: String,
        /// The URL, without its query string.
        url: String,
        /// The deadline it had (`ClientConfig::request_timeout`, more for uploads).
        limit: Duration,
    },

    /// A blob body moved fewer than `min_bytes` bytes in `window` of waiting for it.
    #[error("{method} {url}: too slow: fewer than {min_bytes} bytes arrived in {window:?}")]
    TooSlow {
        /// The request method.
        method: String,
        /// The URL, without its query string.
        url: String,
        /// The minimum (`ClientConfig::blob_min_bytes`).
        min_bytes: u64,
        /// Its window (`ClientConfig::blob_stall_window`).
        window: Duration,
    },

    /// A response that breaks the protocol: missing `Location`, wrong `Content-Range`, oversized
    /// manifest, unparsable token response.
    #[error("{url}: invalid response: {reason}")]
    InvalidResponse {
        /// The URL, without its query string.
        url: String,
        /// What was wrong.
        reason: String,
    },

    /// More redirects than allowed in a row.
    #[error("{url}: too many redirects (more than {max})")]
    TooManyRedirects {
        /// The last URL, without its query string.
        url: String,
        /// The limit.
        max: u32,
    },

    /// The registry kept throttling until the run's time was up.
    #[error(
        "the registry kept throttling (answered {times} request(s) with 429 or SlowDown over {waited:.1?}) and \
         the run's time is up: {last}"
    )]
    Throttled {
        /// Throttled answers to the operation.
        times: u32,
        /// How long it waited in all.
        waited: Duration,
        /// The last answer.
        #[source]
        last: Box<Error>,
    },

    /// A transient failure persisted through every attempt of the retry policy.
    #[error("giving up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last: Box<Error>,
    },

    /// The credential source failed (for instance ECR's GetAuthorizationToken).
    #[error("{registry}: could not obtain credentials: {message}")]
    Credentials {
        /// The registry host.
        registry: String,
        /// What went wrong (must not contain a secret).
        message: String,
        /// Whether asking again later may succeed (throttling, network).
        retryable: bool,
    },

    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {0}")]
    ClientBuild(#[source] reqwest::Error),
}

fn fmt_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl Error {
    /// Whether the same operation may succeed if tried again later: network failures, timeouts, 429,
    /// 408 and 5xx (and credential sources that say so). 4xx answers, digest mismatches and bad input are
    /// permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::DeadlineExceeded { .. } | Error::TooSlow { .. } => true,
            Error::Http { status, .. } => is_retryable_status(*status),
            Error::RetriesExhausted { last, .. } => last.is_retryable(),
            Error::Throttled { .. } => true,
            Error::Credentials { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether the registry (or the object store behind it) asked us to slow down: `429` (ECR's
    /// `TOOMANYREQUESTS: Rate exceeded`), or `503` with S3's `SlowDown`. Throttling is waiting, not
    /// failing: it is retried until the run's deadline, not a fixed number of times.
    pub fn is_throttled(&self) -> bool {
        match self {
            Error::Http { status: 429, .. } => true,
            Error::Http { status: 503, body, .. } => body.contains("SlowDown"),
            Error::RetriesExhausted { last, .. } => last.is_throttled(),
            Error::Throttled { .. } => true,
            _ => false,
        }
    }

    /// Whether this is one throttled answer (not a run of them that outlasted the deadline).
    pub(crate) fn is_throttled_answer(&self) -> bool {
        matches!(self, Error::Http { .. }) && self.is_throttled()
    }

    /// Whether the registry refused an upload or manifest because a blob it names is unknown or not
    /// what was expected, as distribution answers one of two clients uploading the same blob at once
    /// (`400 DIGEST_INVALID`, `BLOB_UPLOAD_INVALID`, `MANIFEST_BLOB_UNKNOWN`): worth checking and trying
    /// again.
    pub(crate) fn is_concurrent_upload_clash(&self) -> bool {
        match self {
            Error::Http { status: 400, body, .. } => {
                ["DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "BLOB_UNKNOWN"]
                    .iter()
                    .any(|code| body.contains(code))
            }
            _ => false,
        }
    }

    /// The HTTP status the registry answered, if this error is one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The host of the request that failed, if this error names its URL.
    pub(crate) fn registry_host(&self) -> Option<String> {
        match self {
            Error::Http { url, .. } => url::Url::parse(url).ok().and_then(|u| {
                u.host_str().map(|h| u.port().map_or_else(|| h.to_owned(), |p| format!("{h}:{p}")))
            }),
            _ => None,
        }
    }

    /// Whether a request was too slow: past its deadline, below the minimum blob throughput, or
    /// silent beyond the read timeout. Retried fewer times than other transient failures.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::DeadlineExceeded { .. } | Error::TooSlow { .. } => true,
            Error::Transport { source, .. } => source.is_timeout(),
            Error::RetriesExhausted { last, .. } => last.is_timeout(),
            _ => false,
        }
    }

    /// Whether the registry said the manifest, blob or repository does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::RetriesExhausted { last, .. } => last.is_not_found(),
            _ => false,
        }
    }

    /// The delay the server asked for before retrying (`Retry-After`), if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// 429 and the 5xx statuses of overloaded or restarting servers and gateways.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// A URL as it may appear in logs and errors: scheme, host, port and path, without user info, query
/// (S3 presigned URLs carry their signature there) or fragment.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut clean = url.clone();
    clean.set_query(None);
    clean.set_fragment(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string()
}

pub(crate) fn transport_error(method: &Method, url: &Url, error: reqwest::Error) -> Error {
    Error::Transport { method: method.to_string(), url: redact_url(url), source: error.without_url() }
}
