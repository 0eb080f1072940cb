//! The [`Client`] and its configuration: the shared state that the operations in `manifests`,
//! `blobs` and `referrers` use through the request machinery in `transport`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::auth::{AuthCache, CredentialSource};
use crate::{BlobStream, Error, Repository, RetryPolicy};

/// How the client connects and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Talk `http://` instead of `https://` to every registry (local test registries).
    pub plain_http: bool,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Time allowed to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed between two reads of a response; bodies may take longer as a whole, blobs are big.
    pub read_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            plain_http: false,
            retry: RetryPolicy::default(),
            user_agent: concat!("soci-indexer/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A client for OCI registries. Cheap to clone: clones share connections, tokens and configuration.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    credentials: Arc<dyn CredentialSource>,
    auth: Mutex<AuthCache>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `config`, authenticating with what `credentials` provides.
    pub fn new(config: ClientConfig, credentials: Arc<dyn CredentialSource>) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            // Redirects are followed by hand, to drop Authorization on the way to another origin.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(Error::ClientBuild)?;
        Ok(Client { inner: Arc::new(Inner { http, config, credentials, auth: Mutex::default() }) })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.config.retry
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn credential_source(&self) -> &dyn CredentialSource {
        self.inner.credentials.as_ref()
    }

    pub(crate) fn auth_cache(&self) -> MutexGuard<'_, AuthCache> {
        // The cache stays consistent even if a holder panicked: every update is a single insert/remove.
        self.inner.auth.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Compile-time checks: the client is shareable and its futures and streams can be spawned.
#[allow(dead_code)]
fn assert_spawnable(client: &Client, repo: &Repository) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send_static<T: Send + 'static>(_: &T) {}
    fn send<T: Send>(_: T) {}
    send_sync(client);
    send(client.get_manifest(repo, "t"));
    send(client.head_manifest(repo, "t"));
    send(client.put_manifest(repo, "t", "", Bytes::new()));
    send(client.delete_manifest(repo, ""));
    send(client.blob_exists(repo, ""));
    send(client.get_blob(repo, "", None));
    send(client.get_blob_range(repo, "", 0, 1));
    send(client.push_blob(repo, "", Bytes::new()));
    send(client.referrers(repo, "", None));
    let _ = |stream: BlobStream| send_static(&stream);
}
