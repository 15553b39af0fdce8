//! [`FrameReader`]: the read half of a connection, decoding client frames.
//!
//! Two bounds a generic framed reader does not give:
//! - **No buffer while idle.** The reader waits for the socket to become readable *before*
//!   it allocates a buffer, and gives the buffer back once every byte in it is decoded, so an
//!   idle connection holds no read buffer at all (a server with 10,000 connected, idle
//!   sessions would otherwise hold 10,000 buffers of several KiB).
//! - **A buffer the size of what arrived.** A frame's length prefix does not make the reader
//!   reserve the whole frame: the buffer grows (doubling, from [`READ_CHUNK`]) with the bytes
//!   that actually arrive, and never beyond the frame they belong to, so a peer that announces
//!   a 64 KiB frame and sends four bytes of it costs a few KiB, not 64.
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

/// Room made for each read: a typical frame is far smaller; a larger one grows the buffer
/// with its bytes as they arrive (see [`room_for_read`]).
const READ_CHUNK: usize = 4096;

/// The length prefix of a frame.
const HEAD_LEN: usize = 4;

/// Whether `buf` holds a whole frame, or a length prefix the codec refuses (over `max`): only
/// then is the codec asked to decode, because a codec that has read a length prefix reserves
/// the whole announced frame in the buffer at once.
fn frame_ready(buf: &[u8], max: usize) -> bool {
    match announced(buf) {
        Some(len) => len > max || buf.len() - HEAD_LEN >= len,
        None => false,
    }
}

/// The body length the frame at the start of `buf` announces, once its prefix is in.
fn announced(buf: &[u8]) -> Option<usize> {
    let head: [u8; HEAD_LEN] = buf.get(..HEAD_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(head) as usize)
}

