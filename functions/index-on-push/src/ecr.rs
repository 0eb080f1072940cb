//! Amazon ECR: where an account's registry is, and how to log in to it.
//!
//! ECR's registry API takes HTTP basic authentication with user `AWS` and a password from the control
//! plane's `GetAuthorizationToken` (base64 of `AWS:<password>`, valid for 12 hours). [`EcrCredentials`]
//! plugs that into the registry client's credential hook and keeps the token for the life of the
//! execution environment, fetching a new one shortly before it expires, or when the registry rejects it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use registry::{BoxFuture, CredentialSource, Credentials};
use tokio::sync::Mutex;

/// The registry host of `account` in `region`: `<account>.dkr.ecr.<region>.amazonaws.com`, or
/// `.amazonaws.com.cn` in the China regions. The error says which part of the event is wrong.
pub fn registry_host(account: &str, region: &str) -> Result<String, String> {
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the event's account {account:?} is not a 12-digit AWS account id"));
    }
    let valid_region = !region.is_empty()
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if !valid_region {
        return Err(format!("the event's region {region:?} is not an AWS region name"));
    }
    let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    Ok(format!("{account}.dkr.ecr.{region}.{domain}"))
}

/// An authorization token as `GetAuthorizationToken` returns it.
#[derive(Clone)]
pub struct AuthorizationToken {
    /// base64 of `user:password` (a secret: never logged).
    pub token: registry::Secret,
    /// When ECR stops accepting it, if it said.
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for AuthorizationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Why a token could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    /// What went wrong (never a secret).
    pub message: String,
    /// Whether asking again later may succeed (throttling, 5xx, network).
    pub retryable: bool,
}

/// Where tokens come from: ECR's control plane, or a fake in tests.
pub trait TokenSource: Send + Sync {
    /// Asks for a fresh token.
    fn fetch(&self) -> BoxFuture<'_, Result<AuthorizationToken, TokenError>>;
}

/// `GetAuthorizationToken` through the AWS SDK (the caller's default registry).
#[derive(Clone, Debug)]
pub struct EcrTokenSource {
    client: aws_sdk_ecr::Client,
}

impl EcrTokenSource {
    /// A token source over an ECR client.
    pub fn new(client: aws_sdk_ecr::Client) -> EcrTokenSource {
        EcrTokenSource { client }
    }
}

impl TokenSource for EcrTokenSource {
    fn fetch(&self) -> BoxFuture<'_, Result<AuthorizationToken, TokenError>> {
        Box::pin(async move {
            let output = self.client.get_authorization_token().send().await.map_err(sdk_error)?;
            let data = output.authorization_data().first().ok_or_else(|| TokenError {
                message: "GetAuthorizationToken returned no authorization data".into(),
                retryable: false,
            })?;
            let token = data.authorization_token().filter(|t| !t.is_empty()).ok_or_else(|| TokenError {
                message: "GetAuthorizationToken returned no token".into(),
                retryable: false,
            })?;
            let expires_at = data.expires_at().map(|at| {
                let secs = u64::try_from(at.secs()).unwrap_or(0);
                SystemTime::UNIX_EPOCH + Duration::new(secs, at.subsec_nanos())
            });
            Ok(AuthorizationToken { token: registry::Secret::new(token), expires_at })
        })
    }
}

type GetTokenError = aws_sdk_ecr::error::SdkError<
    aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError,
    aws_sdk_ecr::config::http::HttpResponse,
>;

fn sdk_error(error: GetTokenError) -> TokenError {
    use aws_sdk_ecr::error::{ProvideErrorMetadata as _, SdkError};
    let retryable = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            status == 429
                || status >= 500
                || matches!(
                    context.err().code(),
                    Some(
                        "ThrottlingException"
                            | "ServerException"
                            | "ServiceUnavailable"
                            | "RequestLimitExceeded"
                    )
                )
        }
        _ => false,
    };
    let message = format!("GetAuthorizationToken: {}", aws_sdk_ecr::error::DisplayErrorContext(&error));
    TokenError { message, retryable }
}

/// A token is fetched again this long before it expires, so that none expires during an invocation
/// (15 minutes at most).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(20 * 60);

struct Cached {
    credentials: Credentials,
    refresh_at: SystemTime,
}

