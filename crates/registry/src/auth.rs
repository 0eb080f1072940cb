//! Credentials, where they come from, and the registry's `WWW-Authenticate` challenges.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;

use crate::Error;

/// A boxed, sendable future, so that [`CredentialSource`] stays object-safe (futures' own alias: the
/// one every crate here uses).
pub use futures_util::future::BoxFuture;

/// A secret string (password, token) that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Secret {
        Secret(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and password (for ECR: `AWS` and the authorization token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: Secret,
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { username: username.into(), password: Secret::new(password) }
    }

    /// Decodes `base64(username:password)`, the form of ECR's GetAuthorizationToken
    /// `authorizationToken` (`AWS:<password>`). `None` if it is not that.
    pub fn from_base64_user_password(token: &str) -> Option<Credentials> {
        let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (username, password) = decoded.split_once(':')?;
        Some(Credentials::new(username, password))
    }

    /// The `Authorization: Basic ...` header value, marked sensitive so that HTTP layers do not log it.
    pub(crate) fn basic_header(&self) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.username,
            self.password.expose()
        ));
        sensitive_header(&format!("Basic {encoded}"))
    }
}

pub(crate) fn sensitive_header(value: &str) -> HeaderValue {
    // Header values built from base64 or registry tokens are visible ASCII; anything else falls back
    // to an empty value, which the registry will answer with 401.
    let mut header = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// Where the client gets credentials for a registry.
///
/// The client asks again whenever a registry rejects what it sent (401), after calling
/// [`CredentialSource::invalidate`], so a source of short-lived tokens (ECR's GetAuthorizationToken) can
/// cache them and refresh on demand.
pub trait CredentialSource: Send + Sync {
    /// Credentials for `registry` (the host as in image references), or `None` to stay anonymous.
    fn credentials<'a>(&'a self, registry: &'a str) -> BoxFuture<'a, Result<Option<Credentials>, Error>>;

    /// The registry rejected the credentials last returned for `registry`: drop any cached copy.
    fn invalidate(&self, _registry: &str) {}
}

/// No credentials: anonymous pulls (and pushes to open registries).
#[derive(Clone, Copy, Debug, Default)]
pub struct Anonymous;

impl CredentialSource for Anonymous {
    fn credentials<'a>(&'a self, _registry: &'a str) -> BoxFuture<'a, Result<Option<Credentials>, Error>> {
        Box::pin(async { Ok(None) })
    }
}

/// The same credentials for every registry (from `--username` / `--password-stdin`).
#[derive(Clone, Debug)]
pub struct StaticCredentials(pub Credentials);

impl CredentialSource for StaticCredentials {
    fn credentials<'a>(&'a self, _registry: &'a str) -> BoxFuture<'a, Result<Option<Credentials>, Error>> {
        let credentials = self.0.clone();
        Box::pin(async move { Ok(Some(credentials)) })
    }
}

/// One challenge of a `WWW-Authenticate` header: a scheme and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lowercased (`bearer`, `basic`).
    pub(crate) scheme: String,
    /// Parameter names lowercased, values unquoted.
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a scheme followed by
/// comma-separated `name=value` parameters, values either tokens or quoted strings with `\` escapes
/// (commas inside quotes are part of the value, as in `scope="repository:a:pull,push"`).
pub(crate) fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let token_len = rest.find(|c: char| c == '=' || c == ',' || c.is_whitespace()).unwrap_or(rest.len());
        let token = &rest[..token_len];
        let after = rest[token_len..].trim_start();
        if let Some(value_part) = after.strip_prefix('=') {
            // A parameter of the current challenge (token68 values such as `abc==` are not used by
            // registries and end up as odd parameters, harmlessly).
            let (value, remaining) = parse_param_value(value_part.trim_start());
            if let Some(current) = challenges.last_mut() {
                current.params.push((token.to_ascii_lowercase(), value));
            }
            rest = remaining;
        } else {
            challenges.push(Challenge { scheme: token.to_ascii_lowercase(), params: Vec::new() });
            rest = after;
        }
    }
    challenges
}

/// A quoted string or a token, and what follows it.
fn parse_param_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (value, &quoted[i + 1..]),
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                c => value.push(c),
            }
        }
        // Unterminated quote: take everything.
        (value, "")
    } else {
        let end = input.find(|c: char| c == ',' || c.is_whitespace()).unwrap_or(input.len());
        (input[..end].to_owned(), &input[end..])
    }
}

/// What the client attaches to requests to a registry, cached between requests.
#[derive(Default)]
pub(crate) struct AuthCache {
    /// Bearer tokens per (registry, scope).
    bearer: HashMap<(String, String), CachedToken>,
    /// Basic headers per registry, for registries that challenged with `Basic`.
    basic: HashMap<String, HeaderValue>,
}

struct CachedToken {
    header: HeaderValue,
    expires: Option<Instant>,
    with_credentials: bool,
}

/// An `Authorization` value to send, and whether credentials went into it (an anonymous token does
/// not count: a 401 after it means credentials are missing, not wrong).
#[derive(Clone, Debug)]
pub(crate) struct Authorization {
    pub(crate) header: HeaderValue,
    pub(crate) with_credentials: bool,
}

/// Tokens are dropped this long before the registry's stated expiry, so none expires in flight.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

impl AuthCache {
    /// The Authorization to send to `registry` for `scope`, if one is known: a scoped bearer token,
    /// else the registry's basic credentials.
    pub(crate) fn authorization(&mut self, registry: &str, scope: &str) -> Option<Authorization> {
        let key = (registry.to_owned(), scope.to_owned());
        if let Some(token) = self.bearer.get(&key) {
            if token.expires.is_none_or(|at| Instant::now() < at) {
                return Some(Authorization {
                    header: token.header.clone(),
                    with_credentials: token.with_credentials,
                });
            }
            self.bearer.remove(&key);
        }
        self.basic
            .get(registry)
            .map(|header| Authorization { header: header.clone(), with_credentials: true })
    }

