//! Hostile SIP into the user agent, sans-IO: mutated versions of every
//! message a PBX sends in a call — its INVITE, ACK, re-INVITE, UPDATE, INFO,
//! OPTIONS, CANCEL and BYE, and its responses to our INVITE (183 with SDP,
//! 302 with Contacts, 401 challenges, 200) — fed in call order with time
//! moving on, the call layer's part played as the bridge plays it (answer,
//! answer re-offers, read every SDP with the RTP-leg reader). The UA must
//! never panic and must still take and place clean calls afterwards.

use std::time::{Duration, Instant};

use wa_sip_bridge::config::Codec;
use wa_sip_bridge::sip::acl::SourceAcl;
use wa_sip_bridge::sip::endpoint::{Peer, Transport};
use wa_sip_bridge::sip::message::{parse_incoming, Msg};
use wa_sip_bridge::sip::method::Method;
use wa_sip_bridge::sip::sdp;
use wa_sip_bridge::sip::transaction::Timers;
use wa_sip_bridge::sip::ua::{Invite, SipUa, UaConfig, UaEvent, UaOutput};

const CODECS: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];
const SDP: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
const OUR_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `msg` with up to 6 random edits (a byte changed, removed, or a SIP
    /// delimiter inserted), or a header line repeated, or cut short;
    /// untouched one time in four, so that calls also get past each step.
    fn mutate(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut m = msg.to_vec();
        match self.next() % 8 {
            0 | 1 => return m,
            2 => {
                let cut = (self.next() % m.len() as u64) as usize;
                m.truncate(cut);
                return m;
            }
            3 => {
                // A line repeated (a second Content-Length, CSeq, Via, …).
                let text = String::from_utf8_lossy(&m).to_string();
                let lines: Vec<&str> = text.split("\r\n").collect();
                let i = (self.next() % lines.len() as u64) as usize;
                let mut out = lines.clone();
                out.insert(i, lines[i]);
                return out.join("\r\n").into_bytes();
            }
            _ => {}
        }
        for _ in 0..1 + self.next() % 6 {
            if m.is_empty() {
                break;
            }
            let x = self.next();
            let i = (x % m.len() as u64) as usize;
            match x % 3 {
                0 => m[i] = (x >> 8) as u8,
                1 => {
                    m.remove(i);
                }
                _ => m.insert(i, b":;,<>\"\r\n =@0"[(x % 12) as usize]),
            }
        }
        m
    }
}

fn config() -> UaConfig {
    UaConfig {
        via_host: "127.0.0.1:5060".into(),
        tls_host: None,
        contact_uri: "sip:bridge@127.0.0.1:5060".into(),
        credentials: Some(("bridge".into(), "secret".into())),
        inbound_credentials: None,
        realm: "wa.example.com".into(),
        acl: SourceAcl::new(vec!["127.0.0.0/8".parse().unwrap()], vec![]),
        timers: Timers::default(),
        rng_seed: Some(0x5eed),
        session: Default::default(),
        auth_guard: Default::default(),
    }
}

/// What reached the call layer, to show the storm also let calls through.
#[derive(Default, Debug)]
struct Seen {
    incoming: u32,
    reoffers: u32,
    answered: u32,
}

/// Plays the call layer: answers INVITEs and re-offers, reads every SDP it
/// is handed with the RTP-leg reader. Returns what was sent.
fn drain(ua: &mut SipUa, now: Instant, rng: &mut Rng, seen: &mut Seen) -> Vec<Msg> {
    let mut sent = Vec::new();
    while let Some(out) = ua.poll_output() {
        match out {
            UaOutput::Transmit { data, .. } => {
                if let Ok(m) = parse_incoming(&data) {
                    sent.push(m);
                }
            }
            UaOutput::Event(ev) => match ev {
                UaEvent::Incoming { call, invite, .. } => {
                    seen.incoming += 1;
                    if let Some(offer) = invite.sdp() {
                        if let Ok(m) = sdp::parse(offer) {
                            let _ = sdp::negotiate_offer(&m, &CODECS);
                        }
                    }
                    match rng.next() % 3 {
                        0 => ua.ring(now, call, Some(OUR_SDP)),
                        _ => ua.answer(now, call, OUR_SDP),
                    }
                }
                UaEvent::Reoffer {
                    call,
                    tx,
                    sdp: offer,
                } => {
                    seen.reoffers += 1;
                    let answer = match offer.as_deref().map(sdp::parse) {
                        Some(Err(_)) => Err(488),
                        _ => Ok(OUR_SDP),
                    };
                    ua.answer_reoffer(now, call, tx, answer);
                }
                UaEvent::Answered { sdp: a, .. } => {
                    seen.answered += 1;
                    read_answer(a.as_deref());
                }
                UaEvent::Progress { sdp: a, .. } => read_answer(a.as_deref()),
                _ => {}
            },
        }
    }
    sent
}

/// The PBX's SDP answer through the RTP-leg reader and negotiation.
fn read_answer(answer: Option<&str>) {
    if let Some(m) = answer.and_then(|a| sdp::parse(a).ok()) {
        let _ = sdp::negotiate_answer(&m, &CODECS);
    }
}

