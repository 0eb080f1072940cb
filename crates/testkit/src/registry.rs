//! A real OCI registry (CNCF distribution, Debian's `docker-registry`) on loopback, for tests.
//!
//! Each [`LocalRegistry`] is its own process with its own storage in a temporary directory; dropping
//! it kills the process and removes the directory.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Process, Spec};

/// Where Debian installs distribution's registry binary.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// What to do when it is missing.
const INSTALL_HINT: &str =
    "docker-registry not installed: run `apt-get install docker-registry` (.ci/run does this)";

/// How long [`LocalRegistry::start`] waits for `GET /v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry serve` on `127.0.0.1:<free port>`, killed on drop.
pub struct LocalRegistry {
    // The process owns the temporary directory with the storage, and is gone before it is removed.
    process: Process,
    basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("addr", &self.process.addr())
            .field("pid", &self.process.pid())
            .field("basic_auth", &self.basic_auth.as_ref().map(|(user, _)| user))
            .field("dir", &self.process.dir())
            .finish()
    }
}

impl LocalRegistry {
    /// Starts an anonymous registry (no authentication) and waits until it answers.
    pub async fn start() -> io::Result<LocalRegistry> {
        LocalRegistry::start_inner(Path::new(REGISTRY_BINARY), None).await
    }

    /// Starts a registry that requires HTTP basic authentication as `user`/`password`
    /// (htpasswd with a bcrypt hash) and waits until it answers.
    pub async fn start_with_basic_auth(user: &str, password: &str) -> io::Result<LocalRegistry> {
        LocalRegistry::start_inner(Path::new(REGISTRY_BINARY), Some((user.to_owned(), password.to_owned())))
            .await
    }

    async fn start_inner(binary: &Path, basic_auth: Option<(String, String)>) -> io::Result<LocalRegistry> {
        let dir = tempfile::Builder::new().prefix("testkit-registry-").tempdir()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage)?;
        let htpasswd = match &basic_auth {
            None => None,
            Some((user, password)) => {
                let hash = bcrypt::hash_with_result(password, 5)
                    .map_err(io::Error::other)?
                    .format_for_version(bcrypt::Version::TwoY);
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n"))?;
                Some(path)
            }
        };
        let config_path = dir.path().join("config.yml");
        let spec = Spec {
            name: "docker-registry",
            binary,
            install_hint: INSTALL_HINT,
            broken_install: &[],
            log_file: "registry.log",
            ready_path: "/v2/",
            // With authentication, the challenge is the sign of life.
            ready_status: if basic_auth.is_some() { 401 } else { 200 },
            ready_timeout: READY_TIMEOUT,
            poll_interval: Duration::from_millis(20),
        };
        let process = Process::launch(&spec, dir, |command, addr| {
            std::fs::write(&config_path, config_yaml(addr, &storage, htpasswd.as_deref()))?;
            command.arg("serve").arg(&config_path);
            // Settings in the environment would override the generated config.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    command.env_remove(key);
                }
            }
            Ok(())
        })
        .await?;
        Ok(LocalRegistry { process, basic_auth })
    }

    /// `127.0.0.1:PORT`, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// The address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// `http://127.0.0.1:PORT`, the base URL of the registry API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The user and password the registry requires, if it was started with basic authentication.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        self.basic_auth.as_ref().map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The registry's root storage directory (inside the temporary directory).
    pub fn storage_dir(&self) -> PathBuf {
        self.process.dir().join("storage")
    }

    /// Everything the registry has logged so far (stdout and stderr), for debugging failed tests.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

fn config_yaml(addr: SocketAddr, storage: &Path, htpasswd: Option<&Path>) -> String {
    let mut yaml = format!(
        r#"version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{storage}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: testkit-not-a-secret
health:
  storagedriver:
    enabled: false
"#,
        storage = storage.display(),
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: testkit\n    path: \"{}\"\n", path.display()));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_binary_says_how_to_install_it() {
        let error =
            LocalRegistry::start_inner(Path::new("/nonexistent/docker-registry"), None).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            error.to_string(),
            "docker-registry not installed: run `apt-get install docker-registry` (.ci/run does this)"
        );
    }

    #[test]
    fn config_has_auth_only_when_asked() {
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let plain = config_yaml(addr, Path::new("/s"), None);
        assert!(plain.contains("addr: 127.0.0.1:5000") && plain.contains("rootdirectory: \"/s\""));
        assert!(!plain.contains("htpasswd"));
        let auth = config_yaml(addr, Path::new("/s"), Some(Path::new("/h")));
        assert!(auth.contains("htpasswd:\n    realm: testkit\n    path: \"/h\""));
    }
}
