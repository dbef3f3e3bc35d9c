//! Helpers for the unit tests only.

/// A small deterministic generator (xorshift64) for hostile-input tests:
/// the same seed gives the same inputs on every run.
pub(crate) struct Xorshift(pub u64);

impl Xorshift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `base` with up to `max_edits` random edits: a byte replaced, a byte
    /// removed, or one of `inserts` (delimiters of the format) inserted.
    pub(crate) fn mutate(&mut self, base: &[u8], max_edits: u64, inserts: &[u8]) -> Vec<u8> {
        let mut m = base.to_vec();
        for _ in 0..self.next() % (max_edits + 1) {
            if m.is_empty() {
                break;
            }
            let x = self.next();
            let i = (x % m.len() as u64) as usize;
            match x % 3 {
                0 => m[i] = (x >> 8) as u8,
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, inserts[(x % inserts.len() as u64) as usize]),
            }
        }
        m
    }
}

/// A Wati error for the call state machines' tests.
pub(crate) fn wati_err(what: &str) -> crate::wati::WatiError {
    crate::wati::WatiError::Http {
        op: crate::wati::WatiOp::Accept,
        status: 500,
        body: what.to_string(),
    }
}

/// A relay that could not start, for the call state machines' tests.
pub(crate) fn relay_err() -> crate::call::media_path::RelayError {
    crate::call::media_path::RelayError::Transcode(crate::media::transcode::TranscodeError::Opus(
        "x".into(),
    ))
}
