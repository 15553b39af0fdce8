//! Shared helpers for dlock's end-to-end tests: [`TestServer`] runs a server in-process, and
//! [`RawClient`] speaks the wire protocol directly (without `dlock-client`), and [`sdk`] has the
//! helpers of the tests that go through `dlock-client`; [`hostile`] has those of the
//! hostile-client suite; [`cluster`] runs a cluster of server processes.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod cluster;
pub mod hostile;
pub mod http;
pub mod ports;
pub mod proxy;
pub mod raw;
pub mod sdk;
pub mod security;
pub mod server;

pub use raw::{
    RawClient, RawFramed, WAIT, connect_framed, connect_framed_from, recv_raw, recv_raw_within,
};
pub use server::TestServer;
