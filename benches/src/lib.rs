//! Benchmarks and the load generator for dlock.
#![forbid(unsafe_code)]
