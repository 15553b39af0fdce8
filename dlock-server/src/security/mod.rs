//! Who may connect and what they may do: TLS ([`tls`]), bearer tokens ([`tokens`]) and
//! per-prefix authorisation rules ([`rules`]), held together by [`Security`], which the
//! accept loop, the connections and the core task share and which can be reloaded from
//! its files (SIGHUP, [`ServerHandle::reload`](crate::ServerHandle::reload)) without
//! dropping a session.
//!
//! With none of `--tls-cert`, `--auth-file`, `--auth-rules` set, everything is as before:
//! plain TCP, no identities, every request allowed.

pub mod rules;
pub mod tls;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

pub use self::rules::{Access, Rules};
pub use self::tls::TlsConfig;
use self::tokens::Tokens;
pub use self::tokens::{check_identity, hash_token, hash_token_line, new_token};
use crate::{Config, ServerError};

/// The files the security state comes from.
#[derive(Clone, Debug)]
struct Files {
    tls: Option<TlsConfig>,
    auth_file: Option<std::path::PathBuf>,
    auth_rules: Option<std::path::PathBuf>,
}

/// Everything loaded from the files at one time.
struct Loaded {
    acceptor: Option<TlsAcceptor>,
    tokens: Option<Arc<Tokens>>,
    rules: Option<Arc<Rules>>,
    /// What the certificate's validity calls for ([`tls::validity_warning`]).
    certificate: Option<String>,
}

/// A server's TLS configuration, tokens and rules, reloadable as a whole, and the count of
/// requests refused by the rules.
pub struct Security {
    files: Files,
    loaded: RwLock<Arc<LoadedShared>>,
    denials: AtomicU64,
}

/// What connections and the core task read: cloned out of the lock, so a reload never waits
/// for a reader and a reader never sees half a reload.
pub(crate) struct LoadedShared {
    pub(crate) acceptor: Option<TlsAcceptor>,
    tokens: Option<Arc<Tokens>>,
    pub(crate) rules: Option<Arc<Rules>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("files", &self.files)
            .field("denials", &self.denials)
            .finish_non_exhaustive()
    }
}

/// What [`Security::http_reader`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpAccess {
    /// May read.
    Allowed,
    /// No valid token (401).
    Unauthenticated,
    /// A valid token of an identity that is not an admin (403).
    Forbidden,
}

/// Why a `Hello` was not authenticated.
#[derive(Debug)]
pub(crate) struct NotAuthenticated;

impl Loaded {
    /// What an operator should hear about files that load but shut everyone out (said at
    /// WARN at start and on every reload).
    fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self.certificate.iter().cloned().collect();
        if self.tokens.as_ref().is_some_and(|t| t.is_empty()) {
            w.push("the --auth-file holds no token: every client is refused".into());
        }
        if self.rules.as_ref().is_some_and(|r| r.grant_nothing()) {
            w.push("the --auth-rules give no identity any access: every lock request and query is refused".into());
        }
        w
    }
}

impl Files {
    fn load(&self) -> Result<Loaded, ServerError> {
        let (acceptor, certificate) = match &self.tls {
            Some(tls) => {
                let leaf = tls::read_certs(&tls.cert)?.swap_remove(0);
                let now = std::time::SystemTime::now();
                (
                    Some(TlsAcceptor::from(tls::server_config(tls)?)),
                    tls::validity_warning(&tls.cert, &leaf, now),
                )
            }
            None => (None, None),
        };
        let tokens = match &self.auth_file {
            Some(path) => Some(Arc::new(Tokens::load(path)?)),
            None => None,
        };
        let rules = match &self.auth_rules {
            Some(path) => Some(Arc::new(Rules::load(path)?)),
            None => None,
        };
        Ok(Loaded {
            acceptor,
            tokens,
            rules,
            certificate,
        })
    }
}

impl Security {
    /// Loads the TLS material, tokens and rules `config` names (none: an open server).
    pub fn load(config: &Config) -> Result<Arc<Security>, ServerError> {
        let files = Files {
            tls: config.tls.clone(),
            auth_file: config.auth_file.clone(),
            auth_rules: config.auth_rules.clone(),
        };
        let loaded = files.load()?;
        loaded
            .warnings()
            .into_iter()
            .for_each(|w| tracing::warn!("{w}"));
        Ok(Arc::new(Security {
            files,
            loaded: RwLock::new(Arc::new(LoadedShared {
                acceptor: loaded.acceptor,
                tokens: loaded.tokens,
                rules: loaded.rules,
            })),
            denials: AtomicU64::new(0),
        }))
    }

