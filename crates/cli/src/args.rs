//! Flags the registry verbs share: how to reach the registry (plain HTTP, credentials) and which index
//! to look for or make (version, suffix, platforms, minimum layer size).

use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// How to reach the registry.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (for a local registry); TLS is used otherwise. An `http://`
    /// prefix on the reference means the same.
    #[arg(long)]
    pub plain_http: bool,
    /// User name for the registry (with --password-stdin).
    #[arg(long, value_name = "U", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// Which SOCI index: what `create` makes and what `status` and `wait` look for.
#[derive(Clone, Debug, clap::Args)]
pub struct IndexArgs {
    /// v2 (default): an image index tagged `<tag><suffix>` whose manifests carry the index (what Fargate
    /// reads by default). v1: an index manifest with `subject`, found through the referrers API.
    #[arg(long, value_name = "VERSION", default_value = "v2", value_parser = app::settings::parse_index_version)]
    pub index_version: index::IndexVersion,
    /// v2: the SOCI index is tagged `<tag><suffix>`; the original tag is never moved.
    #[arg(long, value_name = "S", default_value = index::DEFAULT_TAG_SUFFIX, value_parser = app::settings::parse_tag_suffix)]
    pub tag_suffix: String,
    /// Only this platform (`os/arch[/variant]`); repeat for several. Default: every platform.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    pub platforms: Vec<index::oci::Platform>,
    /// Layers smaller than this (compressed; e.g. 10485760 or 10MiB) get no zTOC: they are cheap to
    /// pull whole.
    #[arg(long, value_name = "BYTES", default_value_t = index::DEFAULT_MIN_LAYER_SIZE, value_parser = app::settings::parse_min_layer_size)]
    pub min_layer_size: u64,
}

fn parse_platform(spec: &str) -> Result<index::oci::Platform, String> {
    index::oci::Platform::parse(spec)
        .ok_or_else(|| format!("expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64, got {spec:?}"))
}

impl IndexArgs {
    /// The engine's options, with the build settings at their defaults.
    pub fn options(&self) -> index::CreateOptions {
        index::CreateOptions {
            index_version: self.index_version,
            tag_suffix: self.tag_suffix.clone(),
            platforms: self.platforms.clone(),
            min_layer_size: self.min_layer_size,
            ..index::CreateOptions::new(app::DEFAULT_BUILD_TOOL)
        }
    }
}

/// Where `create` and `sync` remember the zTOCs they pushed.
#[derive(Clone, Debug, clap::Args)]
pub struct CacheArgs {
    /// Where to remember the zTOCs pushed, so a layer seen before (in any repository of the same
    /// registry) is never downloaded again. Default: $XDG_CACHE_HOME/soci-indexer, else
    /// ~/.cache/soci-indexer.
    #[arg(long, value_name = "DIR", conflicts_with = "no_ztoc_cache")]
    pub ztoc_cache: Option<std::path::PathBuf>,
    /// Build every zTOC, remembering none.
    #[arg(long)]
    pub no_ztoc_cache: bool,
}

impl CacheArgs {
    /// The zTOC cache the flags ask for (none when no directory can be found).
    pub fn ztoc_cache(&self) -> Option<Arc<dyn index::ZtocCache>> {
        if self.no_ztoc_cache {
            return None;
        }
        let dir = self.ztoc_cache.clone().or_else(app::FileCache::default_dir)?;
        Some(Arc::new(app::FileCache::new(dir)))
    }
}

/// An image reference with the client for its repository.
pub struct Connected {
    /// The reference, without any `http://` prefix.
    pub reference: registry::Reference,
    /// The client, bound to the reference's repository.
    pub registry: app::RepositoryClient,
}

impl RegistryArgs {
    /// Parses `text` (`[http[s]://]REGISTRY/REPO[:TAG][@DIGEST]`) and builds the client.
    pub fn connect(&self, text: &str) -> Result<Connected> {
        self.connect_with(text, app::Downloads::default())
    }

    /// [`RegistryArgs::connect`], downloading as `downloads` says.
    pub fn connect_with(&self, text: &str, downloads: app::Downloads) -> Result<Connected> {
        self.connect_writing(text, downloads, None)
    }

    /// [`RegistryArgs::connect_with`], holding background writes under `max_background_write_rate`
    /// manifest `PUT`s a second. Throttling is said on stderr as it happens.
    pub fn connect_writing(
        &self,
        text: &str,
        downloads: app::Downloads,
        max_background_write_rate: Option<f64>,
    ) -> Result<Connected> {
        let (rest, plain_http) = app::settings::split_scheme(text).map_err(anyhow::Error::msg)?;
        let reference = registry::Reference::parse(rest).with_context(|| {
            format!("{text:?} is not an image reference (expected [REGISTRY/]REPOSITORY[:TAG][@DIGEST])")
        })?;
        let plain_http = self.plain_http || plain_http;
        let writes =
            app::Writes { max_background_write_rate, on_throttle: Some(crate::observe::throttle_printer()) };
        let client =
            app::client_writing(plain_http, app::CLI_USER_AGENT, self.credentials()?, downloads, writes)?;
        let registry = app::RepositoryClient::new(client, reference.to_repository());
        Ok(Connected { reference, registry })
    }

    /// Parses `text` as a repository (`[http[s]://]REGISTRY/REPO`, no tag) and builds its client.
    pub fn connect_repository(&self, text: &str) -> Result<app::RepositoryClient> {
        self.connect_repository_writing(text, None)
    }

    /// [`RegistryArgs::connect_repository`] for background work held under `max_write_rate` manifest
    /// `PUT`s a second.
    pub fn connect_repository_writing(
        &self,
        text: &str,
        max_write_rate: Option<f64>,
    ) -> Result<app::RepositoryClient> {
        let (rest, _) = app::settings::split_scheme(text).map_err(anyhow::Error::msg)?;
        let last = rest.rsplit('/').next().unwrap_or_default();
        if !rest.contains('/') || last.contains(':') || last.contains('@') {
            bail!("{text:?} is not a repository: expected REGISTRY/REPOSITORY, without a tag or digest");
        }
        let registry = self.connect_writing(text, app::Downloads::default(), max_write_rate)?.registry;
        let run = app::Run { deadline: None, background: max_write_rate.is_some() };
        Ok(app::RepositoryClient::new(run.apply(registry.client()), registry.repository().clone()))
    }

    fn credentials(&self) -> Result<Arc<dyn registry::CredentialSource>> {
        if !self.password_stdin {
            return Ok(Arc::new(registry::Anonymous));
        }
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password).context("reading the password from stdin")?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("--password-stdin: stdin was empty");
        }
        let credentials = registry::Credentials::new(self.username.clone().unwrap_or_default(), password);
        Ok(Arc::new(registry::StaticCredentials(credentials)))
    }
}

/// What to do about a failure, when the flags can fix it.
pub fn hint(error: &index::Error) -> Option<&'static str> {
    match error.registry_source()?.kind {
        index::SourceErrorKind::Unauthorized => {
            Some("check --username and --password-stdin (the registry wants credentials, or refused these)")
        }
        index::SourceErrorKind::Denied => {
            Some("the credentials lack the permission (pull needs read, push write access)")
        }
        index::SourceErrorKind::TagImmutable => Some(
            "the repository's tags are immutable, so a stale <tag><suffix> cannot be replaced: delete it \
             (`soci-indexer prune` removes it once its image is gone) and index again",
        ),
        _ => None,
    }
}
