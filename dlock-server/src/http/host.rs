//! The names the listener answers for, against DNS rebinding: a web page whose own name
//! (`rebind.attacker.example`) is made to resolve to 127.0.0.1 reaches the loopback listener
//! as its own origin, so the browser lets it read every answer and send `DELETE`s; its
//! requests still name the page's host in their `Host` header. So a request is answered
//! only if its `Host` (and, in HTTP/2 or an absolute request target, its URI's authority)
//! is an IP address literal (`127.0.0.1:7421`, `[::1]:7421`), `localhost`, or a name the
//! operator allows with `--http-allowed-host` ([`Config::http_allowed_hosts`]); a request
//! that names no host at all (HTTP/1.0) is answered too. An attacker controls the DNS of
//! none of these: an IP address is its own origin, and `localhost` is not resolved through
//! the attacker's DNS.
//!
//! [`Config::http_allowed_hosts`]: crate::Config::http_allowed_hosts

use std::net::{Ipv4Addr, Ipv6Addr};

/// The host names the listener answers for besides IP address literals and `localhost`:
/// the operator's, lower case and without a final dot.
#[derive(Clone, Debug, Default)]
pub(crate) struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// The names of `--http-allowed-host` (in any case, with or without a final dot).
    pub(crate) fn new(names: &[String]) -> AllowedHosts {
        AllowedHosts(
            names
                .iter()
                .map(|n| normal(n))
                .filter(|n| !n.is_empty())
                .collect(),
        )
    }

    /// Whether `authority`, as a `Host` header gives it (`HOST` or `HOST:PORT`), names this
    /// listener: an IPv4 address, an `[IPv6]` address, `localhost` or an allowed name, with
    /// or without a port. Anything else (another name, a port that is not digits, a bare
    /// IPv6 address without brackets) does not.
    pub(crate) fn allows(&self, authority: &str) -> bool {
        let Some(host) = host_of(authority) else {
            return false;
        };
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return inner.parse::<Ipv6Addr>().is_ok();
        }
        if host.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = normal(host);
        name == "localhost" || self.0.contains(&name)
    }
}

/// A host name as it is compared: lower case, without a final dot (`Dlock.Internal.` is
/// `dlock.internal`).
fn normal(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The host of `authority` (`HOST` or `HOST:PORT`), without its port; `None` if what
/// follows the host is not `:` and digits.
fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (host, rest) = authority.split_at(end);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(host)
}

/// `--http-allowed-host`: a DNS name (letters, digits, `-`, `_` and dots), without a port.
pub(crate) fn parse_host_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    let valid = !name.is_empty()
        && name != "."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a host name: give a DNS name such as dlock.internal, without a \
             port (IP addresses and localhost are always accepted)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_allowed_names_are_accepted_and_no_other_name() {
        let hosts = AllowedHosts::new(&["Dlock.Internal".to_owned(), "ops.example.".to_owned()]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:7421",
            "10.0.0.5:80",
            "[::1]",
            "[::1]:7421",
            "[2001:db8::1]:7421",
            "localhost",
            "localhost:7421",
            "LocalHost:7421",
            "localhost.:7421",
            "localhost:",
            "dlock.internal:7421",
            "DLOCK.INTERNAL",
            "ops.example",
            "ops.example.:7421",
        ] {
            assert!(hosts.allows(ok), "{ok} refused");
        }
        for bad in [
            "rebind.attacker.example",
            "rebind.attacker.example:7421",
            "localhost.attacker.example",
            "127.0.0.1.attacker.example",
            "dlock.internal.attacker.example",
            "attacker.dlock.internal",
            "127.0.0.1:7421@attacker.example",
            "localhost:http",
            "localhost:7421:1",
            "::1",
            "[::1",
            "[::1]x",
            "[attacker.example]",
            "",
            ":7421",
        ] {
            assert!(!hosts.allows(bad), "{bad:?} accepted");
        }
        // Without --http-allowed-host, no name but localhost.
        assert!(!AllowedHosts::default().allows("dlock.internal"));
        assert!(AllowedHosts::default().allows("localhost:7421"));
    }

    #[test]
    fn an_allowed_host_is_a_dns_name_without_a_port() {
        assert_eq!(parse_host_name("dlock.internal").unwrap(), "dlock.internal");
        assert_eq!(parse_host_name(" dlock-1 ").unwrap(), "dlock-1");
        for bad in [
            "",
            " ",
            ".",
            "dlock.internal:7421",
            "a b",
            "[::1]",
            "*",
            "h/x",
        ] {
            let e = parse_host_name(bad).unwrap_err();
            assert!(e.contains("not a host name"), "{bad:?}: {e}");
        }
    }
}
