//! Flags every registry verb takes (the image reference, plain HTTP, credentials), and the client they
//! make, bound to the image's repository.

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
        let (rest, plain_http) = app::settings::split_scheme(text).map_err(anyhow::Error::msg)?;
        let reference = registry::Reference::parse(rest).with_context(|| {
            format!("{text:?} is not an image reference (expected [REGISTRY/]REPOSITORY[:TAG][@DIGEST])")
        })?;
        let client =
            app::client(self.plain_http || plain_http, app::DEFAULT_BUILD_TOOL, self.credentials()?)?;
        let registry = app::RepositoryClient::new(client, reference.to_repository());
        Ok(Connected { reference, registry })
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
        _ => None,
    }
}