/// A request from the PBX in the dialog `call_id` (our tag `to_tag`, if known).
fn pbx_request(
    method: &str,
    call_id: &str,
    cseq: u32,
    to_tag: &str,
    body: &str,
    n: u32,
) -> Vec<u8> {
    let (ct, body) = match (method, body) {
        (_, "") => (String::new(), ""),
        ("INFO", b) => ("Content-Type: application/dtmf-relay\r\n".to_string(), b),
        (_, b) => ("Content-Type: application/sdp\r\n".to_string(), b),
    };
    format!(
        "{method} sip:bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{method}{n}\r\nMax-Forwards: 70\r\nFrom: \"Agent\" <sip:agent@127.0.0.1:5099>;tag=pbx{n}\r\nTo: <sip:447700900123@127.0.0.1:5060>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:agent@127.0.0.1:5099>\r\nSupported: timer, replaces\r\nRecord-Route: <sip:proxy.example.com;lr>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn mutated_sip_never_panics_and_the_ua_keeps_working() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut ua = SipUa::new(config(), Instant::now());
    let pbx = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5099".parse().unwrap(),
    };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut seen = Seen::default();
    for n in 0..600u32 {
        // The PBX calls a WhatsApp user; the call goes on in order.
        let call_id = format!("hostile-{n}@pbx");
        ua.handle_message(
            now,
            &rng.mutate(&pbx_request("INVITE", &call_id, 1, "", SDP, n)),
            pbx,
        );
        let sent = drain(&mut ua, now, &mut rng, &mut seen);
        let to_tag = sent
            .iter()
            .find_map(|m| m.to_tag())
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let steps: [(&str, u32, &str); 8] = [
            ("ACK", 1, ""),
            ("INVITE", 2, SDP),
            ("ACK", 2, ""),
            ("UPDATE", 3, ""),
            ("INFO", 4, "Signal=5\r\nDuration=160\r\n"),
            ("OPTIONS", 5, ""),
            ("CANCEL", 1, ""),
            ("BYE", 6, ""),
        ];
        for (method, cseq, body) in steps {
            let req = pbx_request(method, &call_id, cseq, &to_tag, body, n);
            ua.handle_message(now, &rng.mutate(&req), pbx);
            drain(&mut ua, now, &mut rng, &mut seen);
        }

        // We call the PBX; its responses come mutated.
        ua.invite(
            now,
            Invite {
                request_uri: "sip:ivr@127.0.0.1:5099",
                from: "\"Caller\" <sip:+15551234567@wa.example.com>",
                to: "<sip:ivr@127.0.0.1:5099>",
                headers: &[("x-wa-call-id", format!("wacid.{n}"))],
                sdp: OUR_SDP,
                peer: pbx,
            },
        );
        let ours = drain(&mut ua, now, &mut rng, &mut seen);
        if let Some(inv) = ours.iter().find(|m| m.method() == Some(&Method::Invite)) {
            let mut responses = Vec::new();
            let mut r183 = Msg::response_to(inv, 183, "Session Progress", Some("pbx"));
            r183.with_body("application/sdp", SDP.as_bytes().to_vec());
            responses.push(r183);
            let mut r401 = Msg::response_to(inv, 401, "Unauthorized", Some("pbx"));
            r401.push(
                "www-authenticate",
                "Digest realm=\"pbx\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"",
            );
            responses.push(r401);
            let mut r302 = Msg::response_to(inv, 302, "Moved Temporarily", Some("pbx"));
            r302.push(
                "contact",
                "<sip:2001@127.0.0.1:5099>;q=0.5, <tel:+4420;x=y>",
            );
            responses.push(r302);
            let mut ok = Msg::response_to(inv, 200, "OK", Some("pbx"));
            ok.push("contact", "<sip:ivr@127.0.0.1:5099>")
                .push("record-route", "<sip:proxy.example.com;lr>")
                .with_body("application/sdp", SDP.as_bytes().to_vec());
            responses.push(ok);
            let pick = (rng.next() % responses.len() as u64) as usize;
            for r in &responses[pick..] {
                ua.handle_message(now, &rng.mutate(&r.to_bytes()), pbx);
                drain(&mut ua, now, &mut rng, &mut seen);
            }
        }
        now += Duration::from_millis(300);
        ua.handle_timeout(now);
        drain(&mut ua, now, &mut rng, &mut seen);
    }
    // Long after: every transaction timed out (calls whose BYE was
    // mangled stay up, as they would with a real PBX until its next BYE).
    for _ in 0..20 {
        now += Duration::from_secs(10);
        ua.handle_timeout(now);
        drain(&mut ua, now, &mut rng, &mut seen);
    }

    eprintln!("{seen:?}");
    // Mangled messages were refused or dropped, the others made calls.
    // (UPDATEs without an offer are session refreshes the UA answers
    // itself, RFC 3311 §5.2: only re-INVITEs and offers reach the call
    // layer as re-offers.)
    assert!(
        seen.incoming > 150 && seen.reoffers > 5 && seen.answered > 100,
        "{seen:?}"
    );

    // A clean call from the PBX still reaches the call layer…
    ua.handle_message(
        now,
        &pbx_request("INVITE", "clean@pbx", 1, "", SDP, 9999),
        pbx,
    );
    let mut incoming = false;
    while let Some(out) = ua.poll_output() {
        incoming |= matches!(out, UaOutput::Event(UaEvent::Incoming { .. }));
    }
    assert!(incoming, "a clean INVITE after the storm is a call");
    // …and a call to the PBX still goes out.
    ua.invite(
        now,
        Invite {
            request_uri: "sip:ivr@127.0.0.1:5099",
            from: "<sip:+15551234567@wa.example.com>",
            to: "<sip:ivr@127.0.0.1:5099>",
            headers: &[],
            sdp: OUR_SDP,
            peer: pbx,
        },
    );
    let sent = drain(&mut ua, now, &mut Rng(1), &mut seen);
    assert!(sent.iter().any(|m| m.method() == Some(&Method::Invite)));
}
