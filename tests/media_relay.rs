//! The media relay, sans-IO: tones through Opus passthrough and through each
//! transcoding direction (with 0 % and 5 % loss), DTMF both ways across both
//! telephone-event clock rates, SIP INFO, source changes, malformed RTP and
//! media timeouts.

mod support;

use std::time::{Duration, Instant};

use support::audio::{tone_snr_db, ToneSource};
use wa_sip_bridge::dtmf::{digit_of, event_of, TelephoneEvent};
use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::relay::{MediaTimeout, Relay, RelayConfig, SipCodec, ToWhatsApp};
use wa_sip_bridge::media::rtp::{write_header, RtpView};
use wa_sip_bridge::media::transcode::OpusEncoderSettings;

/// SNR thresholds for a detected tone: lossless (Opus at 24-32 kb/s and G.711
/// measure 19-29 dB), and with 5 % random loss concealed (PLC/FEC, or silence
/// fill for G.711 losses: 12-21 dB). A wrong tone, silence or noise measures
/// below 0 dB.
const SNR_CLEAN_DB: f64 = 15.0;
const SNR_LOSSY_DB: f64 = 10.0;

struct Rng(u64);
impl Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < percent
    }
}

#[derive(Default)]
struct WaRecorder {
    /// (payload, samples, samples skipped just before it)
    audio: Vec<(Vec<u8>, u32, u32)>,
    pending_gap: u32,
    keys: Vec<(char, Duration)>,
}
impl WaRecorder {
    /// The packets with the sequence numbers a receiver would see, gaps as missing numbers.
    fn as_stream(&self) -> Vec<(u16, Vec<u8>)> {
        let mut seq = 0u16;
        self.audio
            .iter()
            .map(|(p, _, gap)| {
                seq = seq.wrapping_add(1 + (*gap / 960) as u16);
                (seq, p.clone())
            })
            .collect()
    }
}
impl ToWhatsApp for WaRecorder {
    fn audio(&mut self, _now: Instant, opus: &[u8], samples: u32) {
        self.audio.push((
            opus.to_vec(),
            samples,
            std::mem::take(&mut self.pending_gap),
        ));
    }
    fn gap(&mut self, samples: u32) {
        self.pending_gap += samples;
    }
    fn key(&mut self, digit: char, duration: Duration) {
        self.keys.push((digit, duration));
    }
}

fn config(codec: SipCodec, te: Option<(u8, u32)>) -> RelayConfig {
    RelayConfig {
        sip_codec: codec,
        sip_te: te,
        wa_te_clock: 8000,
        rtp_timeout: Duration::from_secs(30),
        opus: OpusEncoderSettings::default(),
        ssrc: 0x5151_5151,
        first_seq: 40_000,
        first_ts: 1_000_000,
    }
}

const OPUS: SipCodec = SipCodec::Opus { pt: 107 };
const PCMU: SipCodec = SipCodec::G711 {
    law: Law::Mu,
    pt: 0,
    ptime_ms: 20,
};
const PCMA: SipCodec = SipCodec::G711 {
    law: Law::A,
    pt: 8,
    ptime_ms: 20,
};

/// Decodes Opus packets with concealment for missing sequence numbers.
fn decode_opus_stream(packets: &[(u16, Vec<u8>)]) -> Vec<i16> {
    use audiopus::coder::Decoder;
    let mut dec = Decoder::new(audiopus::SampleRate::Hz48000, audiopus::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 5760];
    let mut last: Option<u16> = None;
    for (seq, p) in packets {
        if let Some(l) = last {
            for _ in 1..seq.wrapping_sub(l) {
                let n = dec
                    .decode(None, (&mut buf[..960]).try_into().unwrap(), false)
                    .unwrap();
                pcm.extend_from_slice(&buf[..n]);
            }
        }
        last = Some(*seq);
        let pkt = audiopus::packet::Packet::try_from(&p[..]).unwrap();
        let n = dec
            .decode(Some(pkt), (&mut buf[..]).try_into().unwrap(), false)
            .unwrap();
        pcm.extend_from_slice(&buf[..n]);
    }
    pcm
}

