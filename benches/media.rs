//! Per-packet cost of the media relay: Opus passthrough (header rewrite),
//! one 20 ms frame transcoded each way, and DTMF event mapping.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use wa_sip_bridge::dtmf::TelephoneEvent;
use wa_sip_bridge::media::dtmf_map::EventMapper;
use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::relay::{Relay, RelayConfig, SipCodec, ToWhatsApp};
use wa_sip_bridge::media::rtp::write_header;
use wa_sip_bridge::media::transcode::OpusEncoderSettings;

struct Discard;
impl ToWhatsApp for Discard {
    fn audio(&mut self, _: Instant, opus: &[u8], s: u32) {
        black_box((opus, s));
    }
    fn gap(&mut self, s: u32) {
        black_box(s);
    }
    fn key(&mut self, d: char, t: Duration) {
        black_box((d, t));
    }
}

fn relay(codec: SipCodec) -> Relay {
    Relay::new(
        RelayConfig {
            sip_codec: codec,
            sip_te: Some((101, 8000)),
            wa_te_clock: 8000,
            rtp_timeout: Duration::from_secs(30),
            opus: OpusEncoderSettings::default(),
            ssrc: 1,
            first_seq: 0,
            first_ts: 0,
        },
        Instant::now(),
    )
    .unwrap()
}

fn opus_frame(rate: audiopus::SampleRate, samples: usize) -> Vec<u8> {
    let enc =
        audiopus::coder::Encoder::new(rate, audiopus::Channels::Mono, audiopus::Application::Voip)
            .unwrap();
    let pcm: Vec<i16> = (0..samples)
        .map(|i| ((i as f64 * 0.13).sin() * 8000.0) as i16)
        .collect();
    let mut buf = [0u8; 400];
    let n = enc.encode(&pcm, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn bench(c: &mut Criterion) {
    let opus = opus_frame(audiopus::SampleRate::Hz48000, 960);
    let t0 = Instant::now();

    c.bench_function("media/passthrough_whatsapp_to_pbx", |b| {
        let mut r = relay(SipCodec::Opus { pt: 107 });
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            r.from_whatsapp_audio(
                t0,
                9,
                k as u16,
                k.wrapping_mul(960),
                false,
                black_box(&opus),
                &mut |d| {
                    black_box(d);
                },
            );
        })
    });

    c.bench_function("media/passthrough_pbx_to_whatsapp", |b| {
        let mut r = relay(SipCodec::Opus { pt: 107 });
        let mut pkt = vec![0u8; 12 + opus.len()];
        pkt[12..].copy_from_slice(&opus);
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            write_header(&mut pkt, 107, false, k as u16, k.wrapping_mul(960), 3);
            r.from_sip(t0, black_box(&pkt), &mut Discard).unwrap();
        })
    });

    c.bench_function("media/opus_to_pcmu_20ms", |b| {
        let mut r = relay(SipCodec::G711 {
            law: Law::Mu,
            pt: 0,
            ptime_ms: 20,
        });
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            r.from_whatsapp_audio(
                t0,
                9,
                k as u16,
                k.wrapping_mul(960),
                false,
                black_box(&opus),
                &mut |d| {
                    black_box(d);
                },
            );
        })
    });

    c.bench_function("media/pcmu_to_opus_20ms", |b| {
        let mut r = relay(SipCodec::G711 {
            law: Law::Mu,
            pt: 0,
            ptime_ms: 20,
        });
        let mut pkt = [0u8; 172];
        for (i, b) in pkt[12..].iter_mut().enumerate() {
            *b = Law::Mu.encode(((i as f64 * 0.3).sin() * 8000.0) as i16);
        }
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            write_header(&mut pkt, 0, false, k as u16, k.wrapping_mul(160), 3);
            r.from_sip(t0, black_box(&pkt), &mut Discard).unwrap();
        })
    });

    c.bench_function("media/dtmf_map_packet", |b| {
        let mut m = EventMapper::new(8000, 48000);
        let p = TelephoneEvent {
            event: 5,
            end: false,
            volume: 10,
            duration: 480,
        }
        .to_bytes();
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            black_box(m.map(k / 8, black_box(&p), k));
        })
    });
}

/// SRTP's cost per packet toward the PBX (a 20 ms PCMU packet, 172 bytes):
/// protect and unprotect, per suite; the README compares it with plain RTP.
fn srtp(c: &mut Criterion) {
    use wa_sip_bridge::media::srtp::{SrtpSession, Suite, MAX_TRAILER};
    for suite in Suite::ALL {
        let key = vec![0x5a; suite.key_len()];
        let mut tx = SrtpSession::new(suite, &key, true).unwrap();
        let mut rx = SrtpSession::new(suite, &key, false).unwrap();
        let mut buf = [0u8; 172 + MAX_TRAILER];
        let mut wire = [0u8; 172 + MAX_TRAILER];
        let mut seq = 0u16;
        c.bench_function(&format!("srtp/protect_unprotect_{}", suite.name()), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf[..12].copy_from_slice(&[
                    0x80,
                    0,
                    (seq >> 8) as u8,
                    seq as u8,
                    0,
                    0,
                    0,
                    0,
                    9,
                    9,
                    9,
                    9,
                ]);
                let n = tx.protect(&mut buf, 172).unwrap();
                wire[..n].copy_from_slice(&buf[..n]);
                rx.unprotect(&mut wire[..n]).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench, srtp);
criterion_main!(benches);
