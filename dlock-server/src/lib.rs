//! dlock-server: serves the dlock engine over TCP.
#![forbid(unsafe_code)]

mod config;
mod error;

use std::future::Future;

pub use config::{Config, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
pub use error::ServerError;

/// Serves `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let _ = (listener, config);
    shutdown.await;
    Ok(())
}

/// Binds `config.listen` and calls [`run`].
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    run(listener, config, shutdown).await
}
