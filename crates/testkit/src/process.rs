//! The launcher the server fixtures (docker-registry, moto) share: spawn a binary on a free loopback
//! port with its output in a log file, wait until it answers a readiness probe, kill it on drop.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many fresh ports to try when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What to launch and how to tell that it is ready.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// The name in error messages, e.g. `docker-registry`.
    pub name: &'static str,
    /// The executable.
    pub binary: &'a Path,
    /// The error message when the binary is missing.
    pub install_hint: &'static str,
    /// Log text that means the binary is there but its installation is broken (reported like a
    /// missing binary, with the log).
    pub broken_install: &'static [&'static str],
    /// The log file's name in the process's directory.
    pub log_file: &'static str,
    /// The path `GET` is probed on.
    pub ready_path: &'static str,
    /// The status that path answers once the server is ready.
    pub ready_status: u16,
    /// How long to wait for that answer.
    pub ready_timeout: Duration,
    /// How long to wait between probes.
    pub poll_interval: Duration,
}

/// A launched child process listening on `addr`, killed on drop (before its directory is removed).
pub(crate) struct Process {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Process {
    /// Runs `spec.binary` in `dir` with output to its log, with `configure` adding what the address
    /// decides (arguments, config files), and waits until it is ready. A port taken between picking
    /// and binding is retried with another.
    pub async fn launch(
        spec: &Spec<'_>,
        dir: tempfile::TempDir,
        mut configure: impl FnMut(&mut Command, SocketAddr) -> io::Result<()>,
    ) -> io::Result<Process> {
        if !spec.binary.exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, spec.install_hint));
        }
        let log_path = dir.path().join(spec.log_file);
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let log = File::create(&log_path)?;
            let mut command = Command::new(spec.binary);
            command.current_dir(dir.path()).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
            configure(&mut command, addr)?;
            let mut child = command.spawn().map_err(|error| match error.kind() {
                io::ErrorKind::NotFound => io::Error::new(io::ErrorKind::NotFound, spec.install_hint),
                _ => error,
            })?;
            match wait_ready(spec, &mut child, addr, &log_path).await {
                Ok(()) => return Ok(Process { child, addr, log_path, dir }),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = read_log(&log_path);
                    if spec.broken_install.iter().any(|marker| log.contains(marker)) {
                        let message = format!("{}\n{log}", spec.install_hint);
                        return Err(io::Error::new(io::ErrorKind::NotFound, message));
                    }
                    if !log.to_ascii_lowercase().contains("address already in use") {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other(format!("{} did not start", spec.name))))
    }

    /// The address the process listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's directory (its working directory, with its log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn logs(&self) -> String {
        read_log(&self.log_path)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Probes `GET spec.ready_path` until it answers `spec.ready_status`, the child exits, or
/// `spec.ready_timeout` runs out.
async fn wait_ready(spec: &Spec<'_>, child: &mut Child, addr: SocketAddr, log_path: &Path) -> io::Result<()> {
    let Spec { name, ready_path: path, ready_status: expected, ready_timeout: timeout, .. } = *spec;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{name} exited with {status} before answering on {addr}; its log:\n{}",
                read_log(log_path)
            )));
        }
        match probe(addr, path).await {
            Ok(status) if status == expected => return Ok(()),
            Ok(status) if Instant::now() >= deadline => {
                return Err(io::Error::other(format!(
                    "{name} on {addr} answered GET {path} with {status}, expected {expected}; its log:\n{}",
                    read_log(log_path)
                )))
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                    "{name} on {addr} did not answer GET {path} within {timeout:?} ({error}); its log:\n{}",
                    read_log(log_path)
                ),
                ))
            }
            _ => tokio::time::sleep(spec.poll_interval).await,
        }
    }
}

/// A child's log file as text (empty if it cannot be read).
fn read_log(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// One `GET <path>` over a fresh connection, bounded by [`PROBE_TIMEOUT`]; returns the status code.
async fn probe(addr: SocketAddr, path: &str) -> io::Result<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {line:?}")))
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "probe timed out")))
}

/// The first `name` on `PATH` that is a file.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(binary: &Path) -> Spec<'_> {
        Spec {
            name: "sh",
            binary,
            install_hint: "install sh",
            broken_install: &["No module named"],
            log_file: "sh.log",
            ready_path: "/",
            ready_status: 200,
            ready_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(10),
        }
    }

    /// The error of launching `sh -c script`, and how many ports were tried.
    async fn launch_sh(script: &str) -> (io::Error, usize) {
        let sh = find_in_path("sh").unwrap();
        let dir = tempfile::Builder::new().prefix("testkit-process-").tempdir().unwrap();
        let mut attempts = 0;
        let launched = Process::launch(&spec(&sh), dir, |command, _| {
            attempts += 1;
            command.args(["-c", script]);
            Ok(())
        })
        .await;
        (launched.unwrap_err(), attempts)
    }

    #[test]
    fn path_lookup() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-binary-testkit").is_none());
    }

    #[tokio::test]
    async fn a_child_that_exits_early_is_reported_with_its_log() {
        let (error, attempts) = launch_sh("echo starting up; exit 3").await;
        let message = error.to_string();
        assert!(
            message.starts_with("sh exited with exit status: 3 before answering on 127.0.0.1:"),
            "{message}"
        );
        assert!(message.ends_with("its log:\nstarting up\n"), "{message}");
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn a_broken_install_is_reported_as_missing_with_the_log() {
        let (error, attempts) = launch_sh("echo 'No module named moto'; exit 1").await;
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(error.to_string(), "install sh\nNo module named moto\n");
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn a_port_taken_meanwhile_is_retried_on_another() {
        let (error, attempts) = launch_sh("echo 'listen tcp: bind: Address already in use'; exit 1").await;
        assert_eq!(attempts, PORT_ATTEMPTS);
        assert!(error.to_string().starts_with("sh exited with"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_binary_gives_the_install_hint() {
        let dir = tempfile::Builder::new().prefix("testkit-process-").tempdir().unwrap();
        let error =
            Process::launch(&spec(Path::new("/nonexistent/sh")), dir, |_, _| Ok(())).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(error.to_string(), "install sh");
    }

    #[tokio::test]
    async fn a_configure_error_stops_the_launch() {
        let dir = tempfile::Builder::new().prefix("testkit-process-").tempdir().unwrap();
        let sh = find_in_path("sh").unwrap();
        let error =
            Process::launch(&spec(&sh), dir, |_, _| Err(io::Error::other("no config"))).await.unwrap_err();
        assert_eq!(error.to_string(), "no config");
    }
}
