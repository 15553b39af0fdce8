//! dlock-proto: the dlock wire protocol.
//!
//! Every frame is a big-endian `u32` length followed by a bincode body ([`codec`]). A client
//! sends [`Hello`] first and gets [`Welcome`] or [`Refusal`]; after that it sends
//! [`ClientMessage::Request`]s with ids of its choosing, and the server answers with
//! [`ServerMessage::Event`]s (engine events carrying the request id and a per-session sequence number) and
//! [`ServerMessage::Reply`]s, and pushes grants of queued requests, blocking notifications,
//! session expiry and shutdown notices as ordinary frames.
#![forbid(unsafe_code)]

pub mod codec;
mod messages;
pub mod status;

pub use codec::{CodecError, DEFAULT_MAX_FRAME_LEN, FrameCodec, MalformedFrame};
pub use messages::*;

/// `bytes` as lowercase hexadecimal, two digits a byte: how resource names and value blocks
/// that are not text are written wherever dlock shows them (JSON, the CLI).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}
