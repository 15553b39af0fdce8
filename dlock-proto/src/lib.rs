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

/// The bytes of an even-length string of hexadecimal digits (either case), the inverse of
/// [`to_hex`]; `None` when `s` is anything else.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}
