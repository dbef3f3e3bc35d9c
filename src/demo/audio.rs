//! Tones, Opus encoding/decoding and tone detection, for the demo and tests.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};

use super::DemoError;

pub const RATE: u32 = 48_000;
pub const FRAME: usize = 960; // 20 ms at 48 kHz

/// Encodes a continuous sine of `freq` Hz into 20 ms Opus packets (48 kHz mono).
pub struct ToneSource {
    enc: Encoder,
    freq: f64,
    n: u64,
    /// The encoder's input rate.
    rate: u32,
}

impl ToneSource {
    /// 48 kHz input, 32 kb/s: the encoder may use any bandwidth up to fullband.
    pub fn new(freq: f64) -> Result<ToneSource, DemoError> {
        Self::encoding(freq, SampleRate::Hz48000, 32_000)
    }

    /// What WhatsApp's offers announce it sends (`sprop-maxcapturerate=16000;
    /// maxaveragebitrate=20000`): 16 kHz input, 20 kb/s, so SILK wideband.
    /// (Measured: no cheaper for the bridge to decode than [`ToneSource::new`]'s
    /// packets, 12.4 µs per frame either way; it is what WhatsApp sends.)
    pub fn like_whatsapp(freq: f64) -> Result<ToneSource, DemoError> {
        Self::encoding(freq, SampleRate::Hz16000, 20_000)
    }

    fn encoding(freq: f64, rate: SampleRate, bitrate: i32) -> Result<ToneSource, DemoError> {
        let mut enc = Encoder::new(rate, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(audiopus::Bitrate::BitsPerSecond(bitrate))?;
        Ok(ToneSource {
            enc,
            freq,
            n: 0,
            rate: rate as u32,
        })
    }

    pub fn next_packet(&mut self) -> Result<Vec<u8>, DemoError> {
        let frame = (self.rate / 50) as usize;
        let pcm = sine(self.freq, self.rate, self.n, frame);
        self.n += frame as u64;
        let mut out = vec![0u8; 1500];
        let len = self.enc.encode(&pcm, &mut out)?;
        out.truncate(len);
        Ok(out)
    }
}

/// `len` samples of a sine at `freq` Hz, amplitude 0.4 of full scale, from sample `offset`.
pub fn sine(freq: f64, rate: u32, offset: u64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| {
            let t = (offset + i as u64) as f64 / rate as f64;
            (0.4 * i16::MAX as f64 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

/// Decodes Opus packets to 48 kHz mono PCM.
pub struct Sink {
    dec: Decoder,
    pub pcm: Vec<i16>,
    pub packets: usize,
}

impl Sink {
    pub fn new() -> Result<Sink, DemoError> {
        Ok(Sink {
            dec: Decoder::new(SampleRate::Hz48000, Channels::Mono)?,
            pcm: Vec::new(),
            packets: 0,
        })
    }

    pub fn push(&mut self, packet: &[u8]) -> Result<(), DemoError> {
        let mut buf = vec![0i16; 5760];
        let packet = audiopus::packet::Packet::try_from(packet)?;
        let out = audiopus::MutSignals::try_from(&mut buf[..])?;
        let n = self.dec.decode(Some(packet), out, false)?;
        self.pcm.extend_from_slice(&buf[..n]);
        self.packets += 1;
        Ok(())
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

/// SNR in dB of the tone at `freq` against everything else in `pcm`, skipping
/// the first `skip` samples (codec warm-up). Too little audio measures -100 dB.
pub fn tone_snr_db(pcm: &[i16], freq: f64, rate: f64, skip: usize) -> f64 {
    let x: Vec<f64> = pcm.iter().skip(skip).map(|&v| v as f64).collect();
    if x.len() < rate as usize / 10 {
        return -100.0;
    }
    let total = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let signal = tone_power(&x, freq, rate);
    let noise = (total - signal).max(total * 1e-9).max(1e-9);
    10.0 * (signal.max(1e-12) / noise).log10()
}