    pub(crate) fn set_bearer(
        &mut self,
        registry: &str,
        scope: &str,
        token: &Secret,
        expires_in: Option<u64>,
        with_credentials: bool,
    ) {
        let expires = expires_in
            .map(|secs| Duration::from_secs(secs).saturating_sub(TOKEN_EXPIRY_MARGIN))
            .map(|ttl| Instant::now() + ttl);
        let header = sensitive_header(&format!("Bearer {}", token.expose()));
        let token = CachedToken { header, expires, with_credentials };
        self.bearer.insert((registry.to_owned(), scope.to_owned()), token);
    }

    pub(crate) fn set_basic(&mut self, registry: &str, header: HeaderValue) {
        self.basic.insert(registry.to_owned(), header);
    }

    /// Forgets what was sent to `registry` for `scope` after it was rejected.
    pub(crate) fn invalidate(&mut self, registry: &str, scope: &str) {
        self.bearer.remove(&(registry.to_owned(), scope.to_owned()));
        self.basic.remove(registry);
    }
}

/// The token endpoint's answer; Docker's uses `token`, OAuth2-style ones `access_token`.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<Secret> {
        self.token.or(self.access_token).filter(|t| !t.is_empty()).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn bearer_challenge_with_commas_in_quotes() {
        let parsed = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(
            parsed,
            vec![Challenge {
                scheme: "bearer".into(),
                params: params(&[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:samalba/my-app:pull,push"),
                ]),
            }]
        );
        assert_eq!(parsed[0].param("scope"), Some("repository:samalba/my-app:pull,push"));
    }

    #[test]
    fn basic_challenge_and_spacing_and_escapes() {
        let parsed = parse_www_authenticate(r#"Basic realm="Registry \"x\", y" , charset=UTF-8"#);
        assert_eq!(
            parsed,
            vec![Challenge {
                scheme: "basic".into(),
                params: params(&[("realm", "Registry \"x\", y"), ("charset", "UTF-8")]),
            }]
        );
    }

    #[test]
    fn several_challenges_and_unquoted_values() {
        let parsed = parse_www_authenticate(
            r#"Basic realm="https://123.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com", BEARER realm=https://t/token,error="insufficient_scope""#,
        );
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].scheme, "basic");
        assert_eq!(parsed[0].param("service"), Some("ecr.amazonaws.com"));
        assert_eq!(parsed[1].scheme, "bearer");
        assert_eq!(parsed[1].param("realm"), Some("https://t/token"));
        assert_eq!(parsed[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn degenerate_headers() {
        assert!(parse_www_authenticate("").is_empty());
        assert_eq!(parse_www_authenticate("Bearer")[0].params, vec![]);
        assert_eq!(
            parse_www_authenticate(r#"Bearer realm="unterminated"#)[0].param("realm"),
            Some("unterminated")
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let credentials = Credentials::new("alice", "hunter2");
        let debug = format!("{credentials:?}");
        assert!(debug.contains("alice"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(credentials.password.to_string(), "<redacted>");
        assert_eq!(format!("{:?}", StaticCredentials(credentials.clone())).matches("hunter2").count(), 0);
        let token = TokenResponse { token: Some("tok3n".into()), access_token: None, expires_in: Some(60) };
        assert!(!format!("{token:?}").contains("tok3n"));
        assert_eq!(format!("{:?}", token.into_token().unwrap()), "<redacted>");
        assert!(credentials.basic_header().is_sensitive());
    }

    #[test]
    fn ecr_style_tokens() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:pass:with:colons");
        let credentials = Credentials::from_base64_user_password(&token).unwrap();
        assert_eq!(credentials.username, "AWS");
        assert_eq!(credentials.password.expose(), "pass:with:colons");
        assert!(Credentials::from_base64_user_password("not base64!").is_none());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(Credentials::from_base64_user_password(&no_colon).is_none());
    }

    #[test]
    fn token_field_fallback() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(t.into_token().unwrap().expose(), "a");
        let t: TokenResponse = serde_json::from_str(r#"{"token":"t","access_token":"a"}"#).unwrap();
        assert_eq!(t.into_token().unwrap().expose(), "t");
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(t.into_token().is_none());
    }

    #[test]
    fn cache_prefers_scoped_bearer_and_expires() {
        let mut cache = AuthCache::default();
        assert!(cache.authorization("r", "s").is_none());
        cache.set_basic("r", sensitive_header("Basic b"));
        assert_eq!(cache.authorization("r", "s").unwrap().header, "Basic b");
        assert!(cache.authorization("r", "s").unwrap().with_credentials);
        cache.set_bearer("r", "s", &Secret::new("t"), None, false);
        let bearer = cache.authorization("r", "s").unwrap();
        assert_eq!((bearer.header, bearer.with_credentials), ("Bearer t".parse().unwrap(), false));
        assert_eq!(cache.authorization("r", "other").unwrap().header, "Basic b");
        // A token with less than the margin left is already expired.
        cache.set_bearer("r", "s2", &Secret::new("t2"), Some(1), true);
        assert_eq!(cache.authorization("r", "s2").unwrap().header, "Basic b");
        cache.invalidate("r", "s");
        assert!(cache.authorization("r", "s").is_none());
    }

    #[allow(dead_code)]
    fn credential_source_is_object_safe(_: &dyn CredentialSource) {}

    #[test]
    fn mutex_of_cache_is_send() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<std::sync::Mutex<AuthCache>>();
    }
}
