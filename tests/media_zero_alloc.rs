//! The per-packet relay path allocates nothing: a counting global allocator
//! watches Opus passthrough both ways, G.711 transcoding both ways and DTMF
//! mapping once the relay is warmed up.

use std::time::{Duration, Instant};

use wa_sip_bridge::dtmf::TelephoneEvent;
use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::relay::{Relay, RelayConfig, SipCodec, ToWhatsApp};
use wa_sip_bridge::media::rtp::write_header;
use wa_sip_bridge::media::transcode::OpusEncoderSettings;

#[path = "counting_alloc/mod.rs"]
mod counting_alloc;
use counting_alloc::counted;

/// A sink that stores nothing (so it cannot allocate).
struct Discard(u64);
impl ToWhatsApp for Discard {
    fn audio(&mut self, _: Instant, opus: &[u8], samples: u32) {
        self.0 += opus.len() as u64 + samples as u64;
    }
    fn gap(&mut self, samples: u32) {
        self.0 += samples as u64;
    }
    fn key(&mut self, _: char, d: Duration) {
        self.0 += d.as_millis() as u64;
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

/// Runs `n` packets each way through `r` and returns the allocations made.
fn allocations(r: &mut Relay, codec: SipCodec, opus: &[u8], n: u32) -> u64 {
    let t0 = Instant::now();
    let mut sink = Discard(0);
    let mut sent = 0u64;
    let mut sip_pkt = [0u8; 1500];
    let (pt, sip_payload): (u8, Vec<u8>) = match codec {
        SipCodec::Opus { pt } => (pt, opus.to_vec()),
        SipCodec::G711 { law, pt, .. } => (pt, vec![law.encode(1000); 160]),
    };
    let te = TelephoneEvent {
        event: 5,
        end: false,
        volume: 10,
        duration: 160,
    }
    .to_bytes();
    let mut run = |r: &mut Relay, range: std::ops::Range<u32>| {
        for k in range {
            let now = t0 + Duration::from_millis(20 * k as u64);
            r.from_whatsapp_audio(now, 9, k as u16, k * 960, false, opus, &mut |d| {
                sent += d.len() as u64
            });
            write_header(
                &mut sip_pkt,
                pt,
                false,
                k as u16,
                k * if pt == 0 || pt == 8 { 160 } else { 960 },
                3,
            );
            sip_pkt[12..12 + sip_payload.len()].copy_from_slice(&sip_payload);
            r.from_sip(now, &sip_pkt[..12 + sip_payload.len()], &mut sink)
                .unwrap();
            if k % 10 == 0 {
                r.from_whatsapp_event(now, 9, k as u16, k * 960, &te, &mut |d| {
                    sent += d.len() as u64
                });
            }
        }
    };
    run(r, 0..50); // warm-up
    let ((), allocs) = counted(|| run(r, 50..50 + n));
    assert!(sent > 0 && sink.0 > 0);
    allocs
}

#[test]
fn the_per_packet_path_does_not_allocate() {
    // A real Opus packet (20 ms CELT) to relay.
    let enc = audiopus::coder::Encoder::new(
        audiopus::SampleRate::Hz48000,
        audiopus::Channels::Mono,
        audiopus::Application::Voip,
    )
    .unwrap();
    let pcm: Vec<i16> = (0..960)
        .map(|i| ((i as f64 * 0.13).sin() * 8000.0) as i16)
        .collect();
    let mut buf = [0u8; 400];
    let len = enc.encode(&pcm, &mut buf).unwrap();
    let opus = buf[..len].to_vec();

    for codec in [
        SipCodec::Opus { pt: 107 },
        SipCodec::G711 {
            law: Law::Mu,
            pt: 0,
            ptime_ms: 20,
        },
        SipCodec::G711 {
            law: Law::A,
            pt: 8,
            ptime_ms: 30,
        },
    ] {
        let mut r = relay(codec);
        let n = allocations(&mut r, codec, &opus, 1000);
        assert_eq!(n, 0, "{codec:?}: {n} allocations in 1000 packets each way");
    }

    // Recorded calls too: the tap copies each payload into the recording
    // queue's preallocated slots.
    let dir = tempfile::tempdir().unwrap();
    let recorder = wa_sip_bridge::recording::Recorder::start(
        &wa_sip_bridge::config::RecordingSettings {
            dir: dir.path().to_path_buf(),
            format: wa_sip_bridge::config::RecordingFormat::Wav,
            retention: None,
        },
        100,
    )
    .unwrap();
    for codec in [
        SipCodec::Opus { pt: 107 },
        SipCodec::G711 {
            law: Law::Mu,
            pt: 0,
            ptime_ms: 20,
        },
    ] {
        let mut r = relay(codec);
        r.set_tap(recorder.open(format!("{}", codec.clock()), 8000).unwrap());
        let n = allocations(&mut r, codec, &opus, 1000);
        assert_eq!(n, 0, "recorded {codec:?}: {n} allocations");
    }
}

/// SRTP (SDES, libsrtp2) on a packet each way allocates nothing either,
/// for every suite, once the sessions exist (the socket protects into and
/// unprotects in fixed buffers).
#[test]
fn srtp_protect_and_unprotect_do_not_allocate() {
    use wa_sip_bridge::media::srtp::{SrtpSession, Suite, MAX_TRAILER};
    for suite in Suite::ALL {
        let key = vec![0x5a; suite.key_len()];
        let mut tx = SrtpSession::new(suite, &key, true).unwrap();
        let mut rx = SrtpSession::new(suite, &key, false).unwrap();
        let mut buf = [0u8; 172 + MAX_TRAILER];
        let mut wire = [0u8; 172 + MAX_TRAILER];
        let mut one = |seq: u16, buf: &mut [u8], wire: &mut [u8]| {
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
            let n = tx.protect(buf, 172).unwrap();
            wire[..n].copy_from_slice(&buf[..n]);
            assert_eq!(rx.unprotect(&mut wire[..n]).unwrap(), 172);
        };
        // Warm up (libsrtp2 creates its stream on the first packet).
        for seq in 0..10 {
            one(seq, &mut buf, &mut wire);
        }
        let ((), n) = counted(|| {
            for seq in 10..1010 {
                one(seq, &mut buf, &mut wire);
            }
        });
        assert_eq!(n, 0, "{suite:?}: {n} allocations in 1000 packets");
    }
}
