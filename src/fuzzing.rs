//! What the fuzz targets (`fuzz/`, cargo-fuzz) reach that the public API
//! does not: thin wrappers over crate-private parsers of outside input.
//! Compiled only with the `fuzzing` feature; nothing else uses it.

use crate::wati::{WebhookEvent, WebhookKind};

/// A Wati webhook body of `kind` → its typed event, or the error text the
/// HTTP 400 would carry (which must name a field).
pub fn parse_webhook(kind: WebhookKind, body: &[u8]) -> Result<WebhookEvent, String> {
    crate::wati::payload::parse(kind, body).map_err(|e| format!("{}: {}", e.field, e.message))
}

/// SIP over a byte stream (TCP, TLS): `chunks` pushed in turn into one
/// framer, each complete message taken out. Returns the frames taken, or
/// the framing error that closes the connection.
pub fn frame_stream<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<usize, String> {
    let mut framer = crate::sip::framing::StreamFramer::new();
    let mut frames = 0;
    for chunk in chunks {
        framer.push(chunk).map_err(|e| e.to_string())?;
        while framer.next_frame().map_err(|e| e.to_string())?.is_some() {
            frames += 1;
        }
    }
    Ok(frames)
}
