//! Helpers for the security tests: a throwaway PKI generated at test time (a CA, server and
//! client certificates, written as PEM files into a temporary directory; no key is ever
//! committed), token and rule files, and a server configured with them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A CA that signs certificates, and the directory its files go to.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub ca: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate chain (the leaf).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA named `name`, with its files in a new temporary directory.
    pub fn new(name: &str) -> Result<Pki> {
        let dir = tempfile::tempdir()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem())?;
        Ok(Pki {
            issuer: Issuer::new(params, key),
            dir,
            ca,
        })
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for the server at `localhost` and `127.0.0.1`, files named `file`.
    pub fn server_cert(&self, file: &str) -> Result<CertFiles> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        params
            .distinguished_name
            .push(DnType::CommonName, "dlock test server");
        self.sign(params, file)
    }

    /// A client certificate whose subject common name is `identity`.
    pub fn client_cert(&self, identity: &str) -> Result<CertFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, identity);
        self.sign(params, &format!("client-{identity}"))
    }

    fn sign(&self, params: CertificateParams, file: &str) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

/// Writes an auth file granting each `(identity, token)` and returns its path.
pub fn write_auth_file(dir: &Path, entries: &[(&str, &str)]) -> Result<PathBuf> {
    let path = dir.join("tokens");
    let text: String = entries
        .iter()
        .map(|(id, token)| format!("{id} {}\n", dlock_server::security::hash_token(token)))
        .collect();
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A server on `127.0.0.1:0` with `config`'s security settings, in this process.
pub async fn spawn_server(config: dlock_server::Config) -> Result<dlock_server::ServerHandle> {
    let config = dlock_server::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        restart_grace: dlock_server::RestartGrace::DISABLED,
        ..config
    };
    Ok(dlock_server::Server::with_config(config).spawn().await?)
}
