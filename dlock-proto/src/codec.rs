//! The frame codec: a big-endian `u32` length, then a bincode body.
//!
//! This is the only module that knows the body encoding, so it can be swapped in one place.

use std::io;
use std::marker::PhantomData;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The default maximum frame length (body bytes): 64 KiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Upper bound on what bincode may allocate while decoding one frame. The frame length is
/// already bounded by the codec's maximum; this bounds collection pre-allocation on top.
const DECODE_LIMIT: usize = 16 * 1024 * 1024;

/// Room made in the output buffer before a frame is encoded: most frames (a request, a
/// reply, an event) fit, so the serializer's many small writes do not grow the buffer a few
/// bytes at a time (each growth a reallocation and a copy).
const ENCODE_RESERVE: usize = 256;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// An error of the frame codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The underlying transport failed.
    #[error("io error: {0}")]
    Io(#[from] io::Error),
    /// A frame announced or produced a body longer than the maximum. The stream cannot be
    /// resynchronised after this.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The length (as far as known).
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The first bytes of the stream are another protocol's, not a frame's length prefix.
    /// The stream cannot be resynchronised after this.
    #[error("the other end does not speak the dlock protocol: {what}")]
    ForeignProtocol {
        /// What the bytes look like.
        what: &'static str,
        /// Their length prefix read as one.
        len: usize,
        /// The maximum frame length.
        max: usize,
    },
    /// A message could not be encoded.
    #[error("encode error: {0}")]
    Encode(String),
}

/// Whether a stream that starts with `prefix` (instead of a frame's length) is an HTTP
/// request: its method's first four bytes.
pub fn is_http_request(prefix: [u8; 4]) -> bool {
    matches!(
        &prefix,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PATC"
    )
}

/// What a stream that starts with `prefix` (instead of a frame's length) most likely is.
pub fn foreign_protocol(prefix: [u8; 4]) -> Option<&'static str> {
    if is_http_request(prefix) {
        return Some(
            "it sent an HTTP request (the lock port speaks the dlock protocol; HTTP is on --http-listen)",
        );
    }
    match &prefix {
        b"HTTP" => {
            Some("it answered in HTTP (is this the HTTP port, --http-listen, not the lock port?)")
        }
        [0x16, 0x03, ..] => {
            Some("it started a TLS handshake (is TLS configured on one side only?)")
        }
        [0x15, 0x03, ..] => Some("it sent a TLS alert (is TLS configured on one side only?)"),
        b"SSH-" => Some("it is an SSH server (is this the right port?)"),
        b"-ERR" | b"+OK " | b"+OK\r" => {
            Some("it answered like Redis or POP3, not dlock (is this the right port?)")
        }
        [b'2', b'2', b'0', b' ' | b'-'] => {
            Some("it greeted like an SMTP or FTP server (is this the right port?)")
        }
        _ => None,
    }
}

/// A frame whose length was fine but whose body is not a valid message. The stream stays in
/// sync, so the receiver may answer and go on, or close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct MalformedFrame(pub String);

/// Decodes frames into `In` and encodes `Out` into frames.
///
/// The server uses `FrameCodec<ClientMessage, ServerMessage>`, the client the reverse.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    inner: LengthDelimitedCodec,
    max_frame_len: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec that refuses frames longer than `max_frame_len` body bytes.
    pub fn new(max_frame_len: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_length(4)
            .max_frame_length(max_frame_len)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_len,
            _types: PhantomData,
        }
    }

    /// The maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

/// Decodes one body (without its length prefix).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, MalformedFrame> {
    match bincode::serde::decode_from_slice::<T, _>(body, config()) {
        Ok((value, used)) if used == body.len() => Ok(value),
        Ok((_, used)) => Err(MalformedFrame(format!(
            "{} trailing bytes after the message",
            body.len() - used
        ))),
        Err(e) => Err(MalformedFrame(e.to_string())),
    }
}

/// Encodes one body (without its length prefix).
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = Result<In, MalformedFrame>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.inner.decode(src) {
            Ok(Some(frame)) => Ok(Some(decode_body(&frame))),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let prefix = (src.len() >= 4).then(|| [src[0], src[1], src[2], src[3]]);
                let len = prefix.map_or(0, |p| u32::from_be_bytes(p) as usize);
                if let Some(what) = prefix.and_then(foreign_protocol) {
                    return Err(CodecError::ForeignProtocol {
                        what,
                        len,
                        max: self.max_frame_len,
                    });
                }
                Err(CodecError::FrameTooLarge {
                    len,
                    max: self.max_frame_len,
                })
            }
            Err(e) => Err(CodecError::Io(e)),
        }
    }
}

/// bincode's writer for a frame that outgrew [`ENCODE_RESERVE`]: straight into the output
/// buffer, without a `std::io::Write` layer.
struct BufWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BufWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        // Encoded straight into the output buffer behind a placeholder length, which is
        // patched at the end: no per-frame allocation. Most frames fit in ENCODE_RESERVE bytes: encoded into that much zeroed room as into
        // a slice (bincode's fastest writer: its many small writes are plain copies), then
        // cut to length. A larger one starts again, growing the buffer as it goes.
        let start = dst.len();
        let body = start + 4;
        dst.resize(body + ENCODE_RESERVE, 0);
        let res = match bincode::serde::encode_into_slice(&item, &mut dst[body..], config()) {
            Ok(len) => Ok(len),
            Err(bincode::error::EncodeError::UnexpectedEnd) => {
                dst.truncate(body);
                bincode::serde::encode_into_writer(&item, BufWriter(dst), config())
                    .map(|()| dst.len() - body)
            }
            Err(e) => Err(e),
        };
        let len = match res {
            Ok(len) => len,
            Err(e) => {
                dst.truncate(start);
                return Err(CodecError::Encode(e.to_string()));
            }
        };
        dst.truncate(body + len);
        if len > self.max_frame_len {
            dst.truncate(start);
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}