/// WhatsApp → PBX: a 1 kHz tone as Opus from WhatsApp, `loss` % dropped before the relay.
fn whatsapp_to_pbx(codec: SipCodec, loss: u64) -> f64 {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(codec, Some((101, 8000))), t0).unwrap();
    let mut tone = ToneSource::new(1000.0).unwrap();
    let mut rng = Rng(99);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for k in 0..150u32 {
        let p = tone.next_packet().unwrap();
        if k > 0 && rng.chance(loss) {
            continue;
        }
        let now = t0 + Duration::from_millis(20 * k as u64);
        relay.from_whatsapp_audio(
            now,
            77,
            500 + k as u16,
            96_000 + 960 * k,
            false,
            &p,
            &mut |d| out.push(d.to_vec()),
        );
    }
    assert_eq!(
        relay.wa.lost > 0,
        loss > 0,
        "loss {loss}% counted as {}",
        relay.wa.lost
    );
    tone_at_pbx(codec, 0x5151_5151, &out)
}

/// The 1 kHz tone's SNR in what the relay sent the PBX in `codec` under
/// `ssrc`; G.711 must come in whole, consecutive packets (concealment
/// leaves no holes).
fn tone_at_pbx(codec: SipCodec, ssrc: u32, out: &[Vec<u8>]) -> f64 {
    match codec {
        SipCodec::Opus { pt } => {
            let packets: Vec<(u16, Vec<u8>)> = out
                .iter()
                .map(|d| {
                    let v = RtpView::parse(d).unwrap();
                    assert_eq!(v.payload_type(), pt);
                    assert_eq!(v.ssrc(), ssrc);
                    (v.sequence(), v.payload().to_vec())
                })
                .collect();
            tone_snr_db(&decode_opus_stream(&packets), 1000.0, 48_000.0, 9600)
        }
        SipCodec::G711 { law, pt, .. } => {
            let mut pcm = Vec::new();
            let mut last_ts: Option<u32> = None;
            let mut last_seq: Option<u16> = None;
            for d in out {
                let v = RtpView::parse(d).unwrap();
                assert_eq!(v.payload_type(), pt);
                assert_eq!(v.ssrc(), ssrc);
                assert_eq!(v.payload().len(), 160);
                if let (Some(t), Some(s)) = (last_ts, last_seq) {
                    assert_eq!(v.timestamp(), t.wrapping_add(160));
                    assert_eq!(v.sequence(), s.wrapping_add(1));
                }
                last_ts = Some(v.timestamp());
                last_seq = Some(v.sequence());
                pcm.extend(v.payload().iter().map(|&b| law.decode(b)));
            }
            tone_snr_db(&pcm, 1000.0, 8000.0, 1600)
        }
    }
}

/// PBX → WhatsApp: a 440 Hz tone from the PBX in its codec, `loss` % dropped.
fn pbx_to_whatsapp(codec: SipCodec, ptime_ms: usize, loss: u64) -> f64 {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(codec, Some((101, 8000))), t0).unwrap();
    let mut wa = WaRecorder::default();
    let mut rng = Rng(5);
    let mut buf = [0u8; 1500];
    match codec {
        SipCodec::Opus { pt } => {
            let mut tone = ToneSource::new(440.0).unwrap();
            for k in 0..150u32 {
                let p = tone.next_packet().unwrap();
                if k > 0 && rng.chance(loss) {
                    continue;
                }
                write_header(&mut buf, pt, false, k as u16, k * 960, 9);
                buf[12..12 + p.len()].copy_from_slice(&p);
                relay.from_sip(t0, &buf[..12 + p.len()], &mut wa).unwrap();
            }
            assert!(wa.audio.iter().all(|a| a.1 == 960));
            tone_snr_db(&decode_opus_stream(&wa.as_stream()), 440.0, 48_000.0, 9600)
        }
        SipCodec::G711 { law, pt, .. } => {
            let per = ptime_ms * 8;
            let total = 8000 * 3;
            let pcm: Vec<i16> = (0..total)
                .map(|i| {
                    (12000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin())
                        as i16
                })
                .collect();
            for (k, chunk) in pcm.chunks(per).enumerate() {
                if k > 0 && rng.chance(loss) {
                    continue;
                }
                write_header(&mut buf, pt, false, k as u16, (k * per) as u32, 9);
                law.encode_into(chunk, &mut buf[12..12 + chunk.len()]);
                relay
                    .from_sip(t0, &buf[..12 + chunk.len()], &mut wa)
                    .unwrap();
            }
            assert!(wa.audio.iter().all(|a| a.1 == 960));
            tone_snr_db(&decode_opus_stream(&wa.as_stream()), 440.0, 48_000.0, 9600)
        }
    }
}

