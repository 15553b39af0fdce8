//! [`FrameReader`]: the read half of a connection, decoding client frames.
//!
//! Two bounds a generic framed reader does not give:
//! - **No buffer while idle.** The reader waits for the socket to become readable *before*
//!   it allocates a buffer, and gives the buffer back once every byte in it is decoded, so an
//!   idle connection holds no read buffer at all (a server with 10,000 connected, idle
//!   sessions would otherwise hold 10,000 buffers of several KiB).
//! - **A deadline for a started frame.** Once a frame's first byte has arrived, the rest must
//!   arrive within [`Config::frame_timeout`](crate::Config::frame_timeout); a peer that
//!   starts frames and never finishes them cannot hold a connection slot and its buffer
//!   forever.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use dlock_proto::{ClientMessage, CodecError, FrameCodec, MalformedFrame, ServerMessage};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::stream::ReadHalf;

/// Bytes reserved for each read: a typical frame is far smaller; a larger one grows the
/// buffer to its announced length (the codec reserves it).
const READ_CHUNK: usize = 4096;

/// What [`FrameReader::next`] yields.
pub(crate) enum ReadOutcome {
    /// A whole frame: a message, or a body that does not decode (the stream stays in sync).
    Frame(Result<ClientMessage, MalformedFrame>),
    /// The peer closed the connection between frames.
    Closed,
    /// A frame was started and not finished within the frame timeout.
    TimedOut,
    /// The frame is over the maximum length, or reading failed.
    Failed(CodecError),
}

/// The decoding read half of a client connection.
pub(crate) struct FrameReader<R> {
    half: R,
    codec: FrameCodec<ClientMessage, ServerMessage>,
    buf: BytesMut,
    frame_timeout: Duration,
    /// When the first byte of the frame now being read arrived.
    started: Option<Instant>,
    /// Bytes read since the last [`take_bytes_read`](Self::take_bytes_read).
    bytes_read: u64,
}

impl<R: ReadHalf> FrameReader<R> {
    /// A reader of frames of at most `max_frame_len` bytes from `half`.
    pub(crate) fn new(half: R, max_frame_len: usize, frame_timeout: Duration) -> Self {
        FrameReader {
            half,
            codec: FrameCodec::new(max_frame_len),
            buf: BytesMut::new(),
            frame_timeout,
            started: None,
            bytes_read: 0,
        }
    }

    /// The bytes read since the last call (for the byte counters).
    pub(crate) fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    /// The next frame, the end of the stream, or why there is none.
    pub(crate) async fn next(&mut self) -> ReadOutcome {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    // The next frame (if its bytes are already here) starts now.
                    self.started = (!self.buf.is_empty()).then(Instant::now);
                    return ReadOutcome::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => return ReadOutcome::Failed(e),
            }
            if self.buf.is_empty() {
                // Idle: hold no buffer while waiting.
                self.buf = BytesMut::new();
                self.started = None;
                if let Err(e) = self.half.ready().await {
                    return ReadOutcome::Failed(e.into());
                }
            } else {
                let deadline = *self.started.get_or_insert_with(Instant::now) + self.frame_timeout;
                match tokio::time::timeout_at(deadline, self.half.ready()).await {
                    Err(_) => return ReadOutcome::TimedOut,
                    Ok(Err(e)) => return ReadOutcome::Failed(e.into()),
                    Ok(Ok(())) => {}
                }
            }
            self.buf.reserve(READ_CHUNK);
            // The socket is readable, so this read does not wait (but for a rare spurious
            // wake-up). Reading through `AsyncRead` rather than `try_read_buf` matters: a read
            // that fills less than the buffer clears the readiness, so the next wait parks at
            // once instead of costing one more system call that finds nothing.
            // Mid-frame the read itself is bounded too: a stream that is always "ready"
            // (TLS) waits in the read.
            let read = match self.started {
                Some(started) => {
                    let deadline = started + self.frame_timeout;
                    match tokio::time::timeout_at(deadline, self.half.read_buf(&mut self.buf)).await
                    {
                        Ok(read) => read,
                        Err(_) => return ReadOutcome::TimedOut,
                    }
                }
                None => self.half.read_buf(&mut self.buf).await,
            };
            match read {
                Ok(0) if self.buf.is_empty() => return ReadOutcome::Closed,
                Ok(0) => {
                    let e =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame");
                    return ReadOutcome::Failed(e.into());
                }
                Ok(n) => {
                    self.bytes_read += n as u64;
                    if self.started.is_none() {
                        self.started = Some(Instant::now());
                    }
                }
                Err(e) => return ReadOutcome::Failed(e.into()),
            }
        }
    }
}
