//! A zero-copy view of an RTP packet (RFC 3550 §5.1) and in-place header
//! writing, for the per-packet path.
//!
//! The `rtp` crate's `Packet::unmarshal` copies the payload into `Bytes` and
//! the CSRC list and extensions into `Vec`s: an allocation per packet on the
//! hottest path. This view borrows the datagram instead and validates every
//! length field against the buffer, so a lying packet is an error, not a panic.
//! The `rtp` crate is kept as the reference in a differential test.

/// Fixed RTP header length (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    #[error("shorter than an RTP header")]
    TooShort,
    #[error("RTP version is not 2")]
    BadVersion,
    #[error("CSRC list runs past the end")]
    CsrcPastEnd,
    #[error("header extension runs past the end")]
    ExtensionPastEnd,
    #[error("padding length is 0 or larger than the payload")]
    BadPadding,
    #[error("an RTCP packet on the RTP port")]
    Rtcp,
}

/// A validated RTP packet borrowed from its datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    data: &'a [u8],
    payload_start: usize,
    payload_end: usize,
}

impl<'a> RtpView<'a> {
    pub fn parse(data: &'a [u8]) -> Result<RtpView<'a>, RtpError> {
        if data.len() < HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        if data[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        // RFC 5761 §4: payload types 64-95 (with the marker bit: the second
        // byte 192-223) are RTCP packet types 192-223 on a muxed port.
        if (192..=223).contains(&data[1]) {
            return Err(RtpError::Rtcp);
        }
        let csrc = (data[0] & 0x0f) as usize;
        let mut start = HEADER_LEN + 4 * csrc;
        if data.len() < start {
            return Err(RtpError::CsrcPastEnd);
        }
        if data[0] & 0x10 != 0 {
            if data.len() < start + 4 {
                return Err(RtpError::ExtensionPastEnd);
            }
            let words = u16::from_be_bytes([data[start + 2], data[start + 3]]) as usize;
            start += 4 + 4 * words;
            if data.len() < start {
                return Err(RtpError::ExtensionPastEnd);
            }
        }
        let mut end = data.len();
        if data[0] & 0x20 != 0 {
            let pad = data[end - 1] as usize;
            if pad == 0 || pad > end - start {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(RtpView {
            data,
            payload_start: start,
            payload_end: end,
        })
    }

    pub fn marker(&self) -> bool {
        self.data[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.data[1] & 0x7f
    }
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.data[2], self.data[3]])
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.data[4], self.data[5], self.data[6], self.data[7]])
    }
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.data[8], self.data[9], self.data[10], self.data[11]])
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.data[self.payload_start..self.payload_end]
    }
}

/// Writes a 12-byte RTP header (version 2, no padding, extension or CSRCs)
/// into the start of `buf`, which must hold at least [`HEADER_LEN`] bytes.
#[inline]
pub fn write_header(buf: &mut [u8], pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, second: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![
            first, second, 0x12, 0x34, 0, 0, 0x03, 0xc0, 0xde, 0xad, 0xbe, 0xef,
        ];
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn plain_packet() {
        let p = packet(0x80, 0x80 | 111, b"opus");
        let v = RtpView::parse(&p).unwrap();
        assert!(v.marker());
        assert_eq!(
            (v.payload_type(), v.sequence(), v.timestamp(), v.ssrc()),
            (111, 0x1234, 960, 0xdeadbeef)
        );
        assert_eq!(v.payload(), b"opus");
    }

    #[test]
    fn csrcs_extension_and_padding() {
        // 1 CSRC, extension of 1 word, 2 bytes of padding.
        let mut rest = vec![0, 0, 0, 1, 0xbe, 0xde, 0, 1, 1, 2, 3, 4];
        rest.extend_from_slice(b"pay");
        rest.extend_from_slice(&[0, 2]);
        let p = packet(0x80 | 0x20 | 0x10 | 1, 0, &rest);
        assert_eq!(RtpView::parse(&p).unwrap().payload(), b"pay");
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(RtpView::parse(&[0x80; 11]).unwrap_err(), RtpError::TooShort);
        assert_eq!(
            RtpView::parse(&packet(0x40, 0, b"x")).unwrap_err(),
            RtpError::BadVersion
        );
        assert_eq!(
            RtpView::parse(&packet(0x8f, 0, b"x")).unwrap_err(),
            RtpError::CsrcPastEnd
        );
        assert_eq!(
            RtpView::parse(&packet(0x90, 0, &[0xbe, 0xde])).unwrap_err(),
            RtpError::ExtensionPastEnd
        );
        assert_eq!(
            RtpView::parse(&packet(0x90, 0, &[0xbe, 0xde, 0, 9, 1])).unwrap_err(),
            RtpError::ExtensionPastEnd
        );
        assert_eq!(
            RtpView::parse(&packet(0xa0, 0, &[1, 0])).unwrap_err(),
            RtpError::BadPadding
        );
        assert_eq!(
            RtpView::parse(&packet(0xa0, 0, &[1, 200])).unwrap_err(),
            RtpError::BadPadding
        );
        // An RTCP receiver report (PT 201) on the RTP port.
        assert_eq!(
            RtpView::parse(&packet(0x81, 201, &[0; 20])).unwrap_err(),
            RtpError::Rtcp
        );
    }

    #[test]
    fn write_then_parse() {
        let mut buf = [0u8; 16];
        write_header(&mut buf, 0, true, 65535, u32::MAX, 7);
        buf[12..].copy_from_slice(b"abcd");
        let v = RtpView::parse(&buf).unwrap();
        assert_eq!(
            (
                v.payload_type(),
                v.marker(),
                v.sequence(),
                v.timestamp(),
                v.ssrc()
            ),
            (0, true, 65535, u32::MAX, 7)
        );
        assert_eq!(v.payload(), b"abcd");
    }

    /// Our view agrees with the `rtp` crate on random valid packets, and never
    /// panics on random bytes.
    #[test]
    fn agrees_with_the_rtp_crate() {
        use rtp::packet::Packet;
        use webrtc_util::marshal::Unmarshal;
        let mut rng = crate::test_util::Xorshift(0x9e3779b97f4a7c15);
        let mut next = || rng.next();
        let mut agreed = 0;
        for _ in 0..5000 {
            let len = (next() % 200) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = p.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            if p.len() > 1 && (192..=223).contains(&p[1]) {
                p[1] &= 0x7f;
            }
            let ours = RtpView::parse(&p);
            let theirs = Packet::unmarshal(&mut &p[..]);
            if let (Ok(o), Ok(t)) = (&ours, &theirs) {
                assert_eq!(o.sequence(), t.header.sequence_number);
                assert_eq!(o.timestamp(), t.header.timestamp);
                assert_eq!(o.ssrc(), t.header.ssrc);
                assert_eq!(o.payload_type(), t.header.payload_type);
                assert_eq!(o.marker(), t.header.marker);
                assert_eq!(o.payload(), &t.payload[..]);
                agreed += 1;
            }
        }
        assert!(agreed > 1000, "only {agreed} packets compared");
    }
}
