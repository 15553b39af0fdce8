//! TLS for the server: the rustls configuration built from PEM files (certificate chain,
//! private key, and for mutual TLS the CA that signs client certificates), and the identity
//! a client certificate proves (its subject's common name).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::ServerError;

/// Where the server's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that sign client certificates. When set, every
    /// client must present a certificate signed by one of them (mutual TLS), and the
    /// certificate's subject common name becomes the session's identity.
    pub client_ca: Option<PathBuf>,
}

fn tls_error(path: &Path, what: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{}: {what}", path.display()))
}

/// The first private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1); a file with
/// none is an error that says so.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => tls_error(
            path,
            "no private key in the file (a PKCS#8, PKCS#1 or SEC1 key in PEM is expected)",
        ),
        e => tls_error(path, e),
    })
}

/// Every certificate in the PEM file at `path` (at least one).
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The rustls configuration `tls` describes, with the ring provider and the safe default
/// protocol versions (TLS 1.2 and 1.3).
pub(crate) fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let certs = read_certs(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&tls.cert, e))?;
    Ok(Arc::new(config))
}

/// The subject common name of a (verified) client certificate, if it has one that is text.
pub(crate) fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    let name = cn.as_str().ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// A certificate that expires within this long is said to at start and on every reload.
pub(crate) const EXPIRY_NOTICE: Duration = Duration::from_secs(14 * 24 * 3600);

/// What an operator should hear about the validity of the leaf certificate in `path` at
/// `now`: not yet valid, expired, or expiring within [`EXPIRY_NOTICE`] (clients refuse the
/// handshake outside its validity). `None` if it is valid beyond that, or cannot be read.
pub(crate) fn validity_warning(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: SystemTime,
) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        (when, humantime::format_rfc3339_seconds(when))
    };
    let (from, from_text) = at(parsed.validity().not_before);
    let (until, until_text) = at(parsed.validity().not_after);
    let path = path.display();
    if now < from {
        Some(format!(
            "the certificate in {path} is not valid until {from_text}: clients refuse the handshake until then"
        ))
    } else if now > until {
        Some(format!(
            "the certificate in {path} expired at {until_text}: clients refuse the handshake; replace it and send SIGHUP"
        ))
    } else if until.duration_since(now).unwrap_or_default() < EXPIRY_NOTICE {
        let days = until.duration_since(now).unwrap_or_default().as_secs() / 86_400;
        Some(format!(
            "the certificate in {path} expires at {until_text} (in {days} days): replace it and send SIGHUP"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        p.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        p.self_signed(&key).unwrap().der().clone()
    }

    fn on(day: &str) -> SystemTime {
        humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).unwrap()
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
    fn a_certificate_outside_or_near_the_end_of_its_validity_is_said_to_be() {
        let c = cert((2030, 1, 1), (2031, 1, 1));
        let path = Path::new("server.pem");
        let w = |day| validity_warning(path, &c, on(day));
        assert_eq!(w("2030-06-01"), None);
        let early = w("2029-06-01").unwrap();
        assert!(
            early.contains("server.pem is not valid until 2030-01-01T00:00:00Z"),
            "{early}"
        );
        let late = w("2031-02-01").unwrap();
        assert!(late.contains("expired at 2031-01-01T00:00:00Z"), "{late}");
        assert!(late.contains("send SIGHUP"), "{late}");
        let soon = w("2030-12-25").unwrap();
        assert!(
            soon.contains("expires at 2031-01-01T00:00:00Z (in 7 days)"),
            "{soon}"
        );
    }
}
