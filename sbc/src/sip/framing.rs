//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3) and the CRLF
//! keepalives of RFC 5626 §3.5.1.
//!
//! Sans-IO: the transport [`push`](StreamFramer::push)es whatever bytes it
//! read, then drains [`next_frame`](StreamFramer::next_frame) until it returns
//! `Ok(None)` (need more bytes). Frames come out the same however the bytes
//! were chunked.
//!
//! A message whose header section is well delimited but whose content is
//! malformed comes out as [`Frame::Malformed`]: the stream stays in sync, the
//! caller answers it and keeps the connection. A [`FramingError`] means the
//! message boundary itself is lost (no or conflicting Content-Length, a header
//! section or message over the size limit): the caller must close the
//! connection (RFC 4475 §3.1.2.2, §3.3.9); the framer keeps returning it.

use super::error::ParseError;
use super::header;
use super::message::{HeaderLines, Limits, Message, NOT_U32, line_at};
use super::name::HeaderName;
use super::scan::trim_lws;

/// One unit read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A double CRLF keepalive ping; answer with a single CRLF (RFC 5626).
    Ping,
    /// A single CRLF: the pong answering our ping.
    Pong,
    /// A well-formed message.
    Message(Message),
    /// A delimited message that failed to parse: answer per
    /// [`ParseError::response`]; the bytes are kept for building the answer.
    Malformed {
        /// Why it failed.
        error: ParseError,
        /// The message's bytes as framed.
        bytes: Vec<u8>,
    },
}

/// The stream lost message synchronisation; close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// No end of the header section within the size limit.
    #[error("header section exceeds {limit} bytes")]
    HeaderTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// Content-Length announces a message larger than the size limit.
    #[error("message of {size} bytes exceeds {limit} bytes")]
    MessageTooLarge {
        /// Header section plus announced body.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A stream message without Content-Length has no end (§18.3).
    #[error("message without Content-Length on a stream")]
    MissingContentLength,
    /// Content-Length is unparseable, or several disagree.
    #[error("unusable Content-Length: {0}")]
    BadContentLength(&'static str),
}

/// Cuts a byte stream into SIP messages and keepalives.
///
/// Framed bytes are consumed by advancing an offset; the buffer is compacted
/// on the next push, so each byte is copied a bounded number of times however
/// the stream is chunked.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// The first byte not yet framed.
    start: usize,
    /// How far (from `start`) the search for the end of the header section
    /// got, so a message trickling in byte by byte is not rescanned.
    scanned: usize,
    /// The size of the message at `start`, once its header section is known.
    pending: Option<usize>,
    limits: Limits,
    failed: Option<FramingError>,
    /// We sent a ping on this connection and await its single-CRLF pong.
    pong_expected: bool,
}

