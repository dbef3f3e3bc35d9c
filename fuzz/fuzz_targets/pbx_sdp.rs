//! The PBX's SDP (offer, answer, re-offer) → our reader and negotiation
//! against the default codecs, and its `a=crypto` lines (SDES) through
//! each `media.srtp` policy. Oracle: no panic; a negotiated result names a
//! codec we offered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::config::Codec;
use wa_sip_bridge::media::sdes::{self, SrtpPolicy};
use wa_sip_bridge::sip::sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let prefs = [Codec::Opus, Codec::Pcmu, Codec::Pcma];
    let Ok(m) = sdp::parse(text) else { return };
    let _ = m.is_hold();
    let key = |n: usize| vec![7u8; n];
    if let Ok(n) = sdp::negotiate_offer(&m, &prefs) {
        for policy in [SrtpPolicy::Off, SrtpPolicy::Optional, SrtpPolicy::Required] {
            let _ = sdes::on_offer(policy, n.remote_savp, &n.remote_crypto, key);
        }
        if let Ok(n2) = sdp::negotiate_reoffer(&n, &m, &prefs) {
            let _ = n.relays_differently(&n2);
        }
    }
    if let Ok(n) = sdp::negotiate_answer(&m, &prefs) {
        let ours = sdes::offer(key);
        for policy in [SrtpPolicy::Off, SrtpPolicy::Optional, SrtpPolicy::Required] {
            let _ = sdes::on_answer(policy, &ours, n.remote_savp, &n.remote_crypto);
        }
    }
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("a=crypto:") {
            if let Some(c) = sdes::parse_crypto(v) {
                assert!(sdes::parse_crypto(
                    sdes::render(&c).trim_start_matches("a=crypto:").trim_end()
                )
                .is_some());
            }
        }
    }
});
