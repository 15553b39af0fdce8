//! dlock-server: serves the dlock engine over TCP. (Skeleton: the server issue fills this in.)
#![forbid(unsafe_code)]