impl StreamFramer {
    /// A framer with these limits (message size bounds the buffer).
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            pending: None,
            limits,
            failed: None,
            pong_expected: false,
        }
    }

    /// Records that we sent a double-CRLF ping (RFC 5626 §4.4.1): the next
    /// single CRLF is its pong and is delivered at once. Without this, a lone
    /// CRLF is held until the next bytes show whether it starts a ping.
    pub fn ping_sent(&mut self) {
        self.pong_expected = true;
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a message has begun and is not complete: after
    /// [`next_frame`](Self::next_frame) returned `Ok(None)`, some of its bytes
    /// are buffered. Line breaks that may still become a keepalive are not a
    /// message. The transport times a message from its first byte with this.
    pub fn message_started(&self) -> bool {
        // Framing skips stray line breaks before a start line, so whatever
        // is left starts with the message's first byte, or is a CRLF prefix.
        self.buf
            .get(self.start)
            .is_some_and(|b| !matches!(b, b'\r' | b'\n'))
    }

    /// Frees the buffer if nothing is buffered, so an idle connection holds
    /// no bytes (the next [`push`](Self::push) allocates what it needs).
    pub fn release(&mut self) {
        if self.buffered() == 0 {
            self.buf = Vec::new();
            self.start = 0;
            self.scanned = 0;
        }
    }

    /// The next frame, `Ok(None)` when more bytes are needed, or the error
    /// that desynchronised the stream (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        match self.frame() {
            Err(error) => {
                self.failed = Some(error);
                self.buf = Vec::new();
                self.start = 0;
                Err(error)
            }
            ok => ok,
        }
    }

    fn frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Keepalives and stray line breaks before a start line (§7.5).
        loop {
            match &self.buf[self.start..] {
                // A pong we asked for needs no lookahead (RFC 5626 §4.4.1).
                [b'\r', b'\n', ..] if self.pong_expected => {
                    self.pong_expected = false;
                    return Ok(Some(self.consume(2, Frame::Pong)));
                }
                [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Some(self.consume(4, Frame::Ping))),
                // Could still become a ping: wait for the next bytes.
                [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] | [b'\r'] => return Ok(None),
                [b'\r', b'\n', ..] => return Ok(Some(self.consume(2, Frame::Pong))),
                // Stray line-break bytes before a start line (§7.5).
                [b'\n', ..] | [b'\r', b'\r', ..] => self.start += 1,
                [] => return Ok(None),
                _ => break,
            }
        }

        let size = match self.pending {
            Some(size) => size,
            None => {
                let Some(header_end) = self.find_header_end() else {
                    if self.buffered() > self.limits.max_message_bytes {
                        return Err(FramingError::HeaderTooLarge {
                            limit: self.limits.max_message_bytes,
                        });
                    }
                    return Ok(None);
                };
                let head = &self.buf[self.start..self.start + header_end];
                let size = header_end.saturating_add(content_length(head)?);
                if size > self.limits.max_message_bytes {
                    return Err(FramingError::MessageTooLarge {
                        size,
                        limit: self.limits.max_message_bytes,
                    });
                }
                self.pending = Some(size);
                size
            }
        };
        if self.buffered() < size {
            return Ok(None);
        }
        let at = self.start;
        self.start += size;
        self.scanned = 0;
        self.pending = None;
        let bytes = self.buf[at..at + size].to_vec();
        Ok(Some(match Message::parse_framed(bytes, &self.limits) {
            Ok(message) => Frame::Message(message),
            Err(error) => Frame::Malformed {
                error,
                // Still in the buffer until the next push compacts it.
                bytes: self.buf[at..at + size].to_vec(),
            },
        }))
    }

    fn consume(&mut self, len: usize, frame: Frame) -> Frame {
        self.start += len;
        self.scanned = 0;
        frame
    }

    /// The length (from `start`) of the header section including the empty
    /// line that closes it.
    fn find_header_end(&mut self) -> Option<usize> {
        let buf = &self.buf[self.start..];
        // Resume two bytes back so a terminator split across pushes is seen.
        let mut i = self.scanned.saturating_sub(2);
        while let Some(lf) = memchr::memchr(b'\n', &buf[i..]) {
            let after = i + lf + 1;
            match buf.get(after..) {
                Some([b'\n', ..]) => return Some(after + 1),
                Some([b'\r', b'\n', ..]) => return Some(after + 2),
                _ => i = after,
            }
        }
        self.scanned = buf.len();
        None
    }
}

