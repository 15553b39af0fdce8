//! dlock-client: the async Rust SDK for dlock. (Skeleton: the client issue fills this in.)
#![forbid(unsafe_code)]
