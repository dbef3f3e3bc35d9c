//! Tones, Opus encoding/decoding and tone detection for media tests.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};

pub const RATE: u32 = 48_000;
pub const FRAME: usize = 960; // 20 ms at 48 kHz

/// Encodes a continuous sine of `freq` Hz into 20 ms Opus packets (48 kHz mono).
pub struct ToneSource {
    enc: Encoder,
    freq: f64,
    n: u64,
}

impl ToneSource {
    pub fn new(freq: f64) -> ToneSource {
        let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).unwrap();
        enc.set_bitrate(audiopus::Bitrate::BitsPerSecond(32_000))
            .unwrap();
        ToneSource { enc, freq, n: 0 }
    }

    pub fn next_packet(&mut self) -> Vec<u8> {
        let pcm: Vec<i16> = (0..FRAME)
            .map(|i| {
                let t = (self.n + i as u64) as f64 / RATE as f64;
                (0.4 * i16::MAX as f64 * (2.0 * std::f64::consts::PI * self.freq * t).sin()) as i16
            })
            .collect();
        self.n += FRAME as u64;
        let mut out = vec![0u8; 1500];
        let len = self.enc.encode(&pcm, &mut out).unwrap();
        out.truncate(len);
        out
    }
}

/// Decodes Opus packets to 48 kHz mono PCM.
pub struct Sink {
    dec: Decoder,
    pub pcm: Vec<i16>,
    pub packets: usize,
}

impl Sink {
    pub fn new() -> Sink {
        Sink {
            dec: Decoder::new(SampleRate::Hz48000, Channels::Mono).unwrap(),
            pcm: Vec::new(),
            packets: 0,
        }
    }

    pub fn push(&mut self, packet: &[u8]) {
        let mut buf = vec![0i16; 5760];
        let packet = audiopus::packet::Packet::try_from(packet).unwrap();
        let out = audiopus::MutSignals::try_from(&mut buf[..]).unwrap();
        let n = self.dec.decode(Some(packet), out, false).unwrap();
        self.pcm.extend_from_slice(&buf[..n]);
        self.packets += 1;
    }
}

/// Goertzel power of `freq` in `x`, normalised so a sine of amplitude A gives A²/2.
pub fn tone_power(x: &[f64], freq: f64, rate: f64) -> f64 {
    let n = x.len() as f64;
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let mag2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * mag2 / (n * n)
}

/// SNR in dB of the tone at `freq` against everything else in `pcm`,
/// skipping the first `skip` samples (codec warm-up).
pub fn tone_snr_db(pcm: &[i16], freq: f64, rate: f64, skip: usize) -> f64 {
    let x: Vec<f64> = pcm.iter().skip(skip).map(|&v| v as f64).collect();
    assert!(
        x.len() > rate as usize / 10,
        "too little audio: {} samples",
        x.len()
    );
    let total = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let signal = tone_power(&x, freq, rate);
    let noise = (total - signal).max(total * 1e-9);
    10.0 * (signal / noise).log10()
}
