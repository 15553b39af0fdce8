//! Loopback ports for servers whose address must be known before they start, or that
//! restart on the address they had.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};

/// The lowest port of the range the kernel hands out for outgoing connections (and for
/// binds to port 0); read from Linux's `ip_local_port_range`, the usual 32768 elsewhere.
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// `n` distinct loopback ports that were free a moment ago, chosen at random *below* the
/// ephemeral range.
///
/// A cluster node's ports must be known before it starts (its peers are told them), and a
/// restarted server binds the port it had; so they are picked, released and bound again by
/// the server. A port from the ephemeral range (what a bind to port 0 gives) can meanwhile
/// become the local end of any outgoing connection on the machine, such as another test's
/// client, and then the server cannot bind it for as long as that connection lives. Below
/// the range only another explicit bind can take it.
pub fn reserve(n: usize) -> Result<Vec<SocketAddr>> {
    const LOWEST: u16 = 10_000;
    let high = ephemeral_low().max(LOWEST + 1_000);
    let mut held: Vec<std::net::TcpListener> = Vec::new();
    for _ in 0..n * 100 {
        if held.len() == n {
            break;
        }
        let port = rand::random_range(LOWEST..high);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        bail!("found only {} of {n} free ports below {high}", held.len());
    }
    held.iter()
        .map(|l| l.local_addr().context("local address"))
        .collect()
}
