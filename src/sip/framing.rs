//! Finding SIP messages in a TCP byte stream (RFC 3261 §18.3): the header
//! block ends at the first empty line and the body is `Content-Length` bytes
//! (mandatory over stream transports). Handles partial reads, several
//! messages in one segment, CRLF keep-alives (RFC 5626 §4.4.1) and a maximum
//! message size, so a peer cannot make us buffer without bound.

/// Largest SIP message accepted over TCP.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FrameError {
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("missing or invalid Content-Length on a stream transport")]
    BadContentLength,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Message(Vec<u8>),
    /// A double-CRLF ping: answer with a single CRLF pong.
    Ping,
}

#[derive(Debug, Default)]
pub(crate) struct StreamFramer {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no end of headers: the next
    /// search starts just before it. Without it a peer trickling a large
    /// header a byte at a time made every read rescan the whole buffer
    /// (quadratic: ~2·10⁹ comparisons for 64 KiB; found by fuzzing).
    scanned: usize,
    /// The length of the frame at the front, once its headers are complete.
    frame_len: Option<usize>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(headers: &[u8]) -> Result<usize, FrameError> {
    let text = std::str::from_utf8(headers).map_err(|_| FrameError::BadContentLength)?;
    let mut found = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| FrameError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FrameError::BadContentLength);
            }
            found = Some(n);
        }
    }
    found.ok_or(FrameError::BadContentLength)
}

impl StreamFramer {
    pub(crate) fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// Adds bytes read from the connection.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if self.buf.len() + data.len() > 2 * MAX_MESSAGE {
            return Err(FrameError::TooLarge);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete frame, if the buffer holds one. An error means the
    /// stream cannot be resynchronised: close the connection.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let total = match self.frame_len {
            Some(total) => total,
            None => {
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.buf.drain(..4);
                    self.scanned = 0;
                    return Ok(Some(Frame::Ping));
                }
                // Stray CRLFs before a start line are ignored (RFC 3261 §7.5).
                let skip = self
                    .buf
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if skip > 0 && skip < self.buf.len() {
                    self.buf.drain(..skip);
                    self.scanned = self.scanned.saturating_sub(skip);
                } else if skip == self.buf.len() {
                    // Only CRLFs so far: maybe the start of a ping.
                    return Ok(None);
                }
                let from = self.scanned.saturating_sub(3);
                let Some(end) = find(&self.buf[from..], b"\r\n\r\n").map(|i| from + i) else {
                    if self.buf.len() > MAX_MESSAGE {
                        return Err(FrameError::TooLarge);
                    }
                    self.scanned = self.buf.len();
                    return Ok(None);
                };
                let body = content_length(&self.buf[..end])?;
                // A Content-Length up to usize::MAX parses (found by fuzzing:
                // the sum overflowed).
                let total = match (end + 4).checked_add(body) {
                    Some(t) if t <= MAX_MESSAGE => t,
                    _ => return Err(FrameError::TooLarge),
                };
                self.frame_len = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.frame_len = None;
        Ok(Some(Frame::Message(msg)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:bridge SIP/2.0\r\nVia: SIP/2.0/TCP pbx;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
    const WITH_BODY: &[u8] = b"MESSAGE sip:b SIP/2.0\r\nl: 5\r\n\r\nhello";

    /// Found by `sip_stream`: a Content-Length of usize::MAX overflowed
    /// the frame's length (a panic in a debug build, a wrapped length in
    /// release); it is too large, and the connection is closed.
    #[test]
    fn a_content_length_near_usize_max_is_too_large() {
        for n in [u64::MAX, u64::MAX - 3, (MAX_MESSAGE as u64) + 1] {
            let mut f = StreamFramer::new();
            let msg = format!("OPTIONS sip:b SIP/2.0\r\nContent-Length: {n}\r\n\r\n");
            f.push(msg.as_bytes()).unwrap();
            assert!(matches!(f.next_frame(), Err(FrameError::TooLarge)), "{n}");
        }
    }

    #[test]
    fn partial_reads_and_several_messages_per_segment() {
        let mut stream = Vec::new();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(WITH_BODY);
        stream.extend_from_slice(OPTIONS);
        // In 7-byte reads, byte by byte (the search resumes where it
        // stopped), and in two reads split inside the end of headers.
        let split = OPTIONS.len() + 4 + WITH_BODY.len() - 10;
        let (a, b) = stream.split_at(split);
        for chunks in [
            stream.chunks(7).collect::<Vec<_>>(),
            stream.chunks(1).collect(),
            vec![a, b],
        ] {
            let mut f = StreamFramer::new();
            let mut frames = Vec::new();
            for chunk in chunks {
                f.push(chunk).unwrap();
                while let Some(fr) = f.next_frame().unwrap() {
                    frames.push(fr);
                }
            }
            assert_eq!(
                frames,
                vec![
                    Frame::Message(OPTIONS.to_vec()),
                    Frame::Ping,
                    Frame::Message(WITH_BODY.to_vec()),
                    Frame::Message(OPTIONS.to_vec())
                ]
            );
        }
    }

    #[test]
    fn missing_or_bad_content_length_is_an_error() {
        let mut f = StreamFramer::new();
        f.push(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n").unwrap();
        assert_eq!(f.next_frame(), Err(FrameError::BadContentLength));
        let mut f = StreamFramer::new();
        f.push(b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n")
            .unwrap();
        assert_eq!(f.next_frame(), Err(FrameError::BadContentLength));
        let mut f = StreamFramer::new();
        f.push(b"INVITE sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab")
            .unwrap();
        assert_eq!(f.next_frame(), Err(FrameError::BadContentLength));
    }

    #[test]
    fn memory_is_bounded() {
        let mut f = StreamFramer::new();
        let junk = vec![b'a'; 4096];
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = f.push(&junk).and_then(|_| f.next_frame().map(|_| ())) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(FrameError::TooLarge));
        let mut f = StreamFramer::new();
        f.push(b"MESSAGE sip:b SIP/2.0\r\nContent-Length: 999999\r\n\r\n")
            .unwrap();
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge));
    }
}
