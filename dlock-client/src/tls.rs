//! TLS for the client: [`TlsOptions`] (which CAs to trust, the name to check, an optional
//! client certificate) and the connector built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};

/// How a client connects over TLS: the server's certificate is verified against a CA file or
/// the system's trust store, for the server's name (the host part of the address, unless
/// overridden); a client certificate may be presented for mutual TLS.
///
/// ```no_run
/// # async fn f() -> dlock_client::Result<()> {
/// use dlock_client::{Client, TlsOptions};
/// let client = Client::builder("locks.internal:7420")
///     .tls(TlsOptions::new().ca_file("/etc/dlock/ca.pem"))
///     .token("4f1c…")
///     .connect()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    ca_file: Option<PathBuf>,
    system_roots: bool,
    server_name: Option<String>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    /// No trust yet: add [`ca_file`](Self::ca_file) or [`system_roots`](Self::system_roots).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA certificates in this PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Trust the operating system's CA certificates.
    pub fn system_roots(mut self) -> Self {
        self.system_roots = true;
        self
    }

    /// Check the server's certificate for this name instead of the address's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Present this certificate chain (PEM) and private key (PEM) to the server, for mutual
    /// TLS.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }
}

/// A ready TLS connector and the name checked, if one was given for every endpoint.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl Tls {
    /// The name the certificate of the server at `addr` must have: the one given, or the
    /// address's host.
    pub(crate) fn server_name(&self, addr: &str) -> Result<ServerName<'static>> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => name_of(host_of(addr)),
        }
    }
}

fn name_of(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| Error::Tls(format!("server name {name:?}: {e}")))
}

fn tls_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{}: {what}", path.display()))
}

/// The first private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1); a file with
/// none is an error that says so.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => tls_error(
            path,
            "no private key in the file (a PKCS#8, PKCS#1 or SEC1 key in PEM is expected)",
        ),
        e => tls_error(path, e),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The host part of `addr` (`host:port`, `[v6]:port`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl TlsOptions {
    /// The connector these options describe, for the servers at `endpoints`.
    pub(crate) fn build(&self, endpoints: &[String]) -> Result<Tls> {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.ca_file {
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
        }
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store often holds a few certificates rustls cannot use.
                let _ = roots.add(cert);
            }
        }
        if roots.is_empty() {
            return Err(Error::Tls(
                "no trusted CA: give a CA file or use the system roots".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(cert, e))?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = self.server_name.as_deref().map(name_of).transpose()?;
        if server_name.is_none() {
            // Every endpoint's host must be a valid name: say so now, not at each attempt.
            for addr in endpoints {
                name_of(host_of(addr))?;
            }
        }
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host_of("localhost:7420"), "localhost");
        assert_eq!(host_of("127.0.0.1:7420"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7420"), "::1");
        assert_eq!(host_of("locks.internal"), "locks.internal");
    }

    #[test]
    fn a_key_file_without_a_key_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        // Empty, or a certificate given as the key.
        for text in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let e = read_key(&path).unwrap_err().to_string();
            assert!(
                e.ends_with(&format!(
                    "{}: no private key in the file (a PKCS#8, PKCS#1 or SEC1 key in PEM is \
                     expected)",
                    path.display()
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn no_trust_is_an_error() {
        let err = TlsOptions::new()
            .build(&["localhost:1".into()])
            .err()
            .expect("error");
        assert!(matches!(err, Error::Tls(_)), "{err}");
    }
}
