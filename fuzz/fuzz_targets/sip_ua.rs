//! SIP messages from the trunk's side → the bridge's user agent, sans-IO,
//! with dialogs in progress: one call from the PBX we answered (UAS) and
//! one we placed and are waiting on (UAC), plus a registration. The input
//! is messages separated by NUL bytes; in each, `@C@`/`@B@`/`@F@` become
//! the Call-ID, Via branch and From tag of our INVITE and `@T@` our To tag
//! in the answered call, so responses and in-dialog requests reach the
//! dialogs. The first byte of each message picks where it came from (the
//! PBX over UDP, TCP or TLS, or an address the ACL refuses); the first
//! byte of the input whether the bridge challenges the PBX (digest).
//! Between messages time passes and the UA's timers run; its events get
//! the answers the call layer would give. Oracle: no panic, and every
//! message the UA sends parses as SIP (but the answer to a request that did not
//! parse, which carries its headers back).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::sip::acl::SourceAcl;
use wa_sip_bridge::sip::endpoint::{Peer, Transport};
use wa_sip_bridge::sip::message::{parse_incoming, Msg};
use wa_sip_bridge::sip::register::RegisterConfig;
use wa_sip_bridge::sip::transaction::Timers;
use wa_sip_bridge::sip::ua::{Invite, SipUa, UaConfig, UaEvent, UaOutput};

const PBX_SDP: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn pbx_invite() -> String {
    format!("INVITE sip:14085551234@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKpbx1\r\nMax-Forwards: 70\r\nFrom: <sip:agent@127.0.0.1:5099>;tag=pbx\r\nTo: <sip:14085551234@127.0.0.1:5060>\r\nCall-ID: pbx-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@127.0.0.1:5099>\r\nSupported: timer, 100rel\r\nSession-Expires: 90;refresher=uac\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{PBX_SDP}", PBX_SDP.len())
}

const SDP: &str = "v=0\r\no=bridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn peer(t: Transport, port: u16) -> Peer {
    Peer {
        transport: t,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Drains the UA: every datagram must be SIP; events get the call layer's answers.
fn drain(ua: &mut SipUa, now: Instant, answered: &mut Option<String>, strict: bool) {
    for _ in 0..1000 {
        let Some(out) = ua.poll_output() else { return };
        match out {
            UaOutput::Transmit { data, .. } => {
                // The answer (400, 505) to a request that did not parse
                // copies its broken headers (RFC 3261 §8.2.6.2); after a
                // message that parsed, whatever the UA sends must be SIP.
                let msg = match parse_incoming(&data) {
                    Ok(m) => m,
                    Err(e) if !strict => {
                        assert!(
                            data.starts_with(b"SIP/2.0 "),
                            "only responses to what did not parse: {e:?}"
                        );
                        continue;
                    }
                    Err(e) => panic!("the UA sends valid SIP: {e:?}"),
                };
                if answered.is_none() && msg.status() == Some(200) && msg.call_id() == "pbx-call-1"
                {
                    *answered = msg.to_tag().map(str::to_string);
                }
            }
            UaOutput::Event(e) => match e {
                UaEvent::Incoming { call, invite, .. } => {
                    if invite.call_id().len() % 3 == 0 {
                        ua.reject(now, call, 486, "Busy Here", &[]);
                    } else {
                        ua.ring(now, call, None);
                        ua.answer(now, call, SDP);
                    }
                }
                UaEvent::Reoffer { call, tx, sdp } => {
                    let ours = if sdp.as_deref().is_some_and(|s| s.contains("m=video")) {
                        Err(488)
                    } else {
                        Ok(SDP)
                    };
                    ua.answer_reoffer(now, call, tx, ours);
                }
                UaEvent::Refer { call, .. } => ua.notify_refer(now, call, 200, "OK"),
                _ => {}
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = UaConfig {
        via_host: "127.0.0.1:5060".into(),
        tls_host: Some("127.0.0.1:5061".into()),
        contact_uri: "sip:bridge@127.0.0.1:5060".into(),
        credentials: Some(("bridge".into(), "secret".into())),
        inbound_credentials: (flags & 1 == 1).then(|| ("pbx".into(), "pbx-secret".into())),
        realm: "bridge".into(),
        acl: SourceAcl::new(vec![], vec!["127.0.0.1".parse().unwrap()]),
        timers: Timers::default(),
        rng_seed: Some(u64::from(flags)),
        session: Default::default(),
        auth_guard: Default::default(),
    };
    let mut ua = SipUa::new(cfg, t0);
    let mut answered = None;
    // The PBX's call, answered (unless the bridge challenges it).
    ua.handle_message(now, pbx_invite().as_bytes(), peer(Transport::Udp, 5099));
    drain(&mut ua, now, &mut answered, true);
    // Our call to the PBX, not answered yet.
    let _ = ua.invite(
        now,
        Invite {
            request_uri: "sip:ivr@127.0.0.1:5099",
            from: "<sip:+15551234567@wa.example.com>",
            to: "<sip:ivr@127.0.0.1:5099>",
            headers: &[("x-wa-call-id", "wacid.fuzz".to_string())],
            sdp: SDP,
            peer: peer(Transport::Udp, 5099),
        },
    );
    let mut ours: Option<Msg> = None;
    while let Some(out) = ua.poll_output() {
        if let UaOutput::Transmit { data, .. } = out {
            ours = parse_incoming(&data).ok();
        }
    }
    let Some(ours) = ours else { return };
    if flags & 2 == 2 {
        ua.register(
            now,
            RegisterConfig {
                registrar: "sip:127.0.0.1:5099".into(),
                aor: "sip:bridge@127.0.0.1".into(),
                contact: "sip:bridge@127.0.0.1:5060".into(),
                expires: 120,
                username: "bridge".into(),
                password: "secret".into(),
            },
            peer(Transport::Udp, 5099),
        );
        drain(&mut ua, now, &mut answered, true);
    }
    // Answered unless the bridge challenged it.
    assert!(
        answered.is_some() || flags & 1 == 1,
        "the PBX's INVITE was answered"
    );
    let tag = answered.unwrap_or_default();
    for raw in input.split(|&b| b == 0).filter(|m| !m.is_empty()).take(16) {
        let (&from, msg) = raw.split_first().unwrap();
        let msg = replace_all(msg, b"@C@", ours.call_id().as_bytes());
        let msg = replace_all(&msg, b"@B@", ours.branch().as_bytes());
        let msg = replace_all(&msg, b"@F@", ours.from_tag().unwrap_or("").as_bytes());
        let msg = replace_all(&msg, b"@T@", tag.as_bytes());
        let source = match from % 4 {
            0 => peer(Transport::Udp, 5099),
            1 => peer(Transport::Tcp, 5099),
            2 => peer(Transport::Tls, 5061),
            _ => Peer {
                transport: Transport::Udp,
                addr: "192.0.2.66:5060".parse().unwrap(),
            },
        };
        let strict = parse_incoming(&msg).is_ok();
        ua.handle_message(now, &msg, source);
        drain(&mut ua, now, &mut None, strict);
        now += Duration::from_millis(u64::from(from) * 8);
        ua.handle_timeout(now);
        drain(&mut ua, now, &mut None, true);
    }
    // Let every timer run out: retransmissions (T1 doubling to T2), then
    // session timers and Timers B/F/H (32 s) in large steps.
    for step in [1, 1, 2, 4, 4, 30, 30, 60, 120, 600] {
        now += Duration::from_secs(step);
        ua.handle_timeout(now);
        drain(&mut ua, now, &mut None, true);
    }
});
