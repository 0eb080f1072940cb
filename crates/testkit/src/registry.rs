//! A real OCI registry (CNCF distribution, Debian's `docker-registry`) on loopback, for tests.
//!
//! Each [`LocalRegistry`] is its own process with its own storage in a temporary directory; dropping
//! it kills the process and removes the directory.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{probe, read_log};

/// Where Debian installs distribution's registry binary.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// How long [`LocalRegistry::start`] waits for `GET /v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh ports to try when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// A running `docker-registry serve` on `127.0.0.1:<free port>`, killed on drop.
pub struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    basic_auth: Option<(String, String)>,
    log_path: PathBuf,
    // Declared last so the process is gone before its storage is removed.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .field("basic_auth", &self.basic_auth.as_ref().map(|(user, _)| user))
            .field("dir", &self.dir.path())
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
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "docker-registry not installed: run `apt-get install docker-registry` (.ci/run does this)",
            ));
        }
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
        let log_path = dir.path().join("registry.log");
        let config_path = dir.path().join("config.yml");

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let addr = free_port()?;
            std::fs::write(&config_path, config_yaml(addr, &storage, htpasswd.as_deref()))?;
            let log = File::create(&log_path)?;
            let mut command = Command::new(binary);
            command
                .arg("serve")
                .arg(&config_path)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // Settings in the environment would override the generated config.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    command.env_remove(key);
                }
            }
            let mut child = command.spawn()?;
            match wait_ready(&mut child, addr, basic_auth.is_some(), &log_path).await {
                Ok(()) => return Ok(LocalRegistry { child, addr, basic_auth, log_path, dir }),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !read_log(&log_path).contains("address already in use") {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("docker-registry did not start")))
    }

    /// `127.0.0.1:PORT`, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL of the registry API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The user and password the registry requires, if it was started with basic authentication.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        self.basic_auth.as_ref().map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The registry's root storage directory (inside the temporary directory).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry has logged so far (stdout and stderr), for debugging failed tests.
    pub fn logs(&self) -> String {
        read_log(&self.log_path)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /v2/` until it answers 200 (or 401 with authentication), the child exits, or time runs
/// out.
async fn wait_ready(child: &mut Child, addr: SocketAddr, auth: bool, log_path: &Path) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let expected = if auth { 401 } else { 200 };
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "docker-registry exited with {status} before answering on {addr}; its log:\n{}",
                read_log(log_path)
            )));
        }
        match probe(addr, "/v2/").await {
            Ok(status) if status == expected => return Ok(()),
            Ok(status) if Instant::now() >= deadline => {
                return Err(io::Error::other(format!(
                    "docker-registry on {addr} answered GET /v2/ with {status}, expected {expected}; its log:\n{}",
                    read_log(log_path)
                )))
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "docker-registry on {addr} did not answer within {READY_TIMEOUT:?} ({error}); its log:\n{}",
                        read_log(log_path)
                    ),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
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