    /// Reads every file again and, if all of them are valid, puts them in force for new
    /// connections and requests; on an error nothing changes. Open connections and sessions
    /// are kept (a TLS connection keeps the certificate it was opened with).
    pub fn reload(&self) -> Result<(), ServerError> {
        let loaded = self.files.load()?;
        loaded
            .warnings()
            .into_iter()
            .for_each(|w| tracing::warn!("{w}"));
        let shared = Arc::new(LoadedShared {
            acceptor: loaded.acceptor,
            tokens: loaded.tokens,
            rules: loaded.rules,
        });
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = shared;
        let f = &self.files;
        let what: Vec<&str> = [
            (f.tls.is_some(), "certificates"),
            (f.auth_file.is_some(), "tokens"),
            (f.auth_rules.is_some(), "rules"),
        ]
        .into_iter()
        .filter_map(|(given, what)| given.then_some(what))
        .collect();
        if what.is_empty() {
            tracing::info!(
                "nothing to reload: no --tls-cert, --auth-file or --auth-rules was given"
            );
        } else {
            tracing::info!(reloaded = %what.join(", "), "security files reloaded");
        }
        Ok(())
    }

    /// What is in force now.
    pub(crate) fn current(&self) -> Arc<LoadedShared> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether clients must prove an identity (a token file or client certificates).
    pub fn authenticates(&self) -> bool {
        self.files.auth_file.is_some()
            || self
                .files
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca.is_some())
    }

    /// Whether a rules file is configured (when not, every request is allowed and the
    /// core task does not look at the rules at all).
    pub fn has_rules(&self) -> bool {
        self.files.auth_rules.is_some()
    }

    /// Whether the server speaks TLS.
    pub fn tls(&self) -> bool {
        self.files.tls.is_some()
    }

    /// Requests refused by the rules since the server started.
    pub fn permission_denials(&self) -> u64 {
        self.denials.load(Ordering::Relaxed)
    }

    /// Counts one refused request.
    pub(crate) fn denied(&self) {
        self.denials.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a reader of the HTTP status pages and JSON API who presents `token` may see
    /// them: always on a server that does not authenticate; otherwise the token must be valid
    /// and, when there are rules, name an admin (the pages show every session and resource).
    /// A server that authenticates only by client certificate has no token to check here, so
    /// its pages are closed.
    pub(crate) fn http_reader(&self, token: Option<&str>) -> HttpAccess {
        if !self.authenticates() {
            return HttpAccess::Allowed;
        }
        let current = self.current();
        let identity = match (&current.tokens, token) {
            (Some(tokens), Some(token)) => tokens.authenticate(token),
            _ => None,
        };
        match (identity, &current.rules) {
            (None, _) => HttpAccess::Unauthenticated,
            (Some(id), Some(rules)) if !rules.is_admin(Some(&id)) => HttpAccess::Forbidden,
            (Some(_), _) => HttpAccess::Allowed,
        }
    }

    /// The identity of a client that sent `token` on a connection whose client certificate
    /// named `cert_identity`. A token, if the server takes tokens, must be valid and wins;
    /// otherwise the certificate's identity counts. A server that authenticates refuses a
    /// client with neither; one that does not accepts it without an identity.
    pub(crate) fn authenticate(
        &self,
        token: Option<&str>,
        cert_identity: Option<&str>,
    ) -> Result<Option<Arc<str>>, NotAuthenticated> {
        let current = self.current();
        if let (Some(tokens), Some(token)) = (&current.tokens, token) {
            return tokens.authenticate(token).map(Some).ok_or(NotAuthenticated);
        }
        if let Some(identity) = cert_identity {
            return Ok(Some(Arc::from(identity)));
        }
        if self.authenticates() {
            return Err(NotAuthenticated);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(tokens: Option<&str>, rules: Option<&str>) -> Loaded {
        Loaded {
            acceptor: None,
            tokens: tokens.map(|t| Arc::new(Tokens::parse(t).unwrap())),
            rules: rules.map(|r| Arc::new(Rules::parse(r).unwrap())),
            certificate: None,
        }
    }

    #[test]
    fn files_that_shut_everyone_out_are_said_to() {
        let hash = tokens::hash_token("t");
        assert_eq!(
            loaded(Some(&format!("ci {hash}\n")), None).warnings().len(),
            0
        );
        let w = loaded(Some("# nobody yet\n\n"), None).warnings();
        assert!(w[0].contains("holds no token"), "{w:?}");
        let w = loaded(None, Some("[identities.ci]\n\"\" = \"none\"\n")).warnings();
        assert!(w[0].contains("give no identity any access"), "{w:?}");
        let w = loaded(None, Some("")).warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        let some = "[identities.\"*\"]\n\"jobs/\" = \"list\"\n";
        assert_eq!(loaded(None, Some(some)).warnings().len(), 0);
    }
}
