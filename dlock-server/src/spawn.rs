//! [`Server`] and [`ServerHandle`]: a real server inside the caller's process, for the test
//! suites of services that use dlock.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = dlock_server::Server::bind("127.0.0.1:0".parse()?).spawn().await?;
//! // Point the code under test at `server.addr()`, e.g.
//! // `dlock_client::Client::connect(server.addr().to_string())`.
//! let stream = tokio::net::TcpStream::connect(server.addr()).await?;
//! drop(stream);
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Config, Security, ServerError};

/// A server to start in this process: the documented defaults, a fresh private data
/// directory that is removed again when the server stops, and no restart grace (a test
/// server has no previous lifetime).
#[derive(Clone, Debug)]
pub struct Server {
    config: Config,
    data_dir: Option<PathBuf>,
}

impl Server {
    /// A server that will listen on `addr` (`127.0.0.1:0` picks a free port; see
    /// [`ServerHandle::addr`]).
    pub fn bind(addr: SocketAddr) -> Server {
        Server {
            config: Config {
                listen: addr,
                restart_grace: crate::RestartGrace::DISABLED,
                ..Config::default()
            },
            data_dir: None,
        }
    }

    /// A server with `config` (its `listen` address is used; its `data_dir` too, and kept,
    /// unless it is the default, in which case a fresh temporary directory is used).
    pub fn with_config(config: Config) -> Server {
        let data_dir =
            (config.data_dir != Config::default().data_dir).then(|| config.data_dir.clone());
        Server { config, data_dir }
    }

    /// Also serves the HTTP listener (metrics, health, JSON API, status page) on `addr`
    /// (`127.0.0.1:0` picks a free port; see [`ServerHandle::http_addr`]). Without this the
    /// in-process server serves no HTTP.
    pub fn http(mut self, addr: SocketAddr) -> Server {
        self.config.http_listen = Some(addr);
        self
    }

    /// Binds the address (and the HTTP address, if any) and starts serving in a task of the
    /// current tokio runtime.
    pub async fn spawn(self) -> Result<ServerHandle, ServerError> {
        let security = Security::load(&self.config)?;
        let listener = crate::bind(self.config.listen).await?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: self.config.listen,
            source,
        })?;
        let http = match self.config.http_listen {
            Some(at) => {
                let l = crate::bind_http(at).await?;
                let bound = l
                    .local_addr()
                    .map_err(|source| ServerError::HttpBind { addr: at, source })?;
                Some((l, bound))
            }
            None => None,
        };
        let http_addr = http.as_ref().map(|(_, a)| *a);
        let (config, temp_dir) = match self.data_dir {
            Some(dir) => (
                Config {
                    data_dir: dir,
                    ..self.config
                },
                None,
            ),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "dlock-server-{}-{}-{:x}",
                    std::process::id(),
                    addr.port(),
                    rand::random::<u64>()
                ));
                let config = Config {
                    data_dir: dir.clone(),
                    ..self.config
                };
                (config, Some(dir))
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(crate::run_inner(
            listener,
            http.map(|(l, _)| l),
            config,
            security.clone(),
            stopped,
            None,
        ));
        Ok(ServerHandle {
            addr,
            http_addr,
            security,
            stop: Some(stop),
            task: Some(task),
            temp_dir,
        })
    }
}

/// A running in-process server. Dropping it stops the server (without waiting) and removes
/// its temporary data directory; [`shutdown`](Self::shutdown) stops it gracefully and waits.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    security: Arc<Security>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    temp_dir: Option<PathBuf>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP listener's address, if [`Server::http`] asked for one (with the real port
    /// when `:0` was asked for).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Reads the TLS certificate and key, the token file and the rules file again, as
    /// SIGHUP does for the `dlock-server` binary; sessions and connections are kept. On an
    /// error (a missing or invalid file) what was in force stays in force.
    pub fn reload(&self) -> Result<(), ServerError> {
        self.security.reload()
    }

    /// Requests refused by the authorisation rules so far.
    pub fn permission_denials(&self) -> u64 {
        self.security.permission_denials()
    }

    /// Shuts the server down gracefully (clients are told, outboxes flushed) and waits for
    /// it; returns the error it stopped with, if any.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| ServerError::CoreTask(format!("server task: {e}")))?,
            None => Ok(()),
        };
        self.remove_temp_dir();
        result
    }

    fn remove_temp_dir(&mut self) {
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.remove_temp_dir();
    }
}