/// The Content-Length of a header section, which must be present and agree
/// with itself; the message parser re-validates everything else. Lines are
/// split exactly as the parser splits them (folding included).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let Some((_, after_start_line)) = line_at(head, 0) else {
        return Err(FramingError::MissingContentLength);
    };
    let mut found: Option<u32> = None;
    for line in HeaderLines::new(head, after_start_line).filter_map(Result::ok) {
        if line.name != HeaderName::ContentLength {
            continue;
        }
        let value = trim_lws(&head[line.value.range()]);
        let length = header::parse_u32(value, NOT_U32)
            .map_err(|_| FramingError::BadContentLength("not a number"))?;
        if found.is_some_and(|prev| prev != length) {
            return Err(FramingError::BadContentLength("conflicting values"));
        }
        found = Some(length);
    }
    found
        .map(|length| length as usize)
        .ok_or(FramingError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 63104 OPTIONS\r\n\
Content-Length: 4\r\n\
\r\n\
abcd";

    fn drain(framer: &mut StreamFramer) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = framer.next_frame().expect("stream stays in sync") {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn frames_are_the_same_however_the_stream_is_chunked() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(OPTIONS);
        let mut whole = StreamFramer::new(Limits::default());
        whole.push(&stream);
        let expected = drain(&mut whole);
        assert_eq!(expected.len(), 4, "{expected:?}");
        assert_eq!(expected[0], Frame::Ping);
        assert_eq!(expected[2], Frame::Pong);
        for chunk in [1, 2, 3, 7, 64] {
            let mut framer = StreamFramer::new(Limits::default());
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                framer.push(piece);
                frames.extend(drain(&mut framer));
            }
            assert_eq!(frames, expected, "chunk size {chunk}");
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn folded_content_length_frames_like_the_parser_reads_it() {
        let folded =
            String::from_utf8_lossy(OPTIONS).replace("Content-Length: 4", "Content-Length:\r\n 4");
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(folded.as_bytes());
        match framer.next_frame() {
            Ok(Some(Frame::Message(msg))) => assert_eq!(msg.body(), b"abcd"),
            other => panic!("folded Content-Length must frame: {other:?}"),
        }
    }

    #[test]
    fn an_expected_pong_is_delivered_without_lookahead() {
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(b"\r\n");
        assert_eq!(
            framer.next_frame(),
            Ok(None),
            "could be the start of a ping"
        );
        framer.ping_sent();
        assert_eq!(framer.next_frame(), Ok(Some(Frame::Pong)));
        // The next CRLF pair is the peer's own ping again.
        framer.push(b"\r\n\r\n");
        assert_eq!(framer.next_frame(), Ok(Some(Frame::Ping)));
    }

    #[test]
    fn stray_carriage_returns_before_a_message_are_skipped() {
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(b"\r\r\n");
        framer.push(OPTIONS);
        let frames = drain(&mut framer);
        assert!(
            matches!(frames.last(), Some(Frame::Message(_))),
            "{frames:?}"
        );
    }

    #[test]
    fn a_message_has_started_once_a_non_crlf_byte_is_buffered() {
        let mut framer = StreamFramer::new(Limits::default());
        for (bytes, started) in [
            (&b""[..], false),
            (b"\r\n", false),
            (b"\r\n\r\n", false),
            (b"\r\nOPT", true),
            (b"IONS sip:bob", true),
        ] {
            framer.push(bytes);
            while let Ok(Some(_)) = framer.next_frame() {}
            assert_eq!(framer.message_started(), started, "after {bytes:?}");
        }
        framer.push(&OPTIONS[15..]);
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
        assert!(matches!(framer.next_frame(), Ok(None)));
        assert!(!framer.message_started());
        framer.release();
        assert_eq!((framer.buffered(), framer.buf.capacity()), (0, 0));
        // Releasing with bytes buffered keeps them.
        framer.push(b"OPTIONS");
        framer.release();
        assert_eq!(framer.buffered(), 7);
    }

    #[test]
    fn partial_message_needs_more() {
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(&OPTIONS[..OPTIONS.len() - 1]);
        assert_eq!(framer.next_frame(), Ok(None));
        framer.push(&OPTIONS[OPTIONS.len() - 1..]);
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn malformed_but_delimited_message_keeps_the_stream() {
        let bad =
            String::from_utf8_lossy(OPTIONS).replace("CSeq: 63104 OPTIONS", "CSeq: 63104 INVITE");
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(bad.as_bytes());
        framer.push(OPTIONS);
        assert!(matches!(
            framer.next_frame(),
            Ok(Some(Frame::Malformed { .. }))
        ));
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn lost_boundaries_are_fatal_and_sticky() {
        let no_length = String::from_utf8_lossy(OPTIONS).replace("Content-Length: 4\r\n", "");
        let conflicting = String::from_utf8_lossy(OPTIONS)
            .replace("Content-Length: 4\r\n", "Content-Length: 4\r\nl: 5\r\n");
        for (input, expected) in [
            (no_length, FramingError::MissingContentLength),
            (
                conflicting,
                FramingError::BadContentLength("conflicting values"),
            ),
        ] {
            let mut framer = StreamFramer::new(Limits::default());
            framer.push(input.as_bytes());
            assert_eq!(framer.next_frame(), Err(expected));
            framer.push(OPTIONS);
            assert_eq!(framer.next_frame(), Err(expected));
        }
    }

    #[test]
    fn garbage_without_end_is_bounded() {
        let limits = Limits {
            max_message_bytes: 1024,
            ..Limits::default()
        };
        let mut framer = StreamFramer::new(limits);
        for _ in 0..100 {
            framer.push(b"garbage without any line break ");
        }
        assert_eq!(
            framer.next_frame(),
            Err(FramingError::HeaderTooLarge { limit: 1024 })
        );
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn huge_content_length_is_refused_before_buffering() {
        let huge = String::from_utf8_lossy(OPTIONS)
            .replace("Content-Length: 4", "Content-Length: 4000000");
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(huge.as_bytes());
        assert!(matches!(
            framer.next_frame(),
            Err(FramingError::MessageTooLarge { .. })
        ));
    }
}
