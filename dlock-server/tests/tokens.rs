//! `dlock-server new-token` and `hash-token`: a fresh token and its auth-file line, and the
//! hash of a given token.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn new_token_prints_a_token_and_its_line_and_hash_token_agrees() {
    let out = Command::new(env!("CARGO_BIN_EXE_dlock-server"))
        .args(["new-token", "alice"])
        .output()
        .expect("run dlock-server");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let token = lines[0];
    assert_eq!(token.len(), 64);
    let (identity, hash) = lines[1].split_once(' ').expect("IDENTITY HASH");
    assert_eq!(identity, "alice");
    assert_eq!(hash, dlock_server::security::hash_token(token));

    let mut child = Command::new(env!("CARGO_BIN_EXE_dlock-server"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run dlock-server");
    writeln!(child.stdin.take().expect("stdin"), "{token}").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash);

    // A second token is a different one.
    let again = Command::new(env!("CARGO_BIN_EXE_dlock-server"))
        .args(["new-token", "alice"])
        .output()
        .expect("run dlock-server");
    assert_ne!(
        String::from_utf8_lossy(&again.stdout).lines().next(),
        Some(token)
    );
}

#[test]
fn an_identity_with_a_space_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_dlock-server"))
        .args(["new-token", "a b"])
        .output()
        .expect("run dlock-server");
    assert!(!out.status.success());
}

#[test]
fn hash_token_refuses_an_empty_or_blank_token() {
    for input in ["", "  \n", "\n\nsecond-line\n"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dlock-server"))
            .arg("hash-token")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dlock-server");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(1), "{input:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{input:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("dlock-server: no token on standard input"),
            "{input:?}: {stderr}"
        );
    }
}