#[test]
fn tones_cross_in_every_mode_with_and_without_loss() {
    for (name, codec) in [("opus", OPUS), ("pcmu", PCMU), ("pcma", PCMA)] {
        for (loss, min) in [(0, SNR_CLEAN_DB), (5, SNR_LOSSY_DB)] {
            let up = whatsapp_to_pbx(codec, loss);
            eprintln!("{name} WhatsApp→PBX loss {loss}%: {up:.1} dB");
            assert!(up > min, "{name} WhatsApp→PBX, {loss}% loss: {up:.1} dB");
            let down = pbx_to_whatsapp(codec, 20, loss);
            eprintln!("{name} PBX→WhatsApp loss {loss}%: {down:.1} dB");
            assert!(
                down > min,
                "{name} PBX→WhatsApp, {loss}% loss: {down:.1} dB"
            );
        }
    }
    for ptime in [10, 30, 40] {
        let down = pbx_to_whatsapp(PCMU, ptime, 0);
        assert!(down > SNR_CLEAN_DB, "PCMU ptime {ptime}: {down:.1} dB");
    }
}

#[test]
fn passthrough_payload_bytes_are_untouched_and_marker_kept() {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(OPUS, None), t0).unwrap();
    let payload = [0xf8u8, 1, 2, 3, 4, 5];
    let mut out = Vec::new();
    relay.from_whatsapp_audio(t0, 1, 10, 960, true, &payload, &mut |d| {
        out.push(d.to_vec())
    });
    let v = RtpView::parse(&out[0]).unwrap();
    assert_eq!(v.payload(), &payload);
    assert!(v.marker());
    assert_eq!((v.sequence(), v.timestamp()), (40_000, 1_000_000));
}

#[test]
fn an_ssrc_change_keeps_the_outgoing_stream_continuous() {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(OPUS, None), t0).unwrap();
    let mut out = Vec::new();
    let p = [0xf8u8, 0xff, 0xfe];
    for k in 0..5u32 {
        relay.from_whatsapp_audio(
            t0 + Duration::from_millis(20 * k as u64),
            1,
            100 + k as u16,
            5000 + 960 * k,
            false,
            &p,
            &mut |d| out.push(d.to_vec()),
        );
    }
    for k in 5..10u32 {
        relay.from_whatsapp_audio(
            t0 + Duration::from_millis(20 * k as u64),
            2,
            9000 + k as u16,
            777 + 960 * k,
            false,
            &p,
            &mut |d| out.push(d.to_vec()),
        );
    }
    let v: Vec<(u16, u32)> = out
        .iter()
        .map(|d| {
            let v = RtpView::parse(d).unwrap();
            (v.sequence(), v.timestamp())
        })
        .collect();
    for w in v.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "{v:?}");
        assert_eq!(w[1].1, w[0].1.wrapping_add(960), "{v:?}");
    }
}

