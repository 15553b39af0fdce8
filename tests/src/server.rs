//! [`TestServer`]: a dlock server running in-process on `127.0.0.1:0` with a temporary data
//! directory, for end-to-end tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_server::{Config, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in this process. Dropping it aborts the server (like `kill -9`).
pub struct TestServer {
    addr: SocketAddr,
    config: Config,
    /// Keeps the temporary data directory alive (shared so that it outlives restarts).
    data_dir: Arc<tempfile::TempDir>,
    /// The HTTP listener's address, if the server serves HTTP.
    http: Option<SocketAddr>,
    running: Option<Running>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    /// A test configuration: the defaults, with `data_dir` to be replaced by the server's
    /// temporary directory.
    pub fn config() -> Config {
        Config::default()
    }

    /// [`config`](Self::config) without the restart grace
    /// ([`RestartGrace::DISABLED`](dlock_server::RestartGrace::DISABLED)): a restarted server
    /// grants at once. For tests that restart the server but are not about the grace, which
    /// would otherwise wait out the previous run's longest lease after each restart.
    pub fn no_grace_config() -> Config {
        Config {
            restart_grace: dlock_server::RestartGrace::DISABLED,
            ..Config::default()
        }
    }

    /// Starts a server with the default configuration on `127.0.0.1:0`.
    pub async fn start() -> Result<TestServer> {
        TestServer::start_with(TestServer::config()).await
    }

    /// Starts a server with `config` (its `data_dir` and `listen` are replaced by a fresh
    /// temporary directory and `127.0.0.1:0`).
    pub async fn start_with(config: Config) -> Result<TestServer> {
        TestServer::start_inner(config, None).await
    }

    /// [`start_with`](Self::start_with), with the HTTP listener on `127.0.0.1:0` (the same
    /// port again after a restart): see [`http_addr`](Self::http_addr).
    pub async fn start_with_http(config: Config) -> Result<TestServer> {
        TestServer::start_inner(config, Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await
    }

    async fn start_inner(config: Config, http: Option<SocketAddr>) -> Result<TestServer> {
        let data_dir = Arc::new(
            tempfile::Builder::new()
                .prefix("dlock-test-")
                .tempdir()
                .context("creating a temporary data dir")?,
        );
        let mut server = TestServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            data_dir,
            http,
            running: None,
        };
        server.launch().await?;
        Ok(server)
    }

    /// The HTTP listener's address (if started with [`start_with_http`](Self::start_with_http)).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The configuration the server runs with (with its real `data_dir` and `listen`).
    pub fn server_config(&self) -> &Config {
        &self.config
    }

    /// Whether the server task is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    async fn launch(&mut self) -> Result<()> {
        let listener = rebind(self.addr).await?;
        self.addr = listener.local_addr()?;
        let http = match self.http {
            Some(at) => {
                let l = rebind(at).await?;
                self.http = Some(l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        self.config.listen = self.addr;
        self.config.data_dir = PathBuf::from(self.data_dir.path());
        let (tx, rx) = oneshot::channel::<()>();
        let config = self.config.clone();
        let stopped = async move {
            let _ = rx.await;
        };
        let task = match http {
            None => tokio::spawn(dlock_server::run(listener, config, stopped)),
            Some(http) => {
                let security = dlock_server::Security::load(&config)?;
                tokio::spawn(dlock_server::run_with_http(
                    listener, http, config, security, stopped,
                ))
            }
        };
        self.running = Some(Running { shutdown: tx, task });
        Ok(())
    }

    /// Graceful shutdown: tells the server to stop and waits (at most 30 s) until `run`
    /// returns; returns its result.
    pub async fn shutdown(&mut self) -> Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(30), running.task).await {
            Ok(Ok(res)) => res.context("server returned an error"),
            Ok(Err(e)) => bail!("server task failed: {e}"),
            Err(_) => bail!("server did not shut down within 30 s"),
        }
    }

    /// Abrupt stop, like `kill -9`: the server task and all its connections are dropped at
    /// once, nothing is flushed and clients see their connections reset.
    pub async fn abort(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
            let _ = running.task.await;
        }
    }

    /// Aborts the server if it runs and starts it again on the same data directory and the
    /// same address. Unless the configuration disables it, the new server is in its recovery
    /// grace: it grants nothing until the longest lease of the previous run (plus a margin)
    /// has passed.
    pub async fn restart(&mut self) -> Result<()> {
        self.abort().await;
        self.launch().await
    }

    /// Starts the server again after [`shutdown`](Self::shutdown) or
    /// [`abort`](Self::abort), on the same data directory and address (with a recovery grace
    /// as for [`restart`](Self::restart)).
    pub async fn start_again(&mut self) -> Result<()> {
        if self.running.is_some() {
            bail!("server is still running");
        }
        self.launch().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
    }
}

/// Binds `addr`: on a restart the previous port (retried while it is still in use, so that
/// clients can reconnect to the same address), on the first start any free port.
async fn rebind(addr: SocketAddr) -> Result<TcpListener> {
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if addr.port() != 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context("binding 127.0.0.1"),
        }
    }
    bail!("could not rebind {addr}")
}
