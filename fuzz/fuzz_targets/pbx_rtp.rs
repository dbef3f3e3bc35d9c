//! The per-call media relay fed what the outside sends: datagrams from the
//! PBX's RTP port (RTP, RTCP on the wrong port, RFC 4733 events, comfort
//! noise, garbage), Opus payloads and RFC 4733 events from WhatsApp, time
//! passing and hold, in any order; in each mode (Opus passthrough, PCMU
//! 20 ms with telephone-event, PCMA 30 ms). Oracle: no panic; everything
//! the relay sends the PBX is valid RTP with our SSRC.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::relay::{Relay, RelayConfig, SipCodec, ToWhatsApp};
use wa_sip_bridge::media::rtp::RtpView;

struct Wa;

impl ToWhatsApp for Wa {
    fn audio(&mut self, _now: Instant, opus: &[u8], _samples_48k: u32) {
        assert!(!opus.is_empty() && opus.len() <= 1500);
    }
    fn gap(&mut self, _samples_48k: u32) {}
    fn key(&mut self, digit: char, _duration: Duration) {
        assert!("0123456789*#ABCD".contains(digit), "{digit:?}");
    }
}

const SSRC: u32 = 0x1234_5678;

fn check(datagram: &[u8]) {
    let p = RtpView::parse(datagram).expect("the relay sends valid RTP");
    assert_eq!(p.ssrc(), SSRC);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut ops)) = data.split_first() else {
        return;
    };
    let (sip_codec, sip_te) = match mode % 3 {
        0 => (SipCodec::Opus { pt: 111 }, Some((101, 48_000))),
        1 => (
            SipCodec::G711 {
                law: Law::Mu,
                pt: 0,
                ptime_ms: 20,
            },
            Some((101, 8000)),
        ),
        _ => (
            SipCodec::G711 {
                law: Law::A,
                pt: 8,
                ptime_ms: 30,
            },
            None,
        ),
    };
    let cfg = RelayConfig {
        sip_codec,
        sip_te,
        wa_te_clock: 8000,
        rtp_timeout: Duration::from_secs(30),
        opus: Default::default(),
        ssrc: SSRC,
        first_seq: 100,
        first_ts: 1000,
    };
    let mut now = Instant::now();
    let Ok(mut relay) = Relay::new(cfg, now) else {
        return;
    };
    let mut wa = Wa;
    let (mut wa_seq, mut wa_ts) = (0u16, 0u32);
    let mut hold = false;
    while let [op, len, rest @ ..] = ops {
        let n = (*len as usize).min(rest.len());
        let (bytes, tail) = rest.split_at(n);
        ops = tail;
        match op % 6 {
            0 | 1 => {
                let _ = relay.from_sip(now, bytes, &mut wa);
            }
            2 => {
                wa_seq = wa_seq.wrapping_add(1);
                wa_ts = wa_ts.wrapping_add(960);
                relay.from_whatsapp_audio(
                    now,
                    7,
                    wa_seq,
                    wa_ts,
                    op & 0x80 != 0,
                    bytes,
                    &mut |d: &[u8]| check(d),
                );
            }
            3 => {
                let mut ev = [0u8; 4];
                for (e, b) in ev.iter_mut().zip(bytes) {
                    *e = *b;
                }
                wa_seq = wa_seq.wrapping_add(1);
                relay.from_whatsapp_event(now, 7, wa_seq, wa_ts, &ev, &mut |d: &[u8]| check(d));
            }
            4 => {
                now += Duration::from_millis(u64::from(*len) * 4);
                let _ = relay.handle_timeout(now, &mut wa);
            }
            _ => {
                hold = !hold;
                relay.set_pbx_on_hold(hold, now);
            }
        }
    }
});
