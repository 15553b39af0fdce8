//! The two ends of `dlock session`: lines read from stdin, answers written to stdout, each by
//! a plain thread of its own.
//!
//! Plain threads, not tokio's blocking pool: a blocking read cannot be interrupted and the
//! runtime waits for its pool on shutdown (the reader simply ends with the process), and a
//! stdout whose reader is slow must hold up neither the lease renewals nor the other locks'
//! answers, only the answers queued behind it.

use std::io::{self, BufRead, Read, Write};

use tokio::sync::{mpsc, oneshot};

use super::answer::Answer;

/// The longest command line accepted, in bytes; a longer one is answered with an error and
/// skipped.
pub const MAX_LINE: usize = 64 * 1024;

/// How many lines the reader may be ahead of the session.
const INPUT_QUEUE: usize = 16;

/// How many answers may wait for stdout before the tasks that send them wait too.
const OUTPUT_QUEUE: usize = 256;

/// What the reader thread saw.
#[derive(Debug)]
pub enum Input {
    /// Line number `n` (from 1), without its line break (and without a `\r` before it).
    Line(u64, Vec<u8>),
    /// Line number `n` was longer than [`MAX_LINE`] bytes; it was skipped.
    TooLong(u64),
}

/// Starts the thread that reads stdin line by line. The channel ends at end of file, and on a
/// read error (logged), as at end of file.
pub fn read_stdin() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("dlock-session-in".into())
        .spawn(move || read_lines(io::stdin().lock(), &tx));
    if let Err(e) = spawned {
        // Without a reader the channel is closed at once: the session ends as at end of file.
        tracing::warn!(error = %e, "cannot read stdin");
    }
    rx
}

/// Sends the lines of `input` to `tx` until end of file, a read error, or a receiver that is
/// gone.
fn read_lines(mut input: impl BufRead, tx: &mpsc::Sender<Input>) {
    let mut n = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        n += 1;
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        match (&mut input).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin");
                return;
            }
        }
        let ended = buf.last() == Some(&b'\n');
        if ended {
            buf.pop();
        }
        let item = if buf.len() > MAX_LINE {
            // Skip the rest of the line.
            if !ended && !skip_line(&mut input) {
                let _ = tx.blocking_send(Input::TooLong(n));
                return;
            }
            Input::TooLong(n)
        } else {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            Input::Line(n, buf.clone())
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

/// Reads up to and including the next line break; `false` at end of file or on an error.
fn skip_line(input: &mut impl BufRead) -> bool {
    loop {
        let (done, used) = match input.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buf) => match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            },
        };
        input.consume(used);
        if done {
            return true;
        }
    }
}

/// Where answers go: a queue to the thread that writes them to stdout, flushing after each.
#[derive(Clone, Debug)]
pub struct Out {
    tx: mpsc::Sender<String>,
}

/// The writer thread, to wait for at the end.
#[derive(Debug)]
pub struct Writer {
    done: oneshot::Receiver<io::Result<()>>,
}

impl Out {
    /// Starts the thread that writes answers to stdout. It stops at the first failed write
    /// (the error is [`Writer::finish`]'s), and [`Out::closed`] completes.
    pub fn start() -> io::Result<(Out, Writer)> {
        let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("dlock-session-out".into())
            .spawn(move || {
                let result = write_lines(rx, io::stdout().lock());
                let _ = done_tx.send(result);
            })?;
        Ok((Out { tx }, Writer { done }))
    }

    /// Queues an answer; waits while the queue is full. Dropped when stdout has failed.
    pub async fn send(&self, answer: Answer) {
        let _ = self.tx.send(answer.to_line()).await;
    }

    /// Completes when stdout can no longer be written.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl Writer {
    /// Waits until every answer queued has been written (all [`Out`]s must be dropped first)
    /// and returns the write error that stopped the writer, if any.
    pub async fn finish(self) -> io::Result<()> {
        self.done.await.unwrap_or(Ok(()))
    }
}

/// Writes each line of `rx` and a line break to `out`, flushing after each, until the
/// channel ends or a write fails.
fn write_lines(mut rx: mpsc::Receiver<String>, mut out: impl Write) -> io::Result<()> {
    while let Some(line) = rx.blocking_recv() {
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<Input> {
        let (tx, mut rx) = mpsc::channel(1024);
        read_lines(input, &tx);
        drop(tx);
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            got.push(item);
        }
        got
    }

    fn show(items: &[Input]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Input::Line(n, l) => format!("{n}:{}", String::from_utf8_lossy(l)),
                Input::TooLong(n) => format!("{n}:too long"),
            })
            .collect()
    }

    #[test]
    fn lines_are_numbered_and_lose_their_breaks() {
        let got = lines_of(b"ping a\r\n\nquit");
        assert_eq!(show(&got), ["1:ping a", "2:", "3:quit"]);
    }

    #[test]
    fn an_overlong_line_is_skipped_and_counted() {
        let mut input = b"ping a\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nping b\n");
        input.extend(std::iter::repeat_n(b'y', MAX_LINE));
        input.extend(b"\n");
        input.extend(std::iter::repeat_n(b'z', MAX_LINE + 1));
        let got = show(&lines_of(&input));
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], "1:ping a");
        assert_eq!(got[1], "2:too long");
        assert_eq!(got[2], "3:ping b");
        assert_eq!(
            got[3].len(),
            2 + MAX_LINE,
            "a line of exactly MAX_LINE is kept"
        );
        assert_eq!(got[4], "5:too long");
    }

    #[test]
    fn written_lines_end_with_a_break_and_a_failure_stops_the_writer() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send("{\"a\":1}".to_owned()).unwrap();
        tx.try_send("{}".to_owned()).unwrap();
        drop(tx);
        let mut out = Vec::new();
        write_lines(rx, &mut out).unwrap();
        assert_eq!(out, b"{\"a\":1}\n{}\n");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send("x".to_owned()).unwrap();
        let mut full = [0u8; 1];
        let err = write_lines(rx, &mut full[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