/// The capacity `buf` (holding `len` bytes, `capacity` in all) should grow to before the
/// next read, or `None` if it has room for [`READ_CHUNK`] more bytes (or the rest of its
/// frame, if that is less). Growth doubles, for a number of copies logarithmic in the frame's
/// size, but never beyond the frame the buffer is in the middle of (its announced length, as
/// far as `max` allows), so a partial frame costs what arrived of it, at most twice over.
fn room_for_read(buf: &[u8], capacity: usize, max: usize) -> Option<usize> {
    let len = buf.len();
    // What the frame in progress still needs; a chunk when its length is not known yet, or
    // when what follows it is another frame.
    let frame_end = announced(buf).map(|body| HEAD_LEN + body.min(max));
    let wanted = match frame_end {
        Some(end) if end > len => (end - len).min(READ_CHUNK),
        _ => READ_CHUNK,
    };
    if capacity.saturating_sub(len) >= wanted {
        return None;
    }
    let doubled = (2 * capacity).max(len + READ_CHUNK);
    Some(match frame_end {
        Some(end) if end > len => doubled.min(end).max(len + wanted),
        _ => doubled,
    })
}

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
    max_frame_len: usize,
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
            max_frame_len,
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
            if frame_ready(&self.buf, self.max_frame_len) {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        // The next frame (if its bytes are already here) starts now.
                        self.started = (!self.buf.is_empty()).then(Instant::now);
                        return ReadOutcome::Frame(frame);
                    }
                    Ok(None) => {}
                    Err(e) => return ReadOutcome::Failed(e),
                }
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
            if let Some(capacity) =
                room_for_read(&self.buf, self.buf.capacity(), self.max_frame_len)
            {
                // Exactly this much: `BytesMut::reserve` would double past the frame's end.
                let mut grown = BytesMut::with_capacity(capacity);
                grown.extend_from_slice(&self.buf);
                self.buf = grown;
            }
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
                    // A frame's clock starts when its first bytes are here and it is not
                    // whole. A whole frame (the usual read) is decoded at once and needs no
                    // clock read; the bytes after it start theirs when it is taken.
                    if self.started.is_none() && !frame_ready(&self.buf, self.max_frame_len) {
                        self.started = Some(Instant::now());
                    }
                }
                Err(e) => return ReadOutcome::Failed(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn prefix(len: u32, body_bytes: usize) -> Vec<u8> {
        let mut buf = len.to_be_bytes().to_vec();
        buf.resize(HEAD_LEN + body_bytes, 7);
        buf
    }

    #[test]
    fn a_frame_is_decoded_only_once_whole_or_refusable() {
        assert!(!frame_ready(&[0, 0], MAX), "no prefix yet");
        assert!(!frame_ready(&prefix(10, 9), MAX));
        assert!(frame_ready(&prefix(10, 10), MAX));
        assert!(frame_ready(&prefix(10, 30), MAX), "the next frame follows");
        assert!(
            frame_ready(&prefix(MAX as u32 + 1, 0), MAX),
            "too large: refused at once"
        );
    }

    #[test]
    fn an_announced_frame_reserves_no_more_than_a_chunk() {
        // Only the prefix of a 64 KiB frame has arrived: one chunk, not 64 KiB.
        let buf = prefix(MAX as u32, 0);
        assert_eq!(
            room_for_read(&buf, HEAD_LEN, MAX),
            Some(HEAD_LEN + READ_CHUNK)
        );
        assert_eq!(room_for_read(&buf, READ_CHUNK + HEAD_LEN, MAX), None);
    }

    #[test]
    fn growth_doubles_and_stops_at_the_frames_end() {
        let end = HEAD_LEN + MAX;
        // Fill the buffer as reads would, growing whenever it is full.
        let mut buf = prefix(MAX as u32, 0);
        let mut capacity = buf.len();
        let mut sizes = Vec::new();
        while buf.len() < end {
            if let Some(grown) = room_for_read(&buf, capacity, MAX) {
                assert!(grown > capacity);
                capacity = grown;
                sizes.push(capacity);
            }
            let take = (capacity - buf.len()).min(end - buf.len());
            buf.resize(buf.len() + take, 7);
        }
        assert_eq!(
            capacity, end,
            "exactly the frame, not the next power of two"
        );
        assert_eq!(sizes.len(), 5, "4 Ki to 64 Ki by doubling: {sizes:?}");
        assert!(sizes.windows(2).all(|w| w[1] <= 2 * w[0]));
    }

    #[test]
    fn a_small_frame_needs_only_its_rest() {
        // 100 bytes of a 120-byte body in a buffer of 200: room for the other 20.
        let buf = prefix(120, 100);
        assert_eq!(room_for_read(&buf, 200, MAX), None);
        // A full buffer grows by a chunk (at most to the frame's end).
        assert_eq!(room_for_read(&buf, buf.len(), MAX), Some(HEAD_LEN + 120));
    }

    #[test]
    fn between_frames_the_buffer_grows_by_chunks() {
        assert_eq!(room_for_read(&[], 0, MAX), Some(READ_CHUNK));
        assert_eq!(room_for_read(&[], READ_CHUNK, MAX), None);
        // A whole frame not yet decoded: room for a chunk beyond it.
        let whole = prefix(10, 10);
        assert_eq!(
            room_for_read(&whole, whole.len(), MAX),
            Some(whole.len() + READ_CHUNK)
        );
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A reader of the server end of an in-memory stream, and the client end.
    fn reader() -> (
        FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        tokio::io::DuplexStream,
    ) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (read, _write) = tokio::io::split(server);
        (FrameReader::new(read, MAX, TIMEOUT), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_must_end_within_the_timeout_of_its_first_bytes() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut client) = reader();
        let t0 = Instant::now();
        let feeder = tokio::spawn(async move {
            // Four bytes of a 14-byte frame, four more after 3 s, and the rest never.
            let frame = prefix(10, 10);
            client.write_all(&frame[..4]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(&frame[4..8]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(client);
        });
        assert!(matches!(reader.next().await, ReadOutcome::TimedOut));
        assert_eq!(
            t0.elapsed(),
            TIMEOUT,
            "counted from the first bytes, not the last"
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn whole_frames_start_no_clock_and_the_next_ones_starts_when_it_is_reached() {
        use tokio::io::AsyncWriteExt;
        let (mut reader, mut client) = reader();
        // A whole frame (a body that does not decode still keeps the stream in step), then
        // half of the next, in one write.
        let mut bytes = prefix(3, 3);
        bytes.extend(prefix(10, 4));
        client.write_all(&bytes).await.unwrap();
        assert!(matches!(reader.next().await, ReadOutcome::Frame(Err(_))));
        assert!(reader.started.is_some(), "the rest started its frame");
        tokio::time::advance(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        assert!(matches!(reader.next().await, ReadOutcome::TimedOut));
        assert_eq!(t1.elapsed(), TIMEOUT - Duration::from_secs(2));

        // After a whole frame alone, no frame deadline runs.
        let (mut reader, mut client) = self::reader();
        client.write_all(&prefix(3, 3)).await.unwrap();
        assert!(matches!(reader.next().await, ReadOutcome::Frame(Err(_))));
        assert!(reader.started.is_none());
    }
}