/// The registry client's credentials from ECR tokens, cached until `REFRESH_MARGIN` before they
/// expire. A token that is already that close to expiry (or past it: moto hands out tokens whose
/// `expiresAt` is in the past) is used for the request that asked and fetched again next time; it is
/// never an error and never a loop. A 401 from the registry drops the cached token
/// ([`CredentialSource::invalidate`]).
pub struct EcrCredentials<T> {
    source: T,
    cache: Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl<T> std::fmt::Debug for EcrCredentials<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrCredentials")
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: TokenSource> EcrCredentials<T> {
    /// Credentials from `source`, nothing cached yet.
    pub fn new(source: T) -> EcrCredentials<T> {
        EcrCredentials { source, cache: Mutex::new(None), fetches: AtomicU64::new(0) }
    }

    /// How many tokens were fetched so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn get(&self, registry: &str) -> Result<Credentials, registry::Error> {
        // Held across the fetch: concurrent layer downloads that all need a token wait for one fetch.
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if SystemTime::now() < cached.refresh_at {
                return Ok(cached.credentials.clone());
            }
        }
        *cache = None;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let token = self.source.fetch().await.map_err(|e| registry::Error::Credentials {
            registry: registry.to_owned(),
            message: e.message,
            retryable: e.retryable,
        })?;
        let credentials = Credentials::from_base64_user_password(token.token.expose()).ok_or_else(|| {
            registry::Error::Credentials {
                registry: registry.to_owned(),
                message: "GetAuthorizationToken returned a token that is not base64 of user:password".into(),
                retryable: false,
            }
        })?;
        let refresh_at = token
            .expires_at
            .map(|at| at.checked_sub(REFRESH_MARGIN).unwrap_or(SystemTime::UNIX_EPOCH))
            // No expiry given: ECR's tokens last 12 hours; assume one.
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(60 * 60));
        if SystemTime::now() < refresh_at {
            *cache = Some(Cached { credentials: credentials.clone(), refresh_at });
        } else {
            tracing::debug!(
                expires_at = ?token.expires_at,
                "the ECR token is (nearly) expired already: using it once, fetching again next time"
            );
        }
        Ok(credentials)
    }
}

impl<T: TokenSource> CredentialSource for EcrCredentials<T> {
    fn credentials<'a>(
        &'a self,
        registry: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>, registry::Error>> {
        Box::pin(async move { self.get(registry).await.map(Some) })
    }

    fn invalidate(&self, _registry: &str) {
        // A fetch in progress holds the lock and will store a fresh token anyway.
        if let Ok(mut cache) = self.cache.try_lock() {
            *cache = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use base64::Engine as _;

    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(
            registry_host("123456789012", "us-east-1").unwrap(),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            registry_host("123456789012", "cn-northwest-1").unwrap(),
            "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn"
        );
        assert_eq!(
            registry_host("123456789012", "cn-north-1").unwrap(),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert!(registry_host("1234", "us-east-1").unwrap_err().contains("12-digit"));
        assert!(registry_host("12345678901x", "us-east-1").is_err());
        assert!(registry_host("123456789012", "").unwrap_err().contains("region"));
        assert!(registry_host("123456789012", "us-east-1.evil.com/x").is_err());
    }

    /// Hands out the queued answers in order, counting calls.
    struct Fake {
        answers: StdMutex<Vec<Result<AuthorizationToken, TokenError>>>,
    }

    impl TokenSource for Fake {
        fn fetch(&self) -> BoxFuture<'_, Result<AuthorizationToken, TokenError>> {
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { answer })
        }
    }

    fn token(password: &str, expires_in: i64) -> Result<AuthorizationToken, TokenError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        let now = SystemTime::now();
        let expires_at = if expires_in >= 0 {
            now + Duration::from_secs(expires_in as u64)
        } else {
            now - Duration::from_secs(expires_in.unsigned_abs())
        };
        Ok(AuthorizationToken { token: registry::Secret::new(encoded), expires_at: Some(expires_at) })
    }

    fn fake(answers: Vec<Result<AuthorizationToken, TokenError>>) -> EcrCredentials<Fake> {
        EcrCredentials::new(Fake { answers: StdMutex::new(answers) })
    }

    async fn password(source: &EcrCredentials<Fake>) -> String {
        let credentials = source.credentials("r").await.unwrap().unwrap();
        assert_eq!(credentials.username, "AWS");
        credentials.password.expose().to_owned()
    }

    #[tokio::test]
    async fn a_valid_token_is_cached_until_shortly_before_it_expires() {
        let source = fake(vec![token("one", 12 * 3600), token("two", 12 * 3600)]);
        assert_eq!(password(&source).await, "one");
        assert_eq!(password(&source).await, "one");
        assert_eq!(source.fetches(), 1);
        source.invalidate("r");
        assert_eq!(password(&source).await, "two");
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test]
    async fn an_expired_token_is_used_once_and_fetched_again_next_time() {
        // moto's tokens expire in the past; a token inside the refresh margin is treated the same.
        let source = fake(vec![token("past", -3600), token("soon", 60), token("fresh", 12 * 3600)]);
        assert_eq!(password(&source).await, "past");
        assert_eq!(password(&source).await, "soon");
        assert_eq!(password(&source).await, "fresh");
        assert_eq!(password(&source).await, "fresh");
        assert_eq!(source.fetches(), 3);
    }

    #[tokio::test]
    async fn failures_keep_their_retryability_and_are_not_cached() {
        let source = fake(vec![
            Err(TokenError { message: "GetAuthorizationToken: throttled".into(), retryable: true }),
            Ok(AuthorizationToken { token: registry::Secret::new("not base64!"), expires_at: None }),
            token("ok", 12 * 3600),
        ]);
        let error = source.credentials("reg.example").await.unwrap_err();
        assert!(error.is_retryable());
        assert!(error.to_string().contains("reg.example: could not obtain credentials"), "{error}");
        let error = source.credentials("reg.example").await.unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("not base64 of user:password"), "{error}");
        assert_eq!(password(&source).await, "ok");
    }

    #[test]
    fn tokens_are_never_shown() {
        let token = token("hunter2", 60).unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.token.expose()) && !shown.contains("hunter2"), "{shown}");
    }
}
