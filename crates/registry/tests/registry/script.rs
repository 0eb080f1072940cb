//! A loopback server whose answers are scripts of writes and pauses, for registries that are slow,
//! stall, never answer or never stop: what the scripted [`crate::fake::FakeServer`] (which answers
//! at once, whole) cannot show. Pauses use tokio's clock, so tests on a paused clock run instantly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::fake::{read_request, RawRequest};

/// One step of an answer.
pub enum Step {
    /// Writes these bytes at once.
    Write(Vec<u8>),
    /// Writes `bytes` in pieces of `piece` bytes, pausing `every` before each.
    Drip { bytes: Vec<u8>, piece: usize, every: Duration },
    /// Writes `bytes` again and again, pausing `every` in between, until the client goes away.
    Endless { bytes: Vec<u8>, every: Duration },
    /// Keeps the connection open without writing, until the client goes away.
    Hang,
}

/// A status line and headers (`Content-Length` only if given), as the first step of an answer.
pub fn head(status: u16, headers: &[(&str, &str)]) -> Step {
    let mut head = format!("HTTP/1.1 {status} X\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    Step::Write(head.into_bytes())
}

type Script = dyn Fn(&RawRequest, usize, SocketAddr) -> Vec<Step> + Send + Sync;

pub struct ScriptServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ScriptServer {
    /// Answers each request (one per connection) with the steps `script` returns for it; `script`
    /// also gets the connection's number, from 0, and the server's address (for absolute URLs). The
    /// connection closes after the last step.
    pub async fn start(
        script: impl Fn(&RawRequest, usize, SocketAddr) -> Vec<Step> + Send + Sync + 'static,
    ) -> ScriptServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let number = counter.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else { return };
                    for step in script(&request, number, addr) {
                        if play(&mut stream, step).await.is_err() {
                            return;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        ScriptServer { addr, connections, task }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far (one per request the client sent).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn play(stream: &mut TcpStream, step: Step) -> std::io::Result<()> {
    match step {
        Step::Write(bytes) => stream.write_all(&bytes).await,
        Step::Drip { bytes, piece, every } => {
            for piece in bytes.chunks(piece.max(1)) {
                tokio::time::sleep(every).await;
                stream.write_all(piece).await?;
            }
            Ok(())
        }
        Step::Endless { bytes, every } => loop {
            stream.write_all(&bytes).await?;
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
        },
        Step::Hang => {
            // Reads until the client closes: the request was read whole, so anything more is EOF.
            let mut buf = [0u8; 1024];
            while stream.read(&mut buf).await? > 0 {}
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
    }
}
