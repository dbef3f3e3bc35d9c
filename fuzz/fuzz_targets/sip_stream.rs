//! Bytes from a TCP or TLS connection, in arbitrary chunks → the stream
//! framer (Content-Length framing, CRLF keep-alive pings, size limits).
//! Oracle: no panic, bounded memory; the same bytes give the same number of
//! frames however they are chunked (when neither run fails).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::fuzzing::frame_stream;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let whole = frame_stream([rest]);
    let at = (split as usize).min(rest.len());
    let (a, b) = rest.split_at(at);
    let chunked = frame_stream([a, b]);
    let bytewise = frame_stream(rest.chunks(1));
    if let (Ok(w), Ok(c), Ok(b)) = (&whole, &chunked, &bytewise) {
        assert_eq!(w, c, "chunking changed the framing");
        assert_eq!(w, b, "byte-by-byte changed the framing");
    }
});
