//! The `--server` address list (`DLOCK_SERVER`), checked when the arguments are parsed, so
//! that a malformed address is a usage error (exit 2) and not "server unreachable" (exit
//! 69, which scripts retry). Host names are not resolved here: a name that does not resolve
//! is unreachable when dlock connects.

use std::net::{Ipv6Addr, SocketAddr};

/// Checks a comma-separated list of server addresses and returns it without blanks around
/// its entries or empty entries (a trailing comma), which the client ignores too, so that
/// messages show the addresses as they are tried. Each entry is `HOST:PORT` with a non-empty
/// host (a name or an IPv4 address) or `[IPV6]:PORT`, and a port from 1 to 65535; a list
/// without any address is an error.
pub fn parse_server_list(list: &str) -> Result<String, String> {
    let mut entries = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        check_address(entry).map_err(|why| {
            // clap shows the whole list: name the entry when it is one of several.
            if entry == list.trim() {
                why
            } else {
                format!("{entry:?}: {why}")
            }
        })?;
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err("no server address given (expected HOST:PORT[,HOST:PORT...])".to_owned());
    }
    Ok(entries.join(","))
}

/// Whether every address of a checked list is on this machine: a loopback IP address or
/// `localhost` (what crosses no network).
pub fn all_loopback(list: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .all(|entry| match entry.parse::<SocketAddr>() {
            Ok(addr) => addr.ip().is_loopback(),
            Err(_) => entry
                .rsplit_once(':')
                .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
        })
}

/// Checks one `HOST:PORT` or `[IPV6]:PORT`.
fn check_address(entry: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "expected HOST:PORT, such as 127.0.0.1:7420, localhost:7420 or [::1]:7420";
    // An IP address with its port, IPv6 with a scope (`[fe80::1%2]:7420`) included.
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err("the port \"0\" is not a number from 1 to 65535".to_owned()),
            _ => Ok(()),
        };
    }
    if entry.contains("://") {
        return Err(format!("a URL: {EXPECTED}"));
    }
    let port = match entry.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("no ']' after the IPv6 address: {EXPECTED}"))?;
            ip.parse::<Ipv6Addr>()
                .map_err(|_| format!("{ip:?} in brackets is not an IPv6 address"))?;
            after
                .strip_prefix(':')
                .ok_or_else(|| format!("no :PORT after [{ip}]: {EXPECTED}"))?
        }
        None => {
            let (host, port) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("no port: {EXPECTED}"))?;
            if host.contains(':') {
                return Err("an IPv6 address must be written in brackets: [IPV6]:PORT".to_owned());
            }
            if host.is_empty() {
                return Err(format!("no host before the port: {EXPECTED}"));
            }
            if let Some(c) = host
                .chars()
                .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '[' | ']'))
            {
                return Err(format!("{c:?} cannot appear in a host name"));
            }
            port
        }
    };
    match port.parse::<u16>() {
        Ok(1..) => Ok(()),
        _ => Err(format!("the port {port:?} is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::{all_loopback, parse_server_list};

    #[test]
    fn loopback_lists_cross_no_network() {
        assert!(all_loopback("127.0.0.1:7420"));
        assert!(all_loopback("localhost:7420, [::1]:7420,127.0.0.2:1,"));
        assert!(!all_loopback("127.0.0.1:7420,10.0.0.5:7420"));
        assert!(!all_loopback("locks.internal:7420"));
        assert!(!all_loopback("[fe80::1%2]:7420"));
    }

    #[test]
    fn valid_lists_are_returned_without_blanks_or_empty_entries() {
        for list in [
            "127.0.0.1:7420",
            "localhost:7420",
            "locks.internal:1",
            "[::1]:7420",
            "[fe80::1]:65535",
            "[fe80::1%2]:7420",
            "127.0.0.1:7420,127.0.0.1:7430,127.0.0.1:7440",
        ] {
            assert_eq!(parse_server_list(list).as_deref(), Ok(list), "{list:?}");
        }
        for (list, shown) in [
            (" a:1, b:2 ", "a:1,b:2"),
            ("a:1,", "a:1"),
            ("a:1,,b:2", "a:1,b:2"),
        ] {
            assert_eq!(parse_server_list(list).as_deref(), Ok(shown), "{list:?}");
        }
    }

    #[test]
    fn malformed_lists_say_what_is_wrong() {
        for (list, why) in [
            ("nonsense", "no port: expected HOST:PORT"),
            (
                "127.0.0.1:99999",
                "the port \"99999\" is not a number from 1 to 65535",
            ),
            ("127.0.0.1:0", "the port \"0\""),
            ("127.0.0.1:", "the port \"\""),
            ("127.0.0.1:http", "the port \"http\""),
            ("", "no server address given"),
            (" , ", "no server address given"),
            (":7420", "no host before the port"),
            ("::1:7420", "in brackets"),
            ("[::1]", "no :PORT after [::1]"),
            ("[::1:7420", "no ']'"),
            ("[localhost]:7420", "not an IPv6 address"),
            ("[::1]:0", "the port \"0\""),
            ("a b:1", "' ' cannot appear"),
            ("tcp://a:1", "a URL"),
            ("a:1,b", "\"b\": no port"),
        ] {
            let err = parse_server_list(list).unwrap_err();
            assert!(err.contains(why), "{list:?}: {err}");
        }
    }
}