/// A re-offer moves the call PCMU → PCMA → Opus passthrough: after each
/// change the PBX gets the new payload type under a new SSRC, a 1 kHz tone
/// from WhatsApp decodes in the new codec, and the PBX's audio in the new
/// codec reaches WhatsApp. The counters carry on across the changes.
#[test]
fn a_codec_change_mid_call_relays_in_the_new_codec_and_keeps_counting() {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(PCMU, Some((101, 8000))), t0).unwrap();
    let mut tone = ToneSource::new(1000.0).unwrap();
    let mut wa = WaRecorder::default();
    let mut k = 0u32;
    let mut buf = [0u8; 1500];
    for (step, (codec, ssrc)) in [
        (PCMU, 0x5151_5151),
        (PCMA, 0x6262_6262),
        (OPUS, 0x7373_7373),
    ]
    .into_iter()
    .enumerate()
    {
        if step > 0 {
            let cfg = RelayConfig {
                ssrc,
                ..config(codec, Some((101, 8000)))
            };
            relay
                .change_codec(cfg, t0 + Duration::from_millis(20 * k as u64))
                .unwrap();
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        for _ in 0..100 {
            let p = tone.next_packet().unwrap();
            let now = t0 + Duration::from_millis(20 * k as u64);
            relay.from_whatsapp_audio(
                now,
                77,
                500 + k as u16,
                96_000 + 960 * k,
                false,
                &p,
                &mut |d| out.push(d.to_vec()),
            );
            k += 1;
        }
        assert!(!out.is_empty());
        let snr = tone_at_pbx(codec, ssrc, &out);
        assert!(snr > SNR_CLEAN_DB, "step {step}: WhatsApp→PBX {snr:.1} dB");
        // The PBX answers in the new codec: it reaches WhatsApp.
        let before = wa.audio.len();
        let mut pbx_tone = ToneSource::new(440.0).unwrap();
        for j in 0..50u32 {
            match codec {
                SipCodec::G711 { law, pt, .. } => {
                    let pcm: Vec<i16> = (0..160)
                        .map(|i| {
                            let n = (j * 160 + i) as f64;
                            (12000.0 * (2.0 * std::f64::consts::PI * 440.0 * n / 8000.0).sin())
                                as i16
                        })
                        .collect();
                    write_header(&mut buf, pt, false, j as u16, j * 160, 9 + step as u32);
                    law.encode_into(&pcm, &mut buf[12..172]);
                    relay.from_sip(t0, &buf[..172], &mut wa).unwrap();
                }
                SipCodec::Opus { pt } => {
                    let p = pbx_tone.next_packet().unwrap();
                    write_header(&mut buf, pt, false, j as u16, j * 960, 9 + step as u32);
                    buf[12..12 + p.len()].copy_from_slice(&p);
                    relay.from_sip(t0, &buf[..12 + p.len()], &mut wa).unwrap();
                }
            }
        }
        assert!(
            wa.audio.len() >= before + 45,
            "step {step}: PBX audio reached WhatsApp"
        );
    }
    assert_eq!(
        relay.wa.rx.packets, 300,
        "WhatsApp packets counted across the changes"
    );
    assert_eq!(
        relay.sip.rx.packets, 150,
        "PBX packets counted across the changes"
    );
}

/// A re-offer whose codec cannot be set up leaves the relay as it was.
#[test]
fn a_failed_codec_change_leaves_the_relay_unchanged() {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(PCMU, None), t0).unwrap();
    let bad = RelayConfig {
        sip_codec: SipCodec::G711 {
            law: Law::A,
            pt: 8,
            ptime_ms: 7,
        },
        ..config(PCMA, None)
    };
    assert!(relay.change_codec(bad, t0).is_err());
    assert_eq!(relay.config().sip_codec, PCMU);
}

const DIGITS: &str = "0123456789*#";

/// WhatsApp's RFC 4733 packets for `DIGITS`: 4 updates and 3 ends per digit, 8 kHz durations.
fn whatsapp_digit_packets() -> Vec<(u16, u32, [u8; 4])> {
    let mut v = Vec::new();
    let mut seq = 1000u16;
    for (i, d) in DIGITS.chars().enumerate() {
        let ts = 48_000 * (i as u32 + 1);
        for k in 0..7u16 {
            let end = k >= 4;
            let payload = TelephoneEvent {
                event: event_of(d).unwrap(),
                end,
                volume: 10,
                duration: 160 * (k.min(4) + 1),
            }
            .to_bytes();
            v.push((seq, ts, payload));
            seq += 1;
        }
    }
    v
}

