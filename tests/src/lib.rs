//! Shared helpers for dlock's end-to-end tests: [`TestServer`] runs a server in-process.
#![forbid(unsafe_code)]

pub mod server;

pub use server::TestServer;
