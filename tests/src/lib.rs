//! Shared helpers for dlock's end-to-end tests.
#![forbid(unsafe_code)]