#[test]
fn dtmf_from_whatsapp_reaches_the_pbx_once_per_digit_at_both_clock_rates() {
    for (codec, te_clock) in [(PCMU, 8000u32), (OPUS, 48_000)] {
        let t0 = Instant::now();
        let mut relay = Relay::new(config(codec, Some((101, te_clock))), t0).unwrap();
        let mut out = Vec::new();
        for (i, (seq, ts, p)) in whatsapp_digit_packets().into_iter().enumerate() {
            relay.from_whatsapp_event(
                t0 + Duration::from_millis(20 * i as u64),
                3,
                seq,
                ts,
                &p,
                &mut |d| out.push(d.to_vec()),
            );
        }
        // Group by RTP timestamp: one event per digit, marker on its first packet only.
        let mut events: Vec<(u32, char, u16, bool, usize)> = Vec::new();
        let mut last_seq: Option<u16> = None;
        for d in &out {
            let v = RtpView::parse(d).unwrap();
            assert_eq!(v.payload_type(), 101);
            if let Some(s) = last_seq {
                assert_eq!(v.sequence(), s.wrapping_add(1));
            }
            last_seq = Some(v.sequence());
            let e = TelephoneEvent::parse(v.payload()).unwrap();
            let digit = digit_of(e.event).unwrap();
            match events.last_mut() {
                Some((ts, dg, dur, ended, n)) if *ts == v.timestamp() => {
                    assert_eq!(*dg, digit);
                    assert!(!v.marker());
                    *dur = e.duration;
                    *ended |= e.end;
                    *n += 1;
                }
                _ => {
                    assert!(v.marker(), "first packet of an event has the marker");
                    events.push((v.timestamp(), digit, e.duration, e.end, 1));
                }
            }
        }
        let digits: String = events.iter().map(|e| e.1).collect();
        assert_eq!(digits, DIGITS, "clock {te_clock}");
        for e in &events {
            assert!(e.3, "event ends");
            assert_eq!(e.4, 7, "every packet relayed, repeats included");
            assert_eq!(
                e.2 as u32,
                800 * te_clock / 8000,
                "duration scaled to {te_clock} Hz"
            );
        }
    }
}

#[test]
fn dtmf_from_the_pbx_reaches_whatsapp_once_per_digit_at_both_clock_rates() {
    for (codec, te_clock) in [(PCMA, 8000u32), (OPUS, 48_000)] {
        let t0 = Instant::now();
        let mut relay = Relay::new(config(codec, Some((101, te_clock))), t0).unwrap();
        let mut wa = WaRecorder::default();
        let mut buf = [0u8; 16];
        let unit = te_clock / 1000 * 20; // 20 ms in the event clock
        let mut seq = 0u16;
        for (i, d) in DIGITS.chars().enumerate() {
            let ts = 100_000 + i as u32 * 10 * unit;
            for k in 0..8u32 {
                let end = k >= 5;
                let dur = (unit * (k.min(5) + 1)) as u16;
                write_header(&mut buf, 101, k == 0, seq, ts, 42);
                seq = seq.wrapping_add(1);
                buf[12..16].copy_from_slice(
                    &TelephoneEvent {
                        event: event_of(d).unwrap(),
                        end,
                        volume: 10,
                        duration: dur,
                    }
                    .to_bytes(),
                );
                relay.from_sip(t0, &buf, &mut wa).unwrap();
            }
        }
        let digits: String = wa.keys.iter().map(|k| k.0).collect();
        assert_eq!(digits, DIGITS, "clock {te_clock}");
        assert!(
            wa.keys.iter().all(|k| k.1 == Duration::from_millis(120)),
            "{:?}",
            wa.keys
        );
    }
}

