//! The `dlock` command-line tool. (Skeleton: the CLI issue fills this in.)
#![forbid(unsafe_code)]

fn main() {}
