//! moto's server on loopback: a local stand-in for AWS control planes (here ECR's
//! `GetAuthorizationToken`), for tests of code that calls the AWS SDK.
//!
//! Each [`MotoServer`] is its own `moto_server` process on a free `127.0.0.1` port, with its log in a
//! temporary directory; dropping it kills the process. moto's ECR answers `GetAuthorizationToken` with
//! user `AWS` and password `<account>-auth-token` ([`MotoServer::ECR_PASSWORD`] for the default account
//! [`MotoServer::ACCOUNT`]), with an `expiresAt` in the past.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{probe, read_log};

/// The command PyPI's `moto[server]` installs.
pub const MOTO_BINARY: &str = "moto_server";

/// What to do when it is missing.
pub const INSTALL_HINT: &str = "moto_server not installed: pip install 'moto[server]' (.ci/run does this)";

/// How long [`MotoServer::start`] waits for the server to answer (Python imports take a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many fresh ports to try when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// A running `moto_server -H 127.0.0.1 -p <free port>`, killed on drop.
pub struct MotoServer {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    // Declared last so the process is gone before its directory is removed.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer").field("addr", &self.addr).field("pid", &self.child.id()).finish()
    }
}

impl MotoServer {
    /// moto's default AWS account id.
    pub const ACCOUNT: &'static str = "123456789012";
    /// The registry password in moto's ECR tokens for [`MotoServer::ACCOUNT`] (the user is `AWS`).
    pub const ECR_PASSWORD: &'static str = "123456789012-auth-token";

    /// Starts `moto_server` (found on `PATH`) and waits until it answers.
    pub async fn start() -> io::Result<MotoServer> {
        match find_in_path(MOTO_BINARY) {
            Some(binary) => MotoServer::start_inner(&binary).await,
            None => Err(io::Error::new(io::ErrorKind::NotFound, INSTALL_HINT)),
        }
    }

    async fn start_inner(binary: &Path) -> io::Result<MotoServer> {
        if !binary.exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, INSTALL_HINT));
        }
        let dir = tempfile::Builder::new().prefix("testkit-moto-").tempdir()?;
        let log_path = dir.path().join("moto.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let log = File::create(&log_path)?;
            let mut child = match Command::new(binary)
                .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(io::Error::new(io::ErrorKind::NotFound, INSTALL_HINT))
                }
                Err(e) => return Err(e),
            };
            match wait_ready(&mut child, addr, &log_path).await {
                Ok(()) => return Ok(MotoServer { child, addr, log_path, _dir: dir }),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = read_log(&log_path);
                    if log.contains("command not found") || log.contains("No module named") {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{INSTALL_HINT}\n{log}"),
                        ));
                    }
                    if !log.contains("Address already in use") && !log.contains("address already in use") {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("moto_server did not start")))
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL to give the AWS SDK (e.g. `AWS_ENDPOINT_URL_ECR`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything the server has logged so far (one line per request), for debugging failed tests.
    pub fn logs(&self) -> String {
        read_log(&self.log_path)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `name` on `PATH` that is a file.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// Polls `GET /` until it answers 200, the child exits, or time runs out.
async fn wait_ready(child: &mut Child, addr: SocketAddr, log_path: &Path) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "moto_server exited with {status} before answering on {addr}; its log:\n{}",
                read_log(log_path)
            )));
        }
        match probe(addr, "/").await {
            Ok(200) => return Ok(()),
            result if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "moto_server on {addr} did not answer GET / with 200 within {READY_TIMEOUT:?} \
                         ({result:?}); its log:\n{}",
                        read_log(log_path)
                    ),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_binary_says_how_to_install_it() {
        let error = MotoServer::start_inner(Path::new("/nonexistent/moto_server")).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            error.to_string(),
            "moto_server not installed: pip install 'moto[server]' (.ci/run does this)"
        );
    }

    #[test]
    fn path_lookup() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-binary-testkit").is_none());
    }
}
