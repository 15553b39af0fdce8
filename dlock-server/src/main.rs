//! The `dlock-server` binary.
#![forbid(unsafe_code)]

fn main() {}
