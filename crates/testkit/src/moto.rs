//! moto's server on loopback: a local stand-in for AWS control planes (here ECR's
//! `GetAuthorizationToken`), for tests of code that calls the AWS SDK.
//!
//! Each [`MotoServer`] is its own `moto_server` process on a free `127.0.0.1` port, with its log in a
//! temporary directory; dropping it kills the process. moto's ECR answers `GetAuthorizationToken` with
//! user `AWS` and password `<account>-auth-token` ([`MotoServer::ECR_PASSWORD`] for the default account
//! [`MotoServer::ACCOUNT`]), with an `expiresAt` in the past.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::process::{find_in_path, Process, Spec};

/// The command PyPI's `moto[server]` installs.
pub const MOTO_BINARY: &str = "moto_server";

/// What to do when it is missing.
pub const INSTALL_HINT: &str = "moto_server not installed: pip install 'moto[server]' (.ci/run does this)";

/// How long [`MotoServer::start`] waits for the server to answer (Python imports take a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server -H 127.0.0.1 -p <free port>`, killed on drop.
pub struct MotoServer {
    process: Process,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer").field("addr", &self.addr()).field("pid", &self.process.pid()).finish()
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
        let dir = tempfile::Builder::new().prefix("testkit-moto-").tempdir()?;
        let spec = Spec {
            name: "moto_server",
            binary,
            install_hint: INSTALL_HINT,
            // A pip-installed entry point whose package (or interpreter) has gone.
            broken_install: &["command not found", "No module named"],
            log_file: "moto.log",
            ready_path: "/",
            ready_status: 200,
            ready_timeout: READY_TIMEOUT,
            poll_interval: Duration::from_millis(50),
        };
        let process = Process::launch(&spec, dir, |command, addr| {
            command.args(["-H", "127.0.0.1", "-p", &addr.port().to_string()]);
            Ok(())
        })
        .await?;
        Ok(MotoServer { process })
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL to give the AWS SDK (e.g. `AWS_ENDPOINT_URL_ECR`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// Everything the server has logged so far (one line per request), for debugging failed tests.
    pub fn logs(&self) -> String {
        self.process.logs()
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
}
