//! The SDP offer in Wati's `inbound-call` webhook (WhatsApp's, or anyone's)
//! → the WhatsApp leg's answer (ICE-lite peer, DTLS role, fingerprint,
//! codecs, candidates). Oracle: no panic; an accepted offer gets a
//! complete answer with one upper-case sha-256 fingerprint,
//! `a=setup:active` and our stream declared once. The same text is also
//! applied as WhatsApp's answer to an offer of ours (the leg applies it
//! through str0m's direct API): no panic.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::webrtc::{LegConfig, WaLeg};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    let local = "127.0.0.1:40000".parse().unwrap();
    let mut cfg = LegConfig::new(local, local);
    cfg.rtp_seed = 1;
    if let Ok((mut ours, _)) = WaLeg::offer(cfg.clone(), Instant::now()) {
        let _ = ours.apply_answer(Instant::now(), offer);
    }
    let Ok((_leg, answer)) = WaLeg::answer(offer, cfg, Instant::now()) else {
        return;
    };
    assert_eq!(
        answer.matches("a=fingerprint:sha-256 ").count(),
        1,
        "{answer}"
    );
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(answer.matches(" cname:").count() <= 1, "{answer}");
});
