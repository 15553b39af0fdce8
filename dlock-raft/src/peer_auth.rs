//! Peer authentication: members that share a secret prove it to each other before a peer
//! connection carries any Raft traffic.
//!
//! Without it, anyone who can reach a node's peer port can vote, append entries or install
//! a snapshot: take part in the cluster. With a [`PeerSecret`] on every member, a connection
//! opens with a challenge and response both ways (HMAC-SHA256 over both sides' fresh
//! nonces), so neither side learns anything it could replay, and each side knows the other
//! holds the secret:
//!
//! 1. the connecting node sends `Hello { nonce: a }`;
//! 2. the answering node replies `Challenge { nonce: b, mac: HMAC(secret, "server" a b) }`;
//! 3. the connecting node checks that MAC and sends `Proof { mac: HMAC(secret, "client" a b) }`;
//! 4. the answering node checks it; from then on the connection carries Raft requests.
//!
//! A node that answers without being asked for proof, or with a wrong one, gets
//! `Refused` with the reason and the connection is closed. Until it has proven itself a
//! connection may send frames of at most [`HANDSHAKE_FRAME`] bytes and must finish within
//! [`HANDSHAKE_WAIT`].
//!
//! The secret authenticates the members to each other; it does not encrypt what they send
//! afterwards: keep peer traffic on a private network.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ring::hmac;

/// The largest frame a connection may send before it has proven itself.
pub const HANDSHAKE_FRAME: usize = 1024;

/// How long the answering side waits for a connection to prove itself.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A nonce or a MAC.
pub type Bytes32 = [u8; 32];

/// The secret the members of a cluster share (see the module docs).
#[derive(Clone)]
pub struct PeerSecret {
    key: hmac::Key,
}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the cluster secret from {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "the cluster secret is {len} bytes; it must be at least {MIN_SECRET_LEN} (for example \
         `head -c 32 /dev/urandom | base64`)"
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
}

impl PeerSecret {
    /// The secret `bytes` (surrounding whitespace ignored), at least [`MIN_SECRET_LEN`] long.
    pub fn new(bytes: &[u8]) -> Result<PeerSecret, SecretError> {
        let bytes = bytes.trim_ascii();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        Ok(PeerSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// The secret in the file at `path` (its contents, surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<PeerSecret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PeerSecret::new(&bytes)
    }

    /// What is signed: the role of the signer and both nonces.
    fn message(role: &[u8], a: &Bytes32, b: &Bytes32) -> Vec<u8> {
        [b"dlock peer ".as_slice(), role, a, b].concat()
    }

    fn mac(&self, role: &[u8], a: &Bytes32, b: &Bytes32) -> Bytes32 {
        let tag = hmac::sign(&self.key, &Self::message(role, a, b));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// What the answering side sends for the nonces `a` (the connecting side's) and `b`.
    pub(crate) fn server_mac(&self, a: &Bytes32, b: &Bytes32) -> Bytes32 {
        self.mac(b"server", a, b)
    }

    /// What the connecting side sends for the nonces `a` (its own) and `b`.
    pub(crate) fn client_mac(&self, a: &Bytes32, b: &Bytes32) -> Bytes32 {
        self.mac(b"client", a, b)
    }

    /// Whether `mac` is what the answering side must send for `a` and `b` (in constant
    /// time).
    pub(crate) fn verify_server(&self, a: &Bytes32, b: &Bytes32, mac: &Bytes32) -> bool {
        self.verify(b"server", a, b, mac)
    }

    /// Whether `mac` is what the connecting side must send for `a` and `b` (in constant
    /// time).
    pub(crate) fn verify_client(&self, a: &Bytes32, b: &Bytes32, mac: &Bytes32) -> bool {
        self.verify(b"client", a, b, mac)
    }

    fn verify(&self, role: &[u8], a: &Bytes32, b: &Bytes32, mac: &Bytes32) -> bool {
        hmac::verify(&self.key, &Self::message(role, a, b), mac).is_ok()
    }
}

/// A fresh random nonce.
pub(crate) fn nonce() -> Bytes32 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_verifies_only_the_others_mac_under_the_same_secret() {
        let s = PeerSecret::new(b"0123456789abcdef-shared").unwrap();
        let other = PeerSecret::new(b"0123456789abcdef-another").unwrap();
        let (a, b) = (nonce(), nonce());
        let server = s.server_mac(&a, &b);
        let client = s.client_mac(&a, &b);
        assert!(s.verify_server(&a, &b, &server));
        assert!(s.verify_client(&a, &b, &client));
        // Roles are not interchangeable: a reflected MAC proves nothing.
        assert!(!s.verify_client(&a, &b, &server));
        assert!(!s.verify_server(&a, &b, &client));
        // Another secret, or other nonces, do not verify.
        assert!(!other.verify_server(&a, &b, &server));
        assert!(!s.verify_server(&b, &a, &server));
        assert!(!s.verify_server(&a, &nonce(), &server));
    }

    #[test]
    fn short_secrets_are_refused_and_whitespace_is_not_part_of_it() {
        assert!(matches!(
            PeerSecret::new(b"  short\n"),
            Err(SecretError::TooShort { len: 5 })
        ));
        let a = PeerSecret::new(b"0123456789abcdef\n").unwrap();
        let b = PeerSecret::new(b"0123456789abcdef").unwrap();
        let (x, y) = (nonce(), nonce());
        assert!(b.verify_client(&x, &y, &a.client_mac(&x, &y)));
        assert_eq!(format!("{a:?}"), "PeerSecret(..)");
    }
}