#[test]
fn sip_info_dtmf_becomes_a_key_press_toward_whatsapp() {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(PCMU, None), t0).unwrap();
    let mut wa = WaRecorder::default();
    for d in "1#x9".chars() {
        relay.sip_info_dtmf(d, Duration::from_millis(160), &mut wa);
    }
    assert_eq!(
        wa.keys,
        vec![
            ('1', Duration::from_millis(160)),
            ('#', Duration::from_millis(160)),
            ('9', Duration::from_millis(160))
        ]
    );
}

#[test]
fn malformed_rtp_from_the_pbx_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut relay = Relay::new(config(PCMU, Some((101, 8000))), t0).unwrap();
    let mut wa = WaRecorder::default();
    let bad: Vec<Vec<u8>> = vec![
        vec![0x80, 0, 0],                                              // short
        vec![0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff],             // version 1
        vec![0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff],             // 15 CSRCs, none there
        vec![0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x09], // padding longer than payload
        vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 8], // extension longer than packet
        vec![0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],     // RTCP RR on the RTP port
    ];
    for b in &bad {
        assert!(relay.from_sip(t0, b, &mut wa).is_err(), "{b:?}");
    }
    assert_eq!(relay.sip.dropped, bad.len() as u64);
    // Unknown payload type: dropped too, but not an error of the packet.
    let mut buf = [0u8; 20];
    write_header(&mut buf, 96, false, 1, 1, 1);
    relay.from_sip(t0, &buf, &mut wa).unwrap();
    assert_eq!(relay.sip.dropped, bad.len() as u64 + 1);
    assert!(wa.audio.is_empty() && wa.keys.is_empty());
}

#[test]
fn a_silent_leg_times_out_once_but_not_the_pbx_on_hold() {
    let t0 = Instant::now();
    let mut cfg = config(PCMU, None);
    cfg.rtp_timeout = Duration::from_secs(30);
    let mut relay = Relay::new(cfg, t0).unwrap();
    let mut wa = WaRecorder::default();
    let mut pkt = [0u8; 172];
    write_header(&mut pkt, 0, false, 1, 0, 5);
    // Both legs active for 20 s.
    for s in 0..20u64 {
        let now = t0 + Duration::from_secs(s);
        relay.from_whatsapp_audio(
            now,
            1,
            s as u16,
            s as u32 * 960,
            false,
            &[0xf8, 0xff, 0xfe],
            &mut |_| {},
        );
        relay.from_sip(now, &pkt, &mut wa).unwrap();
        assert_eq!(relay.handle_timeout(now, &mut wa), None);
    }
    // The PBX holds the call and sends nothing; WhatsApp keeps talking: no timeout.
    relay.set_pbx_on_hold(true, t0 + Duration::from_secs(20));
    for s in 20..100u64 {
        let now = t0 + Duration::from_secs(s);
        relay.from_whatsapp_audio(
            now,
            1,
            s as u16,
            s as u32 * 960,
            false,
            &[0xf8, 0xff, 0xfe],
            &mut |_| {},
        );
        assert_eq!(relay.handle_timeout(now, &mut wa), None, "at {s} s");
    }
    // Off hold; the PBX stays silent: reported once, 30 s later.
    relay.set_pbx_on_hold(false, t0 + Duration::from_secs(100));
    let mut reports = Vec::new();
    for s in 100..200u64 {
        let now = t0 + Duration::from_secs(s);
        relay.from_whatsapp_audio(
            now,
            1,
            s as u16,
            s as u32 * 960,
            false,
            &[0xf8, 0xff, 0xfe],
            &mut |_| {},
        );
        if let Some(t) = relay.handle_timeout(now, &mut wa) {
            reports.push((s, t));
        }
    }
    assert_eq!(reports, vec![(130, MediaTimeout::PbxSilent)]);

    // WhatsApp silent from the start.
    let mut relay = Relay::new(config(OPUS, None), t0).unwrap();
    assert_eq!(
        relay.handle_timeout(t0 + Duration::from_secs(29), &mut wa),
        None
    );
    assert_eq!(
        relay.handle_timeout(t0 + Duration::from_secs(30), &mut wa),
        Some(MediaTimeout::WhatsAppSilent)
    );
    assert_eq!(relay.next_timeout(), t0 + Duration::from_secs(30));
}

