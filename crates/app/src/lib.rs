//! The composition layer shared by the `soci-indexer` CLI and the `index-on-push` Lambda: it wires the
//! registry client into the SOCI engine, and turns settings (flags, environment variables) into engine
//! options with one rule each.
//!
//! * [`settings`]: parsing of every setting both binaries take (index version, sizes, tag suffix,
//!   concurrency, registry URLs) and the default build-tool identifier;
//! * [`adapter`]: [`RepositoryClient`], the HTTP client as the engine's [`index::Registry`];
//! * [`cache`]: the CLI's zTOC cache, a directory of small files;
//! * [`Registries`]: one registry per repository, the HTTP one or a test fake;
//! * [`client_with`]: the HTTP client, with the connection budget and ranges of [`Downloads`].

pub mod adapter;
pub mod cache;
pub mod glob;
pub mod settings;

use std::sync::Arc;

pub use adapter::RepositoryClient;
pub use cache::FileCache;
pub use settings::{Endpoint, SettingError, CLI_USER_AGENT, DEFAULT_BUILD_TOOL, LAMBDA_USER_AGENT};

/// Makes the registry of a repository: the HTTP client in the binaries, fakes in tests.
pub trait Registries: Send + Sync {
    /// The registry type, one per repository.
    type Registry: index::Registry;

    /// The registry for `repository`. Must not do I/O (it runs after planning, before the first call).
    fn open(&self, repository: &registry::Repository) -> Self::Registry;

    /// The registry for `repository` for work that must end by `run.deadline` (throttled requests wait
    /// no longer) and, with `run.background`, whose writes are held under the background ceiling.
    fn open_for(&self, repository: &registry::Repository, run: Run) -> Self::Registry {
        let _ = run;
        self.open(repository)
    }

    /// Requests the registries throttled so far (a counter: callers take differences).
    fn throttled_requests(&self) -> u64 {
        0
    }
}

/// What a piece of work asks of the registry handles it opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// When it must be done.
    pub deadline: Option<std::time::Instant>,
    /// Background work (`sync`, the reconcile): writes held under the background ceiling.
    pub background: bool,
}

impl Run {
    /// `client` for this run.
    pub fn apply(self, client: &registry::Client) -> registry::Client {
        let client = match self.deadline {
            Some(deadline) => client.with_deadline(deadline),
            None => client.clone(),
        };
        if self.background {
            client.for_background()
        } else {
            client
        }
    }
}

/// One registry client, bound to each repository on demand.
#[derive(Clone, Debug)]
pub struct HttpRegistries {
    client: registry::Client,
}

impl HttpRegistries {
    /// Wraps the client.
    pub fn new(client: registry::Client) -> HttpRegistries {
        HttpRegistries { client }
    }
}

impl Registries for HttpRegistries {
    type Registry = RepositoryClient;

    fn open(&self, repository: &registry::Repository) -> RepositoryClient {
        RepositoryClient::new(self.client.clone(), repository.clone())
    }

    fn open_for(&self, repository: &registry::Repository, run: Run) -> RepositoryClient {
        RepositoryClient::new(run.apply(&self.client), repository.clone())
    }

    fn throttled_requests(&self) -> u64 {
        self.client.throttled_requests()
    }
}

/// How the binaries write: the ceiling of background writes, and who hears of throttling.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    /// Manifest `PUT`s a second to one registry for background work (`None`: no ceiling).
    pub max_background_write_rate: Option<f64>,
    /// Told of every throttled request (the CLI prints a line).
    pub on_throttle: Option<registry::ThrottleObserver>,
}

/// How the binaries download layers: one budget of connections, and large layers in ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downloads {
    /// Blob downloads in flight at once, layers and ranges together (`--max-connections`,
    /// `SOCI_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Ranges of one large layer in flight at once; 1 reads every layer as one stream.
    pub ranges_per_layer: usize,
    /// Bytes per range.
    pub range_size: u64,
}

impl Default for Downloads {
    fn default() -> Downloads {
        let ranged = registry::RangedReads::default();
        Downloads {
            max_connections: registry::DEFAULT_MAX_CONNECTIONS,
            ranges_per_layer: ranged.ranges_in_flight,
            range_size: ranged.range_size,
        }
    }
}

/// The registry client both binaries use: TLS unless `plain_http`, retries and redirects as the
/// client's defaults, credentials from `credentials`, downloads as [`Downloads::default`].
pub fn client(
    plain_http: bool,
    user_agent: &str,
    credentials: Arc<dyn registry::CredentialSource>,
) -> Result<registry::Client, registry::Error> {
    client_with(plain_http, user_agent, credentials, Downloads::default())
}

/// [`client`], downloading as `downloads` says.
pub fn client_with(
    plain_http: bool,
    user_agent: &str,
    credentials: Arc<dyn registry::CredentialSource>,
    downloads: Downloads,
) -> Result<registry::Client, registry::Error> {
    client_writing(plain_http, user_agent, credentials, downloads, Writes::default())
}

/// [`client_with`], writing as `writes` says.
pub fn client_writing(
    plain_http: bool,
    user_agent: &str,
    credentials: Arc<dyn registry::CredentialSource>,
    downloads: Downloads,
    writes: Writes,
) -> Result<registry::Client, registry::Error> {
    let ranged_reads = (downloads.ranges_per_layer > 1).then(|| registry::RangedReads {
        range_size: downloads.range_size,
        ranges_in_flight: downloads.ranges_per_layer,
        ..registry::RangedReads::default()
    });
    let config = registry::ClientConfig {
        plain_http,
        user_agent: user_agent.to_owned(),
        max_connections: downloads.max_connections,
        ranged_reads,
        max_background_write_rate: writes.max_background_write_rate,
        on_throttle: writes.on_throttle,
        ..registry::ClientConfig::default()
    };
    registry::Client::new(config, credentials)
}
