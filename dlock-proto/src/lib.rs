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