/// A PBX that rebases its RTP timestamps mid-call without a new SSRC —
/// FreeSWITCH's music on hold, the unhold after it, a transfer — is
/// followed (RFC 3550 allows it): every newer packet is played, before and
/// after a jump back and a jump forward, and the tone is heard after each;
/// a late or duplicated packet of the same run is still dropped. Opus
/// passthrough and G.711 transcoding.
#[test]
fn a_pbx_that_rebases_its_timestamps_is_followed() {
    for codec in [
        SipCodec::Opus { pt: 107 },
        SipCodec::G711 {
            law: Law::Mu,
            pt: 0,
            ptime_ms: 20,
        },
    ] {
        let t0 = Instant::now();
        let mut relay = Relay::new(config(codec, Some((101, 8000))), t0).unwrap();
        let mut wa = WaRecorder::default();
        let mut buf = [0u8; 1500];
        let mut tone = ToneSource::new(440.0).unwrap();
        let pcm: Vec<i16> = (0..8000 * 4)
            .map(|i| {
                (12000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin()) as i16
            })
            .collect();
        // (first packet, timestamp of the first) for each run: the first run,
        // a jump back by ~62 s (music on hold), a jump forward by ~125 s (unhold).
        let (per_ts, runs): (u32, [(u32, u32); 3]) = match codec {
            SipCodec::Opus { .. } => (960, [(0, 3_000_000), (50, 10_000), (100, 6_000_000)]),
            SipCodec::G711 { .. } => (160, [(0, 500_000), (50, 1_000), (100, 1_000_000)]),
        };
        let mut send =
            |relay: &mut Relay, wa: &mut WaRecorder, k: u32, ts: u32, marker: bool| match codec {
                SipCodec::Opus { pt } => {
                    let p = tone.next_packet().unwrap();
                    write_header(&mut buf, pt, marker, k as u16, ts, 9);
                    buf[12..12 + p.len()].copy_from_slice(&p);
                    relay.from_sip(t0, &buf[..12 + p.len()], wa).unwrap();
                }
                SipCodec::G711 { law, pt, .. } => {
                    let chunk = &pcm[(k as usize * 160) % (pcm.len() - 160)..][..160];
                    write_header(&mut buf, pt, marker, k as u16, ts, 9);
                    law.encode_into(chunk, &mut buf[12..172]);
                    relay.from_sip(t0, &buf[..172], wa).unwrap();
                }
            };
        let mut heard = Vec::new();
        for (r, &(first, ts0)) in runs.iter().enumerate() {
            let before = wa.audio.len();
            for k in first..first + 50 {
                let ts = ts0.wrapping_add((k - first) * per_ts);
                send(&mut relay, &mut wa, k, ts, k == first && r > 0);
            }
            let got = wa.audio.len() - before;
            assert!(
                got >= 49,
                "{codec:?} run {r}: {got} of 50 packets reached WhatsApp"
            );
            heard.push(wa.as_stream()[before..].to_vec());
            if r == 0 {
                // A duplicate of the run's last packet and a late one: dropped.
                let n = wa.audio.len();
                send(&mut relay, &mut wa, first + 49, ts0 + 49 * per_ts, false);
                send(&mut relay, &mut wa, first + 40, ts0 + 40 * per_ts, false);
                assert_eq!(
                    wa.audio.len(),
                    n,
                    "{codec:?}: late and duplicate packets are dropped"
                );
            }
        }
        for (r, stream) in heard.iter().enumerate() {
            let snr = tone_snr_db(&decode_opus_stream(stream), 440.0, 48_000.0, 9600);
            assert!(
                snr > SNR_LOSSY_DB,
                "{codec:?} run {r}: 440 Hz at {snr:.1} dB"
            );
        }
    }
}
